"""Training in several processes (torchrun, gloo on the CPU) against one process.

Every test starts real `torchrun --standalone --nproc_per_node 2` runs of tiny
networks with one thread per process. How the weights are compared: after one
iteration everything must match to float tolerance. Later, parameters whose true
gradient is zero (biases right before an instance norm) receive rounding noise
that Adam normalises into full-size steps (beta1 = 0: each update is about
lr * sign(noise)), so those parameters drift by up to lr per optimizer step and nudge
later gradients by about 1e-2 relative; they are compared against that bound,
and every other parameter to a tenth of lr per iteration, its Adam moments to 6e-2 of
the tensor's scale (a gradient that is not averaged, or summed instead, is off
by 50-100 %).
"""
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, tiny_flags
from core.checkpoint import KINDS, ckpt_path, named_tensors
from core.utils.fileio import safe_load
from main import main

LR = 1e-4
WORKER = os.path.join(ROOT, 'tests', 'dist_worker.py')


def torchrun(argv, nproc=2, env=None, max_restarts=0, check=True):
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(nproc),
           '--max_restarts', str(max_restarts), WORKER, *argv]
    env = {**os.environ, 'OMP_NUM_THREADS': '1', **(env or {})}
    out = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    if check:
        assert out.returncode == 0, out.stderr[-4000:]
    return out


def flags(data, run, *extra):
    return tiny_flags(data, run, '--batch_size', '4', '--total_iters', '6', '--save_every', '1',
                      '--sample_every', '0', '--print_every', '1', *extra)


def state(run, step):
    """{kind: payload} of the three checkpoint files of `step`."""
    return {kind: safe_load(ckpt_path(str(run / 'checkpoints'), step, kind)) for kind in KINDS}


def assert_bitwise_equal(a, b):
    for kind in KINDS:
        ta, tb = dict(named_tensors(a[kind])), dict(named_tensors(b[kind]))
        assert ta.keys() == tb.keys()
        for name in ta:
            assert torch.equal(ta[name], tb[name]), f'{kind}{name}'


def assert_same_training(single, multi, steps, moment_tol=6e-2):
    """The comparison of the module docstring between two runs' checkpoints after `steps` iterations."""
    checked = 0
    for net, opt in single['optims'].items():
        if not isinstance(opt, dict) or 'state' not in opt:
            continue
        params = dict(single['nets'][net].items())
        names = [k for k in params if k in dict(multi['nets'][net])]
        # Adam keeps state per parameter in parameters() order, which is the state_dict's order
        # minus buffers: pair them by position among tensors that have state.
        own = [k for k in names if params[k].dtype.is_floating_point][:len(opt['state'])]
        for pid, name in zip(sorted(opt['state']), own):
            m1, m2 = opt['state'][pid]['exp_avg'], multi['optims'][net]['state'][pid]['exp_avg']
            v1, v2 = opt['state'][pid]['exp_avg_sq'], multi['optims'][net]['state'][pid]['exp_avg_sq']
            w1, w2 = single['nets'][net][name], multi['nets'][net][name]
            if v1.sqrt().max() < 1e-5:   # true gradient zero: bounded drift only
                # G steps twice per iteration, each moving such a parameter by up to lr in either run
                assert (w1 - w2).abs().max() <= 4 * LR * steps + 1e-7, f'{net}.{name}'
                continue
            assert (m1 - m2).abs().max() <= moment_tol * m1.abs().max(), f'{net}.{name} exp_avg'
            assert (v1 - v2).abs().max() <= 2 * moment_tol * v1.abs().max(), f'{net}.{name} exp_avg_sq'
            assert (w1 - w2).abs().max() <= LR / 10 * steps, f'{net}.{name}'
            checked += 1
    assert checked > 50


@pytest.fixture(scope='module')
def runs(seasons32, tmp_path_factory):
    """6 iterations in one process and in two (SRC + hDCE), saved after every iteration."""
    root = tmp_path_factory.mktemp('dist')
    assert main(flags(seasons32, root / 'single')) == 0
    torchrun(flags(seasons32, root / 'multi'))
    return root


