"""One writer per run folder: an exclusive lock that a training process holds for its whole life.

The lock is fcntl.flock on FOLDER/.run.lock, taken without waiting. The
kernel releases it when the process ends in any way (kill -9 included), so a
lock is never stale: a lock file left by a killed run is simply taken over.
The holder writes '<pid> <host>' into the file so that a refused run can name it,
and removes the file when it releases the lock.

Rules that keep the lock exclusive:
  * the file is removed while the lock is held, so a process that opened the
    old file and then locks it checks that its file is still the one at the
    path, and tries again if not;
  * forked children (data-loader workers) close their copy of the descriptor:
    a flock belongs to the open file, so a child that kept it would keep the
    lock after its parent died.
"""
import fcntl
import os
import socket
import time

from core.utils.errors import UserError
from core.utils.fileio import WriteError, file_mode

LOCK_NAME = '.run.lock'
_held = {}   # descriptor -> RunLock, of the locks this process holds


class RunLocked(UserError):
    """Another process holds the lock of the run folder."""


def _close_in_child():
    for fd in list(_held):
        try:
            os.close(fd)
        except OSError:
            pass
    _held.clear()


os.register_at_fork(after_in_child=_close_in_child)


def _same_file(fd, path):
    """True if the open file `fd` is the file at `path` now."""
    try:
        at_path = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (mine.st_dev, mine.st_ino) == (at_path.st_dev, at_path.st_ino)


HOLDER_WAIT = 1.0   # seconds to wait for a holder that has just taken the lock to write its PID


def _holder(fd):
    """'process PID on HOST' from the lock file's text (written by its holder), or 'another process'."""
    deadline = time.monotonic() + HOLDER_WAIT
    while True:
        try:
            words = os.pread(fd, 200, 0).decode('utf-8', errors='replace').split()
        except OSError:
            words = []
        if words or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    if not words:
        return 'another process'
    return f'process {words[0]}' + (f' on {words[1]}' if len(words) > 1 else '')


class RunLock:
    """The lock of one folder, held from acquire() until release() or the end of the process."""

    def __init__(self, folder):
        self.folder = folder
        self.path = os.path.join(folder, LOCK_NAME)
        self.fd = None
        self.pid = None

    def acquire(self):
        """Take the lock now, or raise RunLocked naming the folder and the process that holds it.

        A file system without locks gets a warning and no lock.
        """
        try:
            os.makedirs(self.folder, exist_ok=True)
        except OSError as err:
            raise WriteError(self.path, err) from None
        while True:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _holder(fd)
                os.close(fd)
                raise RunLocked(f'{self.folder} is in use: {holder} is writing this run (it holds {self.path}); '
                                f'wait for it to end or stop it, or choose another --checkpoint_dir') from None
            except OSError as err:   # e.g. ENOLCK: a network file system without lock support
                os.close(fd)
                print(f'warning: cannot lock {self.path} ({err.strerror}); make sure no other run writes to '
                      f'{self.folder} at the same time')
                return self
            if _same_file(fd, self.path):
                break
            os.close(fd)   # the previous holder removed the file after we opened it: lock the new one
        os.ftruncate(fd, 0)
        os.pwrite(fd, f'{os.getpid()} {socket.gethostname()}\n'.encode(), 0)
        self.fd, self.pid = fd, os.getpid()
        _held[fd] = self
        return self

    def _open(self):
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT, file_mode())
        except OSError as err:
            raise WriteError(self.path, err) from None

    def release(self):
        """Remove the lock file and release the lock (in the process that took it; idempotent)."""
        if self.fd is None or self.pid != os.getpid():
            return
        try:
            os.remove(self.path)   # while still locked: see the module's rules
        except OSError:
            pass   # a file that cannot be removed is harmless: the next run takes it over
        _held.pop(self.fd, None)
        os.close(self.fd)
        self.fd = None

    def __enter__(self):
        return self.acquire()

    def __exit__(self, *exc):
        self.release()
