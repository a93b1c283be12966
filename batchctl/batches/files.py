"""The local files of a submission: part files written before upload, downloads, results.

Everything lives in one directory per submission beside the database
(``<db name>-files/<token>/``): ``part-001.jsonl`` (the exact bytes uploaded),
``part-001.output.jsonl`` / ``part-001.errors.jsonl`` (downloads) and ``results.jsonl``.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import shutil
import uuid
from array import array
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from batchctl.records import RequestRow

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
        self.sizes: dict[int, int] = {}
        self.custom_ids: list[str] = []
        self.parts = array("q")
        self.offsets = array("q")
        self.lengths = array("q")

    def add(self, part: int, line: bytes, custom_id: str, ordinal: int) -> None:
        handle = self.handles.get(part)
        if handle is None:
            if not self.handles:
                self._make_directory()
            handle = self.handles[part] = part_path(self.directory, part).open("wb")
            self.sizes[part] = 0
        handle.write(line)
        self.custom_ids.append(custom_id)
        self.parts.append(part)
        self.offsets.append(self.sizes[part])
        self.lengths.append(len(line))
        self.sizes[part] += len(line)

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

    def requests(self) -> Iterator[RequestRow]:
        for ordinal, custom_id in enumerate(self.custom_ids):
            yield RequestRow(
                custom_id,
                ordinal,
                self.parts[ordinal],
                self.offsets[ordinal],
                self.lengths[ordinal],
            )


def checksum_path(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_checksum(path: Path) -> None:
    """Record a download's SHA-256 beside it, so that a later merge can trust it."""
    target = checksum_path(path)
    partial = target.with_name(target.name + ".part")
    partial.write_text(file_sha256(path) + "\n")
    partial.replace(target)


def checksum_ok(path: Path) -> bool:
    """True when ``path`` exists and still has the SHA-256 recorded when it was downloaded."""
    recorded = checksum_path(path)
    if not path.exists() or not recorded.exists():
        return False
    return recorded.read_text().strip() == file_sha256(path)


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
        mapped = self._maps.get(path)
        if mapped is None:
            mapped = self._maps[path] = _map(path)
        return mapped[offset : offset + length]

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
