"""The --metrics names and the weight files of the selected metrics, checked before any work starts.

A run that would evaluate (--mode eval, or training with --eval_every) fails
at start-up, naming an unknown metric or the missing weight file and the
download command, not hours later at its first evaluation. Each metric
declares its weight files (Metric.weight_files); main.py calls this for every run.
"""
from core.config import evaluates
from core.utils.errors import UserError
from core.utils.weights import require_weight
from metrics.registry import metric_weight_files, selection_errors


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
    """Unknown --metrics names, else the missing or corrupt weight files of the metrics the run computes."""
    errs = selection_errors(cfg.metrics)
    if errs or not evaluates(cfg):
        return errs
    hint = ' -- or pass --eval_every 0 to train without evaluation' if cfg.mode == 'train' else ''
    return weight_errors(metric_weight_files(cfg), hint)
