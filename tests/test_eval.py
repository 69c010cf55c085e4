"""--mode eval and --eval_every: result files, determinism, the real-statistics cache, the command line."""
import argparse
import json
import os
import shutil

import numpy as np
import pytest
import torch

import metrics.eval as E
import metrics.preflight as preflight
import metrics.registry as registry
import metrics.stats_cache as stats_cache
from conftest import scaled_gap, tiny_flags
from core.config import ConfigError, build_parser, parse_config
from core.utils.device import resolve_device
from core.inference import load_model
from core.trainer import train
from main import main
from metrics.fid import FID, PROTOCOLS, FIDExtractor, fid_given_paths
from metrics.lpips import LPIPSDiversity, build_lpips
from core.utils.registry import UnknownPlugin
from metrics.registry import Metric, Series, get, register, registered
from metrics.stats_cache import real_statistics


class TinyExtractor(torch.nn.Module):
    """A fast stand-in with FIDExtractor's interface (uint8 images -> features), for loop-logic tests."""

    def __init__(self, protocol, seed=0):
        super().__init__()
        torch.manual_seed(seed)
        self.protocol = protocol
        self.conv = torch.nn.Conv2d(3, 6, 5, stride=2)
        self.identity = f'tiny-{protocol}-{seed}'

    @torch.no_grad()
    def forward(self, x):
        h = torch.relu(self.conv(x.float() / 127.5 - 1))   # (N, 6, h, w)
        return torch.cat([h.mean((2, 3)), h.amax((2, 3))], 1)   # (N, 12)


@pytest.fixture(scope='module')
def lpips_model():
    torch.manual_seed(0)
    return build_lpips('cpu', pretrained=False)


def tiny_metrics(cfg, lpips_model, protocols=('stargan-v2',)):
    """The default metrics (fid, lpips) with fast random feature networks."""
    return [FID(cfg, 'cpu', {p: TinyExtractor(p) for p in protocols}), LPIPSDiversity(lpips_model)]


def subset(seasons32, tmp_path, names, num_val=None):
    """A copy of the synthetic seasons set with only the domains `names` (and at most num_val val images)."""
    root = tmp_path / f'data{len(names)}'
    for split in ('train', 'val'):
        for name in names:
            shutil.copytree(seasons32 / split / name, root / split / name)
            if split == 'val' and num_val is not None:
                for path in sorted((root / split / name).iterdir())[num_val:]:
                    path.unlink()
    return root


def trained_model(data, run, num_domains, *extra):
    """Train 2 tiny steps; return the eval config (checkpoint of step 2) and the EMA nets."""
    flags = tiny_flags(data, run, '--num_domains', str(num_domains), '--total_iters', '2', '--save_every', '2',
                       '--sample_every', '0', '--num_outs_per_domain', '2', '--fid_stats_dir', str(run / 'stats'),
                       *extra)
    train(parse_config(flags))
    cfg = parse_config(flags[2:] + ['--mode', 'eval', '--resume_iter', '2'])
    nets, cfg = load_model(cfg, resolve_device('cpu'))[:2]
    return cfg, nets


def read(path):
    with open(path) as f:
        return json.load(f)


# ----------------------------------------------------------------------------------------------
# Result files
# ----------------------------------------------------------------------------------------------

