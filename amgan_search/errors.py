"""The one error type that reaches a user: a one-line message, exit status 2, no traceback."""


class UserError(Exception):
    """Bad input or a missing resource, explained in one line that names the file and the problem."""

    exit_code = 2
