"""Content fingerprints of image folders: dataset manifests and cache keys.

A manifest (ROOT/manifest.csv, written by --mode prepare) lists every image of
a dataset as `path,size,sha256` with paths relative to ROOT. Whenever images
are loaded from ROOT/train or ROOT/val (or ROOT itself), they are checked
against it, so a changed, added or missing file stops the run with a list of
what differs.

Hashing a large dataset on every start would be slow, so a file whose size and
modification time equal those of its last successful check is not hashed
again: the (size, mtime, sha256) of checked files are remembered in
ROOT/.manifest_state.json (and, for FID statistics, beside the cached
statistics). Only new or touched files are read.
"""
import csv
import hashlib
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple

from tqdm import tqdm

from core.utils.errors import UserError
from core.utils.fileio import atomic_write_text, sha256_file
from core.data.images import list_images

MANIFEST_NAME = 'manifest.csv'
STATE_NAME = '.manifest_state.json'
MANIFEST_FIELDS = ('path', 'size', 'sha256')
MAX_LISTED = 8
HASH_PROGRESS_MIN = 500   # files; fewer hash too fast for a progress bar to help


class ManifestError(UserError):
    """The data on disk does not match its manifest, or the manifest is unreadable."""


class FileRecord(NamedTuple):
    size: int
    mtime_ns: int
    sha256: str


def relative_images(root, folder=None):
    """Image files under `folder` (default root), as sorted '/'-separated paths relative to root."""
    folder = root if folder is None else folder
    return sorted(os.path.relpath(p, root).replace(os.sep, '/') for p in list_images(folder))


def file_records(root, relpaths, known=None, desc='Hashing images'):
    """{relpath: FileRecord} of files under root; known records are reused when size and mtime match.

    Only files without a matching known record are read and hashed (in threads).
    """
    known = known or {}
    records, todo = {}, []
    for rel in relpaths:
        st = os.stat(os.path.join(root, rel))
        old = known.get(rel)
        if old is not None and (old.size, old.mtime_ns) == (st.st_size, st.st_mtime_ns):
            records[rel] = old
        else:
            todo.append((rel, st.st_size, st.st_mtime_ns))
    if todo:
        with ThreadPoolExecutor(max_workers=4) as pool:   # hashing releases the GIL
            hashes = pool.map(lambda item: sha256_file(os.path.join(root, item[0])), todo)
            hashes = list(tqdm(hashes, total=len(todo), desc=desc, unit='file', leave=False,
                               disable=len(todo) < HASH_PROGRESS_MIN))
        for (rel, size, mtime_ns), sha in zip(todo, hashes):
            records[rel] = FileRecord(size, mtime_ns, sha)
    return records


def content_digest(records):
    """One SHA-256 over the sorted (path, sha256) pairs: equal digests mean equal folder contents."""
    digest = hashlib.sha256()
    for rel in sorted(records):
        digest.update(f'{rel}\t{records[rel].sha256}\n'.encode('utf-8'))
    return digest.hexdigest()


def records_to_json(records):
    return json.dumps({rel: list(r) for rel, r in sorted(records.items())})


def records_from_json(text):
    return {rel: FileRecord(*r) for rel, r in json.loads(text).items()}


# ----------------------------------------------------------------------------------------------
# Manifest files
# ----------------------------------------------------------------------------------------------

def write_manifest(root, records):
    """Write ROOT/manifest.csv (path,size,sha256 per image, sorted) atomically; returns its path."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator='\n')
    writer.writerow(MANIFEST_FIELDS)
    for rel in sorted(records):
        writer.writerow([rel, records[rel].size, records[rel].sha256])
    path = os.path.join(root, MANIFEST_NAME)
    atomic_write_text(path, buffer.getvalue())
    _save_state(root, records)
    return path


def read_manifest(path):
    """{relpath: (size, sha256)} of a manifest file; ManifestError if it is malformed."""
    try:
        with open(path, newline='', encoding='utf-8') as f:
            rows = list(csv.reader(f))
        if not rows or tuple(rows[0]) != MANIFEST_FIELDS:
            raise ValueError(f'the header must be {",".join(MANIFEST_FIELDS)}')
        return {row[0]: (int(row[1]), row[2]) for row in rows[1:] if row}
    except (OSError, ValueError, IndexError) as err:
        raise ManifestError(f'cannot read the dataset manifest {path} ({err}); restore it or re-create the '
                            f'split with --mode prepare') from None


def _load_state(root):
    try:
        with open(os.path.join(root, STATE_NAME), encoding='utf-8') as f:
            return records_from_json(f.read())
    except (OSError, ValueError, TypeError):
        return {}


def _save_state(root, records):
    """Remember checked records; a read-only dataset folder just means hashing again next time."""
    try:
        atomic_write_text(os.path.join(root, STATE_NAME), records_to_json(records))
    except OSError:
        pass


def find_manifest(folder):
    """(manifest root, manifest path) of the manifest covering `folder` (itself or its parent), or None."""
    folder = os.path.abspath(folder)
    for root in (folder, os.path.dirname(folder)):
        path = os.path.join(root, MANIFEST_NAME)
        if os.path.isfile(path):
            return root, path
    return None


def _listed(label, paths):
    shown = ', '.join(paths[:MAX_LISTED])
    more = f' and {len(paths) - MAX_LISTED} more' if len(paths) > MAX_LISTED else ''
    return f'{len(paths)} {label} ({shown}{more})'


def verify_manifest(folder):
    """Check the images under `folder` against the manifest covering it; no-op without a manifest.

    Raises ManifestError listing the missing, added and changed files.
    """
    found = find_manifest(folder)
    if found is None:
        return
    root, path = found
    prefix = os.path.relpath(os.path.abspath(folder), root).replace(os.sep, '/')
    prefix = '' if prefix == '.' else prefix + '/'
    expected = {rel: v for rel, v in read_manifest(path).items() if rel.startswith(prefix)}
    on_disk = relative_images(root, folder)
    missing = sorted(set(expected) - set(on_disk))
    added = sorted(set(on_disk) - set(expected))
    common = [rel for rel in on_disk if rel in expected]
    resized = {rel for rel in common if os.path.getsize(os.path.join(root, rel)) != expected[rel][0]}
    state = _load_state(root)
    records = file_records(root, [rel for rel in common if rel not in resized], state,
                           desc=f'Checking {os.path.basename(path)}')
    changed = sorted(resized | {rel for rel, r in records.items() if r.sha256 != expected[rel][1]})
    if missing or added or changed:
        problems = [_listed(label, paths) for label, paths in
                    (('missing', missing), ('added', added), ('changed', changed)) if paths]
        raise ManifestError(
            f'the images in {folder} do not match the dataset manifest {path}: ' + '; '.join(problems)
            + '. Restore the original files (download and prepare them again), or, if the change is '
              'intended, re-create the split with --mode prepare (or delete the manifest to use the '
              'folder as it is).')
    if any(state.get(rel) != record for rel, record in records.items()):
        _save_state(root, {**state, **records})
