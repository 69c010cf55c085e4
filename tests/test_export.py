"""--mode export: the ONNX files of tiny random-initialised models, run by onnxruntime against PyTorch."""
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

import core.export
from conftest import tiny_flags
from core.checkpoint import training_payloads, write_training_state
from core.config import parse_config
from core.data.images import list_images
from core.data.loader import pil_to_tensor
from core.inference import domain_averages
from core.model import build_nets

from core.visualize import to_uint8
from main import main

onnx = pytest.importorskip('onnx')
onnxruntime = pytest.importorskip('onnxruntime')

DOMAINS = ('autumn', 'spring', 'summer', 'winter')
NETWORKS = ('generator', 'mapping_network', 'style_encoder')
DOCS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'docs', 'export.md')


def _checkpoint(run, arch):
    """Save the EMA networks of a tiny random-initialised model as step 2; returns (cfg, nets_ema)."""
    cfg = parse_config(tiny_flags(run, run, '--arch', arch)).with_facts(domain_names=DOMAINS)
    torch.manual_seed(0)
    nets, nets_ema = build_nets(cfg)
    write_training_state(str(run / 'checkpoints'), 2, training_payloads(2, nets, nets_ema, {}, cfg))
    return cfg, nets_ema


def _export_flags(run, out, *extra):
    return ['--mode', 'export', '--checkpoint', str(run / 'checkpoints' / '000002_nets_ema.ckpt'),
            '--out', str(out), *extra]


@pytest.fixture(scope='module', params=['stargan-v2', 'hsrc'])
def exported(request, tmp_path_factory):
    """(cfg, nets_ema, out folder) of an exported tiny model of each architecture."""
    run = tmp_path_factory.mktemp(request.param)
    cfg, nets_ema = _checkpoint(run, request.param)
    out = run / 'onnx'
    # stargan-v2 by file, hsrc by run folder and step: both ways of naming the model.
    flags = _export_flags(run, out) if request.param == 'stargan-v2' else \
        ['--mode', 'export', '--checkpoint_dir', str(run / 'checkpoints'), '--resume_iter', 'latest', '--out', str(out)]
    assert main(flags) == 0
    return cfg, nets_ema, out


def _run(out, net, **inputs):
    session = onnxruntime.InferenceSession(str(out / f'{net}.onnx'), providers=['CPUExecutionProvider'])
    return session.run(None, {k: v.numpy() for k, v in inputs.items()})[0]


def _assert_close(onnx_out, torch_out):
    """Max abs difference within 1e-4 of the output's scale (at least 1)."""
    ref = torch_out.numpy()
    assert onnx_out.shape == ref.shape
    assert np.abs(onnx_out - ref).max() <= 1e-4 * max(1.0, float(np.abs(ref).max()))


def _files(folder):
    return {name: (folder / name).read_bytes() for name in sorted(os.listdir(folder))} if folder.exists() else {}


# ----------------------------------------------------------------------------------------------
# The files
# ----------------------------------------------------------------------------------------------

def test_export_writes_three_onnx_files_and_model_json(exported):
    cfg, nets_ema, out = exported
    assert sorted(os.listdir(out)) == ['generator.onnx', 'mapping_network.onnx', 'model.json', 'style_encoder.onnx']
    meta = json.loads((out / 'model.json').read_text())
    assert meta['format'] == 'stargan-v2-onnx/1' and meta['arch'] == cfg.arch
    assert (meta['img_size'], meta['num_domains'], meta['latent_dim'], meta['style_dim']) == (32, 4, 8, 16)
    assert meta['domain_names'] == list(DOMAINS)
    assert (meta['checkpoint'], meta['step'], meta['opset']) == ('000002_nets_ema.ckpt', 2, 17)
    assert meta['generator_size_multiple'] == (4 if cfg.arch == 'hsrc' else 2)
    assert meta['pixels']['range'] == [-1.0, 1.0] and meta['pixels']['channel_order'] == 'RGB'
    export_cfg = cfg.replace(seed=parse_config(['--mode', 'export']).seed)   # --seed of the export, as translate
    s_avg = domain_averages(nets_ema.mapping_network, export_cfg.latent_dim, export_cfg.seed, torch.device('cpu'))   # the centre --psi uses
    assert np.allclose(meta['style_average'], s_avg.numpy(), rtol=1e-6, atol=1e-6 * float(s_avg.abs().max()))
    for name in NETWORKS:
        entry = meta['networks'][name]
        assert entry['sha256'] == hashlib.sha256((out / entry['file']).read_bytes()).hexdigest()