def test_two_domains_upstream_files_and_png_round_trip(seasons32, tmp_path, lpips_model):
    """Real (random-weight) Inception; the saved PNGs give the same FID through the folder pipeline."""
    data = subset(seasons32, tmp_path, ['autumn', 'winter'], num_val=2)
    cfg, nets = trained_model(data, tmp_path / 'run', 2, '--save_eval_images')
    torch.manual_seed(0)
    extractor = FIDExtractor('stargan-v2', pretrained=False).eval()
    means = E.evaluate_nets(nets, cfg, 7, 'cpu', [FID(cfg, 'cpu', {'stargan-v2': extractor}),
                                                   LPIPSDiversity(lpips_model)])
    eval_dir = tmp_path / 'run' / 'eval'
    assert sorted(p for p in os.listdir(eval_dir) if p.endswith('.json')) == [
        'FID_00007_latent.json', 'FID_00007_reference.json', 'LPIPS_00007_latent.json', 'LPIPS_00007_reference.json']
    for mode in ('latent', 'reference'):
        fid = read(eval_dir / f'FID_00007_{mode}.json')
        tasks = [f'FID_{mode}/winter2autumn', f'FID_{mode}/autumn2winter']
        assert list(fid) == tasks + [f'FID_{mode}/mean', 'protocol', 'feature_network']
        assert fid['protocol'] == 'stargan-v2' and fid['feature_network'] == extractor.identity
        assert fid[f'FID_{mode}/mean'] == pytest.approx(np.mean([fid[t] for t in tasks]))
        lpips = read(eval_dir / f'LPIPS_00007_{mode}.json')
        assert list(lpips)[:3] == [t.replace('FID', 'LPIPS') for t in tasks] + [f'LPIPS_{mode}/mean']
        assert all(lpips[t.replace('FID', 'LPIPS')] > 0 for t in tasks)
        assert means[f'FID_{mode}/mean'] == fid[f'FID_{mode}/mean']
        # Both passes keep their images (upstream wipes the latent ones), named as upstream.
        pngs = sorted(os.listdir(eval_dir / mode / 'winter2autumn'))
        assert pngs == ['0001_01.png', '0001_02.png', '0002_01.png', '0002_02.png']
        from_pngs = fid_given_paths([data / 'train' / 'autumn', eval_dir / mode / 'winter2autumn'], img_size=32,
                                    batch_size=3, extractor=extractor)
        assert from_pngs == pytest.approx(fid[f'FID_{mode}/winter2autumn'], rel=1e-5)


def test_three_domains_both_protocols_deterministic_and_batch_independent(seasons32, tmp_path, lpips_model):
    data = subset(seasons32, tmp_path, ['autumn', 'spring', 'winter'])
    cfg, nets = trained_model(data, tmp_path / 'run', 3, '--fid_protocol', 'both')
    tools = tiny_metrics(cfg, lpips_model, ('stargan-v2', 'standard'))
    E.evaluate_nets(nets, cfg, 2, 'cpu', tools)
    eval_dir = tmp_path / 'run' / 'eval'
    first = {name: read(eval_dir / name) for name in os.listdir(eval_dir)}
    assert sorted(first) == sorted(f'{kind}_00002_{mode}.json' for kind in ('FID', 'FID_standard', 'LPIPS')
                                   for mode in ('latent', 'reference'))
    names = ['autumn', 'spring', 'winter']
    tasks = [f'{s}2{t}' for t in names for s in names if s != t]
    for mode in ('latent', 'reference'):
        for kind, protocol in (('FID', 'stargan-v2'), ('FID_standard', 'standard')):
            values = first[f'{kind}_00002_{mode}.json']
            assert list(values)[:7] == [f'FID_{mode}/{t}' for t in tasks] + [f'FID_{mode}/mean']
            assert values['protocol'] == protocol
    # Same seed: the same numbers.
    E.evaluate_nets(nets, cfg, 2, 'cpu', tools)
    assert {name: read(eval_dir / name) for name in first} == first
    # A val batch smaller than the val set (3 images, batches of 2): the same z and references per source,
    # so the same numbers up to convolution round-off (which can move a pixel by one level).
    small_batches = cfg.replace(val_batch_size=2)
    E.evaluate_nets(nets, small_batches, 2, 'cpu', tiny_metrics(small_batches, lpips_model, ('stargan-v2', 'standard')))
    for name, values in first.items():
        again = read(eval_dir / name)
        for key, value in values.items():
            assert again[key] == (value if isinstance(value, str) else pytest.approx(value, rel=1e-3))
    # Another seed draws other styles.
    E.evaluate_nets(nets, cfg.replace(seed=cfg.seed + 1), 2, 'cpu', tools)
    assert read(eval_dir / 'LPIPS_00002_latent.json') != first['LPIPS_00002_latent.json']


