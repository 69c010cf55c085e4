"""The training step: encoder reuse, gradient routing, schedules, EMA, checkpoint safety."""
import os

import pytest
import torch
from munch import Munch

from conftest import assert_close_scaled, tiny_flags
from core.checkpoint import (ModelFileError, atomic_save, ckpt_path, latest_step, safe_load,
                             save_training_state)
from core.config import parse_config
from core.utils.distributed import Runtime
from core.contrastive.objective import build_objective
from core.losses import _semantic_loss
from core.model import HSRCGenerator
from core.schedules import gamma_at, lambda_ds_at
from core.trainer import StepHook, build_training, train, train_step, update_ema

TINY = ['--mode', 'train', '--img_size', '32', '--num_domains', '3', '--base_dim', '8', '--max_conv_dim', '16',
        '--hidden_dim', '16', '--style_dim', '8', '--latent_dim', '4', '--batch_size', '2', '--n_patch', '8',
        '--patch_dim', '8', '--lambda_src', '0.1', '--lambda_dce', '1', '--use_hard', '--use_curriculum',
        '--total_iters', '10']


def _cfg(*extra):
    return parse_config(TINY + list(extra))


def _batch(cfg, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = lambda: torch.randn(cfg.batch_size, 3, cfg.img_size, cfg.img_size, generator=g)  # noqa: E731
    y = lambda: torch.randint(0, cfg.num_domains, (cfg.batch_size,), generator=g)  # noqa: E731
    return Munch(x_src=x(), y_src=y(), x_ref=x(), x_ref2=x(), y_ref=y())


@pytest.mark.parametrize('extra', [[], ['--cyc_mode', 'identity', '--query_side', 'real', '--arch', 'hsrc'],
                                   ['--lambda_src', '0', '--lambda_dce', '0']])
def test_encoder_runs_twice_per_g_step(extra):
    """x_real once and x_fake once per G step; the D steps reuse the latent step's encoding."""
    cfg = _cfg(*extra)
    run = build_training(cfg, Runtime(0, 1, 0, torch.device('cpu')))
    calls = []
    original = run.nets.generator.run_encoder
    run.nets.generator.run_encoder = lambda x, taps=(): calls.append(x) or original(x, taps)
    stats = train_step(run, cfg, _batch(cfg), 0, torch.device('cpu'))
    assert len(calls) == 4
    assert all(torch.isfinite(v) for v in stats.values())


def test_train_step_updates_the_right_networks():
    cfg = _cfg()
    run = build_training(cfg, Runtime(0, 1, 0, torch.device('cpu')))
    before = {name: [p.detach().clone() for p in net.parameters()] for name, net in run.nets.items()}
    ema_before = [p.clone() for p in run.nets_ema.generator.parameters()]
    train_step(run, cfg, _batch(cfg), 0, torch.device('cpu'))
    for name, net in run.nets.items():
        assert any(not torch.equal(a, b) for a, b in zip(before[name], net.parameters())), name
    assert any(not torch.equal(a, b) for a, b in zip(ema_before, run.nets_ema.generator.parameters()))
    # every network is trainable again after the step (freezing is temporary)
    assert all(p.requires_grad for net in run.nets.values() for p in net.parameters())


@pytest.mark.parametrize('query_side', ['fake', 'real'])
def test_semantic_gradient_reaches_only_the_query_image(query_side):
    cfg = _cfg('--query_side', query_side, '--arch', 'hsrc')
    torch.manual_seed(0)
    g = HSRCGenerator(32, 8, 16, 0, base_dim=8)
    objective = build_objective(cfg, g)
    x_real = torch.randn(2, 3, 32, 32, requires_grad=True)
    x_fake = torch.randn(2, 3, 32, 32, requires_grad=True)
    inp = Munch(enc_real=g.run_encoder(x_real, cfg.nce_layers), x_real=x_real, x_fake=x_fake)
    loss, stats = _semantic_loss(objective, inp, g.run_encoder(x_fake, cfg.nce_layers), cfg, 0, None)
    loss.backward()
    query, key = (x_fake, x_real) if query_side == 'fake' else (x_real, x_fake)
    assert query.grad is not None and query.grad.abs().sum() > 0
    assert key.grad is None
    assert set(stats) >= {'src', 'hdce', 'hdce/infonce'}


def test_lambda_ds_closed_form_equals_upstream_decrement():
    lam0, ds_iter, value = 2.0, 50, 2.0
    for step in range(60):
        assert lambda_ds_at(step, lam0, ds_iter) == pytest.approx(max(value, 0.0), abs=1e-9)
        if value > 0:
            value -= lam0 / ds_iter


def test_gamma_schedule():
    assert gamma_at(0, 50, 1, 100, True) == 50 and gamma_at(100, 50, 1, 100, True) == 1
    values = [gamma_at(s, 50, 1, 100, True) for s in range(0, 101, 10)]
    assert values == sorted(values, reverse=True)
    assert gamma_at(70, 50, 1, 100, False) == 50


def test_ema_update_formula():
    cfg = _cfg()
    run = build_training(cfg, Runtime(0, 1, 0, torch.device('cpu')))
    for p in run.nets.generator.parameters():
        p.data.add_(1.0)
    old = [p.clone() for p in run.nets_ema.generator.parameters()]
    update_ema(run.nets, run.nets_ema, 0.9)
    for e, o, n in zip(run.nets_ema.generator.parameters(), old, run.nets.generator.parameters()):
        assert_close_scaled(e, 0.9 * o + 0.1 * n)


def test_unsafe_checkpoint_is_refused(tmp_path):
    path = tmp_path / 'evil.ckpt'
    torch.save({'generator': {'w': torch.zeros(1)}, 'payload': Munch(a=1)}, str(path))   # needs unpickling a class
    with pytest.raises(ModelFileError) as err:
        safe_load(str(path))
    assert 'refusing to unpickle' in str(err.value)
    (tmp_path / 'cut.ckpt').write_bytes(b'PK\x03\x04 truncated')
    with pytest.raises(ModelFileError) as err:
        safe_load(str(tmp_path / 'cut.ckpt'))
    assert 'truncated or corrupt' in str(err.value)


def test_interrupted_save_keeps_the_previous_file(tmp_path, monkeypatch):
    path = str(tmp_path / 'a.ckpt')
    atomic_save({'x': torch.ones(3)}, path)

    def dies_midway(obj, f):
        f.write(b'partial')
        raise KeyboardInterrupt
    monkeypatch.setattr(torch, 'save', dies_midway)
    with pytest.raises(KeyboardInterrupt):
        atomic_save({'x': torch.zeros(3)}, path)
    monkeypatch.undo()
    assert torch.equal(safe_load(path)['x'], torch.ones(3))
    assert os.listdir(tmp_path) == ['a.ckpt']
    mask = os.umask(0)
    os.umask(mask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask   # not mkstemp's private 0600


def test_latest_step_ignores_incomplete_saves(tmp_path):
    cfg = _cfg('--checkpoint_dir', str(tmp_path))
    run = build_training(cfg, Runtime(0, 1, 0, torch.device('cpu')))
    save_training_state(str(tmp_path), 4, run.nets, run.nets_ema, run.optims, cfg)
    atomic_save({'generator': {}}, ckpt_path(str(tmp_path), 8, 'nets'))   # a save killed after the first file
    assert latest_step(str(tmp_path)) == 4


class _Recorder(StepHook):
    def __init__(self):
        self.calls = []

    def start(self, run, device):
        self.calls.append(('start', sorted(run.nets), device.type))

    def before(self, step):
        self.calls.append(('before', step))

    def after(self, step, stats):
        assert all(isinstance(v, torch.Tensor) for v in stats.values())   # not synced for the hook
        self.calls.append(('after', step, sorted(stats)[:2]))


def test_train_calls_the_hook_around_every_step_and_a_resume_only_for_the_rest(seasons32, tmp_path):
    flags = tiny_flags(seasons32, tmp_path, '--sample_every', '0', '--save_every', '2')
    hook = _Recorder()
    assert train(parse_config(flags), hook) == 4
    nets = ['discriminator', 'generator', 'mapping_network', 'patch_sample', 'style_encoder']
    keys = ['D/latent/fake', 'D/latent/real']
    assert hook.calls == [('start', nets, 'cpu')] + [c for s in range(4) for c in (('before', s), ('after', s, keys))]
    cfg = parse_config(flags + ['--total_iters', '6', '--ds_iter', '6', '--resume_iter', 'latest'])
    hook = _Recorder()
    assert train(cfg, hook) == 6
    assert [c for c in hook.calls if c[0] == 'before'] == [('before', 4), ('before', 5)]