@pytest.mark.parametrize('name', NETWORKS)
def test_the_onnx_graphs_have_the_inputs_model_json_describes(exported, name):
    _, _, out = exported
    entry = json.loads((out / 'model.json').read_text())['networks'][name]
    model = onnx.load(str(out / entry['file']))
    onnx.checker.check_model(model)
    assert max(op.version for op in model.opset_import if op.domain in ('', 'ai.onnx')) >= 17
    dims = lambda value: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
    assert {v.name: dims(v) for v in model.graph.input} == {k: v['shape'] for k, v in entry['inputs'].items()}
    assert {v.name: dims(v) for v in model.graph.output} == {k: v['shape'] for k, v in entry['outputs'].items()}


# ----------------------------------------------------------------------------------------------
# onnxruntime against PyTorch
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize('batch', [1, 3])
@pytest.mark.parametrize('size', [(32, 32), (48, 64)])
def test_generator_matches_pytorch_at_any_batch_and_size(exported, batch, size):
    cfg, nets_ema, out = exported
    gen = torch.Generator().manual_seed(batch)
    x_src = torch.rand(batch, 3, *size, generator=gen) * 2 - 1          # (N, 3, H, W)
    s_trg = torch.randn(batch, cfg.style_dim, generator=gen)            # (N, style_dim)
    with torch.no_grad():
        x_fake = nets_ema.generator(x_src, s_trg)
    assert x_fake.shape == (batch, 3, *size)
    _assert_close(_run(out, 'generator', x_src=x_src, s_trg=s_trg), x_fake)


def test_generator_applies_one_style_to_every_source(exported):
    cfg, nets_ema, out = exported
    x_src = torch.rand(3, 3, 32, 32) * 2 - 1
    s_trg = torch.randn(1, cfg.style_dim)
    with torch.no_grad():
        x_fake = nets_ema.generator(x_src, s_trg)
    _assert_close(_run(out, 'generator', x_src=x_src, s_trg=s_trg), x_fake)


@pytest.mark.parametrize('batch', [1, 5])
def test_mapping_network_and_style_encoder_match_pytorch(exported, batch):
    cfg, nets_ema, out = exported
    gen = torch.Generator().manual_seed(batch)
    y = torch.randint(0, cfg.num_domains, (batch,), generator=gen)
    z_trg = torch.randn(batch, cfg.latent_dim, generator=gen)
    x_ref = torch.rand(batch, 3, 32, 32, generator=gen) * 2 - 1
    with torch.no_grad():
        s_trg, s_ref = nets_ema.mapping_network(z_trg, y), nets_ema.style_encoder(x_ref, y)
    _assert_close(_run(out, 'mapping_network', z_trg=z_trg, y_trg=y), s_trg)
    _assert_close(_run(out, 'style_encoder', x_ref=x_ref, y_ref=y), s_ref)


def _docs_example():
    text = open(DOCS, encoding='utf-8').read()
    section = text[text.index('## Translating one image without PyTorch'):]
    return re.search(r'```python\n(.*?)```', section, re.S).group(1)


