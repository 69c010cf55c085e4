"""The base class of every error caused by user input (flags, files, data, devices).

The command line prints such an error's message and exits non-zero without a
traceback; any other exception is a bug and keeps its traceback.
"""
import sys


class UserError(Exception):
    """A problem the user can fix; str(error) is the whole message."""


def run_cli(action):
    """Exit status of a command-line entry point: action()'s own (0 if it returns None),
    1 after printing a UserError's message, 130 after Ctrl-C; never a traceback for either."""
    try:
        status = action()
    except UserError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print('interrupted', file=sys.stderr)
        return 130
    return 0 if status is None else status
