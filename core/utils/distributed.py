"""Processes, devices and precision of a training run, decided here, once.

One process per device under torchrun, one process alone otherwise. `python main.py ...` runs one process on one
device, exactly as before; `torchrun --nproc_per_node N main.py ...` starts N
processes that each call setup() and find their rank in the environment
torchrun sets (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT).
CUDA processes use NCCL with one GPU per local rank; CPU processes use gloo.

Gradients are combined without DistributedDataParallel (which does not mix
with the R1 penalty's double backward, pytorch/pytorch #47562): after each
phase's backward every rank averages the flattened gradients of the networks
that phase updates with one all_reduce, as StyleGAN2-ADA does. Every rank
therefore applies the same update and holds the same weights, EMA and step.
"""
import contextlib
import datetime
import math
import os
from typing import NamedTuple, Optional

import torch
import torch.distributed as dist

from core.utils.device import resolve_device
from core.utils.errors import UserError

TIMEOUT = datetime.timedelta(minutes=30)   # a collective that waits longer than this fails the run


class DistributedError(UserError):
    """Processes that cannot start or cannot reach each other."""


AMP_DTYPES = {'off': None, 'bf16': torch.bfloat16, 'fp16': torch.float16}


class Runtime(NamedTuple):
    """This process's place in the run, its device and its precision."""
    rank: int                        # 0 .. world_size - 1; rank 0 alone writes files
    world_size: int                  # number of processes (1 without torchrun)
    local_rank: int                  # index on this machine: the GPU this process uses
    device: torch.device
    amp_dtype: Optional[torch.dtype] = None   # autocast dtype of the networks' forward passes, or None
    channels_last: bool = False

    def autocast(self):
        """Mixed precision for the networks' forward passes (a no-op with --amp off)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def images(self, x):
        """An image batch in the networks' memory format."""
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x


def env_world_size():
    """The number of processes torchrun started (1 without torchrun)."""
    return int(os.environ.get('WORLD_SIZE', '1'))


def restarted():
    """True in a process that torchrun restarted after a failure (--max-restarts)."""
    return int(os.environ.get('TORCHELASTIC_RESTART_COUNT', '0')) > 0


def setup(cfg):
    """Join the process group (under torchrun), pick this process's device, set the precision."""
    device, rank, local_rank, world_size = _join(cfg.device)
    if device.type == 'cuda':
        torch.backends.cuda.matmul.allow_tf32 = cfg.tf32
        torch.backends.cudnn.allow_tf32 = cfg.tf32
    return Runtime(rank, world_size, local_rank, device, AMP_DTYPES[cfg.amp], cfg.channels_last)


def _join(device_flag):
    """(device, rank, local_rank, world_size) of this process."""
    world_size = env_world_size()
    if world_size == 1:
        return resolve_device(device_flag), 0, 0, 1
    rank, local_rank = int(os.environ['RANK']), int(os.environ.get('LOCAL_RANK', '0'))
    device = resolve_device(device_flag)
    if device.type == 'cuda':
        if local_rank >= torch.cuda.device_count():
            raise DistributedError(f'local rank {local_rank} has no GPU: this machine has '
                                   f'{torch.cuda.device_count()}; use --nproc_per_node {torch.cuda.device_count()}')
        device = torch.device('cuda', local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        try:
            dist.init_process_group('nccl' if device.type == 'cuda' else 'gloo', store=_store(rank, world_size),
                                    rank=rank, world_size=world_size, timeout=TIMEOUT)
        except (RuntimeError, ValueError, KeyError) as err:
            raise DistributedError(f'process {rank} of {world_size} could not join the others '
                                   f'({str(err).splitlines()[0]}); check the torchrun rendezvous flags') from None
    return device, rank, local_rank, world_size


def _store(rank, world_size):
    """The rendezvous key-value store, with keys of their own for each torchrun restart.

    torchrun's agent keeps one store across restarts (--max-restarts); without a
    per-attempt prefix the restarted processes would read the dead ones' addresses.
    """
    agent = os.environ.get('TORCHELASTIC_USE_AGENT_STORE') == 'True'   # torchrun hosts the store
    store = dist.TCPStore(os.environ['MASTER_ADDR'], int(os.environ['MASTER_PORT']), world_size,
                          is_master=not agent and rank == 0, timeout=TIMEOUT)
    return dist.PrefixStore(f'stargan/attempt_{os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")}', store)


def active():
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def is_main():
    """True in the process that writes files (rank 0, or the only process)."""
    return not active() or dist.get_rank() == 0


def barrier():
    if active():
        dist.barrier()


def shutdown():
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def average_gradients(params):
    """Average the .grad of `params` over all processes with one all_reduce (no-op alone).

    Parameters without a gradient are left alone: every process runs the same
    graph, so the same parameters have none on every rank.
    """
    if not active():
        return
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.flatten() for g in grads])   # (total numel,)
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    for g, part in zip(grads, flat.split([g.numel() for g in grads])):
        g.copy_(part.view_as(g))


def mean_over_processes(values):
    """{name: scalar (tensor or number)} averaged over all processes with one all_reduce (logging steps only)."""
    if not active() or not values:
        return values
    names = list(values)
    device = next((v.device for v in values.values() if torch.is_tensor(v)), torch.device('cpu'))
    flat = torch.stack([torch.as_tensor(values[n], dtype=torch.float32, device=device).detach().reshape(())
                        for n in names])   # (n,)
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    return dict(zip(names, flat.unbind()))


def broadcast_modules(modules):
    """Copy rank 0's parameters and buffers to every process (one broadcast per tensor)."""
    if not active():
        return
    for module in modules:
        for tensor in list(module.parameters()) + list(module.buffers()):
            dist.broadcast(tensor.data, src=0)


def gather_rows(tensor):
    """Concatenate along dim 0 the `tensor` of every process, in rank order (uneven sizes allowed)."""
    if not active():
        return tensor
    size = torch.tensor([tensor.size(0)], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest,) + tuple(tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[:tensor.size(0)] = tensor
    parts = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(parts, padded)
    return torch.cat([part[:int(n.item())] for part, n in zip(parts, sizes)])


def gather_objects(obj):
    """The picklable `obj` of every process, as a list in rank order ([obj] alone)."""
    if not active():
        return [obj]
    objects = [None] * dist.get_world_size()
    dist.all_gather_object(objects, obj)
    return objects


def process_slice(num, batch_size=1, rank=None, world_size=None):
    """This process's contiguous slice of range(num), made of whole batches of batch_size (the last one
    may be short); the processes' batch counts differ by at most one, the first ranks get the extra ones.

    rank and world_size default to this process's; alone, the slice is all of range(num).
    """
    rank = dist.get_rank() if rank is None and active() else (rank or 0)
    world_size = dist.get_world_size() if world_size is None and active() else (world_size or 1)
    per, extra = divmod(math.ceil(num / batch_size), world_size)
    first = rank * per + min(rank, extra)
    last = first + per + (1 if rank < extra else 0)
    return slice(min(first * batch_size, num), min(last * batch_size, num))
