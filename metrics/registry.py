"""The metric registry of --mode eval and --eval_every (after stylegan2-ada's metric_main.py).

A metric is a Metric subclass in its own file of metrics/, registered by name
with METRICS (core.utils.registry: the same API as the patch losses'):

    @register('mean_pixel')
    class MeanPixel(Metric):
        series = (Series('MEANPIX'),)               # one result file per mode
        def update(self, task, batch):              # rows of this batch: one per output here
            return {'mean': torch.cat([x.mean((1, 2, 3)) for x in batch.x_fake])}
        def end_task(self, task, rows): return {'MEANPIX': float(rows['mean'].mean())}

and selected with --metrics (default: the metrics whose by_default is True).
Like a patch loss, a metric declares its own flags (add_arguments), checks
their values (validate: called when a run that evaluates selects it) and names
the weight files it needs (weight_files). The evaluation builds every selected metric once
(Metric.build), generates the fakes of each task once and hands every batch of
them to each metric, which returns the batch's rows (per output, per source: a
tensor per name, any first dimension). The task's rows, concatenated in source
order, go to end_task; under torchrun every process generates a part of the
task's batches (metrics.sharding) and the rows of all are gathered first, so
a metric never talks to other processes and its numbers equal a single
process's. The evaluation then writes one file per Series and mode,
<name>_<step:05d>_<mode>.json, with the keys <key>_<mode>/<task>, <key>_<mode>/mean
and the metric's fields(). The weight files a metric declares (weight_files)
are checked before any work starts (metrics.preflight). Importing the package
imports every module of metrics/ (metrics/__init__.py), so each metric registers.
"""
from typing import NamedTuple

import torch

from core.utils.registry import Plugin, Registry

METRICS = Registry('metric')
# @register('name') makes a Metric subclass selectable as --metrics name; registered() lists, get(name) finds.
register, registered, get = METRICS.register, METRICS.registered, METRICS.get


class Series(NamedTuple):
    """One result file per mode: {name}_{step:05d}_{mode}.json with keys {key}_{mode}/<task>, {key}_{mode}/mean.

    The mean is also returned (and logged) as {name}_{mode}/mean; key defaults
    to name; fmt formats the per-task console line.
    """
    name: str
    key: str = ''
    fmt: str = '.4f'

    def task_key(self, mode, task):
        return f'{self.key or self.name}_{mode}/{task}'

    def file_name(self, step, mode):
        return f'{self.name}_{step:05d}_{mode}.json'


class Task(NamedTuple):
    """One translation task: every val image of domain src into domain trg, in one mode."""
    mode: str       # 'latent' or 'reference'
    src: str        # domain names and their indices
    trg: str
    y_src: int
    y_trg: int
    paths: list     # the val images of src, in generation order


class Batch(NamedTuple):
    """The outputs of a batch of sources of one task, generated once and shared by every metric."""
    x_src: torch.Tensor   # (N, 3, S, S) sources in [-1, 1]: task.paths[first:first + N]
    x_fake: list          # num_outs_per_domain x (N, 3, S, S) generator outputs in [-1, 1]
    images: list          # the same as uint8 (N, 3, S, S), quantised as upstream writes its PNGs
    first: int


class Metric(Plugin):
    """Base class: one instance per evaluation, which sees every task of both modes in turn.

    Per task: begin_task(task), update(task, batch) -> {name: rows} per batch of
    sources, end_task(task, rows) -> {series name: value} with the rows of every
    batch (of every process) concatenated in source order. Per-task results live
    in the rows, not in the instance: that is what lets them be gathered.
    """
    series = ()         # Series, one per result file; may be set per instance in __init__
    by_default = False  # selected when --metrics is not given

    @staticmethod
    def weight_files(cfg):
        """Names of the core.utils.weights files this metric needs under `cfg` (checked before any work)."""
        return []

    @classmethod
    def build(cls, cfg, device, pretrained=True):
        """The metric of one evaluation, its networks loaded once (pretrained=False: random weights, tests)."""
        return cls()

    def begin_task(self, task):
        """Start a task (every process calls it, in the same order: it may load statistics)."""

    def update(self, task, batch):
        """The rows of one Batch of the task's outputs: {name: tensor (n, ...)}, the same names every batch."""
        raise NotImplementedError

    def end_task(self, task, rows):
        """The task's value of each series, {series name: float}, from rows: {name: the task's rows (n_total, ...)}."""
        raise NotImplementedError

    def fields(self, series):
        """Extra fields written after the mean in the file of `series` (e.g. the feature network)."""
        return {}


def default_selection():
    """The --metrics default: the registered metrics whose by_default is True, in name order."""
    return tuple(name for name in registered() if get(name).by_default)


def selection_errors(names):
    """Problems with the --metrics names, each naming the flag (empty if they are fine)."""
    if not names:
        return [f'--metrics needs at least one metric; available: {METRICS.available()}']
    errs = METRICS.unknown_errors(names, '--metrics')
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        errs.append(f'--metrics: {", ".join(dup)} given twice')
    return errs


def metric_weight_files(cfg):
    """Weight files of the metrics selected by cfg.metrics, each once, in selection order."""
    names = [w for metric in cfg.metrics for w in get(metric).weight_files(cfg)]
    return list(dict.fromkeys(names))


def build_metrics(cfg, device, pretrained=True):
    """The selected metrics of one evaluation, built once: [Metric]."""
    return [get(name).build(cfg, device, pretrained) for name in cfg.metrics]
