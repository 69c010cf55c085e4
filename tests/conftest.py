"""Shared fixtures and helpers: a tiny synthetic dataset, the flags of a tiny, fast model, and
float comparisons relative to the compared tensors' scale.

`pytest --no-onednn` runs every test with oneDNN (MKL-DNN) disabled, so convolutions take
ATen's own kernels: a test that passes both ways does not depend on which kernels a CPU
picks. It does not reach subprocesses (torchrun); ONEDNN_MAX_CPU_ISA=SSE41 and
ATEN_CPU_CAPABILITY=default in the environment change the kernels of every process.
"""
import os
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from core.data.synthetic import make_dataset  # noqa: E402

# Tiny tensors gain nothing from threads, and a second busy process makes OpenMP
# spin-waiting very slow: one thread keeps the suite fast and steady.
torch.set_num_threads(1)


def pytest_addoption(parser):
    parser.addoption('--no-onednn', action='store_true',
                     help='run every test with torch.backends.mkldnn.enabled = False')


@pytest.fixture(autouse=True)
def _onednn_switch(request):
    """oneDNN stays as it is, unless --no-onednn turns it off for the test."""
    enabled = torch.backends.mkldnn.enabled
    if request.config.getoption('--no-onednn'):
        torch.backends.mkldnn.enabled = False
    yield
    torch.backends.mkldnn.enabled = enabled


# ----------------------------------------------------------------------------------------------
# Float comparisons
# ----------------------------------------------------------------------------------------------
# Kernels differ between CPUs (oneDNN and ATen pick AVX2, AVX-512 or AMX code, and blockings that
# depend on the batch size), and each reorders fp32 sums differently. That changes a result by a
# few units in the last place of the LARGEST values that enter it, not of each element: an
# element-wise rtol fails on elements near zero, and a fixed atol ignores how large the tensors
# are. So every tolerance here is a fraction of the compared tensors' scale.

def _as_double(x):
    """A tensor, array, number or list as a float64 CPU tensor."""
    if isinstance(x, torch.Tensor):
        return x.detach().cpu().double()
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def scaled_gap(actual, expected, scale=None):
    """max |actual - expected| / scale, where scale defaults to the largest |value| of either side.

    A scalar `expected` is compared with every element of `actual`. Pass `scale` when
    the compared values are not the size of the numbers that produced them (a loss
    compared with 0, a small difference of large logits).
    """
    a, b = _as_double(actual), _as_double(expected)
    if b.dim() == 0:
        b = b.expand_as(a)
    assert a.shape == b.shape, f'shapes differ: {tuple(a.shape)} vs {tuple(b.shape)}'
    if scale is None:
        scale = max(float(a.abs().max()), float(b.abs().max())) if a.numel() else 0.0
    gap = float((a - b).abs().max()) if a.numel() else 0.0
    return gap / scale if scale > 0 else (0.0 if gap == 0 else float('inf'))


def assert_close_scaled(actual, expected, rel=1e-5, scale=None, msg=''):
    """actual equals expected up to rel of their scale: max |actual - expected| <= rel * scale.

    rel=1e-5 is about a hundred fp32 roundings of the largest value; scale as in scaled_gap.
    """
    gap = scaled_gap(actual, expected, scale)
    assert gap <= rel, f'{msg}{": " if msg else ""}max |difference| is {gap:.3g} of the scale, above {rel:g}'


@pytest.fixture(scope='session')
def seasons32(tmp_path_factory):
    """Synthetic seasons at 32 px: 4 domains x 6 train / 3 val images (made once per session)."""
    root = tmp_path_factory.mktemp('data') / 'seasons32'
    make_dataset('seasons', str(root), num_train=6, num_val=3, img_size=32, seed=1)
    return root


def tiny_flags(data_root, run_dir, *extra):
    """Flags of a tiny StarGAN v2 + SRC/hDCE run that trains in well under a second per step."""
    return ['--mode', 'train', '--img_size', '32', '--num_domains', '4', '--base_dim', '8',
            '--max_conv_dim', '16', '--hidden_dim', '32', '--style_dim', '16', '--latent_dim', '8',
            '--batch_size', '2', '--val_batch_size', '3', '--num_outs_per_domain', '1', '--num_workers', '0',
            '--lambda_src', '0.1', '--lambda_dce', '1', '--use_hard', '--use_curriculum', '--n_patch', '16',
            '--patch_dim', '16', '--total_iters', '4', '--ds_iter', '4', '--print_every', '2',
            '--sample_every', '2', '--save_every', '2', '--eval_every', '0', '--seed', '3',
            '--train_img_dir', str(data_root / 'train'), '--val_img_dir', str(data_root / 'val'),
            '--checkpoint_dir', str(run_dir / 'checkpoints'), '--sample_dir', str(run_dir / 'samples'),
            '--eval_dir', str(run_dir / 'eval'), '--result_dir', str(run_dir / 'results'), *extra]


def with_mode(flags, mode, *extra):
    """Command-line flags (as tiny_flags gives them) with another --mode, plus `extra`."""
    return replaced(flags, '--mode', mode) + list(extra)


def replaced(flags, flag, value):
    """A copy of the flags with the value of `flag` replaced."""
    flags = list(flags)
    flags[flags.index(flag) + 1] = value
    return flags


def interrupt_training(monkeypatch, at_step):
    """Make training stop with Ctrl-C when it reaches iteration `at_step` (0-based), as a kill would;
    returns a function that restores the real train_step."""
    import core.trainer
    real_step = core.trainer.train_step

    def interrupted(run, cfg, batch, step, device):
        if step == at_step:
            raise KeyboardInterrupt
        return real_step(run, cfg, batch, step, device)
    monkeypatch.setattr(core.trainer, 'train_step', interrupted)
    return lambda: monkeypatch.setattr(core.trainer, 'train_step', real_step)
