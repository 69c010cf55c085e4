"""Feature statistics of image sets, and a cache of them for real image folders.

FeatureStats / feature_stats: the Gaussian statistics FID compares
(metrics.fid.frechet_distance); extract_features: features of image files.
The real images of an evaluation (all training images of each target domain)
are the same for every checkpoint of every run, so their statistics
are computed once and stored in --fid_stats_dir, one entry per (folder,
protocol, image size, feature network):
  <protocol>_<size>px_<folder name>_<key>.npz    mu, sigma (float64, as pytorch-fid's files),
                                                 the eigen-decomposition of sigma, content digest
  <protocol>_<size>px_<folder name>_<key>.json   the folder's file records (path, size, mtime, sha256)
An entry is used only if the folder's content digest (every path and SHA-256)
still equals the stored one; files whose size and mtime are unchanged are not
re-hashed (core.data.manifest.file_records), so a hit costs a directory scan.
Under torchrun the processes split a miss's images (metrics.sharding) and
gather the features; rank 0 alone writes the entry.
"""
import hashlib
import io
import json
import os
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from core.utils import distributed
from core.data.loader import read_image, squash
from core.utils.errors import UserError
from core.utils.fileio import atomic_write_bytes, atomic_write_text
from core.data.images import check_images
from core.data.manifest import content_digest, file_records, records_from_json, records_to_json, relative_images
from metrics.sharding import gather_row_dict

class FeatureStats(NamedTuple):
    """Gaussian statistics of a feature set, with the eigen-decomposition of its covariance.

    mu (D,); sigma (D, D) unbiased covariance (np.cov); eigval (r,) its
    positive eigenvalues and eigvec (D, r) their eigenvectors.
    """
    mu: np.ndarray
    sigma: np.ndarray
    eigval: np.ndarray
    eigvec: np.ndarray


def feature_stats(features):
    """FeatureStats of features (N, D), in float64.

    With fewer samples than dimensions (1,000 fakes of 2,048-d features in a
    Seasons task) the covariance has rank < N, and its eigenvectors come from
    the small N x N Gram matrix of the centred features.
    """
    x = np.asarray(features, dtype=np.float64)
    n, dim = x.shape
    if n < 2:
        raise UserError(f'FID needs at least 2 images per set, got {n}')
    mu = x.mean(axis=0)
    xc = x - mu                                          # (N, D)
    sigma = xc.T @ xc / (n - 1)                          # (D, D), = np.cov(x, rowvar=False)
    small = n - 1 < dim
    eigval, vec = np.linalg.eigh(xc @ xc.T / (n - 1) if small else sigma)   # (r0,), (r0, r0)
    # Round-off, not variance: numpy's matrix_rank tolerance.
    keep = eigval > eigval.max(initial=0) * max(n, dim) * np.finfo(np.float64).eps
    eigval, vec = eigval[keep], vec[:, keep]
    eigvec = xc.T @ vec / np.sqrt(eigval * (n - 1)) if small else vec       # (D, r), orthonormal columns
    return FeatureStats(mu, sigma, eigval, eigvec)


class Uint8Images(Dataset):
    """Image files resized to (img_size, img_size) as StarGAN v2's loaders do: dataset[k] -> uint8 (3, S, S)."""

    def __init__(self, paths, img_size):
        self.paths = list(paths)
        self.img_size = img_size

    def __len__(self):
        return len(self.paths)

    def __getitem__(self, index):
        pixels = np.array(squash(read_image(self.paths[index]), self.img_size))   # (S, S, 3)
        return torch.from_numpy(pixels).permute(2, 0, 1)                       # (3, S, S)


@torch.no_grad()
def extract_features(extractors, paths, img_size, device, batch_size=50, num_workers=0, desc='features'):
    """{protocol: features (N, 2048) numpy float32} of image files, one pass over the images."""
    loader = DataLoader(Uint8Images(paths, img_size), batch_size=batch_size, num_workers=num_workers,
                        pin_memory=torch.device(device).type == 'cuda')
    feats = {p: [] for p in extractors}
    for x in tqdm(loader, desc=desc, unit='batch', leave=False, disable=not distributed.is_main()):
        x = x.to(device, non_blocking=True)
        for p, extractor in extractors.items():
            feats[p].append(extractor(x))
    return {p: torch.cat(f).cpu().numpy() for p, f in feats.items()}


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
    [protocols served from the cache]). Under torchrun every process calls this
    together; a protocol that misses in any process is computed by all.
    """
    label = os.path.basename(os.path.normpath(folder))
    bases = {p: _entry_base(cache_dir, folder, p, img_size, e.identity) for p, e in extractors.items()}
    entries = {p: _read_entry(base) for p, base in bases.items()}
    known = {}
    for entry in entries.values():
        known.update(entry[0] if entry else {})
    records = file_records(folder, relative_images(folder), known, desc=f'Hashing {label}')
    digest = content_digest(records)
    writer = distributed.is_main()
    stats = {p: entry[2] for p, entry in entries.items() if entry is not None and entry[1] == digest}
    missed = {p for rank_missed in distributed.gather_objects([p for p in extractors if p not in stats])
              for p in rank_missed}   # computed together, so every process computes the same ones
    hits = [p for p in stats if p not in missed]
    for protocol in hits:
        if writer and entries[protocol][0] != records:   # touched but unchanged files: remember their new mtimes
            _write_meta(bases[protocol], records, digest)
    missing = {p: e for p, e in extractors.items() if p in missed}
    if missing:
        paths = check_images([os.path.join(folder, rel) for rel in sorted(records)], skip_bad)
        part = paths[distributed.process_slice(len(paths), batch_size)]
        feats = extract_features(missing, part, img_size, device, batch_size, num_workers,
                                 desc=f'real {label}') if part else {}
        feats = gather_row_dict({p: torch.from_numpy(f) for p, f in feats.items()}, device)   # (N, 2048) each
        for protocol in missing:
            stats[protocol] = feature_stats(feats[protocol].cpu().numpy())
            if writer:
                os.makedirs(cache_dir, exist_ok=True)
                _write_npz(bases[protocol] + '.npz', **stats[protocol]._asdict(), digest=np.array(digest))
                _write_meta(bases[protocol], records, digest)   # written last: it validates the npz
    return stats, hits
