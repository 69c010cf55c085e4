"""File I/O every other module uses: atomic writes, safe loading, hashing, state-dict comparison.

A leaf module: it imports nothing from the project but core.utils.errors, so any
module may use it without creating an import cycle.
"""
import errno
import hashlib
import os
import pickle
import re
import tempfile
import time

import torch

from core.utils.errors import UserError, deferred_signals


class ModelFileError(UserError):
    """A model file (training checkpoint or pretrained weight file) that is missing, unsafe, damaged or does
    not fit; the message says what to do. core.checkpoint.DamagedCheckpoint is the checkpoint-specific kind."""


class WriteError(UserError, OSError):
    """A file that could not be written (disk full, no permission, read-only file system, ...).

    Also an OSError, so callers that tolerate a failed write (caches) keep doing so.
    """

    def __init__(self, path, err):
        hint = WRITE_HINTS.get(err.errno, 'check the folder and its disk')
        super().__init__(f'cannot write {path} ({err.strerror or err}); {hint}. '
                         f'Any earlier version of the file is unchanged.')
        self.errno, self.strerror, self.filename = err.errno, err.strerror, path

    def __str__(self):
        return self.args[0]


WRITE_HINTS = {
    errno.ENOSPC: 'free some disk space or choose a folder on another disk',
    errno.EDQUOT: 'your disk quota is used up; free some space or choose another folder',
    errno.EROFS: 'the file system is read-only; choose a folder on a writable one',
    errno.EACCES: 'you may not write there; fix the folder\'s permissions or choose another folder',
    errno.EPERM: 'you may not write there; fix the folder\'s permissions or choose another folder',
    errno.ENOTDIR: 'part of the path is a file, not a folder; choose another folder',
    errno.EEXIST: 'a file has the name of a folder the path needs; choose another folder',
}


# ----------------------------------------------------------------------------------------------
# Atomic writes: a kill during a save leaves the previous file intact; an OS error is one
# WriteError naming the file and the cause, and leaves no temporary file behind.
# ----------------------------------------------------------------------------------------------

# Temporary files are '.NAME.XXXXXXXX.tmp' beside NAME (tempfile.mkstemp: 8 characters of [a-z0-9_]).
TEMP_PATTERN = re.compile(r'^\..+\.[a-z0-9_]{8}\.tmp$')
STALE_TEMP_SECONDS = 120   # younger temporary files may belong to a save still under way in another process


def _umask():
    mask = os.umask(0)   # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def file_mode():
    """Permission bits of a new ordinary file: 0o666 less the umask (what open() would give)."""
    return 0o666 & ~_umask()


def make_temp_file(path):
    """(fd, temporary path) of a new file beside `path`, named after TEMP_PATTERN; creates the folder."""
    folder = os.path.dirname(os.path.abspath(path))
    try:
        os.makedirs(folder, exist_ok=True)
        return tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    except OSError as err:
        raise WriteError(path, err) from None


class _RecordingFile:
    """Passes writes to a file and keeps the first OSError: torch.save reports a failed write
    (a full disk) as a RuntimeError without the cause."""

    def __init__(self, f):
        self.f = f
        self.error = None

    def write(self, data):
        try:
            return self.f.write(data)
        except OSError as err:
            self.error = self.error or err
            raise

    def __getattr__(self, name):   # flush, tell, ...: the file's own
        return getattr(self.f, name)


def _atomic(path, write):
    tmp, recorder = None, None
    try:
        with deferred_signals():   # a Ctrl-C or SIGTERM waits until tmp is known to the clean-up below
            fd, tmp = make_temp_file(path)
            f = os.fdopen(fd, 'wb')
        with f:
            recorder = _RecordingFile(f)
            write(recorder)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, file_mode())   # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)   # atomic on POSIX and Windows
    except BaseException as err:
        if tmp is not None:
            remove_quietly(tmp)
        if isinstance(err, OSError) and not isinstance(err, WriteError):
            raise WriteError(path, err) from None
        if isinstance(err, RuntimeError) and recorder is not None and recorder.error is not None:
            raise WriteError(path, recorder.error) from None
        raise