# ----------------------------------------------------------------------------------------------
# Real statistics cache
# ----------------------------------------------------------------------------------------------

def test_real_statistics_are_cached_and_invalidated_by_a_changed_file(seasons32, tmp_path, monkeypatch):
    folder = tmp_path / 'winter'
    shutil.copytree(seasons32 / 'train' / 'winter', folder)
    extractors = {'stargan-v2': TinyExtractor('stargan-v2')}
    cache = tmp_path / 'cache'
    stats, hits = real_statistics(str(folder), 32, extractors, str(cache), 'cpu')
    assert hits == [] and len(os.listdir(cache)) == 2

    def no_images(*args, **kwargs):
        raise AssertionError('the real images were read again')
    monkeypatch.setattr(stats_cache, 'extract_features', no_images)
    again, hits = real_statistics(str(folder), 32, extractors, str(cache), 'cpu')
    assert hits == ['stargan-v2'] and np.array_equal(again['stargan-v2'].sigma, stats['stargan-v2'].sigma)
    # Touching a file (new mtime, same bytes) is still a hit.
    first = sorted(folder.iterdir())[0]
    os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 10 ** 9))
    assert real_statistics(str(folder), 32, extractors, str(cache), 'cpu')[1] == ['stargan-v2']
    # Another feature network is another entry.
    with pytest.raises(AssertionError, match='read again'):
        real_statistics(str(folder), 32, {'stargan-v2': TinyExtractor('stargan-v2', seed=1)}, str(cache), 'cpu')
    # Changed content invalidates the entry.
    monkeypatch.undo()
    shutil.copy(seasons32 / 'train' / 'autumn' / '0000.png', first)
    os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 2 * 10 ** 9))
    changed, hits = real_statistics(str(folder), 32, extractors, str(cache), 'cpu')
    assert hits == [] and scaled_gap(changed['stargan-v2'].mu, stats['stargan-v2'].mu) > 1e-3


# ----------------------------------------------------------------------------------------------
# Command line and training
# ----------------------------------------------------------------------------------------------

def test_mode_eval_command_line(seasons32, tmp_path, monkeypatch, lpips_model):
    data = subset(seasons32, tmp_path, ['autumn', 'winter'], num_val=2)
    run = tmp_path / 'run'
    cfg, _ = trained_model(data, run, 2)
    flags = tiny_flags(data, run, '--num_domains', '2', '--num_outs_per_domain', '2',
                       '--fid_stats_dir', str(run / 'stats'))[2:]
    monkeypatch.setenv('STARGAN_WEIGHTS_DIR', str(tmp_path / 'no_weights'))
    assert main(['--mode', 'eval', '--resume_iter', '2'] + flags) == 1   # weights missing: refused up front
    monkeypatch.setattr(preflight, 'weight_errors', lambda *args, **kwargs: [])
    monkeypatch.setattr(E, 'build_metrics', lambda cfg, device, pretrained=True: tiny_metrics(cfg, lpips_model))
    assert main(['--mode', 'eval', '--resume_iter', 'latest'] + flags) == 0
    assert os.path.isfile(run / 'eval' / 'FID_00002_reference.json')
    assert os.path.isfile(run / 'eval' / 'LPIPS_00002_latent.json')


