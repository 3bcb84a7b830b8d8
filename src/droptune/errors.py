"""One exception type for mistakes a user can fix; the CLI prints it as one line."""

import re


class DroptuneError(Exception):
    """Bad input or state: the message names the file, field or value and what was expected."""


def one_line(error: BaseException) -> str:
    """The user-facing line of an error, also when a loader worker wrapped it in a traceback."""
    lines = [line for line in str(error).strip().splitlines() if line.strip()]
    last = lines[-1] if lines else type(error).__name__
    return re.sub(r"^droptune(\.\w+)+: ", "", last) if "Traceback" in str(error) else " ".join(lines)
