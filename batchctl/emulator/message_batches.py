"""Anthropic's Message Batches: the batches, how they progress, and their results.

The requests come inline in the create call; each is run (synthetically, ``messages``) right
then and its result line is written to disk in input order, as for an OpenAI batch
(``inputfile.PlanBuilder``); the batch then progresses over emulated time by the same
timeline (``progress.Progress``, the same settings), but shows it the Message Batches way:

    in_progress  from creation; requests finish from created + validation_delay at
                 processing_rate, but request_counts keep every request in ``processing``
    ended        finalizing_delay after the last request, with every result; or at
                 created + completion_window with the unfinished requests ``expired``
    canceling    from the cancel call, for cancel_delay; processing stops at the call
    ended        (after canceling) with the unfinished requests ``canceled``

The results file lists one line per request in the shuffled execution order
(``shuffle_seed``). Results stay downloadable for 29 days after creation; then
``archived_at`` is set and the results URL answers 404.
"""

from __future__ import annotations

import json
import secrets
import shutil
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO

from batchctl.emulator.clock import Clock
from batchctl.emulator.errors import ApiError
from batchctl.emulator.inputfile import Plan, PlanBuilder
from batchctl.emulator.messages import run_message
from batchctl.emulator.progress import Progress
from batchctl.emulator.responses import digest
from batchctl.emulator.settings import EmulatorSettings

_DAY = 86_400
_RESULTS_KEPT = 29 * _DAY
_ID_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
STATUSES = ("in_progress", "canceling", "ended")


@dataclass
class MessageBatchRecord:
    """A Message Batch and everything needed to work out its state at any later time."""

    id: str
    seq: int
    created: float
    timing: EmulatorSettings
    total: int
    plan: Plan | None
    work_dir: Path
    status: str = "in_progress"
    cancel_initiated_at: float | None = None
    done_at_stop: int = 0
    ended_at: float | None = None
    archived_at: float | None = None
    #: succeeded, errored, canceled, expired: set when the batch ends.
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def progress(self) -> Progress:
        """The timeline of its requests."""
        start = self.created + self.timing.validation_delay
        return Progress(self.timing, self.created, start, self.total)

    @property
    def results_path(self) -> Path:
        """Where the results are, once it has ended."""
        return self.work_dir / "results.jsonl"


