"""Time the released Hneg_SRC training iteration, for comparison with bench/train_step.py.

    python bench/hsrc_reference.py --hsrc_dir PATH/TO/Hneg_SRC/Multimodal [training flags] --iters N

Nothing of Hneg_SRC is part of this project: point --hsrc_dir at your own clone
of github.com/jcy132/Hneg_SRC. Its Solver and loss functions are imported and
run unchanged, in its own iteration order, on the same random tensors as
bench/train_step.py. Only what stops it from running on a machine without a
GPU is neutralised (Module.cuda() becomes a no-op without CUDA; the unused
OpenCV import of its face-landmark module is stubbed when OpenCV is absent).
The flags are ours; they have the same names and meanings as main_hSRC.py's.
The last line is  median_s_per_iter=<float>.
"""
import argparse
import importlib
import os
import statistics
import sys
import tempfile
import types

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from bench.train_step import random_batch, time_iterations  # noqa: E402
from core.config import build_parser  # noqa: E402


def _import_hsrc(hsrc_dir):
    """Import the released solver from a clone, with the CPU-only workarounds described above."""
    if not os.path.isfile(os.path.join(hsrc_dir, 'core', 'solver_hSRC.py')):
        sys.exit(f'error: {hsrc_dir} does not look like Hneg_SRC/Multimodal (no core/solver_hSRC.py)')
    if not torch.cuda.is_available():
        torch.nn.Module.cuda = lambda self, *args, **kwargs: self
    try:
        import cv2  # noqa: F401
    except ImportError:
        sys.modules['cv2'] = types.ModuleType('cv2')
    for name in [m for m in sys.modules if m == 'core' or m.startswith('core.')
                 or m == 'metrics' or m.startswith('metrics.')]:
        del sys.modules[name]
    # Its folders are named core/ and metrics/ like ours (without __init__.py): take ours off the path.
    sys.path[:] = [hsrc_dir] + [p for p in sys.path if os.path.abspath(p or '.') != REPO]
    return importlib.import_module('core.solver_hSRC')


def _one_iteration(hs, solver, args, batch, z_trg, z_trg2, step):
    """The body of the released Solver.train for one iteration (logging/saving left out)."""
    nets, optims = solver.nets, solver.optims
    patchloss = solver.nceloss if args.lambda_nce > 0 else solver.dceloss
    x_real, y_org = batch.x_src.clone(), batch.y_src
    x_ref, x_ref2, y_trg = batch.x_ref, batch.x_ref2, batch.y_ref
    for kwargs in (dict(z_trg=z_trg), dict(x_ref=x_ref)):
        d_loss, _ = hs.compute_d_loss(nets, args, x_real, y_org, y_trg, masks=None, **kwargs)
        solver._reset_grad()
        d_loss.backward()
        optims.discriminator.step()
    g_loss, _ = hs.compute_g_loss(nets, args, x_real, y_org, y_trg, z_trgs=[z_trg, z_trg2], masks=None,
                                  srcloss=solver.srcloss, patchloss=patchloss, iters=step)
    solver._reset_grad()
    g_loss.backward()
    for name in ('generator', 'mapping_network', 'style_encoder', 'patch_sample'):
        optims[name].step()
    g_loss, _ = hs.compute_g_loss(nets, args, x_real, y_org, y_trg, x_refs=[x_ref, x_ref2], masks=None,
                                  srcloss=solver.srcloss, patchloss=patchloss, iters=step)
    solver._reset_grad()
    g_loss.backward()
    optims.generator.step()
    for name in ('generator', 'mapping_network', 'style_encoder'):
        hs.moving_average(nets[name], solver.nets_ema[name], beta=0.999)


def main(argv=None):
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument('--hsrc_dir', required=True)
    pre.add_argument('--iters', type=int, default=10)
    known, rest = pre.parse_known_args(argv)
    args = build_parser().parse_args(['--mode', 'train'] + rest)
    args.checkpoint_dir = tempfile.mkdtemp(prefix='hsrc-bench-')
    hs = _import_hsrc(os.path.abspath(known.hsrc_dir))
    solver = hs.Solver(args)
    device = solver.device
    batch = random_batch(args, device)
    gen = torch.Generator().manual_seed(1)
    z_trg, z_trg2 = (torch.randn(args.batch_size, args.latent_dim, generator=gen).to(device) for _ in range(2))
    times, cpu_times = time_iterations(
        lambda step: _one_iteration(hs, solver, args, batch, z_trg, z_trg2, step), known.iters, device)
    print(f'device={device.type} hsrc img_size={args.img_size} batch_size={args.batch_size} '
          f'threads={torch.get_num_threads()} iters={known.iters} '
          f'median_cpu_s_per_iter={statistics.median(cpu_times):.4f}')
    print(f'median_s_per_iter={statistics.median(times):.4f}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
