"""core.translator.Translator, the Python API, on a tiny model trained for 2 steps."""
import os
import re
import shutil
import subprocess
import sys
import threading
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import tiny_flags
from core.config import parse_config
from core.data.images import DataError, list_images, load_rgb
from core.data.loader import EvalTransform
from core.inference import draw_latents
from core.model import build_nets
from core.translator import DomainError, StyleError, Translator
from core.utils.fileio import ModelFileError
from core.video import num_video_frames
from main import main
from test_video import read_video

S = 32
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEMO_PATH = "'expr/checkpoints_demo'"   # the snippet's checkpoint, replaced by the tiny model's


@pytest.fixture(scope='module')
def run(seasons32, tmp_path_factory):
    """The checkpoint folder of a tiny model trained for 4 steps (saved at 2 and 4)."""
    root = tmp_path_factory.mktemp('run')
    assert main(tiny_flags(seasons32, root, '--sample_every', '0')) == 0
    return root / 'checkpoints'


@pytest.fixture(scope='module')
def model(run):
    return Translator.load(run, device='cpu')


@pytest.fixture(scope='module')
def images(seasons32):
    """{domain: [paths of its val images]}."""
    return {d: list_images(str(seasons32 / 'val' / d)) for d in ('autumn', 'spring', 'summer', 'winter')}


def _close(a, b):
    return torch.allclose(a, b, rtol=1e-5, atol=1e-5 * float(b.abs().max()))


def test_load_folder_file_and_step(run, model):
    assert model.step == 4 and model.path.endswith('000004_nets_ema.ckpt')
    assert model.domains == ['autumn', 'spring', 'summer', 'winter'] and model.img_size == S
    assert model.device == torch.device('cpu') and 'step=4' in repr(model)
    assert Translator.load(run, step=2).step == 2
    assert Translator.load(run / '000002_nets_ema.ckpt').step == 2
    with pytest.raises(ModelFileError, match='has no step 3; its steps are 2, 4'):
        Translator.load(run, step=3)
    with pytest.raises(ModelFileError, match='does not exist'):
        Translator.load(run / 'nope')


def test_load_skips_a_damaged_newest_step(run, tmp_path):
    copy = tmp_path / 'ckpt'
    copy.mkdir()
    for step in (2, 4):
        shutil.copy(run / f'00000{step}_nets_ema.ckpt', copy)
    (copy / '000004_nets_ema.ckpt').write_bytes(b'truncated')
    with pytest.warns(UserWarning, match='000004_nets_ema.ckpt.*trying the step before it'):
        assert Translator.load(copy).step == 2
    (copy / '000002_nets_ema.ckpt').write_bytes(b'')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with pytest.raises(ModelFileError, match='no intact earlier step'):
            Translator.load(copy)


def test_official_file_takes_the_architecture_as_keywords(tmp_path, images):
    arch = dict(img_size=S, num_domains=3, base_dim=8, max_conv_dim=16, hidden_dim=32, style_dim=16, latent_dim=8)
    cfg = parse_config(['--mode', 'sample'] + [f'--{k}={v}' for k, v in arch.items()])
    torch.manual_seed(0)
    nets, _ = build_nets(cfg)
    path = tmp_path / 'official.ckpt'
    torch.save({name: nets[name].state_dict() for name in ('generator', 'mapping_network', 'style_encoder')}, path)
    model = Translator.load(path, domain_names=['a', 'b', 'c'], **{k: v for k, v in arch.items() if k != 'num_domains'})
    assert model.domains == ['a', 'b', 'c'] and model.step is None
    x = EvalTransform(S)(load_rgb(images['spring'][0])).unsqueeze(0)
    with torch.no_grad():
        expected = nets.generator(x, nets.mapping_network(draw_latents(0, 1, 8)[0], torch.tensor([2])))
    assert _close(model.latent(images['spring'][0], 'c', as_tensor=True)[0], expected[0])
    assert Translator.load(path, num_domains=3, **{k: v for k, v in arch.items() if k != 'num_domains'}).domains == \
        ['domain0', 'domain1', 'domain2']
    with pytest.raises(ModelFileError, match='does not match the networks'):
        Translator.load(path, **{**arch, 'style_dim': 12})
    with pytest.raises(Exception, match='--img_size must be a power of two'):
        Translator.load(path, **{**arch, 'img_size': 48})


