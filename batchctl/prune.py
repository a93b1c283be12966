"""``batchctl prune``: delete history older than a cutoff, and the files that went with it.

What goes: runs that *ended* (a terminal status) before the cutoff — with their attempts,
transitions, log lines, batch submission, parts and requests (``ON DELETE CASCADE``) and the
submission's directory of part files, downloads and merged results — plus ticks scheduled
before the cutoff and daemon records that stopped before it.

What stays: runs queued, running or retrying, whatever their age; a submission whose results
are not merged yet (``batchctl results RUN_ID`` merges them); pending ticks, a tick being fired
and the tick of a run still going; the schedule cursors, so that pruning never makes an old
tick fire again; results written elsewhere with ``results -o FILE``; and a submission directory
outside ``<database name>-files/`` (never deleted: batchctl did not make it there).

A directory in ``<database name>-files/`` that no submission refers to (a submit killed, or
whose database write failed, before its run was recorded) goes too, once it is older than the
cutoff and a day.

Runs are deleted a chunk at a time, each chunk in its own short transaction, then their
directories are removed: a crash in between leaves an orphaned directory, never a run whose
files are gone. Afterwards the write-ahead log is checkpointed and truncated; ``vacuum`` also
rewrites the database file to return the freed pages to the file system (SQLite otherwise
reuses them for new rows; VACUUM takes as long as copying the file and needs as much free
space again).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchctl.records import to_iso

if TYPE_CHECKING:
    from batchctl.store.base import Store
    from batchctl.store.batches import BatchTables

CHUNK = 500
DEAD_DAEMON_AFTER = timedelta(days=1)  # a daemon record never stopped, silent this long, died
FIRING_WINDOW = timedelta(days=1)  # a tick fired this recently may not have its run recorded yet
ORPHAN_GRACE = timedelta(days=1)  # a directory this new may be a submission being recorded


@dataclass
class PruneReport:
    cutoff: datetime
    older_than: float
    dry_run: bool
    vacuum: bool = False
    runs: int = 0
    log_lines: int = 0
    submissions: int = 0
    orphaned_directories: int = 0
    files: int = 0
    file_bytes: int = 0
    ticks: int = 0
    daemons: int = 0
    kept_in_flight: int = 0
    kept_unmerged: int = 0
    skipped_directories: list[str] = field(default_factory=list)
    database_bytes_before: int = 0
    database_bytes_after: int = 0

    @property
    def bytes_freed(self) -> int:
        """Files removed, plus what the database file and its log shrank by."""
        return self.file_bytes + max(0, self.database_bytes_before - self.database_bytes_after)

    def to_json(self) -> dict[str, Any]:
        """The stable ``prune --json`` shape (documented in the README)."""
        return {
            "dry_run": self.dry_run,
            "cutoff": to_iso(self.cutoff),
            "older_than": self.older_than,
            "runs": self.runs,
            "log_lines": self.log_lines,
            "submissions": self.submissions,
            "orphaned_directories": self.orphaned_directories,
            "files": self.files,
            "file_bytes": self.file_bytes,
            "ticks": self.ticks,
            "daemons": self.daemons,
            "kept_in_flight": self.kept_in_flight,
            "kept_unmerged": self.kept_unmerged,
            "skipped_directories": list(self.skipped_directories),
            "vacuum": self.vacuum,
            "database_bytes_before": self.database_bytes_before,
            "database_bytes_after": self.database_bytes_after,
            "bytes_freed": self.bytes_freed,
        }


def prune(
    store: Store,
    older_than: float,
    now: datetime,
    *,
    dry_run: bool = False,
    vacuum: bool = False,
    chunk: int = CHUNK,
) -> PruneReport:
    """Delete (or with ``dry_run`` only count) what ended more than ``older_than`` seconds
    before ``now``; see the module's docstring for what goes and what stays."""
    from batchctl.batches.files import files_root

    cutoff = now - timedelta(seconds=older_than)
    report = PruneReport(cutoff=cutoff, older_than=older_than, dry_run=dry_run, vacuum=vacuum)
    report.database_bytes_before = _database_bytes(store.location)
    root = files_root(store.location)
    after_id = 0
    while True:
        batch = store.prunable_runs(cutoff, after_id=after_id, limit=chunk)
        if not batch:
            break
        after_id = batch[-1].id
        if dry_run:
            chosen = batch
        else:
            deleted = set(store.delete_runs([r.id for r in batch], cutoff))
            chosen = [r for r in batch if r.id in deleted]
        for run in chosen:
            report.runs += 1
            report.log_lines += run.log_lines
            if run.directory is None:
                continue
            report.submissions += 1
            _remove_directory(Path(run.directory), root, report, dry_run=dry_run)
    _remove_orphans(store, root, min(cutoff, now - ORPHAN_GRACE), report, dry_run=dry_run)
    report.ticks = store.prune_ticks(cutoff, now - FIRING_WINDOW, dry_run=dry_run)
    report.daemons = store.prune_daemons(cutoff, now - DEAD_DAEMON_AFTER, dry_run=dry_run)
    report.kept_unmerged = store.unmerged_finished_count(cutoff)
    report.kept_in_flight = sum(1 for r in store.active_runs() if r.created_at < cutoff)
    if not dry_run:
        store.compact(vacuum=vacuum)
    report.database_bytes_after = _database_bytes(store.location)
    return report


def _remove_orphans(
    store: BatchTables, root: Path, before: datetime, report: PruneReport, *, dry_run: bool
) -> None:
    """Remove the submission directories no run refers to (a submit killed, or whose database
    write failed, before its run was recorded), untouched since ``before``."""
    from batchctl.batches.files import is_token

    candidates: list[Path] = []
    with contextlib.suppress(OSError):  # no files directory yet
        for entry in root.iterdir():
            info = entry.lstat()
            old = info.st_mtime < before.timestamp()
            if stat.S_ISDIR(info.st_mode) and old and is_token(entry.name):
                candidates.append(entry)
    known = store.known_tokens([entry.name for entry in candidates])
    for entry in candidates:
        if entry.name in known:
            continue
        report.orphaned_directories += 1
        _remove_directory(entry, root, report, dry_run=dry_run)


def _remove_directory(path: Path, root: Path, report: PruneReport, *, dry_run: bool) -> None:
    try:
        resolved = path.expanduser().resolve()
    except OSError:
        return
    if not resolved.is_relative_to(root) or resolved == root:
        if resolved.exists():
            report.skipped_directories.append(str(path))
        return
    files, size = _tree_size(resolved)
    report.files += files
    report.file_bytes += size
    if not dry_run:
        shutil.rmtree(resolved, ignore_errors=True)


def _tree_size(path: Path) -> tuple[int, int]:
    files = size = 0
    for folder, _dirs, names in os.walk(path):
        for name in names:
            try:
                size += os.lstat(os.path.join(folder, name)).st_size
            except OSError:
                continue
            files += 1
    return files, size


def _database_bytes(location: str) -> int:
    total = 0
    for suffix in ("", "-wal"):
        with contextlib.suppress(OSError):
            total += os.stat(location + suffix).st_size
    return total
