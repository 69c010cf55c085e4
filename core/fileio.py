"""File I/O every other module uses: atomic writes, safe loading, hashing, state-dict comparison.

A leaf module: it imports nothing from the project but core.errors, so any
module may use it without creating an import cycle.
"""
import hashlib
import os
import pickle
import tempfile

import torch

from core.errors import UserError


class CheckpointError(UserError):
    """A missing, unsafe, damaged or mismatched checkpoint or weight file; the message says what to do."""


# ----------------------------------------------------------------------------------------------
# Atomic writes: a kill during a save leaves the previous file intact.
# ----------------------------------------------------------------------------------------------

def _umask():
    mask = os.umask(0)   # reading the umask means setting it; put it straight back
    os.umask(mask)
    return mask


def _atomic(path, write):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix='.' + os.path.basename(path) + '.', suffix='.tmp', dir=folder)
    try:
        with os.fdopen(fd, 'wb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())   # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)   # atomic on POSIX and Windows
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


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

def safe_load(path):
    """torch.load with weights_only=True: tensors and plain containers only, never arbitrary code."""
    if not os.path.isfile(path):
        raise CheckpointError(f'checkpoint file not found: {path}')
    try:
        return torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as err:
        raise CheckpointError(
            f'{path} contains Python objects other than tensors and plain containers; refusing to '
            f'unpickle it because that could run arbitrary code. Re-save only its state_dicts '
            f'from a trusted environment. ({_first_line(err)})') from None
    # A 0-byte file raises EOFError without a message, other damage RuntimeError (zip) or
    # KeyError/ValueError/IndexError (a stream that is not a zip and not a valid legacy pickle).
    except (RuntimeError, EOFError, OSError, KeyError, ValueError, IndexError) as err:
        size = os.path.getsize(path)
        cause = 'the file is empty (0 bytes)' if size == 0 else _first_line(err)
        raise CheckpointError(f'{path} is not a readable PyTorch checkpoint ({cause}); '
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
