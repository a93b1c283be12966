"""The PostgreSQL store's tables for batch submissions: submissions, parts and requests.

A mixin of ``PostgresStore``, the counterpart of ``sqlite_batches.py`` query for query. The
submission lease (one process drives a submission: uploads, polls, downloads) is judged and
written on the database's clock: two daemons on two hosts never refresh the same submission
at once, whatever their clocks say.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

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
)
from batchctl.store.postgres_common import Tables, lease_span, record_transition
from batchctl.store.rows import (
    JSON_PART_COLUMNS,
    PART_COLUMNS,
    UPDATABLE_PART_COLUMNS,
    as_stored,
    part_from_row,
    request_summaries,
    results_by_kind,
    unpriced_text,
)

if TYPE_CHECKING:
    from batchctl.store.postgres_common import Conn

_RESULTS_CHUNK = 5000  # rows of one executemany: bounded memory, few round trips
_REQUEST_COLUMNS = (
    "custom_id, ordinal, part_id, line_offset, line_length, attempts, outcome, status_code, "
    "error_code, error_message, input_tokens, output_tokens, result_part_id, result_kind, "
    "result_offset, result_length"
)


class BatchTables(Tables):
    def instance_id(self) -> str:
        row = self.conn.execute("SELECT value FROM meta WHERE key = 'instance'").fetchone()
        assert row is not None
        return str(row[0])

    def submission_for_input(self, sha256: str) -> int | None:
        # A submission that ended before creating any batch spent nothing: not a duplicate.
        row = self.conn.execute(
            "SELECT s.run_id FROM submissions s JOIN runs r ON r.id = s.run_id"
            " WHERE s.input_sha256 = %s AND NOT (r.status IN ('failed', 'cancelled') AND NOT EXISTS"
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
        with self._write() as conn:
            inserted = conn.execute(
                "INSERT INTO runs (job, scope, status, trigger, attempts, max_attempts, created_at,"
                " started_at, scheduled_for) VALUES (%s, %s, 'running', %s, 1, 1, %s, %s, %s)"
                " RETURNING id",
                (job, scope or "", trigger, now, now, scheduled_for),
            ).fetchone()
            assert inserted is not None
            run_id = int(inserted[0])
            record_transition(
                conn,
                run_id,
                None,
                RunStatus.RUNNING,
                now,
                f"submitting {submission.requests} requests in {len(parts)} part(s)",
            )
            conn.execute(
                "INSERT INTO submissions (run_id, provider, endpoint, completion_window, metadata,"
                " input_sha256, inputs, directory, token, requests, bytes, on_expired,"
                " max_request_attempts) VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
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

    def _insert_part(self, conn: Conn, run_id: int, part: PartPlanRow) -> int:
        row = conn.execute(
            "INSERT INTO parts (run_id, number, round, model, requests, bytes, path, filename,"
            " status, request_counts, errors)"
            " VALUES (%s,%s,%s,%s,%s,%s,%s,%s, 'planned', '{}', '[]') RETURNING id",
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
        ).fetchone()
        assert row is not None
        return int(row[0])

    def _insert_requests(
        self,
        conn: Conn,
        run_id: int,
        part_ids: dict[int, int],
        requests: Iterable[RequestRow],
    ) -> None:
        # COPY: one round trip for any number of requests (a submission may hold 50,000 a part).
        with (
            conn.cursor() as cursor,
            cursor.copy(
                "COPY requests (run_id, custom_id, ordinal, part_id, line_offset, line_length)"
                " FROM STDIN"
            ) as copy,
        ):
            for r in requests:
                copy.write_row(
                    (
                        run_id,
                        r.custom_id,
                        r.ordinal,
                        part_ids[r.part_number],
                        r.line_offset,
                        r.line_length,
                    )
                )

    def get_submission(self, run_id: int) -> Submission | None:
        row = self.conn.execute(
            "SELECT run_id, provider, endpoint, completion_window, metadata, input_sha256, inputs,"
            " directory, token, requests, bytes, on_expired, max_request_attempts, merged_at,"
            " results_path FROM submissions WHERE run_id = %s",
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
            merged_at=row[13],
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
            f"SELECT {PART_COLUMNS} FROM parts WHERE run_id = %s ORDER BY number", (run_id,)
        )
        return [part_from_row(row, as_stored) for row in rows]

    def parts_for_runs(self, run_ids: Sequence[int]) -> dict[int, list[Part]]:
        found: dict[int, list[Part]] = {}
        rows = self.conn.execute(
            f"SELECT {PART_COLUMNS} FROM parts WHERE run_id = ANY(%s) ORDER BY number",
            (list(run_ids),),
        )
        for row in rows:
            part = part_from_row(row, as_stored)
            found.setdefault(part.run_id, []).append(part)
        return found

    def runs_for_batches(self, batch_ids: Sequence[str]) -> dict[str, int]:
        """The run tracking each of these remote batch ids, for those that are tracked."""
        rows = self.conn.execute(
            "SELECT batch_id, run_id FROM parts WHERE batch_id = ANY(%s)", (list(batch_ids),)
        )
        return {row[0]: row[1] for row in rows}

    def known_tokens(self, tokens: Sequence[str]) -> set[str]:
        """Those of these file-directory tokens that a recorded submission has."""
        rows = self.conn.execute(
            "SELECT token FROM submissions WHERE token = ANY(%s)", (list(tokens),)
        )
        return {row[0] for row in rows}

    def update_part(self, part_id: int, **columns: Any) -> None:
        unknown = set(columns) - UPDATABLE_PART_COLUMNS
        if unknown:
            raise ValueError(f"not a part column: {', '.join(sorted(unknown))}")
        values = [
            json.dumps(v) if k in JSON_PART_COLUMNS and v is not None else v
            for k, v in columns.items()
        ]
        assignments = ", ".join(f"{name} = %s" for name in columns)
        with self._write() as conn:
            conn.execute(f"UPDATE parts SET {assignments} WHERE id = %s", (*values, part_id))

    def record_results(self, part_id: int, results: Iterable[RequestResult], now: datetime) -> None:
        """Record the outcomes read from a part's files, and mark the part downloaded."""
        with self._write() as conn:
            found = conn.execute("SELECT run_id FROM parts WHERE id = %s", (part_id,)).fetchone()
            assert found is not None, f"no part {part_id}"
            with conn.cursor() as cursor:
                for sql, rows in results_by_kind(results, part_id, found[0], _RESULTS_CHUNK):
                    cursor.executemany(sql, rows)

    def settle_pending(self, part_id: int, outcome: str, error_code: str, message: str) -> int:
        """Give every request of the part that has no outcome yet this one; how many."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE requests SET outcome = %s, error_code = %s, error_message = %s"
                " WHERE part_id = %s AND outcome IS NULL",
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
            f"SELECT {_REQUEST_COLUMNS} FROM requests WHERE run_id = %s ORDER BY {by}", (run_id,)
        )
        for row in cursor:
            yield RequestState(*row)

    def requests_to_resend(
        self, run_id: int, outcomes: Sequence[str], max_attempts: int
    ) -> list[RequestState]:
        rows = self.conn.execute(
            f"SELECT {_REQUEST_COLUMNS} FROM requests WHERE run_id = %s AND outcome = ANY(%s)"
            " AND attempts < %s ORDER BY ordinal",
            (run_id, list(outcomes), max_attempts),
        )
        return [RequestState(*row) for row in rows]

    def record_resend_part(
        self, run_id: int, part: PartPlanRow, moved: Sequence[tuple[str, int, int]]
    ) -> int:
        """Add a part that re-sends requests: (custom_id, line_offset, line_length) in its file."""
        with self._write() as conn:
            part_id = self._insert_part(conn, run_id, part)
            conn.cursor().executemany(
                "UPDATE requests SET part_id = %s, line_offset = %s, line_length = %s,"
                " attempts = attempts + 1, outcome = NULL, status_code = NULL, error_code = NULL,"
                " error_message = NULL, result_part_id = NULL, result_kind = NULL,"
                " result_offset = NULL, result_length = NULL"
                " WHERE run_id = %s AND custom_id = %s",
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
        rows = self.conn.execute(
            "SELECT run_id, coalesce(outcome, 'pending'), count(*), sum(input_tokens)::bigint,"
            " sum(output_tokens)::bigint FROM requests WHERE run_id = ANY(%s) GROUP BY 1, 2",
            (list(run_ids),),
        )
        return request_summaries(run_ids, rows)

    def tokens_by_model(self, run_id: int) -> list[ModelTokens]:
        rows = self.conn.execute(
            "SELECT p.model, sum(r.input_tokens)::bigint, sum(r.output_tokens)::bigint,"
            " sum(r.cached_tokens)::bigint, sum(r.reasoning_tokens)::bigint FROM requests r"
            " JOIN parts p ON p.id = r.part_id WHERE r.run_id = %s GROUP BY p.model",
            (run_id,),
        )
        return [ModelTokens(row[0], *(int(n or 0) for n in row[1:])) for row in rows]

    def output_history(self, job: str) -> dict[str, tuple[int, int]]:
        """Per model, the requests of the job's submissions that succeeded and their output
        tokens: what a dry run's output estimate learns from."""
        rows = self.conn.execute(
            "SELECT p.model, count(*), sum(r.output_tokens)::bigint FROM runs u"
            " JOIN requests r ON r.run_id = u.id JOIN parts p ON p.id = r.part_id"
            " WHERE u.job = %s AND r.outcome = 'succeeded' GROUP BY p.model",
            (job,),
        )
        return {row[0]: (int(row[1]), int(row[2] or 0)) for row in rows}

    def mark_merged(self, run_id: int, results_path: str, now: datetime) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE submissions SET merged_at = %s, results_path = %s WHERE run_id = %s",
                (now, results_path, run_id),
            )

    def reopen_submission(self, run_id: int, now: datetime, reason: str) -> None:
        """Put a settled submission back in flight (its run back to running) for a retry."""
        with self._write() as conn:
            row = conn.execute(
                "SELECT status FROM runs WHERE id = %s FOR UPDATE", (run_id,)
            ).fetchone()
            conn.execute("UPDATE submissions SET merged_at = NULL WHERE run_id = %s", (run_id,))
            conn.execute(
                "UPDATE runs SET status = 'running', finished_at = NULL, error = NULL,"
                " cancel_requested = false, attempts = attempts + 1,"
                " max_attempts = max_attempts + 1"
                " WHERE id = %s",
                (run_id,),
            )
            record_transition(conn, run_id, row[0] if row else None, RunStatus.RUNNING, now, reason)

    def take_submission_lease(
        self, run_id: int, owner: Owner, until: datetime, now: datetime
    ) -> Owner | None:
        """Become the one process driving this submission; else return who is."""
        with self._write() as conn:
            row = conn.execute(
                "SELECT lease_host, lease_pid, lease_until IS NULL OR lease_until <= now()"
                " FROM submissions WHERE run_id = %s FOR UPDATE",
                (run_id,),
            ).fetchone()
            if row is None:
                return None
            holder = None if row[0] is None else Owner(row[0], row[1])
            if holder is not None and holder != owner and not row[2]:
                return holder
            conn.execute(
                "UPDATE submissions SET lease_host = %s, lease_pid = %s, lease_until = now() + %s"
                " WHERE run_id = %s",
                (owner.host, owner.pid, lease_span(until, now), run_id),
            )
        return None

    def release_submission_lease(self, run_id: int, owner: Owner) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE submissions SET lease_host = NULL, lease_pid = NULL, lease_until = NULL"
                " WHERE run_id = %s AND lease_host = %s AND lease_pid = %s",
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
        with self._write() as conn:
            row = conn.execute(
                "SELECT status FROM runs WHERE id = %s FOR UPDATE", (run_id,)
            ).fetchone()
            if row is None or RunStatus(row[0]).terminal:
                return False
            conn.execute(
                "UPDATE runs SET status = %s, finished_at = %s, items_processed = %s,"
                " items_failed = %s, total_tokens = %s, total_cost = %s, unpriced_models = %s,"
                " error = %s WHERE id = %s",
                (
                    status.value,
                    finished_at or now,
                    items_processed,
                    items_failed,
                    total_tokens,
                    total_cost,
                    unpriced_text(unpriced_models),
                    error,
                    run_id,
                ),
            )
            record_transition(conn, run_id, row[0], status, now, error)
        return True

    def fail_unsent_submission(
        self, run_id: int, error: str, now: datetime, status: RunStatus = RunStatus.FAILED
    ) -> bool:
        """Record a submission that no batch was created for as ended (``failed``, or
        ``cancelled`` when interrupted), its parts ``not_sent``; False (and nothing changed) if
        a create was attempted or the run has ended."""
        with self._write() as conn:
            row = conn.execute(
                "SELECT status FROM runs WHERE id = %s FOR UPDATE", (run_id,)
            ).fetchone()
            if row is None or RunStatus(row[0]).terminal:
                return False
            sent = conn.execute(
                "SELECT 1 FROM parts WHERE run_id = %s"
                " AND (batch_id IS NOT NULL OR create_started_at IS NOT NULL) LIMIT 1",
                (run_id,),
            ).fetchone()
            if sent is not None:
                return False
            conn.execute("UPDATE parts SET status = 'not_sent' WHERE run_id = %s", (run_id,))
            conn.execute(
                "UPDATE runs SET status = %s, finished_at = %s, error = %s WHERE id = %s",
                (status.value, now, error, run_id),
            )
            record_transition(conn, run_id, row[0], status, now, error)
        return True
