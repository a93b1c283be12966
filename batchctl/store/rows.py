"""Rows to records: the column lists the queries select and the one conversion of each.

Both back ends select the same columns in the same order; they differ only in how a stored time
reads back (ISO text in SQLite, a ``datetime`` from PostgreSQL). Each conversion therefore takes
``when``, the store's reader of a time column: ``records.from_iso`` or :func:`as_stored`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any

from batchctl.records import (
    ACTIVE_RUN_STATUSES,
    Attempt,
    DaemonInfo,
    LockHolder,
    LogEntry,
    LogLevel,
    Owner,
    Part,
    RequestResult,
    Run,
    RunStatus,
    Submission,
    Tick,
    Transition,
)

# The active run statuses as an SQL list, from their one definition in records.py.
ACTIVE_RUNS = "(" + ", ".join(f"'{status.value}'" for status in ACTIVE_RUN_STATUSES) + ")"

TimeReader = Callable[[Any], datetime | None]

RUN_COLUMNS = (
    "id, job, scope, status, trigger, attempts, max_attempts, created_at, started_at, finished_at, "
    "items_processed, items_failed, total_tokens, total_cost, progress_done, progress_total, "
    "error, reason, host, pid, lease_until, cancel_requested, retry_of, scheduled_for, "
    "unpriced_models"
)
PART_COLUMNS = (
    "id, run_id, number, round, model, requests, bytes, path, filename, status, "
    "upload_started_at, input_file_id, create_started_at, batch_id, output_file_id, "
    "error_file_id, request_counts, usage, errors, remote_created_at, expires_at, downloaded_at, "
    "remote_ended_at"
)
UPDATABLE_PART_COLUMNS = frozenset(
    {
        "status",
        "upload_started_at",
        "input_file_id",
        "create_started_at",
        "batch_id",
        "output_file_id",
        "error_file_id",
        "request_counts",
        "usage",
        "errors",
        "remote_created_at",
        "remote_ended_at",
        "expires_at",
        "refreshed_at",
        "downloaded_at",
    }
)
JSON_PART_COLUMNS = frozenset({"request_counts", "usage", "errors"})
TICK_COLUMNS = "id, job, scope, scheduled_for, status, reason, run_id, priority"
REQUEST_COLUMNS = (
    "custom_id, ordinal, part_id, line_offset, line_length, attempts, outcome, status_code, "
    "error_code, error_message, input_tokens, output_tokens, result_part_id, result_kind, "
    "result_offset, result_length"
)
SUBMISSION_COLUMNS = (
    "run_id, provider, endpoint, completion_window, metadata, input_sha256, inputs, directory,"
    " token, requests, bytes, on_expired, max_request_attempts, merged_at, results_path"
)
DAEMON_COLUMNS = "instance, host, pid, mode, started_at, heartbeat_at, last_pass_at, stopped_at"
ATTEMPT_COLUMNS = "run_id, number, status, started_at, finished_at, error, exit_code"
TRANSITION_COLUMNS = "run_id, from_status, to_status, at, reason"
LOG_COLUMNS = "id, run_id, attempt, at, level, stream, message, fields"
LOCK_COLUMNS = "key, run_id, host, pid, lease_until"


def as_stored(value: datetime | None) -> datetime | None:
    """The time reader of a driver that hands back ``datetime`` values itself."""
    return value


def _required(moment: datetime | None) -> datetime:
    assert moment is not None, "a NOT NULL time column read back NULL"
    return moment


def run_from_row(row: Sequence[Any], when: TimeReader) -> Run:
    return Run(
        id=row[0],
        job=row[1],
        scope=row[2] or None,
        status=RunStatus(row[3]),
        trigger=row[4],
        attempts=row[5],
        max_attempts=row[6],
        created_at=_required(when(row[7])),
        started_at=when(row[8]),
        finished_at=when(row[9]),
        items_processed=row[10],
        items_failed=row[11],
        total_tokens=row[12],
        total_cost=float(row[13]),
        progress_done=row[14],
        progress_total=row[15],
        error=row[16],
        reason=row[17],
        owner=None if row[18] is None else Owner(row[18], row[19]),
        lease_until=when(row[20]),
        cancel_requested=bool(row[21]),
        retry_of=row[22],
        scheduled_for=when(row[23]),
        unpriced_models=tuple(json.loads(row[24])) if row[24] else (),
    )


def unpriced_text(models: Sequence[str]) -> str | None:
    """How a run's unpriced models are stored: a JSON list, NULL for none."""
    return json.dumps(sorted(models)) if models else None