def test_missing_weights_stop_eval_and_training_before_any_work(seasons32, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv('STARGAN_WEIGHTS_DIR', str(tmp_path / 'empty'))
    run = tmp_path / 'run'
    assert main(tiny_flags(seasons32, run, '--eval_every', '2', '--num_outs_per_domain', '2')) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: missing weight file') and 'bash download.sh metric-weights' in err
    assert '--eval_every 0' in err and 'Traceback' not in err
    assert not os.path.exists(run / 'checkpoints')
    assert main(['--mode', 'eval', '--fid_protocol', 'standard'] + tiny_flags(seasons32, run)[2:]
                + ['--num_outs_per_domain', '2']) == 1
    assert 'pt_inception-2015-12-05-6726825d.pth' in capsys.readouterr().err


def test_eval_every_during_training_writes_files_and_logs_means(seasons32, tmp_path, monkeypatch, lpips_model):
    monkeypatch.setattr(preflight, 'weight_errors', lambda *args, **kwargs: [])
    monkeypatch.setattr(E, 'build_metrics', lambda cfg, device, pretrained=True: tiny_metrics(cfg, lpips_model))
    data = subset(seasons32, tmp_path, ['autumn', 'winter'], num_val=2)
    run = tmp_path / 'run'
    train(parse_config(tiny_flags(data, run, '--num_domains', '2', '--eval_every', '2', '--sample_every', '0',
                                  '--num_outs_per_domain', '2', '--fid_stats_dir', str(run / 'stats'))))
    for step in ('00002', '00004'):
        assert os.path.isfile(run / 'eval' / f'FID_{step}_latent.json')
    with open(run / 'checkpoints' / 'stats.jsonl') as f:
        logged = [json.loads(line) for line in f if 'FID_latent/mean' in line]
    assert [entry['step'] for entry in logged] == [2, 4]
    assert logged[0]['LPIPS_reference/mean'] > 0


# ----------------------------------------------------------------------------------------------
# The metric registry and --metrics
# ----------------------------------------------------------------------------------------------

def test_the_registry_lists_the_built_in_metrics_and_the_default_is_fid_and_lpips():
    assert registered() == ['domain_acc', 'fid', 'lpips', 'structure']
    assert get('fid') is FID and get('lpips') is LPIPSDiversity
    assert parse_config(['--mode', 'eval']).metrics == ('fid', 'lpips')   # the metrics marked by_default
    assert parse_config(['--mode', 'eval', '--metrics', ' lpips, fid ,']).metrics == ('lpips', 'fid')
    with pytest.raises(UnknownPlugin, match="unknown metric 'kid'; available: domain_acc, fid, lpips, structure"):
        get('kid')


def test_the_fid_metric_declares_its_flags_and_lpips_its_rule():
    own = argparse.ArgumentParser()
    FID.add_arguments(own)
    assert {a.dest for a in own._actions} == {'help', 'fid_protocol', 'fid_stats_dir'}
    action = next(a for a in build_parser()._actions if a.dest == 'fid_protocol')
    assert action.choices == list(PROTOCOLS) + ['both'] and action.default == 'stargan-v2'
    one = ['--num_outs_per_domain', '1']
    with pytest.raises(ConfigError, match='--num_outs_per_domain must be at least 2 for the LPIPS'):
        parse_config(['--mode', 'eval'] + one)
    parse_config(['--mode', 'eval', '--metrics', 'fid'] + one)      # LPIPS not selected
    parse_config(['--mode', 'train', '--eval_every', '0'] + one)   # nothing evaluated


@pytest.mark.parametrize('flags, expected', [
    ([], ['inception_v3_torchvision', 'alexnet']),
    (['--fid_protocol', 'both'], ['inception_v3_torchvision', 'inception_tf_fid', 'alexnet']),
    (['--metrics', 'lpips,fid', '--fid_protocol', 'standard'], ['alexnet', 'inception_tf_fid']),
    (['--metrics', 'domain_acc,structure'], []),
])
def test_preflight_checks_the_weight_files_the_selected_metrics_declare(monkeypatch, flags, expected):
    checked = []
    monkeypatch.setattr(preflight, 'require_weight', checked.append)
    cfg = parse_config(['--mode', 'eval'] + flags)
    assert preflight.metric_weight_errors(cfg) == [] and checked == expected
    assert checked == registry.metric_weight_files(cfg)
    checked.clear()   # a run that never evaluates checks no weight file
    assert preflight.metric_weight_errors(parse_config(['--mode', 'train', '--eval_every', '0'] + flags)) == []
    assert checked == []


def test_unknown_metric_names_stop_the_run_before_any_work(seasons32, tmp_path, capsys):
    run = tmp_path / 'run'
    assert main(tiny_flags(seasons32, run, '--metrics', 'fid,kid,fid')) == 1
    err = capsys.readouterr().err
    assert "--metrics: unknown metric 'kid'; available: domain_acc, fid, lpips, structure" in err
    assert '--metrics: fid given twice' in err and 'Traceback' not in err
    assert not os.path.exists(run)
    assert main(['--mode', 'eval', '--metrics', ','] + tiny_flags(seasons32, run)[2:]) == 1
    assert '--metrics needs at least one metric' in capsys.readouterr().err


class MeanPixel(Metric):
    """A toy metric: the mean pixel value of a task's outputs, declared with a weight file it never reads."""
    series = (Series('MEANPIX'),)

    @staticmethod
    def weight_files(cfg):
        return ['vgg16']

    def update(self, task, batch):
        return {'mean': torch.cat([x_fake.mean((1, 2, 3)) for x_fake in batch.x_fake])}   # (K * N,)

    def end_task(self, task, rows):
        return {'MEANPIX': float(rows['mean'].mean())}

    def fields(self, series):
        return {'unit': 'generator output'}


@pytest.fixture
def mean_pixel():
    """MeanPixel registered as 'mean_pixel' for one test; the registry is restored afterwards."""
    with registry.METRICS.restored():
        yield register('mean_pixel')(MeanPixel)
    assert 'mean_pixel' not in registered()


def test_a_metric_registered_in_a_test_is_selected_written_and_returned(mean_pixel, seasons32, tmp_path,
                                                                        monkeypatch, capsys):
    assert 'mean_pixel' in registered()
    data = subset(seasons32, tmp_path, ['autumn', 'winter'], num_val=2)
    run = tmp_path / 'run'
    cfg, nets = trained_model(data, run, 2, '--metrics', 'mean_pixel')
    # Its declared weight file is checked up front...
    monkeypatch.setenv('STARGAN_WEIGHTS_DIR', str(tmp_path / 'no_weights'))
    flags = ['--mode', 'eval', '--resume_iter', '2', '--metrics', 'mean_pixel'] + tiny_flags(
        data, run, '--num_domains', '2', '--num_outs_per_domain', '2', '--fid_stats_dir', str(run / 'stats'))[2:]
    assert main(flags) == 1 and 'vgg16' in capsys.readouterr().err
    # ...and with it present (checked away here) the run writes its files and nothing else.
    monkeypatch.setattr(preflight, 'weight_errors', lambda *args, **kwargs: [])
    assert main(flags) == 0
    eval_dir = run / 'eval'
    assert sorted(os.listdir(eval_dir)) == ['MEANPIX_00002_latent.json', 'MEANPIX_00002_reference.json']
    latent = read(eval_dir / 'MEANPIX_00002_latent.json')
    tasks = ['MEANPIX_latent/winter2autumn', 'MEANPIX_latent/autumn2winter']
    assert list(latent) == tasks + ['MEANPIX_latent/mean', 'unit']
    assert all(-1 <= latent[t] <= 1 for t in tasks) and latent['unit'] == 'generator output'
    reference = read(eval_dir / 'MEANPIX_00002_reference.json')
    assert E.evaluate_nets(nets, cfg, 2, 'cpu') == {'MEANPIX_latent/mean': latent['MEANPIX_latent/mean'],
                                                    'MEANPIX_reference/mean': reference['MEANPIX_reference/mean']}
