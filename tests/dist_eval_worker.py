"""main.py for the distributed evaluation tests, with random-weight metric networks.

Tests have no weight files: the preflight check is switched off and every
process builds the --metrics with random weights (pretrained=False) from the
same seed, so all processes, and a single-process run, hold the same networks.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

import metrics.eval as E  # noqa: E402
import metrics.preflight as preflight  # noqa: E402
from main import main  # noqa: E402
from metrics.registry import build_metrics  # noqa: E402


def random_metrics(cfg, device, pretrained=True):
    """The selected metrics with random feature networks, the same in every process and run."""
    torch.manual_seed(0)
    return build_metrics(cfg, device, pretrained=False)


def use_random_metrics(patch):
    """patch(module, name, value), e.g. setattr or pytest's monkeypatch.setattr."""
    patch(preflight, 'weight_errors', lambda *args, **kwargs: [])
    patch(E, 'build_metrics', random_metrics)


if __name__ == '__main__':
    use_random_metrics(setattr)
    sys.exit(main())
