"""One exception hierarchy: every error a user can act on carries its exit code and a hint."""

from __future__ import annotations

from collections.abc import Iterable
from enum import IntEnum


class ExitCode(IntEnum):
    """The exit codes every command keeps (documented in the README)."""

    OK = 0
    FAILED = 1
    USAGE = 2
    PARTIAL = 3
    SKIPPED = 4
    CANCELLED = 130


class BatchctlError(Exception):
    """An error to show the user as one line, ``error: <message>``, plus an optional hint."""

    exit_code: ExitCode = ExitCode.FAILED

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint


class UsageError(BatchctlError):
    """Bad arguments, a bad config or bad input: nothing was done."""

    exit_code = ExitCode.USAGE


class ConfigError(UsageError):
    """The config file is missing or invalid; ``problems`` holds one line per problem."""

    def __init__(self, message: str, problems: list[str] | None = None, *, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.problems = problems or []


class NotFoundError(UsageError):
    """A run, job or file named by the user does not exist."""


class StoreError(UsageError):
    """The database cannot be opened or used (corrupt, locked, from a newer batchctl)."""


class StoreWriteError(StoreError):
    """A write to the database failed (disk full, I/O error, read-only): it was rolled back."""


# Worst first: a batch of runs exits with the code of its worst run.
_SEVERITY = {"failed": 0, "abandoned": 0, "cancelled": 1, "partial": 2, "skipped": 3}
_CODES = {
    "failed": ExitCode.FAILED,
    "abandoned": ExitCode.FAILED,
    "cancelled": ExitCode.CANCELLED,
    "partial": ExitCode.PARTIAL,
    "skipped": ExitCode.SKIPPED,
}


def exit_code_for(statuses: Iterable[str]) -> ExitCode:
    """The exit code for runs that ended with ``statuses``: that of the worst one."""
    worst = min(statuses, key=lambda s: _SEVERITY.get(s, 9), default="completed")
    return _CODES.get(worst, ExitCode.OK)


_ESCAPES = {
    "\b": "\\b",
    "\t": "\\t",
    "\n": "\\n",
    "\f": "\\f",
    "\r": "\\r",
    '"': '\\"',
    "\\": "\\\\",
}


def quoted(text: str, limit: int = 100) -> str:
    """``text`` to show in a message: a TOML basic string, in double quotes with every character
    that is not printable escaped, so that it stays on one line and cannot drive the terminal;
    beyond ``limit`` characters it is cut, and ``...`` follows the closing quote."""
    out = []
    for char in text[:limit]:
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif char.isprintable():
            out.append(char)
        elif ord(char) <= 0xFFFF:
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(f"\\U{ord(char):08X}")
    return '"' + "".join(out) + '"' + ("..." if len(text) > limit else "")
