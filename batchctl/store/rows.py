"""Rows to records: each record's columns as the queries select them, and its one conversion.

A record's ``Columns`` are declared once, from the record's own fields: which of them are times
and which few other columns are converted on the way. Both back ends select the same columns in
the same order; they differ only in how a stored time reads back (ISO text in SQLite, a
``datetime`` from PostgreSQL). Each conversion therefore takes ``when``, the store's reader of a
time column: ``records.from_iso`` or :func:`as_stored`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar

from batchctl.records import (
    ACTIVE_RUN_STATUSES,
    Attempt,
    DaemonInfo,
    LockHolder,
    LogEntry,
    LogLevel,
    ModelTokens,
    Owner,
    Part,
    RequestResult,
    RequestState,
    RequestTotals,
    Run,
    RunStatus,
    Submission,
    Tick,
    Transition,
)

# The active run statuses as an SQL list, from their one definition in records.py.
ACTIVE_RUNS = "(" + ", ".join(f"'{status.value}'" for status in ACTIVE_RUN_STATUSES) + ")"

TimeReader = Callable[[Any], datetime | None]
R = TypeVar("R")


class Columns(Generic[R]):
    """A record's columns, ``names`` as the queries select them (the record's fields, in their
    order; an ``owner`` is the two columns ``host, pid``), and ``read``, the one conversion of a
    row into the record.

    A column is read as stored unless named: in ``times`` (a time, read with the store's
    ``when``), in ``required`` (a time that is never NULL), or as a keyword with the function
    that converts it.
    """

    def __init__(
        self,
        record: type[R],
        /,
        *,
        times: str = "",
        required: str = "",
        **convert: Callable[[Any], Any],
    ) -> None:
        self.record = record
        fields: tuple[str, ...] = record._fields  # type: ignore[attr-defined]
        self.names = ", ".join("host, pid" if name == "owner" else name for name in fields)
        self._owner = fields.index("owner") if "owner" in fields else None
        self._width = len(fields) + (self._owner is not None)
        self._times = [fields.index(name) for name in times.split()]
        self._required = [fields.index(name) for name in required.split()]
        self._convert = [(fields.index(name), function) for name, function in convert.items()]

    def read(self, row: Sequence[Any], when: TimeReader) -> R:
        """The record of a row that starts with ``names`` (a query may select more after)."""
        values = list(row[: self._width])
        if self._owner is not None:
            host, pid = values.pop(self._owner), values.pop(self._owner)
            values.insert(self._owner, None if host is None else Owner(host, pid))
        for index in self._times:
            values[index] = when(values[index])
        for index in self._required:
            moment = when(values[index])
            assert moment is not None, "a NOT NULL time column read back NULL"
            values[index] = moment
        for index, function in self._convert:
            values[index] = function(values[index])
        return self.record(*values)


def _json(empty: str) -> Callable[[str | None], Any]:
    """The reader of a JSON column that may be NULL (or empty): as if it held ``empty``."""
    return lambda text: json.loads(text or empty)


def _no_scope(scope: str) -> str | None:
    return scope or None  # stored '' (part of a unique key), read None


RUNS = Columns(
    Run,
    times="started_at finished_at lease_until scheduled_for",
    required="created_at",
    scope=_no_scope,
    status=RunStatus,
    total_cost=float,
    cancel_requested=bool,
    unpriced_models=lambda text: tuple(json.loads(text)) if text else (),
)
PARTS = Columns(
    Part,
    times="upload_started_at create_started_at downloaded_at held_since held_at held_until",
    request_counts=_json("{}"),
    usage=_json("null"),
    errors=_json("[]"),
    hold_tries=lambda tries: tries or 0,
)
TICKS = Columns(Tick, required="scheduled_for", scope=_no_scope)


def totals_text(totals: RequestTotals) -> str:
    """How a submission's ``RequestTotals`` are stored: one JSON array."""
    return json.dumps(totals)  # a NamedTuple is written as the array of its fields


def totals_from_text(text: str | None) -> RequestTotals | None:
    """``totals_text`` read back (None for NULL: not merged, or reopened since)."""
    if text is None:
        return None
    counts, tokens, failures = json.loads(text)
    return RequestTotals(
        counts, [ModelTokens(*row) for row in tokens], [(c, s, n) for c, s, n in failures]
    )


SUBMISSIONS = Columns(Submission, times="merged_at", metadata=json.loads, inputs=json.loads)
DAEMONS = Columns(
    DaemonInfo,
    times="last_pass_at stopped_at",
    required="started_at heartbeat_at",
)
ATTEMPTS = Columns(Attempt, times="finished_at", required="started_at", status=RunStatus)
TRANSITIONS = Columns(
    Transition,
    required="at",
    from_status=lambda status: None if status is None else RunStatus(status),
    to_status=RunStatus,
)
LOGS = Columns(LogEntry, required="at", level=LogLevel, fields=_json("{}"))
LOCKS = Columns(LockHolder, required="lease_until")