def test_the_docs_example_translates_an_image_without_pytorch(exported, seasons32, tmp_path):
    cfg, nets_ema, out = exported
    code = _docs_example()
    assert len(code.strip().splitlines()) == 10 and 'torch' not in code
    shutil.copytree(out, tmp_path / 'onnx')
    shutil.copy(list_images(str(seasons32 / 'val' / 'summer'))[0], tmp_path / 'photo.jpg')
    (tmp_path / 'example.py').write_text(code)
    blocked = 'import sys; sys.modules["torch"] = None; exec(open("example.py").read())'   # any torch import fails
    done = subprocess.run([sys.executable, '-c', blocked], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    # The same translation in PyTorch: bilinear resize, F(z, winter), G, rounding as save_image.
    photo = Image.open(tmp_path / 'photo.jpg').convert('RGB').resize((32, 32), Image.Resampling.BILINEAR)
    z_trg = torch.from_numpy(np.random.default_rng(0).standard_normal((1, cfg.latent_dim), np.float32))
    with torch.no_grad():
        s_trg = nets_ema.mapping_network(z_trg, torch.tensor([DOMAINS.index('winter')]))
        x_fake = nets_ema.generator(pil_to_tensor(photo)[None], s_trg)
    expected = to_uint8(x_fake)[0].permute(1, 2, 0).numpy().astype(int)   # (32, 32, 3)
    got = np.asarray(Image.open(tmp_path / 'photo_winter.png'), dtype=int)
    assert got.shape == (32, 32, 3) and np.abs(got - expected).max() <= 1


# ----------------------------------------------------------------------------------------------
# Errors: one line, nothing written
# ----------------------------------------------------------------------------------------------

def _one_error_line(capsys):
    err = capsys.readouterr().err.strip()
    assert err.startswith('error: ') and '\n' not in err and 'Traceback' not in err
    return err


@pytest.fixture(scope='module')
def small_run(tmp_path_factory):
    run = tmp_path_factory.mktemp('errors')
    _checkpoint(run, 'hsrc')
    return run


def test_without_onnx_export_says_how_to_install_it(small_run, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, 'onnx', None)   # import onnx fails, find_spec finds nothing
    out = small_run / 'no-onnx'
    assert main(_export_flags(small_run, out)) == 1
    assert 'pip install onnx' in _one_error_line(capsys)
    assert not out.exists()
    with pytest.raises(core.export.ExportError, match='pip install onnx'):   # called from code, too
        core.export.export_networks(None, {'networks': {'generator': {}}, 'img_size': 32}, str(out))


def test_out_must_be_given_and_be_a_folder(small_run, capsys):
    assert main(['--mode', 'export', '--checkpoint', str(small_run / 'checkpoints' / '000002_nets_ema.ckpt')]) == 1
    assert '--mode export needs --out DIR' in _one_error_line(capsys)
    a_file = small_run / 'model.onnx'
    a_file.write_bytes(b'keep')
    assert main(_export_flags(small_run, a_file)) == 1
    assert '--out' in (err := _one_error_line(capsys)) and 'is a file, not a folder' in err
    assert a_file.read_bytes() == b'keep'


def test_a_missing_checkpoint_is_one_line(small_run, tmp_path, capsys):
    flags = ['--mode', 'export', '--checkpoint', str(small_run / 'nope_nets_ema.ckpt'), '--out', str(tmp_path / 'o')]
    assert main(flags) == 1
    assert 'checkpoint file not found' in _one_error_line(capsys)
    assert not (tmp_path / 'o').exists()


def test_a_failed_export_leaves_the_folder_as_it_was(small_run, monkeypatch):
    out = small_run / 'onnx'
    real = core.export.onnx_bytes

    def fails_on_the_last(net, meta, name):
        if name == 'style_encoder':
            raise RuntimeError('export failed')
        return real(net, meta, name)
    monkeypatch.setattr(core.export, 'onnx_bytes', fails_on_the_last)
    with pytest.raises(RuntimeError, match='export failed'):
        main(_export_flags(small_run, out))
    assert _files(out) == {}                          # a new folder: nothing written
    monkeypatch.setattr(core.export, 'onnx_bytes', real)
    assert main(_export_flags(small_run, out)) == 0
    before = _files(out)
    monkeypatch.setattr(core.export, 'onnx_bytes', fails_on_the_last)
    with pytest.raises(RuntimeError, match='export failed'):
        main(_export_flags(small_run, out))
    assert _files(out) == before                      # an earlier export: unchanged, no temporary file
