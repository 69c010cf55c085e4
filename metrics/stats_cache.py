"""Cached FID statistics of real image folders.

The real images of an evaluation (all training images of each target domain)
are the same for every checkpoint of every run, so their Inception statistics
are computed once and stored in --fid_stats_dir, one entry per (folder,
protocol, image size, feature network):
  <protocol>_<size>px_<folder name>_<key>.npz    mu, sigma (float64, as pytorch-fid's files),
                                                 the eigen-decomposition of sigma, content digest
  <protocol>_<size>px_<folder name>_<key>.json   the folder's file records (path, size, mtime, sha256)
An entry is used only if the folder's content digest (every path and SHA-256)
still equals the stored one; files whose size and mtime are unchanged are not
re-hashed (core.manifest.file_records), so a hit costs a directory scan.
"""
import hashlib
import io
import json
import os

import numpy as np

from core.fileio import atomic_write_bytes, atomic_write_text
from core.images import check_images
from core.manifest import content_digest, file_records, records_from_json, records_to_json, relative_images
from metrics.fid import FeatureStats, extract_features, feature_stats

CACHE_VERSION = 1


def _entry_base(cache_dir, folder, protocol, img_size, identity):
    key = json.dumps({'folder': os.path.realpath(folder), 'protocol': protocol, 'img_size': img_size,
                      'network': identity, 'version': CACHE_VERSION}, sort_keys=True)
    digest = hashlib.sha256(key.encode('utf-8')).hexdigest()[:16]
    name = os.path.basename(os.path.normpath(folder))
    return os.path.join(cache_dir, f'{protocol}_{img_size}px_{name}_{digest}')


def _read_entry(base):
    """(records, digest, FeatureStats) of a cache entry, or None if absent or unreadable."""
    try:
        with open(base + '.json', encoding='utf-8') as f:
            meta = json.load(f)
        with np.load(base + '.npz') as data:
            if str(data['digest']) != meta['digest']:
                return None
            stats = FeatureStats(*(data[field] for field in FeatureStats._fields))
            return records_from_json(meta['records']), meta['digest'], stats
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _write_npz(path, **arrays):
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    atomic_write_bytes(path, buffer.getvalue())


def _write_meta(base, records, digest):
    atomic_write_text(base + '.json', json.dumps({'digest': digest, 'records': records_to_json(records)}))


def real_statistics(folder, img_size, extractors, cache_dir, device, batch_size=50, num_workers=0,
                    skip_bad=False):
    """Statistics of the images under `folder`, from the cache when the folder is unchanged.

    extractors: {protocol: FIDExtractor}; the protocols that miss are computed
    together in one pass over the images. Returns ({protocol: FeatureStats},
    [protocols served from the cache]).
    """
    label = os.path.basename(os.path.normpath(folder))
    bases = {p: _entry_base(cache_dir, folder, p, img_size, e.identity) for p, e in extractors.items()}
    entries = {p: _read_entry(base) for p, base in bases.items()}
    known = {}
    for entry in entries.values():
        known.update(entry[0] if entry else {})
    records = file_records(folder, relative_images(folder), known, desc=f'Hashing {label}')
    digest = content_digest(records)
    stats, hits = {}, []
    for protocol, entry in entries.items():
        if entry is not None and entry[1] == digest:
            stats[protocol] = entry[2]
            hits.append(protocol)
            if entry[0] != records:   # touched but unchanged files: remember their new mtimes
                _write_meta(bases[protocol], records, digest)
    missing = {p: e for p, e in extractors.items() if p not in stats}
    if missing:
        paths = check_images([os.path.join(folder, rel) for rel in sorted(records)], skip_bad)
        feats = extract_features(missing, paths, img_size, device, batch_size, num_workers, desc=f'real {label}')
        os.makedirs(cache_dir, exist_ok=True)
        for protocol in missing:
            stats[protocol] = feature_stats(feats[protocol])
            _write_npz(bases[protocol] + '.npz', **stats[protocol]._asdict(), digest=np.array(digest))
            _write_meta(bases[protocol], records, digest)   # written last: it validates the npz
    return stats, hits
