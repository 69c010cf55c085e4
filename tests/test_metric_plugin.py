"""The metric plug-in contract, through a metric that exists only in this file: it registers, declares and
checks its own flag, runs in --mode eval on a tiny checkpoint and writes its value; the command line names
no metric."""
import json
import os
import re

import pytest
import torch

import metrics.registry as registry
from conftest import ROOT, tiny_flags
from core.config import ConfigError, parse_config
from main import main
from metrics.registry import Metric, Series


class Brightness(Metric):
    """The mean pixel value of a task's outputs in [0, 1], times --brightness_gain (a flag of its own)."""
    series = (Series('BRIGHTNESS'),)

    @classmethod
    def add_arguments(cls, parser):
        g = parser.add_argument_group('test-only brightness metric')
        g.add_argument('--brightness_gain', type=float, default=1.0, help='factor applied to the mean')

    @classmethod
    def validate(cls, cfg):
        return [] if cfg.brightness_gain > 0 else ['--brightness_gain must be > 0']

    @classmethod
    def build(cls, cfg, device, pretrained=True):
        return cls(cfg.brightness_gain)

    def __init__(self, gain):
        self.gain = gain

    def update(self, task, batch):
        return {'mean': torch.cat([images.float().mean((1, 2, 3)) / 255 for images in batch.images])}   # (K * N,)

    def end_task(self, task, rows):
        return {'BRIGHTNESS': self.gain * float(rows['mean'].mean())}

    def fields(self, series):
        return {'gain': self.gain}


@pytest.fixture
def brightness():
    """Brightness registered as 'brightness' for one test; the registry is restored afterwards, and that is checked."""
    with registry.METRICS.restored():
        yield registry.register('brightness')(Brightness)
    assert 'brightness' not in registry.registered()


@pytest.fixture(scope='module')
def checkpoint(seasons32, tmp_path_factory):
    """(data, run folder) of a tiny model trained for 2 steps."""
    run = tmp_path_factory.mktemp('metric_plugin')
    assert main(tiny_flags(seasons32, run, '--total_iters', '2', '--sample_every', '0')) == 0
    return seasons32, run


def _eval(checkpoint, eval_dir, *flags):
    data, run = checkpoint
    return main(['--mode', 'eval', '--resume_iter', '2', '--metrics', 'brightness']
                + tiny_flags(data, run, '--eval_dir', str(eval_dir), *flags)[2:])


def test_a_metric_defined_in_a_test_runs_in_eval_mode_with_its_own_flag(brightness, checkpoint, tmp_path):
    assert 'brightness' in registry.registered()
    assert _eval(checkpoint, tmp_path / 'one') == 0
    assert _eval(checkpoint, tmp_path / 'two', '--brightness_gain', '2') == 0
    assert sorted(os.listdir(tmp_path / 'two')) == ['BRIGHTNESS_00002_latent.json', 'BRIGHTNESS_00002_reference.json']
    for mode in ('latent', 'reference'):
        one = json.loads((tmp_path / 'one' / f'BRIGHTNESS_00002_{mode}.json').read_text())
        two = json.loads((tmp_path / 'two' / f'BRIGHTNESS_00002_{mode}.json').read_text())
        assert list(two)[-2:] == [f'BRIGHTNESS_{mode}/mean', 'gain'] and two['gain'] == 2.0
        assert len(two) == 4 * 3 + 2   # a value per task (4 domains), the mean, its field
        assert 0 < one[f'BRIGHTNESS_{mode}/mean'] < 1 and one['gain'] == 1.0
        values = [key for key in one if key != 'gain']
        assert [two[key] for key in values] == pytest.approx([2 * one[key] for key in values], rel=1e-12)


def test_a_metric_checks_its_flag_only_when_a_run_evaluates_with_it(brightness, capsys):
    with pytest.raises(ConfigError, match='^--brightness_gain must be > 0$'):
        parse_config(['--mode', 'eval', '--metrics', 'brightness', '--brightness_gain', '0'])
    parse_config(['--mode', 'eval', '--brightness_gain', '0'])                          # not selected
    parse_config(['--mode', 'train', '--metrics', 'brightness', '--eval_every', '0', '--brightness_gain', '0'])
    assert main(['--mode', 'eval', '--metrics', 'brightness', '--brightness_gain', '-1', '--dry_run']) == 1
    assert capsys.readouterr().err == 'error: --brightness_gain must be > 0\n'
    with pytest.raises(SystemExit):
        main(['--help'])
    words = ' '.join(capsys.readouterr().out.split())
    assert '--brightness_gain BRIGHTNESS_GAIN factor applied to the mean' in words
    assert 'metrics to compute (metrics.registry); available: brightness, domain_acc, fid, lpips, structure' in words


def test_the_command_line_names_no_metric():
    """core/config.py asks the registry for the metrics' flags, names and default: it names none itself."""
    names = registry.registered()
    pattern = re.compile(r'(?<![\w.])(%s)(?!\w)' % '|'.join(map(re.escape, names)), re.IGNORECASE)
    with open(os.path.join(ROOT, 'core', 'config.py')) as f:
        found = pattern.search(f.read())
    assert found is None, f'core/config.py names the metric {found and found.group(0)!r}'
    assert set(names) >= {'domain_acc', 'fid', 'lpips', 'structure'}


def test_every_module_of_metrics_is_imported_and_metrics_are_what_registers():
    import pkgutil
    import sys
    import metrics
    modules = [info.name for info in pkgutil.iter_modules(metrics.__path__)]
    assert all(f'metrics.{name}' in sys.modules for name in modules)
    assert {registry.get(name).__module__ for name in registry.registered()} == {
        'metrics.domain_acc', 'metrics.fid', 'metrics.lpips', 'metrics.structure'}   # one metric per file
