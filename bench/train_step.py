"""Time full training iterations on random tensors, count their FLOPs, compare with the device's peak.

    python bench/train_step.py [training flags of main.py] [--iters N] [--nproc P] [--reference]
    python bench/train_step.py --model cut --dataroot DIR [CUT flags] [--iters N] [--reference]

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

--model cut times the CUT family's iteration instead (core.cut.trainer.train_step:
one generator pass, D step, G step with the patch losses) at --crop_size on
random A and B images; --dataroot is required by the flags but not read. Every
timed step is in the first epoch (the release's lr and hDCE temperature
schedules are constant within an epoch). Its encoder passes are G's full pass
with the taps and the encoder pass of the translation.

--reference also times a fixed workload before and after the benchmark (the
median of REFERENCE_RUNS forward and backward passes of a 256-channel 3x3
convolution on 1x256x64x64, fp32) and prints it with the load average, so that
a figure can be set beside one measured at another time on a shared machine.

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
REFERENCE_SHAPE = (1, 256, 64, 64)   # the fixed reference workload (--reference), fp32, contiguous
REFERENCE_RUNS = 20
CUT_EPOCH_STEPS = 10 ** 6   # the CUT family's timed steps all fall in its first epoch


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


def count_encoder_passes(generator, names=('run_encoder',)):
    """Wrap the generator's methods `names` with one call counter; returns the counter (a one-item list)."""
    calls = [0]

    def counting(original):
        def counted(*args, **kwargs):
            calls[0] += 1
            return original(*args, **kwargs)
        return counted
    for name in names:
        setattr(generator, name, counting(getattr(generator, name)))
    return calls


def cut_batch(cfg, device, seed=0, rows=None):
    """One CUT training batch of random A and B images at --crop_size (rows default: the batch)."""
    gen = torch.Generator().manual_seed(seed)
    rows = cfg.batch_size if rows is None else rows
    shape = (rows, 3, cfg.crop_size, cfg.crop_size)
    return Munch(real_A=torch.randn(shape, generator=gen).to(device),
                 real_B=torch.randn(shape, generator=gen).to(device))


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


def reference_workload(runs=REFERENCE_RUNS):
    """Median seconds of one forward and backward pass of the fixed reference convolution (fp32, CPU threads
    as they are), and its GFLOP/s."""
    n, c, h, w = REFERENCE_SHAPE
    gen = torch.Generator().manual_seed(0)
    conv = torch.nn.Conv2d(c, c, 3, padding=1, bias=False)
    x = torch.randn(REFERENCE_SHAPE, generator=gen).requires_grad_()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        conv(x).sum().backward()
        times.append(time.perf_counter() - start)
    seconds = statistics.median(times)
    return seconds, 3 * 2 * n * h * w * c * c * 9 / seconds / 1e9


def reference_line(when):
    """One line: the reference workload's median time and the load average (1, 5, 15 min) now."""
    seconds, gflops = reference_workload()
    load = os.getloadavg() if hasattr(os, 'getloadavg') else ()
    return (f'reference_{when}: conv3x3_{"x".join(map(str, REFERENCE_SHAPE))}_fwd_bwd_fp32 median_of_{REFERENCE_RUNS}'
            f'={seconds:.4f}s ({gflops:.1f} GFLOP/s) loadavg={",".join(f"{v:.2f}" for v in load) or "n/a"}')


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
    parser.add_argument('--reference', action='store_true')
    known, rest = parser.parse_known_args(argv)
    if '--mode' not in rest:
        rest = ['--mode', 'train'] + rest
    if known.nproc != 1 and distributed.env_world_size() == 1:
        return run_cli(lambda: launch(rest, known.iters, known.nproc, known.reference))
    return run_cli(lambda: benchmark(parse_config(rest), known.iters, known.reference))


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


