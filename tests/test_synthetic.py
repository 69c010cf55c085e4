"""Tests of the procedural seasons/weather landscape datasets (core/data/synthetic.py)."""
import itertools
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data import synthetic
from core.data.synthetic import DATASETS, layout_seed, make_dataset, render_scene

REPO = Path(__file__).resolve().parents[1]
SMALL = dict(num_train=3, num_val=2, img_size=24)


def _load(path):
    return np.asarray(Image.open(path).convert('RGB'))


def _files(root):
    """Relative path -> bytes of every file under root."""
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


def _edges(img, pool=2):
    """Gradient magnitude of a slightly pooled grey image: a layout-structure signature."""
    g = img.astype(np.float64).mean(axis=2)
    n = g.shape[0] // pool
    g = g[:n * pool, :n * pool].reshape(n, pool, n, pool).mean(axis=(1, 3))
    return (np.abs(np.diff(g, axis=1))[:-1] + np.abs(np.diff(g, axis=0))[:, :-1]).ravel()


def _corr(a, b):
    return float(np.corrcoef(a, b)[0, 1])


def _cli(*args, **kwargs):
    return subprocess.run([sys.executable, '-m', 'core.data.synthetic', *args], cwd=REPO,
                          capture_output=True, text=True, timeout=60, **kwargs)


@pytest.fixture(scope='module')
def made(tmp_path_factory):
    """One generated dataset per kind: name -> (path, parameters)."""
    root = tmp_path_factory.mktemp('synthetic')
    params = dict(num_train=16, num_val=6, img_size=32, seed=3)
    return {name: (make_dataset(name, root / name, **params), params) for name in DATASETS}


def test_domain_names_are_plain_and_sorted():
    assert DATASETS == {'seasons': ['autumn', 'spring', 'summer', 'winter'],
                        'weather': ['cloudy', 'foggy', 'rainy', 'snowy', 'sunny']}


@pytest.mark.parametrize('name', sorted(DATASETS))
def test_folder_layout_counts_and_sizes(made, name):
    path, params = made[name]
    assert sorted(p.name for p in path.iterdir()) == ['synthetic.json', 'train', 'val']
    for split, count in (('train', params['num_train']), ('val', params['num_val'])):
        assert sorted(p.name for p in (path / split).iterdir()) == DATASETS[name]
        for domain in DATASETS[name]:
            names = sorted(p.name for p in (path / split / domain).iterdir())
            assert names == [f'{i:04d}.png' for i in range(count)]
            for file in (path / split / domain).iterdir():
                with Image.open(file) as im:
                    assert (im.format, im.mode, im.size) == ('PNG', 'RGB', (32, 32))
    marker = json.loads((path / 'synthetic.json').read_text())
    assert marker['dataset'] == name and marker['domains'] == DATASETS[name]
    assert {k: marker[k] for k in params} == params


def test_deterministic_byte_identical(tmp_path):
    a = make_dataset('weather', tmp_path / 'a', seed=5, **SMALL)
    b = make_dataset('weather', tmp_path / 'b', seed=5, **SMALL)
    files_a, files_b = _files(a), _files(b)
    assert len(files_a) == 5 * 5 + 1
    assert files_a == files_b
    other = _files(make_dataset('weather', tmp_path / 'c', seed=6, **SMALL))
    assert other.keys() == files_a.keys()
    assert all(other[k] != files_a[k] for k in files_a if k.endswith('.png'))


def test_render_scene_is_deterministic_and_sized():
    for size in (16, 24, 65):
        img = render_scene(11, 'seasons', 'winter', size)
        assert img.shape == (size, size, 3) and img.dtype == np.uint8
        assert np.array_equal(img, render_scene(11, 'seasons', 'winter', size))
    assert not np.array_equal(render_scene(11, 'seasons', 'winter', 24), render_scene(12, 'seasons', 'winter', 24))


def test_style_seed_restyles_the_same_layout():
    # The default style is the layout's own (as the datasets are drawn); another style seed changes the
    # colours of the same scene, and style seeds are deterministic.
    own = render_scene(11, 'seasons', 'winter', 32)
    assert np.array_equal(own, render_scene(11, 'seasons', 'winter', 32, style_seed=11))
    other = render_scene(11, 'seasons', 'winter', 32, style_seed=5)
    assert np.array_equal(other, render_scene(11, 'seasons', 'winter', 32, style_seed=5))
    assert np.abs(own.astype(int) - other.astype(int)).mean() > 2
    with pytest.raises(ValueError, match='style_seed'):
        render_scene(11, 'seasons', 'winter', 32, style_seed=-1)


