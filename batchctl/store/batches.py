"""The queries of batch submissions: submissions, parts and requests.

Written once for both databases against ``dialect.Tables``. A submission's requests are
inserted with the back end's bulk insert (``_copy``: ``COPY`` in PostgreSQL), since one may hold
50,000 a part. The submission lease (one process drives a submission: uploads, polls,
downloads) is judged and written on the lease clock, so two daemons on two hosts never refresh
the same submission at once, whatever their clocks say.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any

from batchctl.errors import StoreError
from batchctl.records import (
    TERMINAL_PART_STATUSES,
    LogEntry,
    ModelTokens,
    Owner,
    Part,
    PartPlanRow,
    RequestFields,
    RequestResult,
    RequestState,
    RequestTotals,
    RunStatus,
    Submission,
)
from batchctl.store.dialect import Tables
from batchctl.store.rows import (
    ACTIVE_RUNS,
    COPIED,
    JSON_PART_COLUMNS,
    MERGE_COLUMNS,
    PARTS,
    REQUEST_COLUMNS,
    SUBMISSIONS,
    UPDATABLE_PART_COLUMNS,
    results_by_kind,
    totals_from_text,
    totals_text,
    unpriced_text,
)
from batchctl.store.runs import insert_logs

# The part statuses of an ended batch as an SQL list, from their one definition in records.py.
_ENDED = "(" + ", ".join(f"'{status}'" for status in sorted(TERMINAL_PART_STATUSES)) + ")"
RESULTS_CHUNK = 5000  # rows of one executemany: bounded memory, few round trips


class BatchTables(Tables):
    def instance_id(self) -> str:
        row = self._one("SELECT value FROM meta WHERE key = 'instance'")
        assert row is not None, "the meta table has no instance id"
        return str(row[0])

    def submission_for_input(self, sha256: str) -> int | None:
        # A submission that ended before creating any batch spent nothing: not a duplicate.
        row = self._one(
            "SELECT s.run_id FROM submissions s JOIN runs r ON r.id = s.run_id"
            " WHERE s.input_sha256 = ? AND NOT (r.status IN ('failed', 'cancelled') AND NOT EXISTS"
            " (SELECT 1 FROM parts p WHERE p.run_id = s.run_id"
            " AND (p.batch_id IS NOT NULL OR p.create_started_at IS NOT NULL)))"
            " ORDER BY s.run_id DESC LIMIT 1",
            (sha256,),
        )
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
        requests: Iterable[RequestFields],
        scheduled_for: datetime | None = None,
    ) -> int:
        """Record the run, its submission, parts and every request, in one transaction."""
        at = self.at(now)
        with self._write():
            run_id = self._id(
                "INSERT INTO runs (job, scope, status, trigger, attempts, max_attempts, created_at,"
                " started_at, scheduled_for) VALUES (?, ?, 'running', ?, 1, 1, ?, ?, ?)"
                " RETURNING id",
                (job, scope or "", trigger, at, at, self.at(scheduled_for)),
            )
            reason = f"submitting {submission.requests} requests in {len(parts)} part(s)"
            self._transition(run_id, None, RunStatus.RUNNING, now, reason)
            self._exec(
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
            part_ids = {p.number: self._insert_part(run_id, p) for p in parts}
            self._copy(
                "requests",
                "run_id, custom_id, ordinal, part_id, line_offset, line_length",
                # Unpacked, not read by name: this runs once per request (50,000 a batch).
                (
                    (run_id, custom_id, ordinal, part_ids[number], offset, length)
                    for custom_id, ordinal, number, offset, length in requests
                ),
            )
        return run_id

    def _insert_part(self, run_id: int, part: PartPlanRow) -> int:
        return self._id(
            "INSERT INTO parts (run_id, number, round, model, requests, bytes, path, filename,"
            " status, request_counts, errors)"
            " VALUES (?,?,?,?,?,?,?,?, 'planned', '{}', '[]') RETURNING id",
            (run_id, *part),  # the plan row's fields are the columns that follow, in order
        )

    def get_submission(self, run_id: int) -> Submission | None:
        found = self._records(SUBMISSIONS, "FROM submissions WHERE run_id = ?", (run_id,))
        return found[0] if found else None

    def submissions_in_flight(self) -> list[int]:
        rows = self._all(
            "SELECT s.run_id FROM submissions s JOIN runs r ON r.id = s.run_id"
            f" WHERE s.merged_at IS NULL AND r.status IN {ACTIVE_RUNS}"
            " ORDER BY s.run_id"
        )
        return [int(row[0]) for row in rows]

    def parts(self, run_id: int) -> list[Part]:
        return self._records(PARTS, "FROM parts WHERE run_id = ? ORDER BY number", (run_id,))

    def parts_for_runs(self, run_ids: Sequence[int]) -> dict[int, list[Part]]:
        found: dict[int, list[Part]] = {}
        for condition, params in self._any_of_chunks("run_id", run_ids):
            sql = f"FROM parts WHERE {condition} ORDER BY number"
            for part in self._records(PARTS, sql, params):
                found.setdefault(part.run_id, []).append(part)
        return found

    def enqueued_bytes(self, provider: str, model: str, *, besides: int) -> int:
        """The input bytes of the parts of ``model`` at ``provider`` that may hold enqueued
        tokens there (a batch not ended, or a create under way), part ``besides`` left out."""
        row = self._one(
            "SELECT CAST(coalesce(sum(p.bytes), 0) AS BIGINT) FROM parts p"
            " JOIN submissions s ON s.run_id = p.run_id"
            f" WHERE p.model = ? AND p.status NOT IN {_ENDED} AND p.id <> ?"
            " AND (p.batch_id IS NOT NULL OR p.create_started_at IS NOT NULL)"
            " AND s.provider = ?",
            (model, besides, provider),
        )
        return int(row[0]) if row else 0

    def batch_ended_since(self, provider: str, model: str, since: datetime) -> bool:
        """Whether a batch of ``model`` at ``provider`` was seen to end at or after ``since``."""
        row = self._one(
            "SELECT 1 FROM parts p JOIN submissions s ON s.run_id = p.run_id"
            f" WHERE p.model = ? AND p.status IN {_ENDED} AND p.batch_id IS NOT NULL"
            " AND p.refreshed_at >= ? AND s.provider = ? LIMIT 1",
            (model, self.at(since), provider),
        )
        return row is not None

    def providers_of(self, run_ids: Sequence[int]) -> dict[int, str]:
        """The provider of each of these submissions (by run id)."""
        found: dict[int, str] = {}
        for condition, params in self._any_of_chunks("run_id", run_ids):
            rows = self._all(f"SELECT run_id, provider FROM submissions WHERE {condition}", params)
            found.update({int(row[0]): str(row[1]) for row in rows})
        return found

    def runs_for_batches(self, batch_ids: Sequence[str]) -> dict[str, int]:
        """The run tracking each of these remote batch ids, for those that are tracked."""
        found: dict[str, int] = {}
        for condition, params in self._any_of_chunks("batch_id", batch_ids):
            rows = self._all(f"SELECT batch_id, run_id FROM parts WHERE {condition}", params)
            found.update({row[0]: row[1] for row in rows})
        return found

    def known_tokens(self, tokens: Sequence[str]) -> set[str]:
        """Those of these file-directory tokens that a recorded submission has."""
        found: set[str] = set()
        for condition, params in self._any_of_chunks("token", tokens):
            rows = self._all(f"SELECT token FROM submissions WHERE {condition}", params)
            found.update(row[0] for row in rows)
        return found

    def update_part(self, part_id: int, **columns: Any) -> None:
        self._write_one(*self._part_update(part_id, columns))

    def update_parts(
        self, changes: Sequence[tuple[int, Mapping[str, Any]]], logs: Sequence[LogEntry] = ()
    ) -> None:
        """Update several parts (``(part id, columns)`` each) and append ``logs``, in one
        transaction: a refresh records all it learnt of a submission at once."""
        if not changes and not logs:
            return
        with self._write():
            for part_id, columns in changes:
                self._exec(*self._part_update(part_id, columns))
            insert_logs(self, logs)

    def _part_update(self, part_id: int, columns: Mapping[str, Any]) -> tuple[str, tuple[Any, ...]]:
        """The UPDATE of one part's ``columns`` (checked against the columns that may change)."""
        unknown = set(columns) - UPDATABLE_PART_COLUMNS
        if unknown:
            raise ValueError(f"not a part column: {', '.join(sorted(unknown))}")
        values = [
            json.dumps(v)
            if k in JSON_PART_COLUMNS and v is not None
            else self.at(v)
            if isinstance(v, datetime)
            else v
            for k, v in columns.items()
        ]
        assignments = ", ".join(f"{name} = ?" for name in columns)
        return f"UPDATE parts SET {assignments} WHERE id = ?", (*values, part_id)

    def record_results(self, part_id: int, results: Iterable[RequestResult], now: datetime) -> int:
        """Record the outcomes read from one of a part's files; how many were read."""
        recorded = 0
        with self._write():
            found = self._one("SELECT run_id FROM parts WHERE id = ?", (part_id,))
            assert found is not None, f"no part {part_id}"
            for sql, rows in results_by_kind(results, part_id, found[0], RESULTS_CHUNK):
                self._many(sql, rows)
                recorded += len(rows)
        return recorded

    def settle_pending(self, part_id: int, outcome: str, error_code: str, message: str) -> int:
        """Give every request of the part that has no outcome yet this one; how many."""
        return self._write_one(
            "UPDATE requests SET outcome = ?, error_code = ?, error_message = ?"
            " WHERE run_id = (SELECT run_id FROM parts WHERE id = ?) AND part_id = ?"
            " AND outcome IS NULL",
            (outcome, error_code, message, part_id, part_id),
        )

    def requests_in_order(self, run_id: int, *, order: str = "input") -> Iterator[RequestState]:
        by = (
            "ordinal"
            if order == "input"
            else "result_part_id IS NULL, result_part_id, result_kind DESC, result_offset, ordinal"
        )
        sql = f"SELECT {REQUEST_COLUMNS} FROM requests WHERE run_id = ? ORDER BY {by}"
        for row in self._stream(sql, (run_id,)):
            yield RequestState(*row)

    def requests_to_resend(
        self, run_id: int, outcomes: Sequence[str], max_attempts: int
    ) -> list[RequestState]:
        condition, values = self.any_of("outcome", outcomes)
        rows = self._all(
            f"SELECT {REQUEST_COLUMNS} FROM requests WHERE run_id = ? AND {condition}"
            " AND attempts < ? ORDER BY ordinal",
            (run_id, *values, max_attempts),
        )
        return [RequestState(*row) for row in rows]

    def record_resend_part(
        self, run_id: int, part: PartPlanRow, moved: Sequence[tuple[str, int, int]]
    ) -> int:
        """Add a part that re-sends requests: (custom_id, line_offset, line_length) in its file."""
        with self._write():
            part_id = self._insert_part(run_id, part)
            self._many(
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

    def request_summaries(self, run_ids: Sequence[int]) -> dict[int, dict[str, int]]:
        """Each run's requests counted by outcome ("pending" for none yet), with their token
        totals (a run without requests: none counted)."""
        found = {run_id: {"input_tokens": 0, "output_tokens": 0} for run_id in run_ids}
        for condition, params in self._any_of_chunks("run_id", run_ids):
            for run_id, outcome, count, tokens_in, tokens_out in self._all(
                "SELECT run_id, coalesce(outcome, 'pending'), count(*),"
                " CAST(sum(input_tokens) AS BIGINT), CAST(sum(output_tokens) AS BIGINT)"
                f" FROM requests WHERE {condition} GROUP BY 1, 2",
                params,
            ):
                summary = found[run_id]
                summary[outcome] = count
                summary["input_tokens"] += tokens_in or 0
                summary["output_tokens"] += tokens_out or 0
        return found

    def failure_codes(
        self, run_ids: Sequence[int]
    ) -> dict[int, list[tuple[str | None, int | None, int]]]:
        """Each run's failed requests counted by ``(error_code, status_code)``: what
        ``batches.failures`` tells retryable from invalid failures by."""
        found: dict[int, list[tuple[str | None, int | None, int]]] = {r: [] for r in run_ids}
        for condition, params in self._any_of_chunks("run_id", run_ids):
            for run_id, code, status, count in self._all(
                "SELECT run_id, error_code, status_code, count(*) FROM requests"
                f" WHERE {condition} AND outcome = 'failed' GROUP BY 1, 2, 3",
                params,
            ):
                found[run_id].append((code, status, int(count)))
        return found

    def request_totals(self, run_id: int) -> RequestTotals:
        """The run's requests counted by outcome, their tokens by model and its failed requests
        by code: what a summary of its results shows. Those of a merged submission are the sums
        stored at its merge (unchanged since: a retry that reopens it clears them); any other
        run's are counted in one pass over its requests."""
        stored = self._one(
            "SELECT totals FROM submissions WHERE run_id = ? AND merged_at IS NOT NULL", (run_id,)
        )
        totals = None if stored is None else totals_from_text(stored[0])
        return totals if totals is not None else self._count_totals(run_id)

    def _count_totals(self, run_id: int) -> RequestTotals:
        counts = {"input_tokens": 0, "output_tokens": 0}
        by_model: dict[str, list[int]] = {}
        failures: list[tuple[str | None, int | None, int]] = []
        for model, outcome, code, status, count, *spent in self._all(
            "SELECT p.model, coalesce(r.outcome, 'pending'),"
            " CASE WHEN r.outcome = 'failed' THEN r.error_code END,"
            " CASE WHEN r.outcome = 'failed' THEN r.status_code END, count(*),"
            " sum(r.input_tokens), sum(r.output_tokens), sum(r.cached_tokens),"
            " sum(r.reasoning_tokens), sum(r.cache_write_tokens), sum(r.cache_write_1h_tokens)"
            " FROM requests r JOIN parts p ON p.id = r.part_id WHERE r.run_id = ?"
            " GROUP BY 1, 2, 3, 4",
            (run_id,),
        ):
            count = int(count)
            counts[outcome] = counts.get(outcome, 0) + count
            sums = by_model.setdefault(model, [0] * len(spent))
            for i, n in enumerate(spent):
                sums[i] += int(n or 0)
            if outcome == "failed":
                failures.append((code, status, count))
        for sums in by_model.values():
            counts["input_tokens"] += sums[0]
            counts["output_tokens"] += sums[1]
        tokens = [ModelTokens(model, *by_model[model]) for model in sorted(by_model)]
        return RequestTotals(counts, tokens, failures)

    def output_history(self, job: str) -> dict[str, tuple[int, int]]:
        """Per model, the requests of the job's submissions that succeeded and their output
        tokens: what a dry run's output estimate learns from."""
        rows = self._all(
            "SELECT p.model, count(*), sum(r.output_tokens) FROM runs u"
            " JOIN requests r ON r.run_id = u.id JOIN parts p ON p.id = r.part_id"
            " WHERE u.job = ? AND r.outcome = 'succeeded' GROUP BY p.model",
            (job,),
        )
        return {row[0]: (int(row[1]), int(row[2] or 0)) for row in rows}

    def mark_merged(
        self, run_id: int, results_path: str, totals: RequestTotals, now: datetime
    ) -> None:
        """Record a submission merged into ``results_path``, with its requests' ``totals`` then."""
        self._write_one(
            "UPDATE submissions SET merged_at = ?, results_path = ?, totals = ? WHERE run_id = ?",
            (self.at(now), results_path, totals_text(totals), run_id),
        )

    def reopen_submission(self, run_id: int, now: datetime, reason: str) -> None:
        """Put a settled submission back in flight (its run back to running) for a retry."""
        with self._write():
            previous = self._status_of(run_id)
            self._exec(
                "UPDATE submissions SET merged_at = NULL, totals = NULL WHERE run_id = ?", (run_id,)
            )
            self._exec(
                "UPDATE runs SET status = 'running', finished_at = NULL, error = NULL,"
                " cancel_requested = FALSE, attempts = attempts + 1,"
                " max_attempts = max_attempts + 1 WHERE id = ?",
                (run_id,),
            )
            self._transition(run_id, previous, RunStatus.RUNNING, now, reason)

    def take_submission_lease(
        self, run_id: int, owner: Owner, until: datetime, now: datetime
    ) -> Owner | None:
        """Become the one process driving this submission; else return who is."""
        with self._write():
            row = self._one(
                "SELECT lease_host, lease_pid,"
                f" lease_until IS NULL OR lease_until <= {self.clock}"
                f" FROM submissions WHERE run_id = ?{self.for_update}",
                (self.lease(now, now), run_id),
            )
            if row is None:
                return None
            holder = None if row[0] is None else Owner(row[0], row[1])
            if holder is not None and holder != owner and not row[2]:
                return holder
            self._exec(
                f"UPDATE submissions SET lease_host = ?, lease_pid = ?, lease_until = {self.clock}"
                " WHERE run_id = ?",
                (owner.host, owner.pid, self.lease(until, now), run_id),
            )
        return None

    def release_submission_lease(self, run_id: int, owner: Owner) -> None:
        self._write_one(
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
        with self._write():
            previous = self._status_of(run_id)
            if previous is None or previous.terminal:
                return False
            self._exec(
                "UPDATE runs SET status = ?, finished_at = ?, items_processed = ?,"
                " items_failed = ?, total_tokens = ?, total_cost = ?, unpriced_models = ?,"
                " error = ? WHERE id = ?",
                (
                    status.value,
                    self.at(finished_at or now),
                    items_processed,
                    items_failed,
                    total_tokens,
                    total_cost,
                    unpriced_text(unpriced_models),
                    error,
                    run_id,
                ),
            )
            self._transition(run_id, previous, status, now, error)
        return True

    def fail_unsent_submission(
        self, run_id: int, error: str, now: datetime, status: RunStatus = RunStatus.FAILED
    ) -> bool:
        """Record a submission that no batch was created for as ended (``failed``, or
        ``cancelled`` when interrupted), its parts ``not_sent``; False (and nothing changed) if
        a create was attempted or the run has ended."""
        with self._write():
            previous = self._status_of(run_id)
            if previous is None or previous.terminal:
                return False
            sent = self._one(
                "SELECT 1 FROM parts WHERE run_id = ?"
                " AND (batch_id IS NOT NULL OR create_started_at IS NOT NULL) LIMIT 1",
                (run_id,),
            )
            if sent is not None:
                return False
            self._exec("UPDATE parts SET status = 'not_sent' WHERE run_id = ?", (run_id,))
            self._exec(
                "UPDATE runs SET status = ?, finished_at = ?, error = ? WHERE id = ?",
                (status.value, self.at(now), error, run_id),
            )
            self._transition(run_id, previous, status, now, error)
        return True

    def merge_rows(self, run_id: int) -> Iterator[Sequence[Any]]:
        """The requests in input order, as a merge of JSONL reads them: one whose result line is
        copied as it is (it succeeded; nearly every one) as ``RequestState``'s first fields to
        ``ordinal`` (a query of 7 columns costs half one of 16), any other as a whole
        ``RequestState``, from a second query kept in step with the first (begun at the first
        such request)."""
        others: Iterator[Sequence[Any]] | None = None
        other: Sequence[Any] | None = None  # the next request of ``others``
        for row in self._stream(
            f"SELECT {MERGE_COLUMNS} FROM requests WHERE run_id = ? ORDER BY ordinal", (run_id,)
        ):
            if row[1] == "succeeded" and row[2] is not None and row[4] is not None:  # COPIED
                yield row
                continue
            ordinal = row[_ORDINAL]
            if others is None:
                others = self._stream(
                    f"SELECT {REQUEST_COLUMNS} FROM requests WHERE run_id = ? AND NOT ({COPIED})"
                    " ORDER BY ordinal",
                    (run_id,),
                )
                other = next(others, None)
            while other is not None and other[_ORDINAL] < ordinal:
                other = next(others, None)
            if other is not None and other[_ORDINAL] == ordinal:
                yield RequestState(*other)
                other = next(others, None)
                continue
            # Changed between the two queries (a merge holds the submission's lease, so only
            # by hand): read as it is now.
            found = self._one(
                f"SELECT {REQUEST_COLUMNS} FROM requests WHERE run_id = ? AND custom_id = ?",
                (run_id, row[0]),
            )
            if found is None:
                raise StoreError(f"request {row[0]!r} of run {run_id} was removed during a merge")
            yield RequestState(*found)


_ORDINAL = RequestState._fields.index("ordinal")