# For the queries that read rows themselves (more columns after a record's, or a stream).
RUN_COLUMNS, run_from_row = RUNS.names, RUNS.read
TICK_COLUMNS, tick_from_row = TICKS.names, TICKS.read
LOCK_COLUMNS, lock_from_row = LOCKS.names, LOCKS.read
REQUEST_COLUMNS = ", ".join(RequestState._fields)
# What a merge reads of a request whose line it copies as it is: ``RequestState``'s first fields.
MERGE_COLUMNS = ", ".join(RequestState._fields[: RequestState._fields.index("ordinal") + 1])
# A request whose result line a merge copies: it succeeded, and the line is known.
COPIED = (
    "coalesce(outcome, '') = 'succeeded' AND result_part_id IS NOT NULL"
    " AND result_offset IS NOT NULL"
)
# What an update may change of a part: what the API and its files tell of it (the fields from
# ``status`` on), and when it was last asked.
UPDATABLE_PART_COLUMNS = frozenset(Part._fields[Part._fields.index("status") :]) | {"refreshed_at"}
JSON_PART_COLUMNS = frozenset({"request_counts", "usage", "errors"})


def as_stored(value: datetime | None) -> datetime | None:
    """The time reader of a driver that hands back ``datetime`` values itself."""
    return value


def unpriced_text(models: Sequence[str]) -> str | None:
    """How a run's unpriced models are stored: a JSON list, NULL for none."""
    return json.dumps(sorted(models)) if models else None


_SET_RESULT = (
    "input_tokens = ?, output_tokens = ?, cached_tokens = ?, reasoning_tokens = ?,"
    " cache_write_tokens = ?, cache_write_1h_tokens = ?,"
    " result_part_id = ?, result_kind = ?, result_offset = ?, result_length = ?"
    " WHERE run_id = ? AND part_id = ? AND {key} = ?"
)
# A succeeded request (nearly every one) binds only what varies: 14 values rather than 17.
_SUCCEEDED = (
    "UPDATE requests SET outcome = 'succeeded', status_code = ?, error_code = NULL,"
    " error_message = NULL, " + _SET_RESULT
)
_OTHER = (
    "UPDATE requests SET outcome = ?, status_code = ?, error_code = ?, error_message = ?, "
    + _SET_RESULT
)


def results_by_kind(
    results: Iterable[RequestResult], part_id: int, run_id: int, chunk: int
) -> Iterator[tuple[str, list[tuple[Any, ...]]]]:
    """The UPDATEs that record ``results`` of a part, as ``(sql, rows)`` for ``executemany``:
    up to ``chunk`` rows each, in the order read (so a custom_id read twice keeps its last
    outcome), succeeded requests apart from the others."""
    # By (succeeded, by ordinal): a line that names its request by a derived id finds it by its
    # ordinal (``derived_ids``).
    statements = {
        (succeeded, by_ordinal): (_SUCCEEDED if succeeded else _OTHER).format(
            key="ordinal" if by_ordinal else "custom_id"
        )
        for succeeded in (True, False)
        for by_ordinal in (True, False)
    }
    sql = statements[True, False]
    rows: list[tuple[Any, ...]] = []
    # Unpacked, not read by name: this runs once per result (50,000 a batch).
    for (
        custom_id,
        outcome,
        status_code,
        error_code,
        error_message,
        input_tokens,
        output_tokens,
        kind,
        offset,
        length,
        cached,
        reasoning,
        cache_write,
        cache_write_1h,
        ordinal,
    ) in results:
        succeeded = outcome == "succeeded" and error_code is None and error_message is None
        statement = statements[succeeded, ordinal is not None]
        if statement is not sql or len(rows) >= chunk:
            if rows:
                yield sql, rows
            sql, rows = statement, []
        key = custom_id if ordinal is None else ordinal
        # fmt: off
        if succeeded:  # binds only what varies (``_SUCCEEDED``)
            rows.append((
                status_code, input_tokens, output_tokens, cached, reasoning, cache_write,
                cache_write_1h, part_id, kind, offset, length, run_id, part_id, key,
            ))
        else:
            rows.append((
                outcome, status_code, error_code, error_message, input_tokens, output_tokens,
                cached, reasoning, cache_write, cache_write_1h, part_id, kind, offset, length,
                run_id, part_id, key,
            ))
        # fmt: on
    if rows:
        yield sql, rows
