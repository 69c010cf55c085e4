"""The weight files of the selected metrics, checked before any work starts.

A run that would evaluate (--mode eval, or training with --eval_every) fails
at start-up, naming the missing weight file and the download command, not
hours later at its first evaluation. Each metric declares its weight files
(Metric.weight_files); main.py calls this for every run, after core.config
has checked the --metrics names.
"""
from core.runconfig import evaluates
from core.utils.errors import UserError
from core.utils.weights import require_weight
from metrics.registry import metric_weight_files


def weight_errors(names, hint=''):
    """One message per missing or corrupt weight file among `names` (core.utils.weights names)."""
    errs = []
    for name in names:
        try:
            require_weight(name)
        except UserError as err:
            errs.append(f'{err}{hint}')
    return errs


def metric_weight_errors(cfg):
    """The missing or corrupt weight files of the metrics the run computes (none if it never evaluates)."""
    if not evaluates(cfg):
        return []
    hint = ' -- or pass --eval_every 0 to train without evaluation' if cfg.mode == 'train' else ''
    return weight_errors(metric_weight_files(cfg), hint)
