"""Training in several processes (torchrun, gloo on the CPU) against one process.

Every test starts real `torchrun --standalone --nproc_per_node 2` runs of tiny
networks with one thread per process. Two processes average the gradients of
two half batches; one process computes the whole batch, with kernels chosen for
its size and sums in another order. Adam turns the rounding of near-zero gradient
elements into lr-sized steps of either sign, and later steps amplify them (most
under some kernels: see the figures below). What is compared, network by
network, between the checkpoints of the two runs:
  * the weights, as the norm of their difference over the norm of what training
    changed since the runs' common start, and the Adam moments, as the norm of
    their difference over their norm; each at most TOLERANCE;
  * parameters whose true gradient is zero (biases right before an instance norm,
    gradient RMS below 1e-5 of the network's largest) only move by rounding noise
    that Adam normalises: bounded by the farthest Adam can move them (adam_reach).
Measured (1 to 6 iterations, SRC + hDCE; native AVX2 kernels and
ONEDNN_MAX_CPU_ISA=SSE41 ATEN_CPU_CAPABILITY=default): weights up to 0.062,
moments up to 0.071. Gradients not averaged: at least 0.33 on every network;
summed instead of averaged: moments off by exactly 1.0 and 3.0.
"""
import collections
import json
import math
import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import ROOT, tiny_flags
from core import trainer
from core.checkpoint import KINDS, ckpt_path, named_tensors
from core.config import parse_config
from core.utils.distributed import Runtime
from core.utils.fileio import safe_load
from main import main

LR = 1e-4
BETA2 = 0.99
TOLERANCE = 0.2
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


def adam_reach(first, last, lr=LR, beta2=BETA2):
    """The farthest one element can move from iteration `first` to `last` (two Adam updates per
    iteration, beta1 = 0): update t moves it by at most lr * sqrt((1 - beta2^t) / (1 - beta2))."""
    return lr * sum(math.sqrt((1 - beta2 ** t) / (1 - beta2)) for t in range(2 * first + 1, 2 * last + 1))


def initial_nets(argv):
    """{network: state_dict} of the networks a run of `argv` starts from (built from its seed)."""
    cfg = trainer.with_domain_names(parse_config(argv))
    built = trainer.build_training(cfg, Runtime(0, 1, 0, torch.device('cpu')))
    return {name: net.state_dict() for name, net in built.nets.items()}


def relative_gap(a, b, scale):
    """|a - b| / |scale|, each list of tensors taken as one vector (2-norms)."""
    gap = math.sqrt(sum(float((x - y).pow(2).sum()) for x, y in zip(a, b)))
    return gap / math.sqrt(sum(float(t.pow(2).sum()) for t in scale))


Pair = collections.namedtuple('Pair', 'name m1 m2 v1 v2 w1 w2')


def parameter_pairs(a, b, net):
    """Pair(name, Adam moments and weight in run a, then in run b) of every parameter of `net` with Adam state."""
    opt, params = a['optims'][net], a['nets'][net]
    # Adam keeps state per parameter in parameters() order, which is the state_dict's order minus
    # buffers: pair them by position among tensors that have state.
    own = [k for k in params if params[k].dtype.is_floating_point][:len(opt['state'])]
    pairs = []
    for pid, name in zip(sorted(opt['state']), own):
        sa, sb = opt['state'][pid], b['optims'][net]['state'][pid]
        pairs.append(Pair(name, sa['exp_avg'], sb['exp_avg'], sa['exp_avg_sq'], sb['exp_avg_sq'], params[name],
                          b['nets'][net][name]))
    return pairs


def assert_same_training(single, multi, start, first, last):
    """The comparison of the module docstring between two runs' checkpoints of iteration `last`; both
    ran from the weights `start` ({network: state_dict}) of iteration `first`."""
    checked = 0
    for net, opt in single['optims'].items():
        if not isinstance(opt, dict) or 'state' not in opt:
            continue
        pairs = parameter_pairs(single, multi, net)
        noise = 1e-5 * max(float(p.v1.sqrt().max()) for p in pairs)
        trained = [p for p in pairs if p.v1.sqrt().max() >= noise]
        for p in pairs:
            if p.v1.sqrt().max() < noise:   # true gradient zero
                assert (p.w1 - p.w2).abs().max() <= 2 * adam_reach(first, last), f'{net}.{p.name}'
        gaps = {'exp_avg': relative_gap([p.m1 for p in pairs], [p.m2 for p in pairs], [p.m1 for p in pairs]),
                'exp_avg_sq': relative_gap([p.v1 for p in pairs], [p.v2 for p in pairs], [p.v1 for p in pairs]),
                'weights': relative_gap([p.w1 for p in trained], [p.w2 for p in trained],
                                        [p.w1 - start[net][p.name] for p in trained])}
        assert max(gaps.values()) <= TOLERANCE, (net, gaps)
        checked += len(trained)
    assert checked > 50


@pytest.fixture(scope='module')
def runs(seasons32, tmp_path_factory):
    """6 iterations in one process and in two (SRC + hDCE), saved after every iteration."""
    root = tmp_path_factory.mktemp('dist')
    assert main(flags(seasons32, root / 'single')) == 0
    torchrun(flags(seasons32, root / 'multi'))
    return root


def test_two_processes_train_like_one(runs, seasons32):
    start = initial_nets(flags(seasons32, runs / 'single'))
    for step in (1, 3, 6):
        assert_same_training(state(runs / 'single', step), state(runs / 'multi', step), start, 0, step)
    # The logged losses are averaged over the processes: they equal the single-process values. Up to
    # the generator's first update both runs hold the same weights, so those losses of iteration 1
    # differ by rounding only (measured 2.5e-7); later ones by up to 2.4e-3 (measured, as above).
    logs = [[json.loads(line) for line in open(runs / r / 'checkpoints' / 'stats.jsonl')] for r in ('single', 'multi')]
    for a, b in zip(*logs):
        for key in ('D/latent/real', 'D/ref/reg', 'G/latent/src', 'G/latent/hdce', 'G/ref/cyc'):
            rel = 1e-5 if a['step'] == 1 and not key.startswith('G/ref/') else 1e-2
            assert b[key] == pytest.approx(a[key], rel=rel), (a['step'], key)


def test_two_processes_train_like_one_with_the_default_losses(seasons32, tmp_path):
    base = flags(seasons32, tmp_path, '--lambda_src', '0', '--lambda_dce', '0', '--total_iters', '3')
    assert main(base) == 0
    torchrun(flags(seasons32, tmp_path / 'multi', '--lambda_src', '0', '--lambda_dce', '0', '--total_iters', '3'))
    assert_same_training(state(tmp_path, 3), state(tmp_path / 'multi', 3), initial_nets(base), 0, 3)
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
    assert_same_training(state(runs / 'multi', 6), state(runs / 'two_to_one', 6), state(runs / 'multi', 3)['nets'],
                         3, 6)
    _resume_from(runs / 'single', 3, runs / 'one_to_two')
    torchrun(flags(seasons32, runs / 'one_to_two', '--resume_iter', '3'))
    assert_same_training(state(runs / 'single', 6), state(runs / 'one_to_two', 6),
                         state(runs / 'single', 3)['nets'], 3, 6)
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
