"""--mode prepare: split a folder of per-domain images into train/ and val/ with a manifest.

    python main.py --mode prepare --preset seasons --raw_dir data/downloads/seasons
writes --train_img_dir and --val_img_dir (here data/seasons/train and data/seasons/val),
which must be sibling folders of one dataset ROOT, and in ROOT:
  manifest.csv   path,size,sha256 of every image (checked whenever the data is loaded)
  split.json     how the split was made (seed, sizes, duplicates found)
The manifest is written last, so a split interrupted before the end has no
manifest (and --train_img_dir/--val_img_dir must be deleted before retrying).

One split per ROOT: a ROOT that already holds manifest.csv or split.json is
refused, not merged into. Those files describe one split (its seed and sizes),
and a second split written beside the first would replace them, so training
on the first split would then fail its manifest check; a second split goes
into a folder of its own.

The split is a pure function of (--seed, domain name, file path): every image
gets the key sha256("seed:domain:path") and the --val_per_domain images with
the smallest keys of each domain go to val. It does not depend on the
platform, the library versions or the order the files were found in, and
adding images to a domain moves none of the others between the splits.
--val_per_domain defaults to the SRC paper's sizes with --preset seasons (100)
and weather (400). The paper's own split is not public, so numbers on this
split are not directly comparable with the paper's tables.

Images with identical bytes in both splits (duplicates in the source data)
are reported; they inflate scores that compare val outputs with train images.
"""
import hashlib
import itertools
import json
import os
import shutil
import tempfile
from collections import defaultdict

from core.utils.fileio import atomic_write_text
from core.data.images import DataError, check_images, list_domains
from core.data.manifest import MANIFEST_NAME, FileRecord, file_records, relative_images, write_manifest

PAPER_VAL_PER_DOMAIN = {'seasons': 100, 'weather': 400}
SPLIT_INFO_NAME = 'split.json'
MAX_LISTED_DUPLICATES = 10


def dataset_root(cfg):
    """ROOT of --train_img_dir ROOT/<a> and --val_img_dir ROOT/<b>."""
    root = os.path.dirname(os.path.abspath(cfg.train_img_dir))
    if os.path.dirname(os.path.abspath(cfg.val_img_dir)) != root:
        raise DataError('--mode prepare writes the train and val splits side by side: give --train_img_dir '
                        'ROOT/train and --val_img_dir ROOT/val with the same ROOT')
    return root


def val_per_domain(cfg):
    """--val_per_domain, or the paper's size for the seasons/weather presets."""
    if cfg.val_per_domain is not None:
        return cfg.val_per_domain
    dataset = (cfg.preset or '').split('-')[0]
    if dataset in PAPER_VAL_PER_DOMAIN:
        return PAPER_VAL_PER_DOMAIN[dataset]
    raise DataError('--mode prepare needs --val_per_domain N (validation images per domain); the seasons and '
                    'weather presets default to the SRC paper\'s 100 and 400')


def split_key(seed, domain, relpath):
    """The sort key that decides the split: a hash of (seed, domain, path)."""
    return hashlib.sha256(f'{seed}:{domain}:{relpath}'.encode('utf-8')).hexdigest()


def split_domain(relpaths, num_val, seed, domain):
    """(train, val) lists of one domain's image paths; val = the num_val smallest split keys."""
    if len(relpaths) <= num_val:
        raise DataError(f'domain {domain!r} has {len(relpaths)} usable images; --val_per_domain {num_val} '
                        f'would leave none for training. Lower --val_per_domain or add images.')
    ranked = sorted(relpaths, key=lambda rel: split_key(seed, domain, rel))
    return sorted(ranked[num_val:]), sorted(ranked[:num_val])


def _source_images(raw_dir, skip_bad):
    """{domain: sorted paths relative to raw_dir} of the usable images of every domain folder."""
    images = {}
    for domain in list_domains(raw_dir):
        rels = relative_images(raw_dir, os.path.join(raw_dir, domain))
        good = set(check_images([os.path.join(raw_dir, r) for r in rels], skip_bad))
        images[domain] = [r for r in rels if os.path.join(raw_dir, r) in good]
        if not images[domain]:
            raise DataError(f'domain folder {os.path.join(raw_dir, domain)} has no usable images')
    return images


