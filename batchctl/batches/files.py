"""The local files of a submission: part files written before upload, downloads, results.

Everything lives in one directory per submission beside the database
(``<db name>-files/<token>/``): ``part-001.jsonl`` (the exact bytes uploaded),
``part-001.output.jsonl`` / ``part-001.errors.jsonl`` (downloads) and ``results.jsonl``.
"""

from __future__ import annotations

import hashlib
import json
import mmap
import os
import shutil
import uuid
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Any

from batchctl.records import RequestFields

FILES_ENV = "BATCHCTL_FILES"


def files_root(db_location: str) -> Path:
    """Where submissions keep their files: beside a SQLite file; for a database URL,
    ``$BATCHCTL_FILES`` (a directory every host sees, for several daemons on several hosts) or
    else ``$XDG_DATA_HOME/batchctl/<database name>-files``."""
    if "://" in db_location:
        from urllib.parse import urlsplit

        explicit = os.environ.get(FILES_ENV)
        if explicit:
            return Path(explicit).expanduser().resolve()
        from batchctl.locations import default_db_path

        name = urlsplit(db_location).path.strip("/") or "batchctl"
        return default_db_path().parent / f"{name}-files"
    db = Path(db_location).expanduser().resolve()
    return db.with_name(db.stem + "-files")


def new_token() -> str:
    return uuid.uuid4().hex[:16]


def is_token(name: str) -> bool:
    """Whether a directory name is a submission's token (not ``inputs/`` or a user's)."""
    return len(name) == 16 and all(c in "0123456789abcdef" for c in name)


def part_filename(token: str, number: int) -> str:
    """The name a part is uploaded under: unique, so a lost upload can be found by it."""
    return f"batchctl-{token}-part{number:03d}.jsonl"


def part_path(directory: Path, number: int) -> Path:
    return directory / f"part-{number:03d}.jsonl"


def download_path(directory: Path, number: int, kind: str) -> Path:
    return directory / f"part-{number:03d}.{'output' if kind == 'output' else 'errors'}.jsonl"


class PartWriter:
    """Receives validated lines (a ``PartSink``) and writes each part's file as it goes.

    Requests are kept compactly (a list of ids and three integer arrays) until recorded. The
    directory is made with the first line, and ``discard`` removes it with the parents it made,
    so input refused at once leaves nothing behind.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.made: list[Path] = []  # the directories this writer created, deepest first
        self.handles: dict[int, IO[bytes]] = {}
        self.custom_ids: list[str] = []
        # 4 bytes where they suffice (a line is never longer than a batch's 256 MB); a part's
        # size is bounded only by the provider's limit.
        self.parts = array("I")
        self.offsets = array("q")  # of each line in its part's file
        self.lengths = array("I")
        self.ends: dict[int, int] = {}  # part number -> bytes written to it so far

    def add(self, part: int, line: bytes, custom_id: str, ordinal: int) -> None:
        handle = self.handles.get(part)
        if handle is None:
            handle = self._open(part)
        handle.write(line)
        length = len(line)
        offset = self.ends.get(part, 0)
        self.ends[part] = offset + length
        self.custom_ids.append(custom_id)
        self.parts.append(part)
        self.offsets.append(offset)
        self.lengths.append(length)

    def _open(self, part: int) -> IO[bytes]:
        if not self.handles:
            self._make_directory()
        # Large buffers: a part is written in a few hundred calls rather than one per 8 KiB.
        handle = self.handles[part] = part_path(self.directory, part).open("wb", _WRITE_BUFFER)
        return handle

    def close(self) -> None:
        for handle in self.handles.values():
            handle.flush()
            os.fsync(handle.fileno())
            handle.close()
        self.handles.clear()

    def discard(self) -> None:
        """Remove what was written: a refused submission leaves nothing on disk."""
        self.close()
        shutil.rmtree(self.directory, ignore_errors=True)
        for parent in self.made[1:]:
            try:
                parent.rmdir()  # only if still empty: another submission may have begun there
            except OSError:
                break

    def _make_directory(self) -> None:
        missing = self.directory
        while not missing.exists() and missing != missing.parent:
            self.made.append(missing)
            missing = missing.parent
        for directory in reversed(self.made):
            directory.mkdir(mode=0o700, exist_ok=True)  # private, as the database is
        self.directory.mkdir(exist_ok=True)

    def requests(self) -> Iterator[RequestFields]:
        """Each request in input order with the place of its line in its part's file, as
        ``RequestRow``'s fields (a tuple each, built by ``zip``: no Python call per request)."""
        ordinals = range(len(self.custom_ids))
        return zip(self.custom_ids, ordinals, self.parts, self.offsets, self.lengths, strict=True)


