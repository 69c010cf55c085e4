"""--mode prepare (the seeded train/val split) and the dataset manifest checked at load time."""
import csv
import hashlib
import json
import os
import shutil

import numpy as np
import pytest
from PIL import Image

from core.config import parse_config
from core.data.loader import domain_tree_dataset, make_train_iterator
from core.data.manifest import ManifestError, verify_manifest
from core.data.prepare import prepare, split_domain
from main import main


def write_png(path, seed, size=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)).save(path)


@pytest.fixture
def raw(tmp_path):
    """Three domains of 7, 9 and 8 distinct images; 'cat' has a sub-folder."""
    root = tmp_path / 'raw'
    seed = 0
    for domain, count in (('cat', 7), ('dog', 9), ('fox', 8)):
        for i in range(count):
            sub = 'indoor/' if domain == 'cat' and i % 2 else ''
            write_png(root / domain / f'{sub}{i:03d}.png', seed)
            seed += 1
    return root


def prepare_flags(raw, out, *extra):
    return ['--mode', 'prepare', '--raw_dir', str(raw), '--train_img_dir', str(out / 'train'),
            '--val_img_dir', str(out / 'val'), '--val_per_domain', '2', *extra]


def listing(root):
    return sorted(os.path.relpath(os.path.join(d, f), root) for d, _, files in os.walk(root) for f in files)


def test_split_is_deterministic_sized_and_seeded(raw, tmp_path):
    prepare(parse_config(prepare_flags(raw, tmp_path / 'a')))
    prepare(parse_config(prepare_flags(raw, tmp_path / 'b')))
    prepare(parse_config(prepare_flags(raw, tmp_path / 'c', '--seed', '5')))
    a, b, c = (listing(tmp_path / x) for x in 'abc')
    assert a == b and a != c
    for domain, count in (('cat', 7), ('dog', 9), ('fox', 8)):
        val = [p for p in a if p.startswith(f'val/{domain}/')]
        train = [p for p in a if p.startswith(f'train/{domain}/')]
        assert len(val) == 2 and len(train) == count - 2
    assert 'train/cat/indoor/001.png' in a or 'val/cat/indoor/001.png' in a   # sub-folders kept
    # Adding an image to a domain moves none of the others between the splits.
    rels = [f'dog/{i:03d}.png' for i in range(9)]
    train, val = split_domain(rels, 2, 777, 'dog')
    train2, val2 = split_domain(rels + ['dog/zzz.png'], 2, 777, 'dog')
    assert set(val2) <= set(val) | {'dog/zzz.png'} and set(train) - set(val2) <= set(train2)


def test_manifest_lists_every_image_with_its_hash(raw, tmp_path):
    summary = prepare(parse_config(prepare_flags(raw, tmp_path / 'out')))
    with open(tmp_path / 'out' / 'manifest.csv', newline='') as f:
        rows = list(csv.DictReader(f))
    assert [r['path'] for r in rows] == [p for p in listing(tmp_path / 'out')
                                        if p.startswith(('train/', 'val/'))]
    for row in rows:
        data = (tmp_path / 'out' / row['path']).read_bytes()
        assert row['sha256'] == hashlib.sha256(data).hexdigest() and int(row['size']) == len(data)
    info = json.loads((tmp_path / 'out' / 'split.json').read_text())
    assert info['domains'] == summary['domains'] and info['val_per_domain'] == 2 and info['seed'] == 777


def test_manifest_detects_changed_added_and_missing_files(raw, tmp_path):
    out = tmp_path / 'out'
    prepare(parse_config(prepare_flags(raw, out)))
    verify_manifest(out / 'train')   # unchanged: passes
    victim = sorted((out / 'train' / 'dog').glob('*.png'))[0]
    write_png(victim, seed=999)
    os.utime(victim, ns=(victim.stat().st_atime_ns, victim.stat().st_mtime_ns + 10 ** 9))
    with pytest.raises(ManifestError, match=rf'1 changed \(train/dog/{victim.name}\)'):
        verify_manifest(out / 'train')
    with pytest.raises(ManifestError, match='changed'):   # the training loader checks it too
        domain_tree_dataset(str(out / 'train'), 8, 3)
    verify_manifest(out / 'val')   # only the split that changed fails
    write_png(out / 'val' / 'fox' / 'new.png', seed=1000)
    missing = sorted((out / 'val' / 'cat').rglob('*.png'))[0]
    missing.unlink()
    with pytest.raises(ManifestError) as err:
        verify_manifest(out / 'val')
    assert f'1 missing (val/cat/{missing.relative_to(out / "val" / "cat").as_posix()})' in str(err.value) and '1 added (val/fox/new.png)' in str(err.value)
    assert '--mode prepare' in str(err.value)


