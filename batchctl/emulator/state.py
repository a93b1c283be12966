"""Files and batches, and how batches progress over emulated time.

Nothing runs in the background: a batch's status is worked out from its timestamps and the
clock whenever it is read (``_refresh``), so thousands of idle batches cost nothing. The
expensive step, reading the input file, happens once, on the first read after the
validation delay.

Timeline of a batch created at ``t0`` with settings ``s`` (``n`` requests)::

    validating   t0 .. t0 + s.validation_delay                 (then failed, or:)
    in_progress  from v = t0 + s.validation_delay; k(t) = (t - v) * s.processing_rate done
    finalizing   from v + n / s.processing_rate, for s.finalizing_delay
    completed
    expired      at t0 + s.completion_window if not all requests were done by then
    cancelling   from the cancel call, for s.cancel_delay; processing stops at the call
    cancelled

A batch whose last request finished inside the window completes even if ``finalizing`` runs
past the window. Validating a large file holds the state lock for about a second per 50,000
lines, so other requests wait meanwhile.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import tempfile
import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from batchctl.emulator.clock import Clock
from batchctl.emulator.errors import bad_request, missing_parameter, not_found
from batchctl.emulator.inputfile import LineError, Plan, validate_and_run
from batchctl.emulator.params import (
    check_expires_after,
    check_metadata,
    invalid_type,
    invalid_value,
)
from batchctl.emulator.progress import Progress
from batchctl.emulator.responses import SUPPORTED_ENDPOINTS
from batchctl.emulator.settings import EmulatorSettings

#: Purposes accepted on upload (SDK ``types/file_purpose.py``).
UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
#: Batch statuses after which nothing changes any more.
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
_MONTH = 30 * 86_400
_PROJECT = "proj_emulator"
_EXPIRED_LINE_ERROR = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}


@dataclass
class FileRecord:
    """A stored file."""

    id: str
    seq: int
    filename: str
    purpose: str
    size: int
    created_at: int
    expires_at: int | None
    path: Path

    def to_json(self) -> dict[str, Any]:
        """The FileObject."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": self.size,
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "status_details": None,
            "expires_at": self.expires_at,
        }


@dataclass
class BatchRecord:
    """A batch and everything needed to work out its state at any later time."""

    id: str
    seq: int
    endpoint: str
    input_file_id: str
    input_path: Path
    completion_window: str
    metadata: dict[str, str] | None
    output_ttl: int
    created: float
    timing: EmulatorSettings
    status: str = "validating"
    model: str | None = None
    errors: list[LineError] | None = None
    plan: Plan | None = None
    times: dict[str, float] = field(default_factory=dict)
    stop_at: float | None = None  # processing stops here (cancel)
    done_at_stop: int = 0
    # Frozen at the end, when the plan is dropped.
    total: int = 0
    final_done: int = 0
    final_counts: tuple[int, int] = (0, 0)
    final_usage: tuple[int, int, int, int] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None

    def progress(self) -> Progress | None:
        """The timeline of its requests, once it is in progress."""
        start = self.times.get("in_progress_at")
        if self.plan is None or start is None:
            return None
        return Progress(self.timing, self.created, start, self.plan.total)

    def done_at(self, t: float) -> int:
        """Requests finished by emulated time ``t`` while in progress."""
        progress = self.progress()
        return 0 if progress is None else progress.done_at(t, self.stop_at)