def cross_split_duplicates(records):
    """[(train path, val path)] of byte-identical images in different splits; records: {(split, path): sha256}."""
    by_hash = defaultdict(lambda: {'train': [], 'val': []})
    for (split, path), sha in records.items():
        by_hash[sha][split].append(path)
    return sorted((t, v) for group in by_hash.values() for t in group['train'] for v in group['val'])


def _copy_split(raw_dir, tmp, plan):
    """Copy every (split, relpath) of plan from raw_dir to tmp/split/relpath (keeping modification times)."""
    for split, rel in plan:
        target = os.path.join(tmp, split, rel)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(os.path.join(raw_dir, rel), target)


def _check_outputs_free(cfg):
    for flag in ('train_img_dir', 'val_img_dir'):
        path = getattr(cfg, flag)
        if os.path.exists(path):
            raise DataError(f'--{flag} {path} already exists; --mode prepare never overwrites a dataset. '
                            f'Delete it or choose another folder.')


def _check_root_free(root):
    """Refuse a ROOT holding another split's manifest.csv or split.json (see the module docstring)."""
    taken = [name for name in (MANIFEST_NAME, SPLIT_INFO_NAME) if os.path.lexists(os.path.join(root, name))]
    if taken:
        raise DataError(f'{root} already holds {" and ".join(taken)} of another split; --mode prepare writes one '
                        f'split per folder and never replaces them. Give --train_img_dir and --val_img_dir in '
                        f'another folder (e.g. {root}_2/train and {root}_2/val), or delete the old split and '
                        f'its {" and ".join(taken)} first.')


def prepare(cfg):
    """Split --raw_dir into --train_img_dir / --val_img_dir and write the manifest; returns the summary."""
    root = dataset_root(cfg)
    num_val = val_per_domain(cfg)
    _check_outputs_free(cfg)
    _check_root_free(root)
    images = _source_images(cfg.raw_dir, cfg.skip_bad_images)
    hashes = {rel: r.sha256 for rel, r in
              file_records(cfg.raw_dir, list(itertools.chain(*images.values()))).items()}
    names = {split: os.path.basename(os.path.normpath(getattr(cfg, f'{split}_img_dir')))
             for split in ('train', 'val')}
    plan, counts = [], {}   # plan: (split, path in raw_dir = path inside the split folder)
    for domain, rels in images.items():
        train, val = split_domain(rels, num_val, cfg.seed, domain)
        counts[domain] = {'train': len(train), 'val': len(val)}
        plan += [('train', rel) for rel in train] + [('val', rel) for rel in val]

    os.makedirs(root, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix='.prepare-', suffix='.partial', dir=root)
    try:
        _copy_split(cfg.raw_dir, tmp, plan)
        for split in ('train', 'val'):
            os.replace(os.path.join(tmp, split), getattr(cfg, f'{split}_img_dir'))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    records = {}
    for split, rel in plan:
        out = f'{names[split]}/{rel}'
        st = os.stat(os.path.join(root, out))
        records[out] = FileRecord(st.st_size, st.st_mtime_ns, hashes[rel])
    manifest = write_manifest(root, records)   # written last: a complete manifest means a complete split
    duplicates = cross_split_duplicates({(split, f'{names[split]}/{rel}'): hashes[rel] for split, rel in plan})
    summary = {'seed': cfg.seed, 'val_per_domain': num_val, 'splits': names, 'domains': counts,
               'duplicates_across_splits': [list(pair) for pair in duplicates]}
    atomic_write_text(os.path.join(root, SPLIT_INFO_NAME), json.dumps(summary, indent=2) + '\n')
    _report(summary, manifest)
    return summary


def _report(summary, manifest):
    for domain, c in summary['domains'].items():
        print(f'{domain}: {c["train"]} train, {c["val"]} val')
    dups = summary['duplicates_across_splits']
    if dups:
        print(f'warning: {len(dups)} image(s) in val have a byte-identical copy in train:')
        for train, val in dups[:MAX_LISTED_DUPLICATES]:
            print(f'  {val} == {train}')
        if len(dups) > MAX_LISTED_DUPLICATES:
            print(f'  ... and {len(dups) - MAX_LISTED_DUPLICATES} more (all listed in {SPLIT_INFO_NAME})')
    print(f'wrote {manifest} ({sum(c["train"] + c["val"] for c in summary["domains"].values())} images, '
          f'seed {summary["seed"]})')