def test_latent_seeds_styles_and_psi(model, images):
    src = images['autumn'][0]
    four = model.latent(src, 'winter', seed=1, num=4, as_tensor=True)
    assert len(four) == 4 and four[0].shape == (3, S, S)
    again = model.latent(src, 3, seed=1, num=2, as_tensor=True)   # by id; style k does not depend on num
    assert all(torch.equal(a, b) for a, b in zip(again, four))
    other = model.latent(src, 'winter', seed=2, as_tensor=True)[0]
    assert not torch.equal(other, four[0])
    assert len({tuple(x.flatten()[:50].tolist()) for x in four}) == 4   # four different styles
    # psi pulls the style toward the domain average; psi 0 gives the average whatever the seed
    s1, s_half, s0 = (model.style('winter', seed=1, psi=p) for p in (1.0, 0.5, 0.0))
    assert _close(s0, model.style('winter', seed=9, psi=0.0))
    assert _close(s_half, (s1 + s0) / 2)
    assert torch.equal(model.styles('winter', seed=1, num=3)[0], s1)
    pil = model.latent(src, 'winter', seed=1)[0]
    assert isinstance(pil, Image.Image) and pil.size == (S, S)
    expected = ((four[0] + 1) / 2).clamp(0, 1).mul(255).add(0.5).floor().permute(1, 2, 0).numpy()
    assert np.abs(np.asarray(pil, dtype=np.float32) - expected).max() <= 1


def test_reference_and_style_of(model, images):
    src, ref = images['autumn'][0], images['summer'][1]
    out = model.reference(src, ref, as_tensor=True)   # domain read from the folder 'summer'
    s = model.style_of(ref, 'summer')
    assert s.shape == (16,) and _close(out, model.apply(src, s, as_tensor=True))
    x_ref = EvalTransform(S)(load_rgb(ref)).unsqueeze(0)
    with torch.no_grad():
        assert _close(s, model.nets.style_encoder(x_ref, torch.tensor([2]))[0])
    batch = model.style_of([ref, images['winter'][0]], ['summer', 'winter'])
    assert batch.shape == (2, 16) and _close(batch[0], s)
    assert _close(model.style_of([ref, images['winter'][0]])[1], batch[1])   # both from their folders
    with pytest.raises(DomainError, match='give the reference\'s domain'):
        model.reference(src, load_rgb(ref))
    with pytest.raises(DomainError, match="'monsoon' is not a domain.*autumn \\(0\\)"):
        model.reference(src, ref, 'monsoon')
    with pytest.raises(DomainError, match='out of range'):
        model.style('4')


def test_image_kinds_and_batches_agree(model, images):
    paths = [images['autumn'][0], images['spring'][0], images['winter'][0]]
    s = model.style('summer', seed=3)
    by_path = model.apply(paths, s, as_tensor=True)   # a batch: one forward pass
    assert by_path.shape == (3, 3, S, S)
    pil = load_rgb(paths[1])
    x = EvalTransform(S)(pil)
    for image in (paths[1], pil, np.asarray(pil), x, x.unsqueeze(0)):
        out = model.apply(image, s, as_tensor=True)
        out = out[0] if out.dim() == 4 else out
        assert _close(out, by_path[1]), type(image)
    outs = model.apply(paths, torch.stack([s, model.style('winter')]))   # K styles -> K outputs
    assert len(outs) == 2 and len(outs[1]) == 3 and all(img.size == (S, S) for img in outs[1])
    for bad, error in ((np.zeros((4, 4)), 'H x W x 3 uint8'), (torch.zeros(2, 4, 8, 8), 'image tensor'),
                       ('missing.png', 'cannot use image missing.png'), ([], 'no images')):
        with pytest.raises(DataError, match=error):
            model.apply(bad, s)
    with pytest.raises(StyleError, match='16 values'):
        model.apply(paths[0], torch.zeros(12))


def test_keep_size_runs_at_the_sources_own_size(run, images):
    model = Translator.load(run, keep_size=True)
    assert model.size_multiple == 2   # the 32 px StarGAN v2 generator down-samples once
    photo = load_rgb(images['autumn'][0]).resize((81, 60))
    out = model.latent(photo, 'winter', seed=1)[0]
    assert out.size == (82, 60)       # 81 rounded to the nearest multiple of 2
    assert model.generator_size(3, 1) == (4, 4)
    sizes = [img.size for img in model.apply([photo, images['spring'][0]], model.style('summer'))]
    assert sizes == [(82, 60), (S, S)]   # two sizes: two forward passes, outputs in input order
    # the reference is still encoded at the training size
    assert torch.equal(model.style_of(photo, 'autumn'), Translator.load(run).style_of(photo, 'autumn'))


