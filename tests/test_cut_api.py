"""The Python API for the CUT family: Translator.load opens CUT run folders, *_net_G.pth files and released
generators as a OneSidedTranslator, which translates A -> B with the StarGAN v2 Translator's image rules."""
import io
import os
import threading

import numpy as np
import pytest
import torch
from PIL import Image
from test_cut_training import cut_flags, cut_layout  # noqa: F401  (fixture)

from core.config import parse_config
from core.cut.data import eval_transform
from core.cut.translate import truncated_png
from core.cut.networks import ResnetGenerator
from core.cut.trainer import build_generator
from core.cut.translator import STYLE_METHODS, NoStyleError, OneSidedTranslator, run_domain_names
from core.data.images import DataError, list_images, load_rgb
from core.translator import DomainError, FamilyError, Translator
from core.utils.errors import UserError
from core.utils.fileio import atomic_write_text
from main import main

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SRC_DIR = os.path.join(ROOT, 'assets', 'representative', 'synthetic-seasons', 'src', 'summer')
SRC = os.path.join(SRC_DIR, '00.png')
CROP = 32
DOMAINS = ('summer', 'winter')


def tiny_cut_config(*flags):
    return parse_config(['--mode', 'train', '--model', 'cut', '--dataroot', 'x', '--crop_size', str(CROP),
                         '--load_size', '36', '--ngf', '4', '--seed', '3', *flags])


def tiny_cut_run(folder, epochs=('latest', '3')):
    """A CUT run folder as training leaves it (config.json, run.json, <epoch>_net_G.pth) with random small
    generators (a different one per epoch); returns {epoch: generator}."""
    cfg = tiny_cut_config().with_facts(domain_names=DOMAINS)
    os.makedirs(folder, exist_ok=True)
    atomic_write_text(os.path.join(folder, 'config.json'), cfg.to_json() + '\n')
    atomic_write_text(os.path.join(folder, 'run.json'), cfg.facts.to_json() + '\n')
    generators = {}
    for k, epoch in enumerate(epochs):
        torch.manual_seed(k)
        generators[epoch] = build_generator(cfg).eval()
        torch.save(generators[epoch].state_dict(), os.path.join(folder, f'{epoch}_net_G.pth'))
    return generators


def expected(G, image, size=CROP):
    """G of CUT's test transform of `image` (a path): (3, size, size)."""
    with torch.no_grad():
        return G(eval_transform(load_rgb(image), size, 'resize_and_crop')[None])[0]


def close(a, b):
    """Equal within a tolerance relative to the tensors' scale."""
    return a.shape == b.shape and float((a - b).abs().max()) <= 1e-5 * max(1.0, float(b.abs().max()))


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    folder = str(tmp_path_factory.mktemp('cut') / 'run')
    return folder, tiny_cut_run(folder)


@pytest.fixture(scope='module')
def model(run):
    return Translator.load(run[0], device='cpu')


def test_a_run_folder_loads_its_latest_generator_with_its_flags_and_domains(run, model):
    folder, generators = run
    assert isinstance(model, OneSidedTranslator) and model.family == 'cut' and Translator.family == 'stargan-v2'
    assert model.domains == list(DOMAINS) and model.img_size == CROP and model.step is None
    assert model.path == os.path.join(folder, 'latest_net_G.pth') and model.epoch == 'latest'
    assert model.cfg.netG == 'resnet_6blocks' and model.cfg.ngf == 4 and model.device == torch.device('cpu')
    assert close(model.translate(SRC, as_tensor=True), expected(generators['latest'], SRC))
    third = Translator.load(folder, device='cpu', epoch='3')
    same = Translator.load(os.path.join(folder, '3_net_G.pth'), device='cpu')
    assert third.path == same.path and third.epoch == '3'
    assert close(same.translate(SRC, as_tensor=True), expected(generators['3'], SRC))


def test_a_released_generator_takes_its_description_from_keywords(tmp_path):
    """CUT / Hneg_SRC latest_net_G.pth: no config; 'module.' keys; the block count read from the file."""
    torch.manual_seed(0)
    G = ResnetGenerator(ngf=4, n_blocks=9).eval()
    torch.save({'module.' + k: v for k, v in G.state_dict().items()}, tmp_path / 'latest_net_G.pth')
    model = Translator.load(tmp_path / 'latest_net_G.pth', device='cpu', ngf=4, crop_size=CROP,
                            domain_names=['horse', 'zebra'])
    assert model.cfg.netG == 'resnet_9blocks' and model.domains == ['horse', 'zebra'] and model.img_size == CROP
    assert close(model.translate(SRC, as_tensor=True), expected(G, SRC))
    assert Translator.load(tmp_path, device='cpu', ngf=4, crop_size=CROP).domains == ['A', 'B']


