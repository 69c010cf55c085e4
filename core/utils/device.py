"""Where computation runs: decided once, here, and passed down as a torch.device.

CPU threads and data-loader workers are decided here too (host_settings,
called once by main.py for every mode):

threads  torch's intra-op threads default to half the usable cores (at least
         one) unless OMP_NUM_THREADS is set: OpenMP threads spin-wait for
         each other, so a thread per core collapses when other processes
         hold cores, while half the cores costs at most about 2x on an idle
         machine (measured in docs/benchmarks.md, "CPU threads"). Set
         OMP_NUM_THREADS to the core count on a machine you have to yourself.
workers  --num_workers is capped at the usable cores (inference modes too),
         so PyTorch's "this DataLoader will create N worker processes"
         warning does not appear.
"""
import os

import torch

from core.utils.errors import UserError


class DeviceError(UserError):
    """The requested device is not available."""


def resolve_device(name):
    """'auto' -> CUDA when available, else CPU; 'cuda' without a GPU is an error."""
    if name == 'auto':
        name = 'cuda' if torch.cuda.is_available() else 'cpu'
    if name == 'cuda' and not torch.cuda.is_available():
        raise DeviceError('--device cuda was requested but no CUDA device is available; use --device cpu')
    device = torch.device(name)
    if device.type == 'cuda':
        # Fixed-size inputs: let cuDNN pick the fastest kernels once.
        torch.backends.cudnn.benchmark = True
    return device


def synchronize(device):
    """Wait for the device's queued work (benchmarks only: timing a CUDA step, not its launch)."""
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def usable_cores():
    """Cores this process may run on (its CPU affinity where the OS tells, else the CPU count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def default_threads(cores=None):
    """Intra-op threads when OMP_NUM_THREADS is not set: half the usable cores, at least 1 (see the module doc)."""
    return max(1, (cores or usable_cores()) // 2)


def host_settings(cfg, verbose=True):
    """Set torch's CPU threads and cap --num_workers at the usable cores; returns the (new) config."""
    cores = usable_cores()
    if not os.environ.get('OMP_NUM_THREADS'):
        torch.set_num_threads(default_threads(cores))
    workers = min(cfg.num_workers, cores)
    if verbose and cfg.get('mode') in ('train', 'demo', 'sample', 'translate', 'eval', 'export'):
        source = 'OMP_NUM_THREADS' if os.environ.get('OMP_NUM_THREADS') else 'half the cores; set OMP_NUM_THREADS to change'
        capped = f' (--num_workers {cfg.num_workers} capped at the cores)' if workers != cfg.num_workers else ''
        print(f'host: {cores} usable cores, {torch.get_num_threads()} CPU threads ({source}), '
              f'{workers} data-loader workers{capped}')
    return cfg.replace(num_workers=workers) if workers != cfg.num_workers else cfg