def test_touched_but_unchanged_files_pass_and_are_not_hashed_again(raw, tmp_path, monkeypatch):
    out = tmp_path / 'out'
    prepare(parse_config(prepare_flags(raw, out)))
    first = sorted((out / 'train' / 'fox').glob('*.png'))[0]
    os.utime(first, ns=(first.stat().st_atime_ns, first.stat().st_mtime_ns + 10 ** 9))
    verify_manifest(out / 'train')   # re-hashes the touched file: same bytes, passes

    import core.data.manifest as M
    monkeypatch.setattr(M, 'sha256_file', lambda path: pytest.fail(f'{path} was hashed again'))
    verify_manifest(out / 'train')
    verify_manifest(out / 'val')


def test_training_on_a_modified_dataset_stops_with_one_line(raw, tmp_path, capsys):
    out = tmp_path / 'out'
    prepare(parse_config(prepare_flags(raw, out)))
    victim = sorted((out / 'train' / 'cat').glob('*.png'))[0]
    victim.unlink()
    flags = ['--mode', 'train', '--num_domains', '3', '--img_size', '32', '--base_dim', '8', '--max_conv_dim', '16',
             '--train_img_dir', str(out / 'train'),
             '--val_img_dir', str(out / 'val'), '--checkpoint_dir', str(tmp_path / 'ck'), '--eval_every', '0']
    with pytest.raises(ManifestError):
        make_train_iterator(parse_config(flags), 0, 'cpu')
    assert main(flags + ['--total_iters', '1', '--num_workers', '0']) == 1
    err = capsys.readouterr().err
    assert err.startswith('error: the images in') and f'train/cat/{victim.name}' in err and 'Traceback' not in err


def test_duplicates_across_splits_are_reported(tmp_path, capsys):
    raw = tmp_path / 'raw'
    for i in range(5):
        write_png(raw / 'a' / f'{i}.png', seed=42)      # five identical files
        write_png(raw / 'b' / f'{i}.png', seed=100 + i)
    summary = prepare(parse_config(prepare_flags(raw, tmp_path / 'out', '--val_per_domain', '1')))
    pairs = summary['duplicates_across_splits']
    assert len(pairs) == 4 and all(t.startswith('train/a/') and v.startswith('val/a/') for t, v in pairs)
    assert 'warning: 4 image(s) in val have a byte-identical copy in train' in capsys.readouterr().out


def test_prepare_refuses_bad_requests(raw, tmp_path, capsys):
    out = tmp_path / 'out'
    assert main(prepare_flags(raw, out)) == 0
    assert main(prepare_flags(raw, out)) == 1
    assert 'already exists' in capsys.readouterr().err
    assert main(prepare_flags(raw, tmp_path / 'big', '--val_per_domain', '7')) == 1
    assert "domain 'cat' has 7 usable images" in capsys.readouterr().err
    assert not (tmp_path / 'big').exists()
    assert main(['--mode', 'prepare', '--raw_dir', str(raw), '--train_img_dir', str(tmp_path / 'x' / 'train'),
                 '--val_img_dir', str(tmp_path / 'x' / 'val')]) == 1
    assert '--val_per_domain N' in capsys.readouterr().err
    assert main(['--mode', 'prepare', '--train_img_dir', str(tmp_path / 'y' / 'train')]) == 1
    assert '--raw_dir' in capsys.readouterr().err


def test_preset_gives_the_paper_val_size(raw, tmp_path, capsys):
    flags = ['--mode', 'prepare', '--preset', 'seasons', '--raw_dir', str(raw),
             '--train_img_dir', str(tmp_path / 's' / 'train'), '--val_img_dir', str(tmp_path / 's' / 'val')]
    assert main(flags) == 1   # 100 val images per domain, but only 7-9 here
    assert '--val_per_domain 100' in capsys.readouterr().err
    shutil.rmtree(tmp_path / 's', ignore_errors=True)
