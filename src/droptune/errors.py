"""One exception type for mistakes a user can fix; the CLI prints it as one line."""


class DroptuneError(Exception):
    """Bad input or state: the message names the file, field or value and what was expected."""
