"""Mixed precision, channels-last, torch.compile and lazy R1: each trains like the fp32 eager loop.

Tolerances, measured on tiny networks: bf16 changes the first-iteration losses by
up to about 1e-2 relative (bf16 keeps 8 bits of mantissa), so 3e-2 is allowed;
channels-last and compiled kernels only reorder fp32 arithmetic (about 1e-6).
"""
import math
import shutil

import pytest
import torch

from conftest import tiny_flags
from core import checks, trainer
from core.utils import distributed
from core.config import ConfigError, parse_config
from core.data.loader import make_train_iterator
from core.checkpoint import KINDS, ckpt_path, named_tensors
from core.utils.fileio import safe_load
from main import main


def losses(data, run, steps, *extra):
    """The logged losses of `steps` iterations (one dict per iteration) and the run itself."""
    cfg = trainer.with_domain_names(parse_config(tiny_flags(data, run, *extra)))
    rt = distributed.setup(cfg)
    built = trainer.build_training(cfg, rt)
    batches = make_train_iterator(cfg, 0, rt.device)
    out = [{k: float(v) for k, v in trainer.train_step(built, cfg, next(batches), step, rt.device).items()}
           for step in range(steps)]
    batches.close()
    return out, built


def max_relative(a, b):
    """The largest difference between two dicts of logged scalars, each relative to its own value."""
    return max(abs(a[k] - b[k]) / max(abs(a[k]), 1e-6) for k in a)


# Every kind of network: G, F, E, D, the shared patch heads (SRC, hDCE) and a plug-in's own head.
EVERY_NETWORK = ('--patch_loss', 'lsesim=1')
NETWORKS = {'generator', 'mapping_network', 'style_encoder', 'discriminator', 'patch_sample', 'lsesim'}


def test_bf16_trains_with_finite_losses_close_to_fp32(seasons32, tmp_path):
    fp32, _ = losses(seasons32, tmp_path, 1, *EVERY_NETWORK)
    bf16, run = losses(seasons32, tmp_path, 3, *EVERY_NETWORK, '--amp', 'bf16')
    assert all(math.isfinite(v) for step in bf16 for v in step.values())
    assert max_relative(fp32[0], bf16[0]) < 3e-2
    assert max_relative(fp32[0], bf16[0]) > 0   # autocast really ran in bf16
    # Weights, buffers and EMA copies of every network, and the Adam moments of every parameter, stay fp32.
    assert set(run.nets) == set(run.optims) == NETWORKS
    for kind, nets in (('nets', run.nets), ('nets_ema', run.nets_ema)):
        for name, net in nets.items():
            floats = [t for t in net.state_dict().values() if t.is_floating_point()]
            assert floats and all(t.dtype == torch.float32 for t in floats), (kind, name)
    for name, net in run.nets.items():
        state = run.optims[name].state
        for p in net.parameters():
            assert p in state, (name, 'a parameter without Adam moments')
            assert state[p]['exp_avg'].dtype == state[p]['exp_avg_sq'].dtype == torch.float32, name


def test_bf16_checkpoints_are_fp32(seasons32, tmp_path):
    assert main(tiny_flags(seasons32, tmp_path, *EVERY_NETWORK, '--amp', 'bf16', '--total_iters', '2')) == 0
    for kind in KINDS:   # every network, its EMA copy and its optimizer state (moments included)
        payload = safe_load(ckpt_path(str(tmp_path / 'checkpoints'), 2, kind))
        floats = {name: t.dtype for name, t in named_tensors(payload) if t.is_floating_point()}
        expected = {'generator', 'mapping_network', 'style_encoder'} if kind == 'nets_ema' else NETWORKS
        assert {name.split('/')[0] for name in floats} == expected, kind
        assert kind != 'optims' or {name.split('/')[0] for name in floats if name.endswith('/exp_avg_sq')} == expected
        assert [name for name, dtype in floats.items() if dtype != torch.float32] == [], kind


def test_channels_last_matches_the_default_layout(seasons32, tmp_path):
    default, _ = losses(seasons32, tmp_path, 1)
    channels_last, run = losses(seasons32, tmp_path, 1, '--channels_last')
    assert max_relative(default[0], channels_last[0]) < 1e-5
    conv = run.nets.generator.from_rgb.weight
    assert conv.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.skipif(checks.compiler_error(False) is not None, reason='torch.compile needs a C++ compiler')
