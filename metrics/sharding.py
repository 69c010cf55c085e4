"""The evaluation's work split over the processes of a torchrun run, and its results gathered back.

A process takes a contiguous run of whole batches of the single-process loader
(core.utils.distributed.process_slice), so every image goes through the networks in the same batch as
in one process; the rows the processes compute, concatenated in rank order
(gather_row_dict), are then the single-process rows in the same order, and every
number equals a single-process evaluation's. Alone, both are no-ops.
"""
import math

import torch

from core.utils import distributed


def num_rounds(num, batch_size):
    """The most batches any process has in process_slice(num, batch_size): rank 0's, which gets the extra ones."""
    part = distributed.process_slice(math.ceil(num / batch_size), rank=0)
    return part.stop - part.start


def gather_row_dict(rows, device):
    """{name: rows (n, ...)} of every process, each concatenated along dim 0 in rank order, on `device`.

    A process that had nothing to compute passes {} (or lacks some names): the
    others tell it the row shape and dtype, and it contributes no rows.
    """
    if not distributed.active():
        return rows
    layout = {}
    for layouts in distributed.gather_objects({k: (tuple(v.shape[1:]), v.dtype) for k, v in rows.items()}):
        for name, (shape, dtype) in layouts.items():
            layout.setdefault(name, (shape, dtype))
    gathered = {}
    for name, (shape, dtype) in layout.items():   # the same names in the same order in every process
        local = rows[name].to(device) if name in rows else torch.empty((0,) + shape, dtype=dtype, device=device)
        gathered[name] = distributed.gather_rows(local)
    return gathered