class State:
    """All files and batches of one emulator. Thread-safe."""

    def __init__(self, settings: EmulatorSettings, clock: Clock) -> None:
        self._lock = threading.RLock()
        self._settings = settings
        self.clock = clock
        self._own_root = settings.state_dir is None
        if settings.state_dir is None:
            self.root = Path(tempfile.mkdtemp(prefix="batchctl-emulator-"))
        else:
            self.root = Path(settings.state_dir)
        self._setup_dirs()
        self._files: dict[str, FileRecord] = {}
        self._batches: dict[str, BatchRecord] = {}
        self._seqs: dict[str, int] = {}  # every id ever issued, so deleted ids stay cursors
        self._next_seq = 0

    def _setup_dirs(self) -> None:
        for sub in ("files", "uploads", "batches"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    @property
    def upload_dir(self) -> Path:
        """Where uploads are written while they arrive."""
        return self.root / "uploads"

    @property
    def settings(self) -> EmulatorSettings:
        """The settings new batches will use."""
        return self._settings

    @settings.setter
    def settings(self, value: EmulatorSettings) -> None:
        with self._lock:
            self._settings = value
            self.clock.set_manual(value.manual_clock)

    def _issue(self, prefix: str) -> tuple[str, int]:
        while True:
            new_id = prefix + secrets.token_hex(12 if prefix == "file-" else 16)
            if new_id not in self._seqs:
                break
        self._next_seq += 1
        self._seqs[new_id] = self._next_seq
        return new_id, self._next_seq

    # ---------------------------------------------------------------- files

    def create_file(
        self,
        upload: Path,
        *,
        filename: str,
        purpose: str,
        size: int,
        expires_after: int | None,
    ) -> dict[str, Any]:
        """Register an uploaded file (moving it into the store); returns the FileObject."""
        with self._lock:
            now = int(self.clock.now())
            file_id, seq = self._issue("file-")
            path = self.root / "files" / file_id
            os.replace(upload, path)
            if expires_after is not None:
                expires_at: int | None = now + expires_after
            else:
                expires_at = now + _MONTH if purpose == "batch" else None
            record = FileRecord(file_id, seq, filename, purpose, size, now, expires_at, path)
            self._files[file_id] = record
            return record.to_json()

    def _live_file(self, file_id: str) -> FileRecord | None:
        record = self._files.get(file_id)
        if record is None:
            return None
        if record.expires_at is not None and record.expires_at <= self.clock.now():
            self._remove_file(record)
            return None
        return record

    def _remove_file(self, record: FileRecord) -> None:
        del self._files[record.id]
        # A batch still validating reads the input later: keep the bytes until then.
        if not any(
            b.status == "validating" and b.input_path == record.path for b in self._batches.values()
        ):
            with contextlib.suppress(FileNotFoundError):
                record.path.unlink()

    def _expire_files(self) -> None:
        for record in list(self._files.values()):
            self._live_file(record.id)

    def get_file(self, file_id: str) -> dict[str, Any]:
        """The FileObject; 404 if unknown."""
        with self._lock:
            return self._require_file(file_id).to_json()

    def _require_file(self, file_id: str) -> FileRecord:
        record = self._live_file(file_id)
        if record is None:
            raise not_found(f"No such File object: {file_id}")
        return record

    def file_content(self, file_id: str) -> tuple[Path, int]:
        """Path and size of a file's bytes; 404 if unknown.

        The caller should open the path at once: a later delete removes it.
        """
        with self._lock:
            record = self._require_file(file_id)
            return record.path, record.size

    def open_file(self, file_id: str) -> tuple[Any, int]:
        """An open binary reader of a file's bytes and its size; 404 if unknown."""
        with self._lock:
            record = self._require_file(file_id)
            return open(record.path, "rb"), record.size

    def delete_file(self, file_id: str) -> dict[str, Any]:
        """Delete a file; 404 if unknown."""
        with self._lock:
            record = self._require_file(file_id)
            self._remove_file(record)
            return {"id": file_id, "object": "file", "deleted": True}

    def list_files(
        self,
        *,
        purpose: str | None = None,
        limit: int = 10_000,
        order: Literal["asc", "desc"] = "desc",
        after: str | None = None,
    ) -> dict[str, Any]:
        """A page of FileObjects."""
        with self._lock:
            self._expire_files()
            records: Iterable[FileRecord] = self._files.values()
            if purpose is not None:
                records = [r for r in records if r.purpose == purpose]
            items = sorted(records, key=lambda r: r.seq, reverse=order == "desc")
            return _page([(r.seq, r.to_json()) for r in items], after, limit, self._seqs, order)

    # -------------------------------------------------------------- batches

    def create_batch(self, payload: Any) -> dict[str, Any]:
        """Check the create parameters and start a batch; returns the Batch object."""
        if not isinstance(payload, dict):
            raise bad_request("The request body must be a JSON object.")
        for name in ("input_file_id", "endpoint", "completion_window"):
            if payload.get(name) is None:
                raise missing_parameter(name)
            if not isinstance(payload[name], str):
                raise invalid_type(name, "a string", payload[name])
        endpoint: str = payload["endpoint"]
        if endpoint not in SUPPORTED_ENDPOINTS:
            raise invalid_value("endpoint", endpoint, SUPPORTED_ENDPOINTS)
        if payload["completion_window"] != "24h":
            raise invalid_value("completion_window", payload["completion_window"], ("24h",))
        metadata = check_metadata(payload.get("metadata"))
        output_ttl = check_expires_after(
            payload.get("output_expires_after"), "output_expires_after"
        )
        file_id: str = payload["input_file_id"]
        with self._lock:
            record = self._live_file(file_id)
            if record is None:
                raise bad_request(
                    f"Cannot find file {file_id}, or project {_PROJECT} "
                    "does not have access to it.",
                    param="file_id",
                )
            if record.purpose != "batch":
                raise bad_request(
                    f"The input file must have purpose 'batch', but {file_id} "
                    f"has purpose '{record.purpose}'.",
                    param="input_file_id",
                )
            batch_id, seq = self._issue("batch_")
            batch = BatchRecord(
                id=batch_id,
                seq=seq,
                endpoint=endpoint,
                input_file_id=file_id,
                input_path=record.path,
                completion_window="24h",
                metadata=metadata,
                output_ttl=_MONTH if output_ttl is None else output_ttl,
                created=self.clock.now(),
                timing=self._settings,
            )
            self._batches[batch_id] = batch
            return self._batch_json(batch, batch.created)

    def get_batch(self, batch_id: str) -> dict[str, Any]:
        """The Batch object as of now; 404 if unknown."""
        with self._lock:
            batch = self._require_batch(batch_id)
            now = self.clock.now()
            self._refresh(batch, now)
            return self._batch_json(batch, now)

    def _require_batch(self, batch_id: str) -> BatchRecord:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise not_found(f"No batch found with id '{batch_id}'.")
        return batch

    def cancel_batch(self, batch_id: str) -> dict[str, Any]:
        """Start cancelling a batch. A batch already in a final status gives a 400."""
        with self._lock:
            batch = self._require_batch(batch_id)
            now = self.clock.now()
            self._refresh(batch, now)
            if batch.status in TERMINAL:
                raise bad_request(f"Cannot cancel a batch with status '{batch.status}'.")
            if batch.status != "cancelling":
                if batch.status == "in_progress":
                    batch.done_at_stop = batch.done_at(now)
                elif batch.status == "finalizing":
                    assert batch.plan is not None
                    batch.done_at_stop = batch.plan.total
                batch.stop_at = now
                batch.times["cancelling_at"] = now
                batch.status = "cancelling"
            return self._batch_json(batch, now)

    def list_batches(self, *, after: str | None = None, limit: int = 20) -> dict[str, Any]:
        """A page of Batch objects, newest first."""
        with self._lock:
            now = self.clock.now()
            items = sorted(self._batches.values(), key=lambda b: b.seq, reverse=True)
            # Only the batches on the page need their (possibly costly) refresh.
            page = _page([(b.seq, b) for b in items], after, limit, self._seqs, "desc")
            data = []
            for batch in page["data"]:
                self._refresh(batch, now)
                data.append(self._batch_json(batch, now))
            page["data"] = data
            return page

    # ------------------------------------------------------------ progress

    def _refresh(self, batch: BatchRecord, now: float) -> None:
        """Move the batch through every transition due by ``now``."""
        timing = batch.timing
        while True:
            status = batch.status
            if status == "validating":
                at = batch.created + timing.validation_delay
                if now < at:
                    return
                self._validate(batch, at)
            elif status == "in_progress":
                progress = batch.progress()
                assert progress is not None
                all_done, at = progress.end()
                if now < at:
                    return
                if all_done:
                    batch.status = "finalizing"
                    batch.times["finalizing_at"] = at
                else:
                    self._finish(batch, "expired", at, batch.done_at(at))
            elif status == "finalizing":
                at = batch.times["finalizing_at"] + timing.finalizing_delay
                if now < at:
                    return
                assert batch.plan is not None
                self._finish(batch, "completed", at, batch.plan.total)
            elif status == "cancelling":
                at = batch.times["cancelling_at"] + timing.cancel_delay
                if now < at:
                    return
                self._finish(batch, "cancelled", at, batch.done_at_stop)
            else:
                return

    def _validate(self, batch: BatchRecord, at: float) -> None:
        work_dir = self.root / "batches" / batch.id
        try:
            result = validate_and_run(
                batch.input_path,
                batch_id=batch.id,
                endpoint=batch.endpoint,
                work_dir=work_dir,
                created=int(at),
                max_requests=batch.timing.max_requests_per_batch,
                max_errors=batch.timing.max_reported_errors,
                shuffle_seed=batch.timing.shuffle_seed,
                failure_rate=batch.timing.request_failure_rate,
            )
        except FileNotFoundError:
            result = None
        if batch.input_file_id not in self._files:
            # The input was deleted while this batch was validating: now it can go.
            with contextlib.suppress(FileNotFoundError):
                batch.input_path.unlink()
        if result is None:
            batch.status = "failed"
            batch.times["failed_at"] = at
            batch.errors = [LineError("file_not_found", "The input file could not be read.")]
            return
        if result.plan is None:
            batch.status = "failed"
            batch.times["failed_at"] = at
            batch.errors = result.errors
            shutil.rmtree(work_dir, ignore_errors=True)
            return
        batch.plan = result.plan
        batch.model = result.plan.model
        batch.status = "in_progress"
        batch.times["in_progress_at"] = at

    def _finish(self, batch: BatchRecord, status: str, at: float, done: int) -> None:
        """Enter a final status with results: write the output and error files."""
        plan = batch.plan
        batch.status = status
        batch.times[f"{status}_at"] = at
        batch.final_done = done
        if plan is None:
            # Cancelled while validating: the input was never read.
            if batch.input_file_id not in self._files:
                with contextlib.suppress(FileNotFoundError):
                    batch.input_path.unlink()
            return
        batch.total = plan.total
        batch.final_counts = plan.counts(done)
        batch.final_usage = plan.usage(done)
        work_dir = self.root / "batches" / batch.id
        out_path, err_path = work_dir / "output.jsonl", work_dir / "error.jsonl"
        out_lines = err_lines = 0
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            for position, line in enumerate(plan.lines_in_order()):
                if position < done:
                    if plan.failed[position]:
                        err.write(line)
                        err_lines += 1
                    else:
                        out.write(line)
                        out_lines += 1
                elif status == "expired":
                    err.write(_expired_line(line))
                    err_lines += 1
                else:
                    break
        now = int(at)
        if out_lines:
            batch.output_file_id = self._store_output(batch, out_path, "output", now)
        if err_lines:
            batch.error_file_id = self._store_output(batch, err_path, "error", now)
        batch.plan = None  # frees the per-request arrays
        shutil.rmtree(work_dir, ignore_errors=True)

    def _store_output(self, batch: BatchRecord, path: Path, kind: str, now: int) -> str:
        file_id, seq = self._issue("file-")
        target = self.root / "files" / file_id
        os.replace(path, target)
        self._files[file_id] = FileRecord(
            id=file_id,
            seq=seq,
            filename=f"{batch.id}_{kind}.jsonl",
            purpose="batch_output",
            size=target.stat().st_size,
            created_at=now,
            expires_at=now + batch.output_ttl,
            path=target,
        )
        return file_id

    def _batch_json(self, batch: BatchRecord, now: float) -> dict[str, Any]:
        status = batch.status
        plan = batch.plan
        total = batch.total if plan is None else plan.total
        usage: tuple[int, int, int, int] | None = None
        if status in TERMINAL:
            completed, failed = batch.final_counts
            usage = batch.final_usage
        elif plan is not None and status != "validating":
            if status == "in_progress":
                done = batch.done_at(now)
            elif status == "cancelling":
                done = batch.done_at_stop
            else:
                done = plan.total
            completed, failed = plan.counts(done)
            usage = plan.usage(done)
        else:
            completed = failed = 0

        def stamp(name: str) -> int | None:
            value = batch.times.get(name)
            return None if value is None else int(value)

        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "model": batch.model,
            "errors": None
            if batch.errors is None
            else {"object": "list", "data": [e.to_json() for e in batch.errors]},
            "input_file_id": batch.input_file_id,
            "completion_window": batch.completion_window,
            "status": status,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "created_at": int(batch.created),
            "in_progress_at": stamp("in_progress_at"),
            # The real API always reports created_at + 24 h here, whatever the emulated window.
            "expires_at": int(batch.created) + 86_400,
            "finalizing_at": stamp("finalizing_at"),
            "completed_at": stamp("completed_at"),
            "failed_at": stamp("failed_at"),
            "expired_at": stamp("expired_at"),
            "cancelling_at": stamp("cancelling_at"),
            "cancelled_at": stamp("cancelled_at"),
            "request_counts": {"total": total, "completed": completed, "failed": failed},
            "usage": None if usage is None else _usage_json(*usage),
            "metadata": batch.metadata,
        }

    # ------------------------------------------------------------- overview

    def files_view(self) -> dict[str, dict[str, Any]]:
        """Every live file's FileObject, by id."""
        with self._lock:
            self._expire_files()
            return {file_id: r.to_json() for file_id, r in self._files.items()}

    def batches_view(self) -> dict[str, dict[str, Any]]:
        """Every batch's Batch object as of now, by id."""
        with self._lock:
            now = self.clock.now()
            view = {}
            for batch in self._batches.values():
                self._refresh(batch, now)
                view[batch.id] = self._batch_json(batch, now)
            return view

    def summary(self) -> dict[str, Any]:
        """Counts of files by purpose and batches by status, as of now."""
        with self._lock:
            files = self.files_view()
            batches = self.batches_view()
            by_purpose: dict[str, int] = {}
            for record in files.values():
                by_purpose[record["purpose"]] = by_purpose.get(record["purpose"], 0) + 1
            by_status: dict[str, int] = {}
            for batch in batches.values():
                by_status[batch["status"]] = by_status.get(batch["status"], 0) + 1
            return {
                "time": self.clock.now(),
                "files": {"total": len(files), "by_purpose": by_purpose},
                "batches": {"total": len(batches), "by_status": by_status},
            }

    def reset(self) -> None:
        """Forget every file and batch (the settings and the clock stay)."""
        with self._lock:
            self._files.clear()
            self._batches.clear()
            for sub in ("files", "uploads", "batches"):
                shutil.rmtree(self.root / sub, ignore_errors=True)
            self._setup_dirs()

    def close(self) -> None:
        """Delete the state directory if the emulator created it."""
        with self._lock:
            if self._own_root:
                shutil.rmtree(self.root, ignore_errors=True)


