"""Time full training iterations on random tensors, count their FLOPs, compare with the device's peak.

    python bench/train_step.py [training flags of main.py] [--iters N] [--nproc P]

Builds the training from the same flags as main.py (--mode train is implied;
--amp, --channels_last, --compile, --tf32 and --r1_every included) on the
Runtime that core.utils.distributed.setup gives a training process, runs one warm-up
and N timed iterations of the real train_step (D latent, D reference, G latent,
G reference, EMA), then:
  * counts the FLOPs of one more iteration with torch.utils.flop_counter, forward,
    backward and R1's double backward (always on the eager path: with --compile the
    compiled graphs would hide their ops from the counter);
  * times a few large 3x3 convolutions forward and backward in the run's precision
    and memory format: the device's dense-convolution peak.
The last line is
    median_s_per_iter=<float> encoder_passes_per_g_step=<int> gflop_per_iter=<float> utilisation=<float>
encoder_passes_per_g_step counts generator-encoder passes per G step;
utilisation = (gflop_per_iter / median_s_per_iter) / peak GFLOP/s.

--nproc P starts P processes with torch.distributed.run (OMP threads split among
them on the CPU). --batch_size stays the global batch: each process times
train_step on its batch_size / P rows, gradients are averaged inside train_step,
so the time includes communication. gflop_per_iter is then the sum over the
processes and the peak the sum of their peaks, measured at the same time.

With --r1_every K one timed sample is one period of the lazy R1 schedule
(K / gcd(K, 2) iterations, so every sample does the same work), divided by its length.
"""
import argparse
import math
import os
import statistics
import subprocess
import sys
import time

import torch
from munch import Munch
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from core import contrastive
from core.utils import distributed  # noqa: E402
from core.checks import speed_errors  # noqa: E402
from core.config import ConfigError, parse_config  # noqa: E402
from core.utils.device import synchronize  # noqa: E402
from core.utils.errors import run_cli  # noqa: E402
from core.trainer import build_training, train_step  # noqa: E402

PEAK_SHAPE = (8, 256, 64, 64)   # (N, C, H, W) of the peak convolutions: C in = C out = 256, 3x3, padding 1
PEAK_REPS = 3


def random_batch(cfg, device, seed=0, rows=None):
    """One training batch of random images and labels, shaped as the data loader's (rows default: the batch)."""
    gen = torch.Generator().manual_seed(seed)
    rows = cfg.batch_size if rows is None else rows
    shape = (rows, 3, cfg.img_size, cfg.img_size)

    def labels():
        return torch.randint(0, cfg.num_domains, (rows,), generator=gen).to(device)
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
    call one_iteration(0) (allocator, cuDNN autotuning, compilation)."""
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


# ----------------------------------------------------------------------------------------------
# FLOPs and peak
# ----------------------------------------------------------------------------------------------

class _NoModuleTracking:
    """Stands in for FlopCounterMode's module tracker, so that every FLOP counts under 'Global'.

    The tracker's hooks on module inputs make torch.autograd.grad fail ("A leaf node was
    passed to _will_engine_execute_node ..."), and the R1 penalty calls it.
    """
    parents = ('Global',)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def count_flops(fn):
    """FLOPs of the aten ops fn() runs (forward, backward, double backward), on the eager path."""
    counter = FlopCounterMode(display=False)
    counter.mod_tracker = _NoModuleTracking()
    with torch.compiler.set_stance('force_eager'), counter:
        fn()
    return counter.get_total_flops()


def conv_peak_gflops(rt):
    """GFLOP/s of large 3x3 convolutions, forward + input and weight gradients, in rt's precision and layout."""
    n, c, h, w = PEAK_SHAPE
    gen = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False).to(rt.device)
    if rt.channels_last:
        conv.to(memory_format=torch.channels_last)
    x = rt.images(torch.randn(PEAK_SHAPE, generator=gen).to(rt.device)).requires_grad_()

    def once(_):
        with rt.autocast():
            y = conv(x)
        y.sum().backward()
    flops = 3 * 2 * n * h * w * c * c * 9   # forward, grad input, grad weight: one multiply-add each = 2 FLOPs
    distributed.barrier()   # every process measures at the same time, as they train
    times, _ = time_iterations(once, PEAK_REPS, rt.device)
    return flops / statistics.median(times) / 1e9


def r1_period(r1_every):
    """Iterations after which the lazy R1 schedule repeats (two D steps per iteration)."""
    return r1_every // math.gcd(r1_every, 2)


