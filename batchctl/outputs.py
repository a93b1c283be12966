"""Output files named by the user: a file is written whole or not at all, a device or a pipe is
written to as a stream, and nothing else at the path is ever replaced.

``-`` is standard output. A path that names a character device, a FIFO or a socket (following
symlinks, so ``/dev/stdout`` is whatever standard output is), or any path under ``/dev`` or
``/proc`` (``/dev/fd/3``), is opened for writing and streamed to: never created, truncated or
replaced. A directory is refused. Anything else is a regular file: written to a temporary file in
the same directory (``NAME.part``), synced, and renamed over the target (the target of a symlink,
which stays), so that a reader sees the old file or the new one, never half of one; on an error
the temporary file is removed, and one left by a killed writer is reused by the next. A new
file is private to its user (0600) unless the caller says otherwise; a replaced one keeps its
mode.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import IO

from batchctl.errors import UsageError

STDOUT = "-"
_STREAMED_ROOTS = ("/dev/", "/proc/")
# Errors a write (not a read) fails with: reported naming the output, as bad usage (exit 2).
_WRITE_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def is_stdout(path: Path | str) -> bool:
    """True when writing to ``path`` writes to this process's standard output."""
    if str(path) == STDOUT:
        return True
    try:
        return os.path.samestat(os.stat(path), os.fstat(sys.stdout.fileno()))
    except (OSError, ValueError):
        return False


@contextmanager
def open_output(
    path: Path | str, *, newline: str | None = None, new_mode: int = 0o600
) -> Iterator[IO[str]]:
    """A UTF-8 text handle on the output ``path``, committed when the block ends without an
    error; a regular file created is given ``new_mode``. Failing to open or write it raises
    ``UsageError`` naming it (``BrokenPipeError`` is left as it is: the reader went away)."""
    name = str(path)
    if name == STDOUT:
        with _named("standard output", _WRITE_ERRNOS):
            yield sys.stdout
            sys.stdout.flush()
        return
    with _named(name, None):
        output = _Stream(name, newline) if _is_streamed(name) else _Atomic(name, newline, new_mode)
    try:
        with _named(name, _WRITE_ERRNOS):  # only a write's errors: a read in the block may fail
            yield output.handle
        with _named(name, None):
            output.commit()
    except BaseException:
        output.discard()
        raise


@contextmanager
def _named(name: str, errnos: frozenset[int] | None) -> Iterator[None]:
    """Turn an OSError (of one of ``errnos``, or any) into a one-line error naming ``name``."""
    try:
        yield
    except BrokenPipeError:
        raise
    except OSError as exc:
        if errnos is not None and exc.errno not in errnos:
            raise
        raise UsageError(f"cannot write {name}: {exc.strerror or exc}") from exc


def written_whole(path: Path | str) -> bool:
    """True when ``open_output(path)`` writes a regular file whole or not at all; False for a
    stream (standard output, a device, a pipe), which keeps what was written to it."""
    name = str(path)
    return name != STDOUT and not _is_streamed(name)


def _is_streamed(name: str) -> bool:
    if os.path.abspath(name).startswith(_STREAMED_ROOTS):
        return True
    try:
        mode = os.stat(name).st_mode
    except FileNotFoundError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)


class _Stream:
    """A device, a pipe or a socket: written to as it is."""

    def __init__(self, name: str, newline: str | None) -> None:
        # Never O_CREAT nor O_TRUNC; O_APPEND keeps what a shell's ">>" put in a file reached
        # through /dev/stdout.
        fd = os.open(name, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)  # a directory: EISDIR
        self.handle: IO[str] = open(fd, "w", encoding="utf-8", newline=newline)  # noqa: SIM115

    def commit(self) -> None:
        self.handle.close()

    def discard(self) -> None:
        with suppress(OSError):
            self.handle.close()


class _Atomic:
    """A regular file: written as ``NAME.part`` beside it, renamed over it once whole and synced.

    The temporary file has a fixed name, so that one left by a killed writer is taken over by the
    next instead of piling up; writers of the same file take turns on a lock held on it.
    """

    def __init__(self, name: str, newline: str | None, new_mode: int) -> None:
        self.target = _regular_target(name)
        self.temporary = self.target.with_name(self.target.name + ".part")
        fd = _lock_temporary(self.temporary)
        try:
            os.ftruncate(fd, 0)  # what a killed writer left
            try:
                mode = stat.S_IMODE(os.stat(self.target).st_mode)
            except FileNotFoundError:
                mode = new_mode
            os.fchmod(fd, mode)
            self.handle: IO[str] = open(fd, "w", encoding="utf-8", newline=newline)  # noqa: SIM115
        except BaseException:
            os.unlink(self.temporary)
            os.close(fd)
            raise

    def commit(self) -> None:
        self.handle.flush()
        os.fsync(self.handle.fileno())
        os.replace(self.temporary, self.target)  # still holding the lock: the next writer waits
        self.handle.close()
        _sync_directory(self.target.parent)

    def discard(self) -> None:
        with suppress(FileNotFoundError):
            os.unlink(self.temporary)
        with suppress(OSError):
            self.handle.close()


def _lock_temporary(path: Path) -> int:
    """Open ``path`` (created 0600) holding an exclusive lock on it. A writer that had it locked
    may have renamed it into place meanwhile: then the file opened is no longer at ``path``, and
    a new one is opened."""
    import fcntl

    while True:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                return fd
        except FileNotFoundError:
            pass
        except BaseException:
            os.close(fd)
            raise
        os.close(fd)


def _regular_target(name: str) -> Path:
    target = Path(os.path.realpath(name))  # replace what a symlink points to, not the symlink
    if target.is_dir():
        example = Path(name) / "results.jsonl"
        raise UsageError(f"{name} is a directory", hint=f"name a file in it, e.g. {example}")
    try:
        target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except FileExistsError:
        raise UsageError(f"cannot write {name}: {target.parent} is not a directory") from None
    return target


def _sync_directory(directory: Path) -> None:
    """Make the rename durable (best effort: not every file system can sync a directory)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