def remove_quietly(path):
    """Remove a file if it exists; a failure to remove is not worth hiding the error being reported."""
    try:
        os.remove(path)
    except OSError:
        pass


def remove_stale_temp_files(folder, depth=0, min_age=STALE_TEMP_SECONDS):
    """Remove the temporary files that interrupted saves left in `folder` (and `depth` levels of
    sub-folders); only names matching TEMP_PATTERN, not modified for min_age seconds. Returns them."""
    if not os.path.isdir(folder):
        return []
    removed, now = [], time.time()
    base = folder.rstrip(os.sep).count(os.sep)
    for dirpath, dirnames, filenames in os.walk(folder):
        if dirpath.rstrip(os.sep).count(os.sep) - base >= depth:
            dirnames[:] = []
        for name in filenames:
            path = os.path.join(dirpath, name)
            try:
                if TEMP_PATTERN.match(name) and os.path.isfile(path) and now - os.path.getmtime(path) >= min_age:
                    os.remove(path)
                    removed.append(path)
            except OSError:
                pass   # gone meanwhile, or not ours to remove: the run does not depend on it
    return removed


def atomic_save(obj, path):
    """torch.save to a temporary file in the same folder, then rename over `path`."""
    _atomic(path, lambda f: torch.save(obj, f))


def atomic_write_bytes(path, data):
    """Write bytes atomically."""
    _atomic(path, lambda f: f.write(data))


def atomic_write_text(path, text):
    """Write a text file atomically."""
    atomic_write_bytes(path, text.encode('utf-8'))


# ----------------------------------------------------------------------------------------------
# Safe reading and hashing
# ----------------------------------------------------------------------------------------------

def not_a_file(path):
    """Why `path` cannot be read as a checkpoint file ('not found', 'a folder', ...), or None for a regular file.

    FIFOs and devices are refused without being opened: reading one would block or never end.
    """
    if os.path.isfile(path):
        return None
    if not os.path.exists(path):
        return 'checkpoint file not found'
    return 'a folder, not a checkpoint file' if os.path.isdir(path) else \
        'not a regular file (a FIFO, socket or device), not a checkpoint file'


def check_checkpoint_file(path):
    """Raise ModelFileError unless `path` is a regular file."""
    problem = not_a_file(path)
    if problem is not None:
        raise ModelFileError(f'{problem}: {path}' if problem.endswith('not found') else f'{path} is {problem}')


def safe_load(path):
    """torch.load with weights_only=True: tensors and plain containers only, never arbitrary code."""
    check_checkpoint_file(path)
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        raise ModelFileError(
            f'{path} contains Python objects other than tensors and plain containers; refusing to '
            f'unpickle it because that could run arbitrary code. Re-save only its state_dicts '
            f'from a trusted environment. ({_first_line(err)})') from None
    # A 0-byte file raises EOFError without a message, other damage RuntimeError (zip) or
    # KeyError/ValueError/IndexError (a stream that is not a zip and not a valid legacy pickle).
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, IndexError) as err:
        size = os.path.getsize(path)
        cause = 'the file is empty (0 bytes)' if size == 0 else _first_line(err)
        raise ModelFileError(f'{path} is not a readable PyTorch checkpoint ({cause}); '
                              f'it may be truncated or corrupt') from None


def _first_line(err):
    """The first line of an exception's message, or its type name when it has none."""
    lines = str(err).strip().splitlines()
    return lines[0].split('. ')[0] if lines else type(err).__name__   # torch adds paragraphs of advice


def sha256_file(path, chunk=1 << 20):
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, 'rb') as f:
        for block in iter(lambda: f.read(chunk), b''):
            digest.update(block)
    return digest.hexdigest()


def state_dict_mismatch(own, state_dict):
    """(missing, unexpected, wrongly shaped) keys of `state_dict` against a module's own state_dict.

    Shape entries read 'key (stored shape) vs (own shape)'.
    """
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f'{k} {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}'
              for k in own if k in state_dict and hasattr(state_dict[k], 'shape')
              and state_dict[k].shape != own[k].shape]
    return missing, unexpected, shapes
