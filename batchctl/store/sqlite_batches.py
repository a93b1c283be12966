"""The SQLite store's tables for batch submissions: submissions, parts and requests.

A mixin of ``SQLiteStore`` (it uses its connection and write transactions), kept apart so that
each file stays about one thing.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from batchctl.records import (
    ModelTokens,
    Owner,
    Part,
    PartPlanRow,
    RequestResult,
    RequestRow,
    RequestState,
    RunStatus,
    Submission,
    from_iso,
    to_iso,
)
from batchctl.store.rows import (
    JSON_PART_COLUMNS,
    PART_COLUMNS,
    UPDATABLE_PART_COLUMNS,
    part_from_row,
    request_summaries,
    results_by_kind,
    unpriced_text,
)
from batchctl.store.transitions import record_transition

_REQUEST_COLUMNS = (
    "custom_id, ordinal, part_id, line_offset, line_length, attempts, outcome, status_code, "
    "error_code, error_message, input_tokens, output_tokens, result_part_id, result_kind, "
    "result_offset, result_length"
)
INSERT_CHUNK = 5000


class BatchTables:
    conn: sqlite3.Connection

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def instance_id(self) -> str:
        return str(self.conn.execute("SELECT value FROM meta WHERE key = 'instance'").fetchone()[0])

    def submission_for_input(self, sha256: str) -> int | None:
        # A submission that ended before creating any batch spent nothing: not a duplicate.
        row = self.conn.execute(
            "SELECT s.run_id FROM submissions s JOIN runs r ON r.id = s.run_id"
            " WHERE s.input_sha256 = ? AND NOT (r.status IN ('failed', 'cancelled') AND NOT EXISTS"
            " (SELECT 1 FROM parts p WHERE p.run_id = s.run_id"
            " AND (p.batch_id IS NOT NULL OR p.create_started_at IS NOT NULL)))"
            " ORDER BY s.run_id DESC LIMIT 1",
            (sha256,),
        ).fetchone()
        return None if row is None else int(row[0])

    def record_submission(
        self,
        *,
        job: str,
        scope: str | None,
        trigger: str,
        now: datetime,
        submission: Submission,
        parts: Sequence[PartPlanRow],
        requests: Iterable[RequestRow],
        scheduled_for: datetime | None = None,
    ) -> int:
        """Record the run, its submission, parts and every request, in one transaction."""
        stamp = to_iso(now)
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO runs (job, scope, status, trigger, attempts, max_attempts, created_at,"
                " started_at, scheduled_for) VALUES (?, ?, 'running', ?, 1, 1, ?, ?, ?)",
                (job, scope or "", trigger, stamp, stamp, to_iso(scheduled_for)),
            )
            run_id = int(cursor.lastrowid or 0)
            record_transition(
                conn,
                run_id,
                None,
                RunStatus.RUNNING,
                stamp,
                f"submitting {submission.requests} requests in {len(parts)} part(s)",
            )
            conn.execute(
                "INSERT INTO submissions (run_id, provider, endpoint, completion_window, metadata,"
                " input_sha256, inputs, directory, token, requests, bytes, on_expired,"
                " max_request_attempts) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (
                    run_id,
                    submission.provider,
                    submission.endpoint,
                    submission.completion_window,
                    json.dumps(submission.metadata),
                    submission.input_sha256,
                    json.dumps(submission.inputs),
                    submission.directory,
                    submission.token,
                    submission.requests,
                    submission.bytes,
                    submission.on_expired,
                    submission.max_request_attempts,
                ),
            )
            part_ids = {p.number: self._insert_part(conn, run_id, p) for p in parts}
            self._insert_requests(conn, run_id, part_ids, requests)
        return run_id

    def _insert_part(self, conn: sqlite3.Connection, run_id: int, part: PartPlanRow) -> int:
        cursor = conn.execute(
            "INSERT INTO parts (run_id, number, round, model, requests, bytes, path, filename,"
            " status, request_counts, errors) VALUES (?,?,?,?,?,?,?,?, 'planned', '{}', '[]')",
            (
                run_id,
                part.number,
                part.round,
                part.model,
                part.requests,
                part.bytes,
                part.path,
                part.filename,
            ),
        )
        return int(cursor.lastrowid or 0)

    def _insert_requests(
        self,
        conn: sqlite3.Connection,
        run_id: int,
        part_ids: dict[int, int],
        requests: Iterable[RequestRow],
    ) -> None:
        sql = (
            "INSERT INTO requests (run_id, custom_id, ordinal, part_id, line_offset, line_length)"
            " VALUES (?,?,?,?,?,?)"
        )
        chunk: list[tuple[Any, ...]] = []
        for r in requests:
            chunk.append(
                (
                    run_id,
                    r.custom_id,
                    r.ordinal,
                    part_ids[r.part_number],
                    r.line_offset,
                    r.line_length,
                )
            )
            if len(chunk) >= INSERT_CHUNK:
                conn.executemany(sql, chunk)
                chunk = []
        if chunk:
            conn.executemany(sql, chunk)

    def get_submission(self, run_id: int) -> Submission | None:
        row = self.conn.execute(
            "SELECT run_id, provider, endpoint, completion_window, metadata, input_sha256, inputs,"
            " directory, token, requests, bytes, on_expired, max_request_attempts, merged_at,"
            " results_path FROM submissions WHERE run_id = ?",
            (run_id,),
        ).fetchone()
        if row is None:
            return None
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
            merged_at=from_iso(row[13]),
            results_path=row[14],
        )

    def submissions_in_flight(self) -> list[int]:
        rows = self.conn.execute(
            "SELECT s.run_id FROM submissions s JOIN runs r ON r.id = s.run_id"
            " WHERE s.merged_at IS NULL AND r.status IN ('queued', 'running', 'retrying')"
            " ORDER BY s.run_id"
        )
        return [int(row[0]) for row in rows]

    def parts(self, run_id: int) -> list[Part]:
        rows = self.conn.execute(
            f"SELECT {PART_COLUMNS} FROM parts WHERE run_id = ? ORDER BY number", (run_id,)
        )
        return [part_from_row(row, from_iso) for row in rows]

    def parts_for_runs(self, run_ids: Sequence[int]) -> dict[int, list[Part]]:
        found: dict[int, list[Part]] = {}
        for start in range(0, len(run_ids), 500):
            chunk = list(run_ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                f"SELECT {PART_COLUMNS} FROM parts WHERE run_id IN ({marks}) ORDER BY number",
                chunk,
            )
            for row in rows:
                part = part_from_row(row, from_iso)
                found.setdefault(part.run_id, []).append(part)
        return found

    def runs_for_batches(self, batch_ids: Sequence[str]) -> dict[str, int]:
        """The run tracking each of these remote batch ids, for those that are tracked."""
        found: dict[str, int] = {}
        for start in range(0, len(batch_ids), 500):
            chunk = list(batch_ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                f"SELECT batch_id, run_id FROM parts WHERE batch_id IN ({marks})", chunk
            )
            found.update({row[0]: row[1] for row in rows})
        return found

    def known_tokens(self, tokens: Sequence[str]) -> set[str]:
        """Those of these file-directory tokens that a recorded submission has."""
        found: set[str] = set()
        for start in range(0, len(tokens), 500):
            chunk = list(tokens[start : start + 500])
            marks = ",".join("?" * len(chunk))
            rows = self.conn.execute(
                f"SELECT token FROM submissions WHERE token IN ({marks})", chunk
            )
            found.update(row[0] for row in rows)
        return found

    def update_part(self, part_id: int, **columns: Any) -> None:
        unknown = set(columns) - UPDATABLE_PART_COLUMNS
        if unknown:
            raise ValueError(f"not a part column: {', '.join(sorted(unknown))}")
        values = [
            json.dumps(v)
            if k in JSON_PART_COLUMNS and v is not None
            else to_iso(v)
            if isinstance(v, datetime)
            else v
            for k, v in columns.items()
        ]
        assignments = ", ".join(f"{name} = ?" for name in columns)
        with self._write() as conn:
            conn.execute(f"UPDATE parts SET {assignments} WHERE id = ?", (*values, part_id))

    def record_results(self, part_id: int, results: Iterable[RequestResult], now: datetime) -> None:
        """Record the outcomes read from a part's files, and mark the part downloaded."""
        with self._write() as conn:
            run_id = conn.execute("SELECT run_id FROM parts WHERE id = ?", (part_id,)).fetchone()[0]
            for sql, rows in results_by_kind(results, part_id, run_id, INSERT_CHUNK, "?"):
                conn.executemany(sql, rows)

    def settle_pending(self, part_id: int, outcome: str, error_code: str, message: str) -> int:
        """Give every request of the part that has no outcome yet this one; how many."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE requests SET outcome = ?, error_code = ?, error_message = ?"
                " WHERE part_id = ? AND outcome IS NULL",
                (outcome, error_code, message, part_id),
            )
        return cursor.rowcount

    def requests_in_order(self, run_id: int, *, order: str = "input") -> Iterator[RequestState]:
        by = (
            "ordinal"
            if order == "input"
            else "result_part_id IS NULL, result_part_id, result_kind DESC, result_offset, ordinal"
        )
        cursor = self.conn.execute(
            f"SELECT {_REQUEST_COLUMNS} FROM requests WHERE run_id = ? ORDER BY {by}", (run_id,)
        )
        for row in cursor:
            yield RequestState(*row)

    def requests_to_resend(
        self, run_id: int, outcomes: Sequence[str], max_attempts: int
    ) -> list[RequestState]:
        marks = ",".join("?" * len(outcomes))
        rows = self.conn.execute(
            f"SELECT {_REQUEST_COLUMNS} FROM requests WHERE run_id = ? AND outcome IN ({marks})"
            " AND attempts < ? ORDER BY ordinal",
            (run_id, *outcomes, max_attempts),
        )
        return [RequestState(*row) for row in rows]

    def record_resend_part(
        self, run_id: int, part: PartPlanRow, moved: Sequence[tuple[str, int, int]]
    ) -> int:
        """Add a part that re-sends requests: (custom_id, line_offset, line_length) in its file."""
        with self._write() as conn:
            part_id = self._insert_part(conn, run_id, part)
            conn.executemany(
                "UPDATE requests SET part_id = ?, line_offset = ?, line_length = ?,"
                " attempts = attempts + 1, outcome = NULL, status_code = NULL, error_code = NULL,"
                " error_message = NULL, result_part_id = NULL, result_kind = NULL,"
                " result_offset = NULL, result_length = NULL"
                " WHERE run_id = ? AND custom_id = ?",
                [
                    (part_id, offset, length, run_id, custom_id)
                    for custom_id, offset, length in moved
                ],
            )
        return part_id

    def request_summary(self, run_id: int) -> dict[str, int]:
        """Counts by outcome ("pending" for none yet) and the token totals."""
        return self.request_summaries([run_id])[run_id]

    def request_summaries(self, run_ids: Sequence[int]) -> dict[int, dict[str, int]]:
        """``request_summary`` of each of these runs (those without requests: empty counts)."""
        found: list[Any] = []
        for start in range(0, len(run_ids), 500):  # SQLite's limit on bound parameters
            chunk = list(run_ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            found += self.conn.execute(
                "SELECT run_id, coalesce(outcome, 'pending'), count(*), sum(input_tokens),"
                f" sum(output_tokens) FROM requests WHERE run_id IN ({marks}) GROUP BY 1, 2",
                chunk,
            ).fetchall()
        return request_summaries(run_ids, found)

    def tokens_by_model(self, run_id: int) -> list[ModelTokens]:
        rows = self.conn.execute(
            "SELECT p.model, sum(r.input_tokens), sum(r.output_tokens),"
            " sum(r.cached_tokens), sum(r.reasoning_tokens) FROM requests r"
            " JOIN parts p ON p.id = r.part_id WHERE r.run_id = ? GROUP BY p.model",
            (run_id,),
        )
        return [ModelTokens(row[0], *(int(n or 0) for n in row[1:])) for row in rows]

    def output_history(self, job: str) -> dict[str, tuple[int, int]]:
        """Per model, the requests of the job's submissions that succeeded and their output
        tokens: what a dry run's output estimate learns from."""
        rows = self.conn.execute(
            "SELECT p.model, count(*), sum(r.output_tokens) FROM runs u"
            " JOIN requests r ON r.run_id = u.id JOIN parts p ON p.id = r.part_id"
            " WHERE u.job = ? AND r.outcome = 'succeeded' GROUP BY p.model",
            (job,),
        )
        return {row[0]: (int(row[1]), int(row[2] or 0)) for row in rows}

    def mark_merged(self, run_id: int, results_path: str, now: datetime) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE submissions SET merged_at = ?, results_path = ? WHERE run_id = ?",
                (to_iso(now), results_path, run_id),
            )

    def reopen_submission(self, run_id: int, now: datetime, reason: str) -> None:
        """Put a settled submission back in flight (its run back to running) for a retry."""
        stamp = to_iso(now)
        with self._write() as conn:
            row = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            conn.execute("UPDATE submissions SET merged_at = NULL WHERE run_id = ?", (run_id,))
            conn.execute(
                "UPDATE runs SET status = 'running', finished_at = NULL, error = NULL,"
                " cancel_requested = 0, attempts = attempts + 1, max_attempts = max_attempts + 1"
                " WHERE id = ?",
                (run_id,),
            )
            record_transition(
                conn, run_id, row[0] if row else None, RunStatus.RUNNING, stamp, reason
            )

    def take_submission_lease(
        self, run_id: int, owner: Owner, until: datetime, now: datetime
    ) -> Owner | None:
        """Become the one process driving this submission; else return who is."""
        with self._write() as conn:
            row = conn.execute(
                "SELECT lease_host, lease_pid, lease_until FROM submissions WHERE run_id = ?",
                (run_id,),
            ).fetchone()
            if row is None:
                return None
            holder = None if row[0] is None else Owner(row[0], row[1])
            expired = row[2] is None or (from_iso(row[2]) or now) <= now
            if holder is not None and holder != owner and not expired:
                return holder
            conn.execute(
                "UPDATE submissions SET lease_host = ?, lease_pid = ?, lease_until = ?"
                " WHERE run_id = ?",
                (owner.host, owner.pid, to_iso(until), run_id),
            )
        return None

    def release_submission_lease(self, run_id: int, owner: Owner) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE submissions SET lease_host = NULL, lease_pid = NULL, lease_until = NULL"
                " WHERE run_id = ? AND lease_host = ? AND lease_pid = ?",
                (run_id, owner.host, owner.pid),
            )

    def finish_submission_run(
        self,
        run_id: int,
        status: RunStatus,
        *,
        items_processed: int,
        items_failed: int,
        total_tokens: int,
        total_cost: float,
        unpriced_models: Sequence[str] = (),
        error: str | None,
        now: datetime,
        finished_at: datetime | None = None,
    ) -> bool:
        """End the run (unless it already ended): ``finished_at`` is when its work ended (the
        API's end of its last batch; default ``now``), ``now`` when batchctl recorded it."""
        stamp = to_iso(now)
        with self._write() as conn:
            row = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None or RunStatus(row[0]).terminal:
                return False
            conn.execute(
                "UPDATE runs SET status = ?, finished_at = ?, items_processed = ?,"
                " items_failed = ?, total_tokens = ?, total_cost = ?, unpriced_models = ?,"
                " error = ? WHERE id = ?",
                (
                    status.value,
                    to_iso(finished_at or now),
                    items_processed,
                    items_failed,
                    total_tokens,
                    total_cost,
                    unpriced_text(unpriced_models),
                    error,
                    run_id,
                ),
            )
            record_transition(conn, run_id, row[0], status, stamp, error)
        return True

    def fail_unsent_submission(
        self, run_id: int, error: str, now: datetime, status: RunStatus = RunStatus.FAILED
    ) -> bool:
        """Record a submission that no batch was created for as ended (``failed``, or
        ``cancelled`` when interrupted), its parts ``not_sent``; False (and nothing changed) if
        a create was attempted or the run has ended."""
        with self._write() as conn:
            row = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None or RunStatus(row[0]).terminal:
                return False
            sent = conn.execute(
                "SELECT 1 FROM parts WHERE run_id = ?"
                " AND (batch_id IS NOT NULL OR create_started_at IS NOT NULL) LIMIT 1",
                (run_id,),
            ).fetchone()
            if sent is not None:
                return False
            conn.execute("UPDATE parts SET status = 'not_sent' WHERE run_id = ?", (run_id,))
            conn.execute(
                "UPDATE runs SET status = ?, finished_at = ?, error = ? WHERE id = ?",
                (status.value, to_iso(now), error, run_id),
            )
            record_transition(conn, run_id, row[0], status, to_iso(now), error)
        return True
