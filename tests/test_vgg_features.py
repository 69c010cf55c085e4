"""The frozen VGG16 feature option of LSeSim, PatchGCL and PUT, with a stand-in weight file.

The real torchvision file cannot be downloaded here; the tests write a file
with torchvision's VGG16 key layout and random weights, and check that it is
loaded exactly, stays frozen and out of checkpoints, and that a missing or
broken file is one clear error before any work.
"""
import dataclasses
import json

import pytest
import torch
from torchvision.models.vgg import cfgs, make_layers

import core.contrastive as contrastive
from conftest import assert_close_scaled, tiny_flags
from core.checks import check_inputs
from core.config import parse_config
from core.utils.fileio import safe_load
from core.contrastive import _vgg
from core.contrastive._vgg import load_vgg16_trunk, vgg16_trunk
from core.modes import MODES
from core.utils.errors import UserError
from core.utils.weights import ENV_VAR, WEIGHTS
from main import main
from plugin_helpers import build_plugin, feature_inputs, plugin_config

VGG_FLAGS = {'lsesim': '--sesim_features', 'fsesim': '--sesim_features', 'patchgcl': '--gcl_features',
             'put': '--put_features'}


@pytest.fixture(scope='session')
def vgg_file(tmp_path_factory):
    """A torchvision-layout VGG16 file (features up to relu4_3, random weights, plus an unused extra key)."""
    torch.manual_seed(0)
    features = make_layers(cfgs['D'])[:23]
    state = {f'features.{key}': value for key, value in features.state_dict().items()}
    state['classifier.0.bias'] = torch.zeros(8)
    folder = tmp_path_factory.mktemp('weights')
    torch.save(state, folder / WEIGHTS['vgg16'].filename)
    return folder, features.eval()


@pytest.fixture
def weights_present(vgg_file, monkeypatch):
    """The weight cache points at the stand-in file (its hash is not torchvision's, so no hash check)."""
    folder, features = vgg_file
    monkeypatch.setenv(ENV_VAR, str(folder))
    monkeypatch.setitem(WEIGHTS, 'vgg16', WEIGHTS['vgg16']._replace(sha256=None))
    yield features
    _vgg._CACHE.clear()


@pytest.fixture
def weights_missing(tmp_path, monkeypatch):
    monkeypatch.setenv(ENV_VAR, str(tmp_path / 'empty'))
    yield tmp_path / 'empty'
    _vgg._CACHE.clear()


def test_trunk_equals_torchvision_features(weights_present):
    x = torch.rand(2, 3, 32, 40) * 2 - 1
    maps = vgg16_trunk(torch.device('cpu'))(x)
    h = ((x + 1) / 2 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)) \
        / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    expected = []
    with torch.no_grad():
        for index, layer in enumerate(weights_present):
            h = layer(h)
            if index in (11, 18, 22):
                expected.append(h.clone())
    assert [tuple(m.shape) for m in maps] == [(2, 256, 8, 10), (2, 512, 4, 5), (2, 512, 4, 5)]
    for index, (a, b) in enumerate(zip(maps, expected)):
        assert_close_scaled(a, b, msg=f'map {index}')


def test_trunk_is_frozen_shared_and_outside_every_plugin(weights_present):
    trunk = vgg16_trunk(torch.device('cpu'))
    assert vgg16_trunk(torch.device('cpu')) is trunk and not trunk.training
    assert not any(p.requires_grad for p in trunk.parameters())
    for name, flag in VGG_FLAGS.items():
        loss_fn = build_plugin(name, flag, 'vgg16')
        assert not any(key.startswith('features') or 'vgg' in key for key in loss_fn.state_dict())
        assert not any(p is q for p in loss_fn.parameters() for q in trunk.parameters())
        inp = feature_inputs()
        x_q = inp.x_q.clone().requires_grad_()
        inp = dataclasses.replace(inp, x_q=x_q)
        loss = loss_fn(inp)[0]
        assert torch.isfinite(loss), name
        loss.backward()
        assert x_q.grad is not None and x_q.grad.abs().sum() > 0, name   # through VGG into the image
        assert all(p.grad is None for p in trunk.parameters())
        assert all(f.grad is None for f in inp.feat_q), name              # encoder maps unused