def launch(argv, iters, nproc, reference=False):
    """Re-run this script in nproc processes under torch.distributed.run; their exit status."""
    check(parse_config(argv), nproc)
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    env = {**os.environ, 'OMP_NUM_THREADS': os.environ.get('OMP_NUM_THREADS', str(max(1, cpus // nproc)))}
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(nproc),
           os.path.abspath(__file__), '--iters', str(iters), *(['--reference'] if reference else []), *argv]
    return subprocess.run(cmd, env=env).returncode


def is_cut(cfg):
    """True for a config of the CUT family (--model cut)."""
    return cfg.get('model') == 'cut'


def benchmark(cfg, iters, reference=False):
    """Print the figures of `iters` timed training iterations built from cfg (rank 0 prints); with reference,
    the reference workload before and after them."""
    check(cfg)
    rt = distributed.setup(cfg)
    try:
        before = reference_line('before') if reference and rt.rank == 0 else None
        figures = measure(cfg, rt, iters)
        after = reference_line('after') if reference and rt.rank == 0 else None
    finally:
        distributed.shutdown()
    if rt.rank == 0:
        for line in (before, after):
            if line:
                print(line)
        report(cfg, rt, iters, figures)


def family_training(cfg, rt):
    """(run, step(i) running training iteration i on a fixed random batch, encoder-pass counter, G steps per
    iteration, iterations per timed sample) of cfg's family, on this process's rows."""
    device, rows = rt.device, cfg.batch_size // rt.world_size
    if is_cut(cfg):
        from core.cut import trainer as cut
        cfg = cfg.replace(steps_per_epoch=CUT_EPOCH_STEPS,
                          total_iters=(cfg.n_epochs + cfg.n_epochs_decay) * CUT_EPOCH_STEPS)
        run = cut.build_training(cfg, rt)
        run.batch_part = rows
        calls = count_encoder_passes(run.nets.G, ('forward_with_taps', 'encode'))
        batch = cut_batch(cfg, device, seed=rt.rank, rows=rows)
        return run, lambda step: cut.train_step(run, cfg, batch, step), calls, 1, 1
    run = build_training(cfg, rt)
    calls = count_encoder_passes(run.nets.generator)
    batch = random_batch(cfg, device, seed=rt.rank, rows=rows)
    return run, lambda step: train_step(run, cfg, batch, step, device), calls, 2, r1_period(cfg.r1_every)


def measure(cfg, rt, iters):
    """The benchmark's figures, combined over the processes."""
    device = rt.device
    run, one_step, calls, g_steps, period = family_training(cfg, rt)

    def iterations(sample):
        for step in range(sample * period, (sample + 1) * period):
            one_step(step)
    times, cpu_times = time_iterations(iterations, iters, device)
    per_iter = calls[0] // ((iters + 1) * period)   # every iteration, warm-up included, runs the same passes
    flops = count_flops(lambda: iterations(iters + 1)) / period
    peak = conv_peak_gflops(rt)
    mean = distributed.mean_over_processes({'s': statistics.median(times) / period, 'flops': float(flops),
                                            'peak': peak, 'cpu_s': statistics.median(cpu_times) / period})
    mean = {k: float(v) for k, v in mean.items()}
    params = sum(p.numel() for net in run.nets.values() for p in net.parameters())
    return Munch(s_per_iter=mean['s'], cpu_s_per_iter=mean['cpu_s'], encoder_passes=per_iter // g_steps,
                 gflop=mean['flops'] * rt.world_size / 1e9, peak_gflops=peak * rt.world_size, params=params,
                 period=period)


def report(cfg, rt, iters, f):
    """The info lines and the figures line (last)."""
    model = (f'model=cut netG={cfg.netG} ngf={cfg.ngf} ndf={cfg.ndf} crop_size={cfg.crop_size} '
             f'num_patches={cfg.num_patches} identity={cfg.identity}' if is_cut(cfg) else
             f'arch={cfg.arch} img_size={cfg.img_size}')
    print(f'device={rt.device.type} {model} batch_size={cfg.batch_size} '
          f'patch_losses={",".join(f"{n}={w}" for n, w in cfg.patch_losses) or "none"} '
          f'nce_layers={",".join(map(str, cfg.nce_layers)) if cfg.patch_losses else "-"} '
          f'params={f.params} threads={torch.get_num_threads()} iters={iters} '
          f'median_cpu_s_per_iter={f.cpu_s_per_iter:.4f}')
    r1 = '' if is_cut(cfg) else f'r1_every={cfg.r1_every} '
    print(f'processes={rt.world_size} amp={cfg.amp} channels_last={cfg.channels_last} compile={cfg.compile} '
          f'{r1}iters_per_sample={f.period} flops_counted=eager '
          f'peak_gflops={f.peak_gflops:.1f} peak_conv={"x".join(map(str, PEAK_SHAPE))}_3x3')
    utilisation = f.gflop / f.s_per_iter / f.peak_gflops
    print(f'median_s_per_iter={f.s_per_iter:.4f} encoder_passes_per_g_step={f.encoder_passes} '
          f'gflop_per_iter={f.gflop:.6g} utilisation={utilisation:.4g}')


if __name__ == '__main__':
    sys.exit(main())