def test_compile_trains_like_eager(seasons32, tmp_path):
    # --lr 1e-5: Adam turns rounding noise on parameters whose true gradient is zero into lr-sized
    # steps (see test_distributed.py); at the default lr that alone moves the second losses by ~2e-4.
    eager, _ = losses(seasons32, tmp_path, 2, '--lr', '1e-5')
    compiled, run = losses(seasons32, tmp_path, 2, '--lr', '1e-5', '--compile')
    for a, b in zip(eager, compiled):
        assert max_relative(a, b) < 1e-4
    # compiled in place: parameters and checkpoint keys are those of the eager networks
    assert not any('_orig_mod' in k for k in run.nets.generator.state_dict())


def test_lazy_r1_penalises_every_kth_discriminator_step(seasons32, tmp_path):
    every, _ = losses(seasons32, tmp_path, 2, '--r1_every', '2')
    for step in every:   # D steps 0, 2, 4, ... are the latent ones: R1 there, scaled by 2
        assert step['D/latent/reg'] > 0 and step['D/ref/reg'] == 0
    assert trainer.r1_this_step(parse_config(['--mode', 'train', '--r1_every', '3', '--lambda_reg', '0.5']), 1, 0) \
        is None
    assert trainer.r1_this_step(parse_config(['--mode', 'train', '--r1_every', '3', '--lambda_reg', '0.5']), 1, 1) \
        == 1.5
    assert trainer.r1_this_step(parse_config(['--mode', 'train', '--lambda_reg', '0']), 0, 0) is None   # not computed


def test_fp16_scaler_skips_non_finite_steps_without_touching_adam(seasons32, tmp_path):
    """The fp16 path, run on the CPU by building the runtime directly (the CLI refuses fp16 on a CPU)."""
    cfg = trainer.with_domain_names(parse_config(tiny_flags(seasons32, tmp_path)))
    rt = distributed.Runtime(0, 1, 0, torch.device('cpu'), amp_dtype=torch.float16)
    run = trainer.build_training(cfg, rt)
    huge = 2.0 ** 120   # every scaled gradient overflows
    run.scalers.d = torch.amp.GradScaler('cpu', init_scale=huge)
    run.scalers.g = torch.amp.GradScaler('cpu', init_scale=huge)
    before = {name: [p.detach().clone() for p in net.parameters()] for name, net in run.nets.items()}
    batches = make_train_iterator(cfg, 0, rt.device)
    trainer.train_step(run, cfg, next(batches), 0, rt.device)
    for name, net in run.nets.items():
        assert all(torch.equal(a, b) for a, b in zip(before[name], net.parameters())), name
        assert not run.optims[name].state, name   # Adam never stepped: no moments, no step count
    assert run.scalers.d.get_scale() < huge and run.scalers.g.get_scale() < huge
    run.scalers.d = torch.amp.GradScaler('cpu', init_scale=1024.0)
    run.scalers.g = torch.amp.GradScaler('cpu', init_scale=1024.0)
    stats = trainer.train_step(run, cfg, next(batches), 1, rt.device)
    batches.close()
    assert all(math.isfinite(float(v)) for v in stats.values())
    assert run.optims['generator'].state and run.optims['discriminator'].state


def test_impossible_speed_flags_fail_before_training(monkeypatch):
    cfg = parse_config(['--mode', 'train', '--device', 'cpu', '--amp', 'fp16', '--tf32', '--compile'])
    monkeypatch.setattr(shutil, 'which', lambda name: None)   # no C++ compiler on the PATH
    errors = checks.speed_errors(cfg)
    assert any(e.startswith('--amp fp16 needs a CUDA device') for e in errors)
    assert any(e.startswith('--tf32 applies to CUDA devices only') for e in errors)
    assert any(e.startswith('--compile cannot work here: no C++ compiler') for e in errors)
    with pytest.raises(ConfigError, match='--r1_every must be at least 1'):
        parse_config(['--mode', 'train', '--r1_every', '0'])


@pytest.mark.skipif(checks.compiler_error(False) is not None, reason='torch.compile needs a C++ compiler')
def test_compile_resumes_with_a_plugin_that_owns_parameters(seasons32, tmp_path):
    flags = tiny_flags(seasons32, tmp_path, '--compile', '--patch_loss', 'lsesim=1', '--total_iters', '3',
                       '--save_every', '2', '--sample_every', '0')
    assert main(flags[:flags.index('--total_iters')] + ['--total_iters', '2'] + flags[flags.index('--total_iters') + 2:]) == 0
    assert main(flags + ['--resume_iter', 'latest']) == 0
    payload = safe_load(ckpt_path(str(tmp_path / 'checkpoints'), 3, 'nets'))
    assert 'lsesim' in payload and not any('_orig_mod' in k for net in payload.values() if isinstance(net, dict)
                                           for k in net)