def _expired_line(result_line: bytes) -> bytes:
    line = json.loads(result_line)
    expired = {
        "id": line["id"],
        "custom_id": line["custom_id"],
        "response": None,
        "error": _EXPIRED_LINE_ERROR,
    }
    return json.dumps(expired, separators=(",", ":")).encode() + b"\n"


def _usage_json(
    input_tokens: int, output_tokens: int, cached_tokens: int, reasoning_tokens: int
) -> dict[str, Any]:
    return {
        "input_tokens": input_tokens,
        "input_tokens_details": {"cached_tokens": cached_tokens},
        "output_tokens": output_tokens,
        "output_tokens_details": {"reasoning_tokens": reasoning_tokens},
        "total_tokens": input_tokens + output_tokens,
    }


def _page(
    items: list[tuple[int, Any]],
    after: str | None,
    limit: int,
    seqs: dict[str, int],
    order: str,
) -> dict[str, Any]:
    """Cut a cursor page out of ``items`` (already sorted by seq in ``order``)."""
    if after is not None:
        cursor = seqs.get(after)
        if cursor is None:
            items = []
        elif order == "desc":
            items = [item for item in items if item[0] < cursor]
        else:
            items = [item for item in items if item[0] > cursor]
    page = [value for _, value in items[:limit]]

    def ident(value: Any) -> str:
        return value["id"] if isinstance(value, dict) else str(value.id)

    return {
        "object": "list",
        "data": page,
        "first_id": ident(page[0]) if page else None,
        "last_id": ident(page[-1]) if page else None,
        "has_more": len(items) > limit,
    }