def test_every_kind_of_image_and_batches_give_the_same_translations(model):
    x = eval_transform(load_rgb(SRC), CROP, 'resize_and_crop')
    one = model.translate(SRC, as_tensor=True)
    assert isinstance(model.translate(SRC), Image.Image) and model.translate(SRC).size == (CROP, CROP)
    batch = model.translate([SRC, load_rgb(SRC), np.asarray(load_rgb(SRC)), x], as_tensor=True)
    assert batch.shape == (4, 3, CROP, CROP) and all(close(b, one) for b in batch)
    assert close(model.translate(x[None].repeat(2, 1, 1, 1), as_tensor=True)[1], one)
    pil = model.translate([SRC, SRC])
    assert len(pil) == 2 and all(p.size == (CROP, CROP) for p in pil)
    assert not one.requires_grad


def test_keep_size_runs_each_size_group_at_its_own_size(run):
    model = Translator.load(run[0], device='cpu', keep_size=True)
    big = load_rgb(SRC).resize((48, 40))   # SRC is 64 x 64
    outs = model.translate([big, SRC, big], as_tensor=True)
    assert [tuple(o.shape) for o in outs] == [(3, 40, 48), (3, 64, 64), (3, 40, 48)]
    assert close(outs[2], model.translate(big, as_tensor=True))
    assert model.translate(torch.zeros(2, 3, 42, 46), as_tensor=True).shape == (2, 3, 44, 48)   # nearest multiples of 4


def test_threads_share_one_model(model):
    want = model.translate(SRC, as_tensor=True)
    got = [None] * 4

    def work(i):
        got[i] = model.translate(SRC, as_tensor=True)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(close(g, want) for g in got)


@pytest.mark.parametrize('method', STYLE_METHODS)
def test_the_style_methods_say_the_model_has_no_styles(model, method):
    with pytest.raises(NoStyleError, match=r'a one-sided CUT model has no styles: use translate\(image\)'):
        getattr(model, method)(SRC, 'winter')


def one_line(err):
    return '\n' not in str(err.value) and str(err.value)


def test_mistakes_are_one_clear_line(run, tmp_path):
    folder, _ = run
    with pytest.raises(UserError, match='does not exist; the folder\'s generators are epochs 3, latest') as err:
        Translator.load(folder, device='cpu', epoch='9')
    assert one_line(err)
    with pytest.raises(UserError, match='a one-sided model has two'):
        Translator.load(folder, device='cpu', domain_names=['a', 'b', 'c'])
    with pytest.raises(FamilyError, match='num_domains: keyword.* of a StarGAN v2 model'):
        Translator.load(folder, device='cpu', num_domains=2)
    with pytest.raises(TypeError, match='unexpected keyword.*style_dim'):
        Translator.load(folder, device='cpu', style_dim=8)
    with pytest.raises(UserError, match='--ngf must be at least 1'):
        Translator.load(folder, device='cpu', ngf=0)
    with pytest.raises(UserError, match=r'its generator has width 4 \(ngf\), not 8\. Give the keywords') as err:
        Translator.load(folder, device='cpu', ngf=8)
    assert one_line(err)
    with pytest.raises(UserError, match='does not match the networks built.*model.7.filt.*Give the keywords') as err:
        Translator.load(folder, device='cpu', no_antialias=True)   # stride-2 convs instead of blur-pool
    assert one_line(err)
    with pytest.raises(DataError) as err:
        Translator.load(folder, device='cpu').translate(str(tmp_path / 'missing.png'))
    assert one_line(err)


def test_a_blown_up_generator_is_refused_when_it_translates(run):
    """(A file holding NaN is refused when it loads; weights that blow up in memory are caught on output.)"""
    model = Translator.load(run[0], device='cpu')
    with torch.no_grad():
        model.generator.model[-2].bias.fill_(float('nan'))   # the last conv: NaN images
    with pytest.raises(UserError, match='NaN or infinite values'):
        model.translate(SRC)


def test_domain_mistakes_use_the_stargan_error_class():
    assert issubclass(DomainError, UserError) and issubclass(NoStyleError, UserError)


def test_a_trained_run_opens_as_translate_mode_reads_it(cut_layout, tmp_path):  # noqa: F811
    """The folder training writes: its flags and domain names, and the pixels --mode translate writes."""
    assert main(cut_flags(cut_layout, tmp_path)) == 0
    model = Translator.load(tmp_path / 'run', device='cpu')
    assert model.domains == list(run_domain_names(str(tmp_path / 'run'))) and model.img_size == CROP
    argv = ['--mode', 'translate', '--dataroot', str(cut_layout), '--name', 'run', '--checkpoints_dir', str(tmp_path),
            '--results_dir', str(tmp_path / 'results'), '--num_test', '1']
    assert main(argv) == 0
    first = list_images(str(cut_layout / 'testA'))[0]
    written = np.asarray(Image.open(tmp_path / 'results' / 'run' / 'test_latest' / 'images' / 'fake_B' / '0000.png'))
    assert np.array_equal(written, np.asarray(Image.open(io.BytesIO(truncated_png(model.translate(first, True))))))
    steps = sorted(tmp_path.glob('run/*_nets_ema.ckpt'))
    with pytest.raises(UserError, match='is a training checkpoint of a CUT run; give the run folder'):
        Translator.load(steps[-1], device='cpu')