@pytest.mark.parametrize('name', sorted(DATASETS))
def test_domains_separable_by_mean_colour(made, name):
    path, _ = made[name]
    domains = DATASETS[name]

    def means(split, domain):
        return np.array([_load(p).reshape(-1, 3).mean(0) for p in sorted((path / split / domain).glob('*.png'))])

    centroids = np.array([means('train', d).mean(0) for d in domains])
    correct = total = 0
    for label, domain in enumerate(domains):
        val = means('val', domain)
        pred = np.argmin(((val[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
        correct += int((pred == label).sum())
        total += len(pred)
    assert correct / total >= 0.9


@pytest.mark.parametrize('name', sorted(DATASETS))
def test_same_layout_shares_structure_across_domains(name):
    seeds = range(6)
    edges = {d: [_edges(render_scene(s, name, d, 64)) for s in seeds] for d in DATASETS[name]}
    for a, b in itertools.combinations(DATASETS[name], 2):
        same = np.mean([_corr(edges[a][i], edges[b][i]) for i in range(len(seeds))])
        other = np.mean([_corr(edges[a][i], edges[b][j])
                         for i in range(len(seeds)) for j in range(len(seeds)) if i != j])
        assert same > other + 0.1, (a, b, same, other)


@pytest.mark.parametrize('name', sorted(DATASETS))
def test_files_are_their_layout_seeds_and_layouts_are_disjoint(made, name):
    path, params = made[name]
    seeds = {}
    for split in ('train', 'val'):
        for domain in DATASETS[name]:
            for i, file in enumerate(sorted((path / split / domain).glob('*.png'))):
                seed = layout_seed(name, domain, split, i, params['seed'])
                seeds[(split, domain, i)] = seed
                if i < 2:
                    assert np.array_equal(_load(file), render_scene(seed, name, domain, params['img_size']))
    assert len(set(seeds.values())) == len(seeds)
    # No domain holds another domain's layout: a's train layouts rendered in b
    # match none of b's train images.
    for a, b in itertools.permutations(DATASETS[name], 2):
        b_images = [_load(p) for p in sorted((path / 'train' / b).glob('*.png'))]
        for i in range(6):
            mine = render_scene(seeds[('train', a, i)], name, b, params['img_size'])
            assert not any(np.array_equal(mine, img) for img in b_images)


def test_existing_complete_dataset_is_reused(tmp_path):
    out = make_dataset('seasons', tmp_path / 'd', **SMALL)
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob('*')}
    time.sleep(0.02)
    assert make_dataset('seasons', tmp_path / 'd', **SMALL) == out
    assert {p: p.stat().st_mtime_ns for p in out.rglob('*')} == stamps


def test_mismatched_folder_raises_unless_overwrite(tmp_path):
    out = make_dataset('seasons', tmp_path / 'd', **SMALL)
    with pytest.raises(FileExistsError, match='overwrite'):
        make_dataset('seasons', out, **{**SMALL, 'num_train': 4})
    with pytest.raises(FileExistsError):
        make_dataset('weather', out, **SMALL)
    assert len(list((out / 'train' / 'autumn').glob('*.png'))) == 3
    make_dataset('seasons', out, overwrite=True, **{**SMALL, 'num_train': 4})
    assert len(list((out / 'train' / 'autumn').glob('*.png'))) == 4
    assert json.loads((out / 'synthetic.json').read_text())['num_train'] == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ['d']


def test_foreign_or_incomplete_folder_raises(tmp_path):
    foreign = tmp_path / 'foreign'
    foreign.mkdir()
    (foreign / 'notes.txt').write_text('mine')
    with pytest.raises(FileExistsError):
        make_dataset('seasons', foreign, **SMALL)
    assert (foreign / 'notes.txt').read_text() == 'mine'
    out = make_dataset('seasons', tmp_path / 'd', **SMALL)
    (out / 'val' / 'winter' / '0001.png').unlink()
    with pytest.raises(FileExistsError):
        make_dataset('seasons', out, **SMALL)
    empty = tmp_path / 'empty'
    empty.mkdir()
    assert (make_dataset('seasons', empty, **SMALL) / 'synthetic.json').is_file()


def test_failed_generation_leaves_nothing(tmp_path, monkeypatch):
    calls = []

    def failing_save(array, path):
        calls.append(path)
        if len(calls) > 5:
            raise KeyboardInterrupt
        Image.fromarray(array).save(path, format='PNG')

    monkeypatch.setattr(synthetic, '_save_png', failing_save)
    with pytest.raises(KeyboardInterrupt):
        make_dataset('seasons', tmp_path / 'd', **SMALL)
    assert len(calls) == 6
    assert list(tmp_path.iterdir()) == []


def test_killed_generation_leaves_no_marker(tmp_path):
    out = tmp_path / 'd'
    # Large enough to take many seconds, so the kill lands mid-way.
    proc = subprocess.Popen([sys.executable, '-m', 'core.data.synthetic', 'weather', '--out', str(out),
                             '--img_size', '512'], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 30
        while not list(tmp_path.glob('.*/train/*/*.png')) and time.time() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, 'generation finished before it could be interrupted'
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert not out.exists()
    assert list(tmp_path.rglob('synthetic.json')) == []
    # A later run is not confused by the leftover and produces the real thing.
    make_dataset('weather', out, **SMALL)
    assert _files(out) == _files(make_dataset('weather', tmp_path / 'ref', **SMALL))


@pytest.mark.parametrize('kwargs', [
    dict(dataset='autumn'), dict(img_size=15), dict(img_size=513), dict(img_size=32.0),
    dict(num_train=0), dict(num_val=-1), dict(seed=-1),
])
def test_bad_arguments_raise(tmp_path, kwargs):
    args = dict(dataset='seasons', out_dir=tmp_path / 'd', **SMALL)
    args.update(kwargs)
    with pytest.raises(ValueError):
        make_dataset(**args)
    assert not (tmp_path / 'd').exists()


def test_render_scene_rejects_unknown_domain():
    with pytest.raises(ValueError, match='sunny'):
        render_scene(0, 'seasons', 'sunny')
    with pytest.raises(ValueError):
        render_scene(-1, 'seasons', 'winter')


def test_cli_writes_then_reuses(tmp_path):
    out = tmp_path / 'cli'
    args = ('seasons', '--out', str(out), '--num_train', '2', '--num_val', '1', '--img_size', '16', '--seed', '4')
    first = _cli(*args)
    assert first.returncode == 0, first.stderr
    assert first.stdout.count('\n') == 1 and str(out) in first.stdout and first.stdout.startswith('wrote')
    assert _files(out) == _files(make_dataset('seasons', tmp_path / 'api', 2, 1, 16, 4))
    second = _cli(*args)
    assert second.returncode == 0 and second.stdout.startswith('reused')


@pytest.mark.parametrize('args, word', [
    (('seasons', '--out', 'x', '--img_size', '8'), 'img_size'),
    (('seasons', '--out', 'x', '--img_size', 'big'), 'img_size'),
    (('storms', '--out', 'x'), 'storms'),
    (('weather',), '--out'),
])
def test_cli_bad_arguments(tmp_path, args, word):
    result = _cli(*args)
    assert result.returncode != 0
    assert word in result.stderr and 'Traceback' not in result.stderr
    assert result.stdout == ''


def test_cli_existing_mismatch_is_a_clear_error(tmp_path):
    make_dataset('seasons', tmp_path / 'd', **SMALL)
    result = _cli('seasons', '--out', str(tmp_path / 'd'), '--img_size', '16')
    assert result.returncode != 0
    assert '--overwrite' in result.stderr and 'Traceback' not in result.stderr


@pytest.mark.parametrize('domain', DATASETS['seasons'])
def test_styles_vary_within_a_domain(domain):
    """Each image draws its own style (light, tint, hue, sky): the sky colour of one season spreads.

    With one look per season (renderer version 1) only a 5% brightness jitter varied, and a
    model had no styles to learn within a domain.
    """
    sky = np.array([render_scene(layout_seed('seasons', domain, 'train', i), 'seasons', domain, 32)[:4]
                    .reshape(-1, 3).mean(0) for i in range(12)]) / 255.0
    assert sky.std(0).max() > 0.04
