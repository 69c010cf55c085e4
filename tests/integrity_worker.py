"""main.py for the multi-process integrity test; with STARGAN_TEST_NAN_AT=N the process of rank 1
alone finds a NaN in its discriminator after iteration N, as a fault on one device would cause."""
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import core.trainer as trainer  # noqa: E402
from main import main  # noqa: E402

nan_at = int(os.environ.get('STARGAN_TEST_NAN_AT', '0'))
if nan_at and os.environ.get('RANK') == '1':
    real_step = trainer.train_step

    def poisoned_step(run, cfg, batch, step, device):
        stats = real_step(run, cfg, batch, step, device)
        if step + 1 == nan_at:
            with torch.no_grad():
                next(run.nets.discriminator.parameters()).view(-1)[0] = math.nan
        return stats
    trainer.train_step = poisoned_step

sys.exit(main())