def test_vgg_channels_shape_the_plugin_heads(weights_present):
    gcl = build_plugin('patchgcl', '--gcl_features', 'vgg16')
    assert [layer.embed.in_features for layer in gcl.layers] == [256, 512, 512]
    lsesim = build_plugin('lsesim', '--sesim_features', 'vgg16')
    assert [head[0].in_channels for head in lsesim.heads] == [256, 512, 512]
    put = build_plugin('put', '--put_features', 'vgg16')
    assert not put.uses_patches and [m[0].in_features for m in put.sampler.mlp] == [256, 512, 512]


@pytest.mark.parametrize('name', sorted(VGG_FLAGS))
def test_missing_weight_file_is_a_requirement_not_a_value_error(weights_missing, name):
    cfg = plugin_config(name).replace(**{VGG_FLAGS[name][2:]: 'vgg16'})
    errors = contrastive.get(name).requirements(cfg)
    assert any(VGG_FLAGS[name] in e and 'bash download.sh vgg16' in e for e in errors)
    assert contrastive.requirement_errors(cfg) == errors
    assert contrastive.get(name).validate(cfg) == []              # the values themselves are fine
    with pytest.raises(UserError, match='download.sh vgg16'):
        vgg16_trunk(torch.device('cpu'))


def test_only_training_modes_check_the_requirements(weights_missing):
    flags = ['--patch_loss', 'put=1', '--put_features', 'vgg16', '--train_img_dir', '.', '--val_img_dir', '.']
    for mode, checked in (('train', True), ('demo', True), ('sample', False), ('eval', False)):
        try:
            check_inputs(parse_config(['--mode', mode, '--eval_every', '0', *flags]), MODES[mode])
            message = ''
        except UserError as err:
            message = str(err)
        assert ('--put_features vgg16: missing weight file' in message) == checked, mode


def test_active_plugins_that_share_a_flag_report_a_missing_file_once(weights_missing):
    cfg = plugin_config('fsesim', '--patch_loss', 'lsesim=1', '--sesim_features', 'vgg16')
    assert len(contrastive.requirement_errors(cfg)) == 1
    assert contrastive.requirement_errors(plugin_config('fsesim')) == []


def test_missing_weights_stop_training_before_any_work(weights_missing, seasons32, tmp_path, capsys):
    assert main(tiny_flags(seasons32, tmp_path, '--patch_loss', 'patchgcl=1', '--gcl_features', 'vgg16')) == 1
    err = capsys.readouterr().err
    assert '--gcl_features vgg16' in err and 'bash download.sh vgg16' in err and 'Traceback' not in err
    assert not (tmp_path / 'checkpoints').exists()


def test_vgg_features_need_the_fake_image_as_query(weights_present):
    cfg = plugin_config('patchgcl', '--query_side', 'real', '--cyc_mode', 'identity')
    errors = contrastive.get('patchgcl').validate(cfg.replace(gcl_features='vgg16'))
    assert any('--query_side fake' in e for e in errors)


def test_broken_weight_files_are_clear_errors(tmp_path):
    corrupt = tmp_path / 'corrupt.pth'
    corrupt.write_bytes(b'not a torch file')
    with pytest.raises(UserError, match='not a readable VGG16 weight file.*download.sh vgg16'):
        load_vgg16_trunk(str(corrupt))
    other = tmp_path / 'other.pth'
    torch.save({'features.0.weight': torch.zeros(1, 3, 3, 3)}, other)
    with pytest.raises(UserError, match="not torchvision's VGG16"):
        load_vgg16_trunk(str(other))


def test_training_with_vgg_features_keeps_vgg_out_of_checkpoints(weights_present, seasons32, tmp_path):
    flags = tiny_flags(seasons32, tmp_path, '--lambda_src', '0', '--lambda_dce', '0', '--patch_loss', 'lsesim=1',
                       '--sesim_features', 'vgg16', '--total_iters', '2', '--sample_every', '0')
    assert main(flags) == 0
    nets = safe_load(str(tmp_path / 'checkpoints' / '000002_nets.ckpt'))
    assert set(nets) == {'generator', 'mapping_network', 'style_encoder', 'discriminator', 'lsesim', 'config',
                         'run', 'digest'}
    assert all(key.startswith('heads.') for key in nets['lsesim'])
    optims = safe_load(str(tmp_path / 'checkpoints' / '000002_optims.ckpt'))
    assert 'lsesim' in optims
    stats = [json.loads(line) for line in (tmp_path / 'checkpoints' / 'stats.jsonl').read_text().splitlines()]
    assert stats and all(torch.isfinite(torch.tensor(s['G/latent/lsesim'])) for s in stats)