_WRITE_BUFFER = 1 << 20


def read_kept_cost(directory: Path) -> dict[str, Any] | None:
    """The cost kept in a submission's directory (``cost.json``: the cost and its basis), or
    None when there is none or it cannot be read."""
    try:
        kept = json.loads((directory / _COST).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return kept if isinstance(kept, dict) else None


def keep_cost(directory: Path, kept: dict[str, Any]) -> None:
    """Keep a submission's cost with its basis in its directory, whole (renamed into place);
    nothing when the directory is gone (pruned): it is only a cache."""
    if not directory.is_dir():
        return
    target = directory / _COST
    partial = target.with_name(target.name + ".part")
    try:
        partial.write_text(json.dumps(kept), encoding="utf-8")
        partial.replace(target)
    except OSError:
        partial.unlink(missing_ok=True)


_COST = "cost.json"


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_checksum(path: Path, sha256: str | None = None) -> None:
    """Record a download's SHA-256 beside it, so that a later merge can trust it; ``sha256``
    when the writer computed it as it wrote (else the file is read for it)."""
    target = checksum_path(path)
    partial = target.with_name(target.name + ".part")
    partial.write_text((sha256 or file_sha256(path)) + "\n")
    partial.replace(target)


def recorded_checksum(path: Path) -> str | None:
    """The SHA-256 recorded beside ``path``, or None when there is none (or ``path`` is gone)."""
    try:
        recorded = checksum_path(path).read_text().strip()
    except (FileNotFoundError, NotADirectoryError):
        return None
    return recorded if path.exists() else None


def checksum_ok(path: Path) -> bool:
    """True when ``path`` exists and still has the SHA-256 recorded when it was downloaded."""
    recorded = recorded_checksum(path)
    return recorded is not None and recorded == file_sha256(path)


def file_stamp(path: Path) -> tuple[int, int, int, int] | None:
    """What changes when a file is written or replaced (device, inode, size, mtime), or None
    when it is gone: a file checked once in a process is trusted while its stamp holds."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


def same_file(a: Path, b: Path) -> bool:
    """True when both paths name one existing file."""
    try:
        return a.samefile(b)
    except OSError:
        return False


def remove_part_files(paths: Iterable[Path]) -> None:
    """Delete part files no longer needed (missing ones are fine: this is repeated after a
    crash)."""
    for path in paths:
        path.unlink(missing_ok=True)


class LineReader:
    """Lines of files by offset and length, through read-only memory maps: one slice per line
    instead of a seek and a read call (the merge reads every line of every download so)."""

    def __init__(self) -> None:
        self._maps: dict[Path, mmap.mmap | bytes] = {}

    def line(self, path: Path, offset: int, length: int) -> bytes:
        return self.mapped(path)[offset : offset + length]

    def mapped(self, path: Path) -> mmap.mmap | bytes:
        """The whole of ``path``, mapped (valid until ``close``), to slice lines from."""
        mapped = self._maps.get(path)
        if mapped is None:
            mapped = self._maps[path] = _map(path)
        return mapped

    def close(self) -> None:
        for mapped in self._maps.values():
            if isinstance(mapped, mmap.mmap):
                mapped.close()
        self._maps.clear()


def _map(path: Path) -> mmap.mmap | bytes:
    with path.open("rb") as handle:
        if os.fstat(handle.fileno()).st_size == 0:
            return b""  # an empty file cannot be mapped
        return mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)


def read_line(path: Path, offset: int, length: int, cache: dict[str, IO[bytes]]) -> bytes:
    """The bytes of one line of ``path``; ``cache`` keeps files open across calls."""
    handle = cache.get(str(path))
    if handle is None:
        handle = cache[str(path)] = path.open("rb")
    handle.seek(offset)
    return handle.read(length)