def part_from_row(row: Sequence[Any], when: TimeReader) -> Part:
    return Part(
        id=row[0],
        run_id=row[1],
        number=row[2],
        round=row[3],
        model=row[4],
        requests=row[5],
        bytes=row[6],
        path=row[7],
        filename=row[8],
        status=row[9],
        upload_started_at=when(row[10]),
        input_file_id=row[11],
        create_started_at=when(row[12]),
        batch_id=row[13],
        output_file_id=row[14],
        error_file_id=row[15],
        request_counts=json.loads(row[16] or "{}"),
        usage=json.loads(row[17]) if row[17] else None,
        errors=json.loads(row[18] or "[]"),
        remote_created_at=row[19],
        expires_at=row[20],
        downloaded_at=when(row[21]),
        remote_ended_at=row[22],
    )


def tick_from_row(row: Sequence[Any], when: TimeReader) -> Tick:
    return Tick(
        id=row[0],
        job=row[1],
        scope=row[2] or None,
        scheduled_for=_required(when(row[3])),
        status=row[4],
        reason=row[5],
        run_id=row[6],
        priority=row[7],
    )


def submission_from_row(row: Sequence[Any], when: TimeReader) -> Submission:
    return Submission(
        run_id=row[0],
        provider=row[1],
        endpoint=row[2],
        completion_window=row[3],
        metadata=json.loads(row[4]),
        input_sha256=row[5],
        inputs=json.loads(row[6]),
        directory=row[7],
        token=row[8],
        requests=row[9],
        bytes=row[10],
        on_expired=row[11],
        max_request_attempts=row[12],
        merged_at=when(row[13]),
        results_path=row[14],
    )


def daemon_from_row(row: Sequence[Any], when: TimeReader) -> DaemonInfo:
    return DaemonInfo(
        row[0],
        row[1],
        row[2],
        row[3],
        when(row[4]) or datetime.min,
        when(row[5]) or datetime.min,
        when(row[6]),
        when(row[7]),
    )


def attempt_from_row(row: Sequence[Any], when: TimeReader) -> Attempt:
    return Attempt(
        run_id=row[0],
        number=row[1],
        status=RunStatus(row[2]),
        started_at=_required(when(row[3])),
        finished_at=when(row[4]),
        error=row[5],
        exit_code=row[6],
    )


def transition_from_row(row: Sequence[Any], when: TimeReader) -> Transition:
    return Transition(
        run_id=row[0],
        from_status=None if row[1] is None else RunStatus(row[1]),
        to_status=RunStatus(row[2]),
        at=_required(when(row[3])),
        reason=row[4],
    )


def log_from_row(row: Sequence[Any], when: TimeReader) -> LogEntry:
    return LogEntry(
        id=row[0],
        run_id=row[1],
        attempt=row[2],
        at=_required(when(row[3])),
        level=LogLevel(row[4]),
        stream=row[5],
        message=row[6],
        fields=json.loads(row[7]) if row[7] else {},
    )


def lock_from_row(row: Sequence[Any], when: TimeReader) -> LockHolder:
    return LockHolder(
        key=row[0], run_id=row[1], owner=Owner(row[2], row[3]), lease_until=_required(when(row[4]))
    )