def test_two_processes_train_like_one(runs):
    one, two = state(runs / 'single', 1), state(runs / 'multi', 1)
    assert_same_training(one, two, 1, moment_tol=1e-4)
    assert_same_training(state(runs / 'single', 3), state(runs / 'multi', 3), 3)
    # the logged losses are averaged over the processes: they equal the single-process values
    logs = [[json.loads(line) for line in open(runs / r / 'checkpoints' / 'stats.jsonl')] for r in ('single', 'multi')]
    for a, b in zip(*logs):
        rel = 1e-5 if a['step'] <= 2 else 2e-3   # later steps see the drift described above
        for key in ('D/latent/real', 'D/ref/reg', 'G/latent/src', 'G/latent/hdce', 'G/ref/cyc'):
            assert b[key] == pytest.approx(a[key], rel=rel), (a['step'], key)


def test_two_processes_train_like_one_with_the_default_losses(seasons32, tmp_path):
    base = flags(seasons32, tmp_path, '--lambda_src', '0', '--lambda_dce', '0', '--total_iters', '3')
    assert main(base) == 0
    torchrun(flags(seasons32, tmp_path / 'multi', '--lambda_src', '0', '--lambda_dce', '0', '--total_iters', '3'))
    assert_same_training(state(tmp_path, 3), state(tmp_path / 'multi', 3), 3)
    assert 'patch_sample' not in state(tmp_path / 'multi', 3)['nets']


def test_distributed_resume_is_bit_exact(runs, seasons32):
    run = runs / 'resumed'
    out = torchrun(flags(seasons32, run), env={'STARGAN_TEST_KILL_AT': '4'}, check=False)   # dies in iteration 4
    assert out.returncode != 0 and not os.path.exists(ckpt_path(str(run / 'checkpoints'), 4, 'optims'))
    torchrun(flags(seasons32, run, '--resume_iter', 'latest'))
    assert_bitwise_equal(state(run, 6), state(runs / 'multi', 6))
    steps = [json.loads(line)['step'] for line in open(run / 'checkpoints' / 'stats.jsonl')]
    assert steps == [1, 2, 3, 4, 5, 6]


def _resume_from(source, step, target):
    (target / 'checkpoints').mkdir(parents=True)
    for kind in KINDS:
        shutil.copy(ckpt_path(str(source / 'checkpoints'), step, kind), target / 'checkpoints')


def test_checkpoints_move_between_process_counts(runs, seasons32):
    # 3 iterations in one count of processes, then 3 in the other: as 6 in the first, within the
    # tolerance of 3 iterations in different counts
    _resume_from(runs / 'multi', 3, runs / 'two_to_one')
    assert main(flags(seasons32, runs / 'two_to_one', '--resume_iter', '3')) == 0
    assert_same_training(state(runs / 'multi', 6), state(runs / 'two_to_one', 6), 3)
    _resume_from(runs / 'single', 3, runs / 'one_to_two')
    torchrun(flags(seasons32, runs / 'one_to_two', '--resume_iter', '3'))
    assert_same_training(state(runs / 'single', 6), state(runs / 'one_to_two', 6), 3)
    for key in state(runs / 'one_to_two', 6)['nets']['generator']:
        assert not key.startswith('module.')


def test_a_killed_process_restarts_from_the_latest_checkpoint(runs, seasons32):
    run = runs / 'killed'
    out = torchrun(flags(seasons32, run), env={'STARGAN_TEST_KILL_AT': '5'}, max_restarts=1)
    assert 'exitcode' in out.stderr and '9' in out.stderr   # torchrun reports the dead process, then restarts
    assert_bitwise_equal(state(run, 6), state(runs / 'multi', 6))


def test_an_uneven_global_batch_is_refused_before_training(seasons32, tmp_path):
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', WORKER,
           *flags(seasons32, tmp_path, '--batch_size', '3')]
    out = subprocess.run(cmd, cwd=ROOT, env={**os.environ, 'OMP_NUM_THREADS': '1'}, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode != 0
    assert '--batch_size 3 is the global batch and must divide evenly among the 2 processes' in out.stderr
    assert not (tmp_path / 'checkpoints').exists()
