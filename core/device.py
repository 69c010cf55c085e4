"""Where computation runs: decided once, here, and passed down as a torch.device."""
import torch

from core.errors import UserError


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