def request_summaries(
    run_ids: Iterable[int], rows: Iterable[Sequence[Any]]
) -> dict[int, dict[str, int]]:
    """Each run's request counts by outcome ("pending" for none yet) and token totals, from
    rows of ``(run_id, outcome, count, input tokens, output tokens)``; runs without rows get
    empty counts."""
    found = {run_id: {"input_tokens": 0, "output_tokens": 0} for run_id in run_ids}
    for run_id, outcome, count, tokens_in, tokens_out in rows:
        summary = found[run_id]
        summary[outcome] = count
        summary["input_tokens"] += tokens_in or 0
        summary["output_tokens"] += tokens_out or 0
    return found


LogPage = Callable[[int, int, "LogLevel | None", int], list[LogEntry]]


def log_pages(
    page: LogPage, run_id: int, after_id: int, min_level: LogLevel | None, chunk: int
) -> Iterator[LogEntry]:
    """A run's log lines, oldest first, read ``chunk`` at a time with ``page(run_id, after_id,
    min_level, limit)``: one short query each, so no read transaction stays open while the
    lines are written out."""
    while True:
        entries = page(run_id, after_id, min_level, chunk)
        yield from entries
        if len(entries) < chunk:
            return
        after_id = entries[-1].id or after_id


_SET_RESULT = (
    "input_tokens = {m}, output_tokens = {m}, cached_tokens = {m}, reasoning_tokens = {m},"
    " cache_write_tokens = {m}, cache_write_1h_tokens = {m},"
    " result_part_id = {m}, result_kind = {m}, result_offset = {m}, result_length = {m}"
    " WHERE run_id = {m} AND part_id = {m} AND {key} = {m}"
)
# A succeeded request (nearly every one) binds only what varies: 14 values rather than 17.
_SUCCEEDED = (
    "UPDATE requests SET outcome = 'succeeded', status_code = {m}, error_code = NULL,"
    " error_message = NULL, " + _SET_RESULT
)
_OTHER = (
    "UPDATE requests SET outcome = {m}, status_code = {m}, error_code = {m}, error_message = {m}, "
    + _SET_RESULT
)


def results_by_kind(
    results: Iterable[RequestResult], part_id: int, run_id: int, chunk: int, mark: str = "%s"
) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    """The UPDATEs that record ``results`` of a part, as ``(sql, rows)`` for ``executemany``
    with ``mark`` as the parameter marker: up to ``chunk`` rows each, in the order read (so a
    custom_id read twice keeps its last outcome), succeeded requests apart from the others."""
    succeeded, other = (
        _SUCCEEDED.format(m=mark, key="custom_id"),
        _OTHER.format(m=mark, key="custom_id"),
    )
    # A line that names its request by a derived id finds it by its ordinal (``derived_ids``).
    by_ordinal = _SUCCEEDED.format(m=mark, key="ordinal"), _OTHER.format(m=mark, key="ordinal")
    sql = succeeded
    rows: list[tuple[Any, ...]] = []
    for r in results:
        if r.outcome == "succeeded" and r.error_code is None and r.error_message is None:
            row: tuple[Any, ...] = (r.status_code,)
            kind = succeeded if r.ordinal is None else by_ordinal[0]
        else:
            row = (r.outcome, r.status_code, r.error_code, r.error_message)
            kind = other if r.ordinal is None else by_ordinal[1]
        if kind is not sql or len(rows) >= chunk:
            if rows:
                yield sql, rows
            sql, rows = kind, []
        rows.append(
            (
                *row,
                r.input_tokens,
                r.output_tokens,
                r.cached_tokens,
                r.reasoning_tokens,
                r.cache_write_tokens,
                r.cache_write_1h_tokens,
                part_id,
                r.kind,
                r.offset,
                r.length,
                run_id,
                part_id,
                r.custom_id if r.ordinal is None else r.ordinal,
            )
        )
    if rows:
        yield sql, rows