# ----------------------------------------------------------------------------------------------
# Benchmark
# ----------------------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('--iters', type=int, default=10)
    parser.add_argument('--nproc', type=int, default=1)
    known, rest = parser.parse_known_args(argv)
    if '--mode' not in rest:
        rest = ['--mode', 'train'] + rest
    if known.nproc != 1 and distributed.env_world_size() == 1:
        return run_cli(lambda: launch(rest, known.iters, known.nproc))
    return run_cli(lambda: benchmark(parse_config(rest), known.iters))


def check(cfg, nproc=None):
    """Raise a ConfigError naming the flag for what this machine or process count cannot run."""
    errs = speed_errors(cfg) + contrastive.requirement_errors(cfg)
    if nproc is not None and nproc < 1:
        errs.append('--nproc must be at least 1')
    elif nproc is not None and cfg.batch_size % nproc:
        errs.append(f'--batch_size {cfg.batch_size} is the global batch and must divide evenly among '
                    f'--nproc {nproc} processes')
    if errs:
        raise ConfigError('\n'.join(errs))


def launch(argv, iters, nproc):
    """Re-run this script in nproc processes under torch.distributed.run; their exit status."""
    check(parse_config(argv), nproc)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    env = {**os.environ, 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', str(max(1, cpus // nproc)))}
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(nproc),
           os.path.abspath(__file__), '--iters', str(iters), *argv]
    return subprocess.run(cmd, env=env).returncode


def benchmark(cfg, iters):
    """Print the figures of `iters` timed training iterations built from cfg (rank 0 prints)."""
    check(cfg)
    rt = distributed.setup(cfg)
    try:
        figures = measure(cfg, rt, iters)
    finally:
        distributed.shutdown()
    if rt.rank == 0:
        report(cfg, rt, iters, figures)


def measure(cfg, rt, iters):
    """The benchmark's figures, combined over the processes."""
    device = rt.device
    run = build_training(cfg, rt)
    calls = count_encoder_passes(run.nets.generator)
    batch = random_batch(cfg, device, seed=rt.rank, rows=cfg.batch_size // rt.world_size)
    period = r1_period(cfg.r1_every)

    def iterations(sample):
        for step in range(sample * period, (sample + 1) * period):
            train_step(run, cfg, batch, step, device)
    times, cpu_times = time_iterations(iterations, iters, device)
    per_iter = calls[0] // ((iters + 1) * period)   # every iteration, warm-up included, runs the same passes
    flops = count_flops(lambda: iterations(iters + 1)) / period
    peak = conv_peak_gflops(rt)
    mean = distributed.mean_over_processes({'s': statistics.median(times) / period, 'flops': float(flops),
                                            'peak': peak, 'cpu_s': statistics.median(cpu_times) / period})
    mean = {k: float(v) for k, v in mean.items()}
    params = sum(p.numel() for net in run.nets.values() for p in net.parameters())
    return Munch(s_per_iter=mean['s'], cpu_s_per_iter=mean['cpu_s'], encoder_passes=per_iter // 2,
                 gflop=mean['flops'] * rt.world_size / 1e9, peak_gflops=peak * rt.world_size, params=params,
                 period=period)


def report(cfg, rt, iters, f):
    """The info lines and the figures line (last)."""
    print(f'device={rt.device.type} arch={cfg.arch} img_size={cfg.img_size} batch_size={cfg.batch_size} '
          f'patch_losses={",".join(f"{n}={w}" for n, w in cfg.patch_losses) or "none"} '
          f'nce_layers={",".join(map(str, cfg.nce_layers)) if cfg.patch_losses else "-"} '
          f'params={f.params} threads={torch.get_num_threads()} iters={iters} '
          f'median_cpu_s_per_iter={f.cpu_s_per_iter:.4f}')
    print(f'processes={rt.world_size} amp={cfg.amp} channels_last={cfg.channels_last} compile={cfg.compile} '
          f'r1_every={cfg.r1_every} iters_per_sample={f.period} flops_counted=eager '
          f'peak_gflops={f.peak_gflops:.1f} peak_conv={"x".join(map(str, PEAK_SHAPE))}_3x3')
    utilisation = f.gflop / f.s_per_iter / f.peak_gflops
    print(f'median_s_per_iter={f.s_per_iter:.4f} encoder_passes_per_g_step={f.encoder_passes} '
          f'gflop_per_iter={f.gflop:.6g} utilisation={utilisation:.4g}')


if __name__ == '__main__':
    sys.exit(main())
