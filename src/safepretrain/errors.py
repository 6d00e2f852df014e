"""Errors that are the user's to fix. The CLI prints them without a traceback and exits with code 2."""


class UserError(Exception):
    """Bad input: a message that says what is wrong, where, and what to do."""

    exit_code = 2