class MessageBatches:
    """Every Message Batch of one emulator. Thread-safe."""

    def __init__(self, root: Path, clock: Clock) -> None:
        self._lock = threading.RLock()
        self.root = root
        self.clock = clock
        self._batches: dict[str, MessageBatchRecord] = {}
        self._seqs: dict[str, int] = {}  # every id ever issued, so deleted ids stay cursors
        self._next_seq = 0
        root.mkdir(parents=True, exist_ok=True)

    def _issue(self) -> tuple[str, int]:
        with self._lock:
            while True:
                suffix = "".join(secrets.choice(_ID_ALPHABET) for _ in range(22))
                new_id = f"msgbatch_01{suffix}"
                if new_id not in self._seqs:
                    break
            self._next_seq += 1
            self._seqs[new_id] = self._next_seq
            return new_id, self._next_seq

    # ------------------------------------------------------------------ calls

    def create(
        self,
        requests: list[tuple[str, dict[str, Any]]],
        settings: EmulatorSettings,
        base_url: str,
    ) -> dict[str, Any]:
        """Start a batch of (custom_id, params) already checked as an envelope; returns it."""
        batch_id, seq = self._issue()
        created = self.clock.now()
        work_dir = self.root / batch_id
        work_dir.mkdir(parents=True)
        try:
            plan = _run(batch_id, requests, settings, work_dir)
        except BaseException:
            shutil.rmtree(work_dir, ignore_errors=True)
            raise
        batch = MessageBatchRecord(
            id=batch_id,
            seq=seq,
            created=created,
            timing=settings,
            total=len(requests),
            plan=plan,
            work_dir=work_dir,
        )
        with self._lock:
            self._batches[batch_id] = batch
            return _batch_json(batch, base_url)

    def get(self, batch_id: str, base_url: str) -> dict[str, Any]:
        """The batch as of now; 404 if unknown."""
        with self._lock:
            batch = self._require(batch_id)
            self._refresh(batch, self.clock.now())
            return _batch_json(batch, base_url)

    def cancel(self, batch_id: str, base_url: str) -> dict[str, Any]:
        """Start canceling a batch; an ended batch gives a 400, a canceling one is unchanged."""
        with self._lock:
            batch = self._require(batch_id)
            now = self.clock.now()
            self._refresh(batch, now)
            if batch.status == "ended":
                raise ApiError(
                    400, f"Message Batch {batch_id} has already ended and cannot be canceled."
                )
            if batch.status == "in_progress":
                batch.done_at_stop = batch.progress.done_at(now)
                batch.cancel_initiated_at = now
                batch.status = "canceling"
            return _batch_json(batch, base_url)

    def delete(self, batch_id: str) -> dict[str, Any]:
        """Delete an ended batch and its results; 400 while it still runs."""
        with self._lock:
            batch = self._require(batch_id)
            self._refresh(batch, self.clock.now())
            if batch.status != "ended":
                raise ApiError(
                    400,
                    f"Message Batch {batch_id} is still {batch.status}; "
                    "cancel it and wait for it to end before deleting it.",
                )
            del self._batches[batch_id]
            shutil.rmtree(batch.work_dir, ignore_errors=True)
            return {"id": batch_id, "type": "message_batch_deleted"}

    def open_results(self, batch_id: str) -> tuple[BinaryIO, int]:
        """An open reader of an ended batch's results and their size; 404 otherwise."""
        with self._lock:
            batch = self._require(batch_id)
            self._refresh(batch, self.clock.now())
            if batch.status != "ended":
                raise ApiError(
                    404,
                    f"Results for Message Batch {batch_id} are not available until it has ended.",
                    type="not_found_error",
                )
            if batch.archived_at is not None:
                raise ApiError(
                    404,
                    f"Results for Message Batch {batch_id} are no longer available.",
                    type="not_found_error",
                )
            path = batch.results_path
            return open(path, "rb"), path.stat().st_size

    def page(
        self,
        *,
        base_url: str,
        limit: int,
        before_id: str | None = None,
        after_id: str | None = None,
    ) -> dict[str, Any]:
        """A page of batches, newest first: the ``limit`` nearest older than ``after_id``, or
        nearest newer than ``before_id``, or the newest."""
        with self._lock:
            items = sorted(self._batches.values(), key=lambda b: b.seq, reverse=True)
            cursor_id = before_id if before_id is not None else after_id
            if cursor_id is not None:
                cursor = self._seqs.get(cursor_id)
                if cursor is None:
                    items = []
                elif before_id is not None:
                    items = [b for b in items if b.seq > cursor]
                else:
                    items = [b for b in items if b.seq < cursor]
            page = items[-limit:] if before_id is not None else items[:limit]
            now = self.clock.now()
            data = []
            for batch in page:
                self._refresh(batch, now)
                data.append(_batch_json(batch, base_url))
            return {
                "data": data,
                "has_more": len(items) > limit,
                "first_id": page[0].id if page else None,
                "last_id": page[-1].id if page else None,
            }

    # -------------------------------------------------------------- overview

    def view(self, base_url: str) -> dict[str, dict[str, Any]]:
        """Every batch as of now, by id."""
        with self._lock:
            now = self.clock.now()
            view = {}
            for batch in self._batches.values():
                self._refresh(batch, now)
                view[batch.id] = _batch_json(batch, base_url)
            return view

    def summary(self) -> dict[str, Any]:
        """How many batches there are, by processing status."""
        with self._lock:
            now = self.clock.now()
            by_status: dict[str, int] = {}
            for batch in self._batches.values():
                self._refresh(batch, now)
                by_status[batch.status] = by_status.get(batch.status, 0) + 1
            return {"total": len(self._batches), "by_status": by_status}

    def reset(self) -> None:
        """Forget every batch."""
        with self._lock:
            self._batches.clear()
            shutil.rmtree(self.root, ignore_errors=True)
            self.root.mkdir(parents=True, exist_ok=True)

    # -------------------------------------------------------------- progress

    def _require(self, batch_id: str) -> MessageBatchRecord:
        batch = self._batches.get(batch_id)
        if batch is None:
            raise ApiError(404, f"Message Batch {batch_id} not found.", type="not_found_error")
        return batch

    def _refresh(self, batch: MessageBatchRecord, now: float) -> None:
        """Move the batch through every transition due by ``now``."""
        if batch.status == "in_progress":
            progress = batch.progress
            all_done, at = progress.end()
            if all_done:
                at += batch.timing.finalizing_delay
            if now < at:
                return
            done = progress.total if all_done else progress.done_at(at)
            self._end(batch, at, done, "expired")
        elif batch.status == "canceling":
            assert batch.cancel_initiated_at is not None
            at = batch.cancel_initiated_at + batch.timing.cancel_delay
            if now < at:
                return
            self._end(batch, at, batch.done_at_stop, "canceled")
        if batch.status == "ended" and batch.archived_at is None:
            assert batch.ended_at is not None
            at = max(batch.created + _RESULTS_KEPT, batch.ended_at)
            if now >= at:
                batch.archived_at = at
                batch.results_path.unlink(missing_ok=True)

    def _end(self, batch: MessageBatchRecord, at: float, done: int, unfinished: str) -> None:
        """End the batch at ``at``: the first ``done`` requests ran, the rest are
        ``unfinished`` (canceled or expired). Writes the results file."""
        plan = batch.plan
        assert plan is not None
        succeeded, errored = plan.counts(done)
        batch.counts = {
            "succeeded": succeeded,
            "errored": errored,
            "canceled": 0,
            "expired": 0,
        }
        batch.counts[unfinished] = batch.total - done
        with open(batch.results_path, "wb") as out:
            for position, line in enumerate(plan.lines_in_order()):
                if position >= done:
                    custom_id = json.loads(line)["custom_id"]
                    line = _line({"custom_id": custom_id, "result": {"type": unfinished}})
                out.write(line)
        plan.results_path.unlink(missing_ok=True)
        batch.plan = None  # frees the per-request arrays
        batch.status = "ended"
        batch.ended_at = at


