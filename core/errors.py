"""The base class of every error caused by user input (flags, files, data, devices).

The command line prints such an error's message and exits non-zero without a
traceback; any other exception is a bug and keeps its traceback.
"""


class UserError(Exception):
    """A problem the user can fix; str(error) is the whole message."""
