"""--mode export for the CUT family: the generator alone (image -> image) as ONNX with its model.json,
run by onnxruntime against PyTorch and against the Python API."""
import hashlib
import json
import os

import pytest
import torch

from core.cut.data import eval_transform
from core.data.images import load_rgb
from core.translator import Translator
from main import main
from test_cut_api import CROP, DOMAINS, SRC, tiny_cut_run

onnx = pytest.importorskip('onnx')
onnxruntime = pytest.importorskip('onnxruntime')
from test_export import _assert_close, _run  # noqa: E402  (needs onnxruntime)


def _flags(run_dir, out, *extra):
    return ['--mode', 'export', '--model', 'cut', '--checkpoints_dir', str(run_dir.parent), '--name', run_dir.name,
            '--out', str(out), *extra]


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
    """(the run's latest generator, out folder) of an exported tiny CUT run."""
    run_dir = tmp_path_factory.mktemp('cut') / 'run'
    generators = tiny_cut_run(str(run_dir))
    out = run_dir.parent / 'onnx'
    assert main(_flags(run_dir, out, '--device', 'cpu')) == 0
    return generators['latest'], out, run_dir


def test_export_writes_the_generator_and_model_json(exported):
    _, out, _ = exported
    assert sorted(os.listdir(out)) == ['generator.onnx', 'model.json']
    meta = json.loads((out / 'model.json').read_text())
    assert (meta['format'], meta['family'], meta['netG'], meta['ngf']) == ('cut-onnx/1', 'cut', 'resnet_6blocks', 4)
    assert (meta['crop_size'], meta['domain_names'], meta['generator_size_multiple']) == (CROP, list(DOMAINS), 4)
    assert (meta['checkpoint'], meta['epoch'], meta['opset']) == ('latest_net_G.pth', 'latest', 17)
    assert meta['pixels']['range'] == [-1.0, 1.0] and meta['pixels']['from_uint8'] == 'x = u8 / 127.5 - 1'
    entry = meta['networks']['generator']
    assert list(meta['networks']) == ['generator'] and entry['file'] == 'generator.onnx'
    assert entry['sha256'] == hashlib.sha256((out / 'generator.onnx').read_bytes()).hexdigest()
    model = onnx.load(str(out / 'generator.onnx'))
    dims = lambda value: [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]
    assert {v.name: dims(v) for v in model.graph.input} == {'x_src': ['batch', 3, 'height', 'width']}
    assert {v.name: dims(v) for v in model.graph.output} == {'x_fake': ['batch', 3, 'height', 'width']}


@pytest.mark.parametrize('batch', [1, 3])
@pytest.mark.parametrize('size', [(32, 32), (48, 64)])
def test_the_generator_matches_pytorch_at_any_batch_and_size(exported, batch, size):
    G, out, _ = exported
    x_src = torch.rand(batch, 3, *size, generator=torch.Generator().manual_seed(batch)) * 2 - 1
    with torch.no_grad():
        x_fake = G(x_src)
    _assert_close(_run(out, 'generator', x_src=x_src), x_fake)


def test_the_onnx_file_translates_as_the_python_api(exported):
    _, out, run_dir = exported
    x_src = eval_transform(load_rgb(SRC), CROP, 'resize_and_crop')[None]   # the API's input for SRC
    api = Translator.load(run_dir, device='cpu').translate(SRC, as_tensor=True)   # (3, CROP, CROP)
    _assert_close(_run(out, 'generator', x_src=x_src), api[None])


def test_a_missing_generator_or_out_is_one_line(exported, tmp_path, capsys):
    _, _, run_dir = exported
    assert main(_flags(run_dir, tmp_path / 'o', '--epoch', '9')) == 1
    err = capsys.readouterr().err
    assert err.count('\n') == 1 and '9_net_G.pth does not exist' in err
    assert main(_flags(run_dir, tmp_path / 'o')[:-2]) == 1
    assert '--mode export needs --out DIR' in capsys.readouterr().err
    assert not (tmp_path / 'o').exists()