def _run(
    batch_id: str,
    requests: list[tuple[str, dict[str, Any]]],
    settings: EmulatorSettings,
    work_dir: Path,
) -> Plan:
    """Run every request now, writing its result line; the Plan of how they are revealed."""
    builder = PlanBuilder(work_dir / "run.jsonl", settings.shuffle_seed)
    cached_prefixes: set[str] = set()
    try:
        for custom_id, params in requests:
            ids = digest(batch_id, custom_id, size=24)
            outcome = run_message(
                params,
                custom_id,
                key=ids[:24],
                cached_prefixes=cached_prefixes,
                failure_rate=settings.request_failure_rate,
                seed=settings.shuffle_seed,
            )
            if outcome.ok:
                result: dict[str, Any] = {"type": "succeeded", "message": outcome.body}
            else:
                result = {
                    "type": "errored",
                    "error": {
                        "type": "error",
                        "error": outcome.body,
                        "request_id": f"req_{ids[24:]}",
                    },
                }
            builder.add(custom_id, {"custom_id": custom_id, "result": result}, outcome)
    except BaseException:
        builder.discard()
        raise
    return builder.finish(None)


def _line(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode() + b"\n"


def rfc3339(t: float | None) -> str | None:
    """A Unix time as the API writes it: ``2026-12-02T15:43:16.123456Z``."""
    if t is None:
        return None
    stamp = datetime.fromtimestamp(t, tz=UTC).isoformat(timespec="microseconds")
    return stamp.replace("+00:00", "Z")


def _batch_json(batch: MessageBatchRecord, base_url: str) -> dict[str, Any]:
    """The MessageBatch object."""
    ended = batch.status == "ended"
    counts = batch.counts if ended else {}
    return {
        "id": batch.id,
        "type": "message_batch",
        "processing_status": batch.status,
        # Until the whole batch ends, every request counts as processing (GUIDE-A).
        "request_counts": {
            "processing": 0 if ended else batch.total,
            "succeeded": counts.get("succeeded", 0),
            "errored": counts.get("errored", 0),
            "canceled": counts.get("canceled", 0),
            "expired": counts.get("expired", 0),
        },
        "ended_at": rfc3339(batch.ended_at),
        "created_at": rfc3339(batch.created),
        # Always created_at + 24 h, as the real API reports it, whatever the emulated window.
        "expires_at": rfc3339(batch.created + _DAY),
        "archived_at": rfc3339(batch.archived_at),
        "cancel_initiated_at": rfc3339(batch.cancel_initiated_at),
        "results_url": f"{base_url}/v1/messages/batches/{batch.id}/results" if ended else None,
    }