def test_interpolate_and_write_video(model, images, tmp_path):
    src = images['autumn'][0]
    styles = [model.style('winter', seed=1), model.style_of(images['summer'][0])]
    frames = model.interpolate(src, styles, num_frames=4, as_tensor=True)
    assert len(frames) == num_video_frames(2, 4) == model.num_frames(2, 4)
    assert _close(frames[0], model.apply(src, styles[0], as_tensor=True))
    assert _close(frames[-1], model.apply(src, styles[1], as_tensor=True))
    path = model.write_video(tmp_path / 'walk.mp4', src, torch.stack(styles), num_frames=4, fps=10)
    video, meta = read_video(path)
    assert len(video) == len(frames) and meta['size'] == (S, 2 * S)   # the source above its translation
    model.write_video(tmp_path / 'only.mp4', [src, src], styles, num_frames=4, with_source=False)
    assert read_video(tmp_path / 'only.mp4')[1]['size'] == (2 * S, S)
    with pytest.raises(StyleError, match='longer than 1000 frames'):
        model.write_video(tmp_path / 'long.mp4', src, model.styles('winter', num=200), num_frames=31)
    assert sorted(os.listdir(tmp_path)) == ['only.mp4', 'walk.mp4']


def test_threads_share_one_translator(model, images):
    src, results = images['spring'][0], {}
    expected = model.latent(src, 'winter', seed=5, num=2, as_tensor=True)

    def work(k):
        results[k] = model.latent(src, 'winter', seed=5, num=2, as_tensor=True)
    threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(torch.equal(a, b) for k in range(4) for a, b in zip(results[k], expected))
    assert not expected[0].requires_grad


def documented_snippet():
    """The first python block of the README's 'Python API' section."""
    with open(os.path.join(ROOT, 'README.md'), encoding='utf-8') as f:
        section = f.read().split('## Python API', 1)[1]
    return re.search(r'```python\n(.*?)```', section, re.S).group(1)


def test_the_documented_snippet_runs(run, tmp_path, monkeypatch):
    code = documented_snippet()
    assert code.count(DEMO_PATH) == 1
    shutil.copytree(os.path.join(ROOT, 'assets', 'representative'), tmp_path / 'assets' / 'representative')
    monkeypatch.chdir(tmp_path)
    exec(compile(code.replace(DEMO_PATH, repr(str(run))), 'README.md', 'exec'), {})
    assert Image.open('winter.png').size == (S, S) and Image.open('summer.png').size == (S, S)
    frames, meta = read_video('walk.mp4')
    assert len(frames) == num_video_frames(3, 31) and meta['size'] == (S, 2 * S)


def _packages_under(folder):
    return sorted('.'.join(os.path.relpath(d, ROOT).split(os.sep)) for d, _, files in os.walk(os.path.join(ROOT, folder))
                  if '__init__.py' in files)


def test_the_install_lists_every_package():
    tomllib = pytest.importorskip('tomllib')
    with open(os.path.join(ROOT, 'pyproject.toml'), 'rb') as f:
        listed = tomllib.load(f)['tool']['setuptools']['packages']
    assert sorted(listed) == sorted(['stargan_src'] + ['stargan_src.' + p for p in _packages_under('core')
                                                       + _packages_under('metrics')])


def test_installed_copy_imports_from_anywhere_without_top_level_core(run, tmp_path):
    """pip install --target (no dependencies, nothing global), then use it from another folder."""
    pytest.importorskip('setuptools')
    source = tmp_path / 'source'
    for name in ('core', 'metrics', 'stargan_src'):
        shutil.copytree(os.path.join(ROOT, name), source / name, ignore=shutil.ignore_patterns('__pycache__'))
    for name in ('pyproject.toml', 'README.md'):
        shutil.copy(os.path.join(ROOT, name), source / name)
    target = tmp_path / 'site'
    subprocess.run([sys.executable, '-m', 'pip', 'install', '--no-deps', '--no-build-isolation', '--no-index',
                    '--quiet', '--target', str(target), str(source)], check=True, capture_output=True)
    assert {'__init__.py', 'core', 'metrics'} <= set(os.listdir(target / 'stargan_src'))
    assert not (target / 'core').exists() and not (target / 'metrics').exists()   # nothing generic at the top
    code = ('import sys, torch; from stargan_src import Translator; '
            f'model = Translator.load({str(run)!r}); '
            'print(model.domains, model.latent(torch.zeros(3, 8, 8), "winter")[0].size); '
            'print(sys.modules["core"].__file__)')
    env = dict(os.environ, PYTHONPATH=str(target))
    out = subprocess.run([sys.executable, '-c', code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "['autumn', 'spring', 'summer', 'winter'] (32, 32)" in out.stdout
    assert out.stdout.strip().endswith(os.path.join('site', 'stargan_src', 'core', '__init__.py'))
    # a process that already holds another `core` gets one clear ImportError
    other = tmp_path / 'other' / 'core'
    other.mkdir(parents=True)
    (other / '__init__.py').write_text('')
    env['PYTHONPATH'] = f'{target}{os.pathsep}{other.parent}'
    out = subprocess.run([sys.executable, '-c', 'import core, stargan_src'], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert out.returncode == 1 and "already imported another 'core'" in out.stderr.strip().splitlines()[-1]
