"""Per-step random streams.

Every random draw of training (data order, augmentation, z, patch positions)
comes from a generator seeded by (seed, step, stream). A run resumed at step k
therefore sees exactly the random numbers an uninterrupted run sees at step k,
whatever the number of data-loader workers.
"""
import numpy as np
import torch

# Stream ids: one per independent consumer of randomness in a training step.
STREAM_SOURCE = 0      # source batch: which images, their augmentation
STREAM_REFERENCE = 1   # reference batch: which image pairs, their augmentation
STREAM_LATENT = 2      # z_trg, z_trg2
STREAM_PATCHES = 3     # patch positions of the contrastive losses
STREAM_VAL = 4         # the fixed validation batch used for debug images
STREAM_SAMPLE = 5      # sample and translate modes (z and average styles)
STREAM_EVAL = 6        # evaluation: z and reference choices of every task
STREAM_QUALITY = 7     # the quality benchmark (metrics.benchmark): z and references


def step_seed(seed, step, stream):
    """A well-mixed 63-bit seed for (seed, step, stream)."""
    state = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(step), int(stream)]).generate_state(2)
    return int((int(state[0]) << 31) ^ int(state[1])) & 0x7FFFFFFFFFFFFFFF


def step_generator(seed, step, stream, device='cpu'):
    """A torch.Generator on `device` seeded for (seed, step, stream)."""
    gen = torch.Generator(device=device)
    gen.manual_seed(step_seed(seed, step, stream))
    return gen
