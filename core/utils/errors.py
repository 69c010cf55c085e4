"""The base class of every error caused by user input (flags, files, data, devices), and the
command line's handling of errors, Ctrl-C, SIGTERM and warnings.

The command line prints such an error's message and exits non-zero without a
traceback; any other exception is a bug and keeps its traceback.
"""
import contextlib
import os
import select
import signal
import sys
import threading
import warnings


class UserError(Exception):
    """A problem the user can fix; str(error) is the whole message."""


class Terminated(KeyboardInterrupt):
    """SIGTERM arrived (a scheduler, `docker stop`, `kill`).

    A KeyboardInterrupt, so every clean-up that Ctrl-C runs (temporary files
    removed, ffmpeg stopped, data-loader workers joined) runs for it too.
    """


EXIT_INTERRUPTED = 130   # 128 + SIGINT, what a shell reports for Ctrl-C
EXIT_TERMINATED = 143    # 128 + SIGTERM
EXIT_BROKEN_PIPE = 141   # 128 + SIGPIPE: what a shell reports when the reader of the output left (| head)


@contextlib.contextmanager
def sigterm_raises(received):
    """Within the block, SIGTERM raises Terminated in this process and appends to the list `received`
    (the previous handler comes back after). Only the main thread can take signals: elsewhere nothing changes.

    Forked children (data-loader workers) inherit the handler; in them it restores
    the default action and re-sends the signal, so they end as they always did.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    owner = os.getpid()

    def handler(signum, frame):
        if os.getpid() != owner:
            signal.signal(signum, signal.SIG_DFL)
            os.kill(os.getpid(), signum)
            return
        received.append(signum)
        raise Terminated()

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextlib.contextmanager
def deferred_signals():
    """Within the block, Ctrl-C and SIGTERM are recorded and delivered when it ends (main thread only).

    For the few lines that create a resource and record where clean-up finds it: a signal in
    between would leave the resource behind. (Blocking the signals instead would not do: another
    thread would take them, and child processes would inherit the block.)
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending = []
    previous = {signum: signal.signal(signum, lambda signum, frame: pending.append(signum))
                for signum in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        for signum in pending:   # now, to the handlers of the rest of the program
            signal.raise_signal(signum)


def _one_line_warning(message, category, filename, lineno, line=None):
    """'warning: MESSAGE', without the Python file and source line (they are for developers)."""
    return f'warning: {message}\n'


@contextlib.contextmanager
def cli_warnings():
    """Within the block, warnings print as one 'warning: ...' line (recorded warnings are unaffected)."""
    previous = warnings.formatwarning
    warnings.formatwarning = _one_line_warning
    try:
        yield
    finally:
        warnings.formatwarning = previous


def _stdout_closed():
    """True if stdout is a pipe whose reader has gone (poll reports an error on its write end); then stdout
    is pointed at the null device, so that the interpreter's own flush at exit does not fail a second time.
    Any other broken pipe (a helper process that died) is not this and keeps its traceback."""
    try:
        fd = sys.stdout.fileno()
        poller = select.poll()
        poller.register(fd, select.POLLOUT)
        closed = any(events & select.POLLERR for _, events in poller.poll(0))
    except (AttributeError, ValueError, OSError):   # no real stdout (a test capture) or no poll
        return False
    if closed:
        os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
    return closed


def run_cli(action):
    """Exit status of a command-line entry point: action()'s own (0 if it returns None),
    1 after printing a UserError's message, 130 after Ctrl-C, 143 after SIGTERM; never a traceback
    for any of them. Whatever fails once SIGTERM has arrived (a pipe to a killed ffmpeg, a peer
    process gone) failed because of it and is reported as `terminated` too."""
    received = []
    try:
        with sigterm_raises(received), cli_warnings():
            status = action()
    except BaseException as err:
        if received or isinstance(err, Terminated):
            print('terminated', file=sys.stderr)
            return EXIT_TERMINATED
        if isinstance(err, UserError):
            print(f'error: {err}', file=sys.stderr)
            return 1
        if isinstance(err, KeyboardInterrupt):
            print('interrupted', file=sys.stderr)
            return EXIT_INTERRUPTED
        if isinstance(err, BrokenPipeError) and _stdout_closed():
            return EXIT_BROKEN_PIPE   # the reader has what it wanted (| head): nothing to report
        raise
    return 0 if status is None else status
