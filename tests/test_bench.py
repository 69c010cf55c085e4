"""bench/train_step.py: its figures line, its FLOP count (R1's double backward included) and --nproc."""
import math
import os
import subprocess
import sys

import pytest
import torch

from conftest import ROOT
from bench import train_step as bench
from core.config import parse_config
from core.utils.distributed import Runtime
from core.trainer import build_training, train_step

SCRIPT = os.path.join(ROOT, 'bench', 'train_step.py')
TINY = ['--img_size', '32', '--base_dim', '8', '--max_conv_dim', '16', '--hidden_dim', '32', '--style_dim', '16',
        '--latent_dim', '8', '--num_domains', '4', '--batch_size', '2', '--lambda_src', '0.1', '--lambda_dce', '1',
        '--use_hard', '--n_patch', '16', '--patch_dim', '16', '--device', 'cpu']
FIGURES = ('median_s_per_iter', 'encoder_passes_per_g_step', 'gflop_per_iter', 'utilisation')


def run_bench(*extra):
    """{figure: value} of the last line of a bench/train_step.py run on the tiny networks."""
    out = subprocess.run([sys.executable, SCRIPT, *TINY, '--iters', '1', *extra], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert out.returncode == 0, out.stderr[-3000:]
    last = out.stdout.strip().splitlines()[-1]
    pairs = dict(item.split('=') for item in last.split())
    assert tuple(pairs) == FIGURES, last
    return {k: float(v) for k, v in pairs.items()}


def assert_sane(figures):
    assert all(math.isfinite(v) and v > 0 for v in figures.values()), figures
    assert figures['encoder_passes_per_g_step'] == 2


@pytest.fixture(scope='module')
def one_process():
    return run_bench()


def test_last_line_has_the_four_figures(one_process):
    assert_sane(one_process)


def test_two_processes_count_the_same_flops_as_one(one_process):
    one, two = one_process, run_bench('--nproc', '2')
    assert_sane(two)
    # the global batch is split, not repeated: the sum over processes is one process's count
    assert two['gflop_per_iter'] == one['gflop_per_iter']


def test_flops_include_the_r1_double_backward():
    def flops(*extra):
        cfg = parse_config(['--mode', 'train', *TINY, *extra])
        run = build_training(cfg, Runtime(0, 1, 0, torch.device('cpu')))
        batch = bench.random_batch(cfg, torch.device('cpu'))
        return bench.count_flops(lambda: train_step(run, cfg, batch, 1, torch.device('cpu')))
    every, lazy = flops(), flops('--r1_every', '4')   # step 1 runs D steps 2 and 3: R1 in both, or in neither
    # two R1 penalties: the real pass again with create_graph and the backward through D's gradient
    assert every - lazy > 0.05 * lazy > 0


def test_uneven_split_names_the_flags(capsys):
    assert bench.main([*TINY, '--batch_size', '3', '--nproc', '2']) == 1
    err = capsys.readouterr().err
    assert '--batch_size 3' in err and '--nproc 2' in err


def test_impossible_precision_names_the_flag(capsys):
    assert bench.main([*TINY, '--amp', 'fp16']) == 1
    assert '--amp fp16' in capsys.readouterr().err


CUT_TINY = ['--model', 'cut', '--dataroot', 'not-read', '--crop_size', '32', '--ngf', '8', '--ndf', '8',
            '--num_patches', '16', '--netF_nc', '16', '--lambda_HDCE', '0.1', '--lambda_SRC', '0.05', '--dce_idt',
            '--use_curriculum', '--HDCE_gamma', '50', '--HDCE_gamma_min', '10', '--device', 'cpu']


def test_cut_family_figures():
    out = subprocess.run([sys.executable, SCRIPT, *CUT_TINY, '--iters', '1'], cwd=ROOT, capture_output=True,
                         text=True, timeout=300, env={**os.environ, 'OMP_NUM_THREADS': '1'})
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.strip().splitlines()
    assert 'model=cut netG=resnet_6blocks' in lines[-3] and 'patch_losses=src=0.05,hdce=0.1' in lines[-3]
    figures = {k: float(v) for k, v in (item.split('=') for item in lines[-1].split())}
    assert tuple(figures) == FIGURES
    # G's pass with the taps over [real_A; real_B], then the encoder over [fake_B; idt_B]
    assert_sane(figures)


def test_cut_family_flops_grow_with_the_identity_path():
    from core.cut import trainer as cut

    def flops(flags):
        cfg = parse_config(['--mode', 'train', *flags])
        cfg = cfg.replace(steps_per_epoch=10, total_iters=10 * (cfg.n_epochs + cfg.n_epochs_decay))
        run = cut.build_training(cfg, Runtime(0, 1, 0, torch.device('cpu')))
        run.batch_part = 1
        batch = bench.cut_batch(cfg, torch.device('cpu'))
        return bench.count_flops(lambda: cut.train_step(run, cfg, batch, 0))
    with_idt, without = flops(CUT_TINY), flops([f for f in CUT_TINY if f != '--dce_idt'])
    assert with_idt > 1.5 * without > 0


def test_reference_workload_line():
    seconds, gflops = bench.reference_workload(runs=1)
    assert seconds > 0 and gflops > 0
