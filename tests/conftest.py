"""Shared fixtures: a tiny synthetic dataset and the flags of a tiny, fast model."""
import os
import sys

import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from core.data.synthetic import make_dataset  # noqa: E402

# Tiny tensors gain nothing from threads, and a second busy process makes OpenMP
# spin-waiting very slow: one thread keeps the suite fast and steady.
torch.set_num_threads(1)


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
