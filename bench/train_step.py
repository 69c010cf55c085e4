"""Time full training iterations on random tensors.

    python bench/train_step.py [training flags of main.py] --iters N

Builds the networks from the same flags as main.py (--mode train is implied),
runs one warm-up iteration, then N timed iterations of the real train_step
(D latent, D reference, G latent, G reference, EMA). The last line is
    median_s_per_iter=<float> encoder_passes_per_g_step=<int>
where the second figure counts generator-encoder passes per G step.
"""
import argparse
import os
import statistics
import sys
import time

import torch
from munch import Munch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core.config import parse_config  # noqa: E402
from core.errors import run_cli  # noqa: E402
from core.device import resolve_device, synchronize  # noqa: E402
from core.trainer import build_training, train_step  # noqa: E402


def random_batch(cfg, device, seed=0):
    """One training batch of random images and labels, shaped as the data loader's."""
    gen = torch.Generator().manual_seed(seed)
    shape = (cfg.batch_size, 3, cfg.img_size, cfg.img_size)

    def labels():
        return torch.randint(0, cfg.num_domains, (cfg.batch_size,), generator=gen).to(device)
    return Munch(x_src=torch.randn(shape, generator=gen).to(device), y_src=labels(),
                 x_ref=torch.randn(shape, generator=gen).to(device),
                 x_ref2=torch.randn(shape, generator=gen).to(device), y_ref=labels())


def count_encoder_passes(generator):
    """Wrap generator.run_encoder with a call counter; returns the counter (a one-item list)."""
    calls = [0]
    original = generator.run_encoder

    def counted(*args, **kwargs):
        calls[0] += 1
        return original(*args, **kwargs)
    generator.run_encoder = counted
    return calls


def time_iterations(one_iteration, iters, device):
    """(wall seconds, CPU seconds) per call of one_iteration(i) for i = 1..iters, after a warm-up
    call one_iteration(0) (allocator, cuDNN autotuning)."""
    one_iteration(0)
    synchronize(device)
    times, cpu_times = [], []
    for i in range(1, iters + 1):
        start, cpu_start = time.perf_counter(), time.process_time()
        one_iteration(i)
        synchronize(device)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu_start)
    return times, cpu_times


def main(argv=None):
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('--iters', type=int, default=10)
    known, rest = parser.parse_known_args(argv)
    if '--mode' not in rest:
        rest = ['--mode', 'train'] + rest
    return run_cli(lambda: benchmark(parse_config(rest), known.iters))


def benchmark(cfg, iters):
    """Print the figures of `iters` timed training iterations built from cfg."""
    device = resolve_device(cfg.device)
    run = build_training(cfg, device)
    calls = count_encoder_passes(run.nets.generator)
    batch = random_batch(cfg, device)
    times, cpu_times = time_iterations(lambda step: train_step(run, cfg, batch, step, device), iters, device)
    per_iter = calls[0] // (iters + 1)   # every call, warm-up included, runs the same passes

    params = sum(p.numel() for net in run.nets.values() for p in net.parameters())
    print(f'device={device.type} arch={cfg.arch} img_size={cfg.img_size} batch_size={cfg.batch_size} '
          f'patch_losses={",".join(f"{n}={w}" for n, w in cfg.patch_losses) or "none"} '
          f'nce_layers={",".join(map(str, cfg.nce_layers)) if cfg.patch_losses else "-"} '
          f'params={params} threads={torch.get_num_threads()} iters={iters} '
          f'median_cpu_s_per_iter={statistics.median(cpu_times):.4f}')
    print(f'median_s_per_iter={statistics.median(times):.4f} encoder_passes_per_g_step={per_iter // 2}')


if __name__ == '__main__':
    sys.exit(main())
