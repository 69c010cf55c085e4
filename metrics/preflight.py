"""The weight files of the metrics, checked before any work starts.

A run that would evaluate (--mode eval, or training with --eval_every) fails
at start-up, naming the missing weight file and the download command, not
hours later at its first evaluation. Kept free of heavy imports: main.py calls
it for every run.
"""
from core.config import evaluates
from core.errors import UserError
from core.weights import require_weight

# Weight files (core.weights names) of each FID protocol's Inception, and of the LPIPS trunk.
FID_WEIGHTS = {'stargan-v2': 'inception_v3_torchvision', 'standard': 'inception_tf_fid'}
LPIPS_WEIGHTS = 'alexnet'


def metric_weight_names(fid_protocol):
    """Weight files an evaluation with --fid_protocol needs."""
    protocols = list(FID_WEIGHTS) if fid_protocol == 'both' else [fid_protocol]
    return [FID_WEIGHTS[p] for p in protocols] + [LPIPS_WEIGHTS]


def weight_errors(fid_protocol, hint=''):
    """One message per missing or corrupt metric weight file."""
    errs = []
    for name in metric_weight_names(fid_protocol):
        try:
            require_weight(name)
        except UserError as err:
            errs.append(f'{err}{hint}')
    return errs


def metric_weight_errors(cfg):
    """Missing or corrupt weight files of the metrics a run computes (none if it computes none)."""
    if not evaluates(cfg):
        return []
    hint = ' -- or pass --eval_every 0 to train without evaluation' if cfg.mode == 'train' else ''
    return weight_errors(cfg.fid_protocol, hint)
