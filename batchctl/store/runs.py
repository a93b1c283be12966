"""The queries of runs, their attempts, transitions and log lines, and the (job, scope) locks.

Written once for both databases against ``dialect.Tables``. A status change reads the run's
status with its row locked (``for_update``), so the transition recorded names the status it
really left.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from batchctl.records import (
    Attempt,
    LockHolder,
    LogEntry,
    LogLevel,
    Owner,
    Run,
    RunFilter,
    RunOutcome,
    RunStatus,
    Transition,
)
from batchctl.store.dialect import Tables
from batchctl.store.rows import (
    ACTIVE_RUNS,
    ATTEMPTS,
    LOCK_COLUMNS,
    LOGS,
    RUN_COLUMNS,
    RUNS,
    TRANSITIONS,
    lock_from_row,
    run_from_row,
)

CHUNK = 1000  # rows per query when a history is streamed (status --json, logs)
ACTIVE = f"status IN {ACTIVE_RUNS}"


class RunTables(Tables):
    # --- runs -------------------------------------------------------------------------------------
    def create_run(
        self,
        *,
        job: str,
        scope: str | None,
        trigger: str,
        status: RunStatus,
        max_attempts: int,
        now: datetime,
        reason: str | None = None,
        retry_of: int | None = None,
        scheduled_for: datetime | None = None,
        owner: Owner | None = None,
        lease_until: datetime | None = None,
    ) -> int:
        """Record a new run. A ``queued`` run may name its ``owner`` and a lease: should that
        process die before the first attempt, the run is found past its lease and abandoned."""
        with self._write():
            return self._insert_run(
                job=job,
                scope=scope,
                trigger=trigger,
                status=status,
                max_attempts=max_attempts,
                now=now,
                reason=reason,
                retry_of=retry_of,
                scheduled_for=scheduled_for,
                owner=owner,
                lease_until=lease_until,
            )

    def start_run(
        self,
        *,
        job: str,
        scope: str | None,
        trigger: str,
        max_attempts: int,
        now: datetime,
        owner: Owner,
        lease_until: datetime,
        queued_until: datetime,
        retry_of: int | None = None,
        scheduled_for: datetime | None = None,
        lock: str | None = None,
    ) -> tuple[int, bool]:
        """Record a new run and, in the same transaction, start its first attempt (lease
        ``lease_until``), taking the lock ``lock`` first when one is named. Returns (run id,
        started). When ``lock`` has any holder row, even one past its lease, nothing is started:
        the run is left ``queued`` (lease ``queued_until``), as ``create_run`` leaves it, for
        the caller to take the lock its own way. The transitions are those of ``create_run``
        then ``start_attempt``."""
        with self._write():
            if lock is not None:
                self._serialize(f"lock:{lock}")
            # Any holder row, even past its lease, leaves the run queued: judging and taking
            # over a stale holder is the caller's (``Engine._acquire``), not this shortcut's.
            free = lock is None or self.get_lock(lock) is None
            run_id = self._insert_run(
                job=job,
                scope=scope,
                trigger=trigger,
                status=RunStatus.QUEUED,
                max_attempts=max_attempts,
                now=now,
                reason=None,
                retry_of=retry_of,
                scheduled_for=scheduled_for,
                owner=owner,
                lease_until=lease_until if free else queued_until,
            )
            if not free:
                return run_id, False
            if lock is not None:
                self._put_lock(lock, run_id, owner, lease_until, now)
            self._start_attempt(run_id, 1, RunStatus.QUEUED, owner, lease_until, now)
        return run_id, True

    def start_attempt(
        self, run_id: int, number: int, owner: Owner, lease_until: datetime, now: datetime
    ) -> bool:
        """Mark the run running under ``owner`` and open attempt ``number``; False if the run
        is no longer active (cancelled meanwhile)."""
        with self._write():
            previous = self._status_of(run_id)
            if previous is None or previous.terminal:
                return False
            self._start_attempt(run_id, number, previous, owner, lease_until, now)
        return True

    def finish_attempt(self, run_id: int, number: int, outcome: RunOutcome, now: datetime) -> None:
        with self._write():
            self._finish_attempt(run_id, number, outcome, now)

    def record_attempt_process(self, run_id: int, number: int, pgid: int, started: str) -> None:
        """Note the process group attempt ``number`` runs in, and when its leader started (to
        stop the group if the run is abandoned: see ``batchctl.process_groups``)."""
        self._write_one(
            "UPDATE attempts SET pgid = ?, pgid_started = ? WHERE run_id = ? AND number = ?",
            (pgid, started, run_id, number),
        )

    def attempt_process(self, run_id: int) -> tuple[int, int, str] | None:
        """(attempt number, process group, leader start time) of the run's newest unfinished
        attempt that recorded one."""
        row = self._one(
            "SELECT number, pgid, pgid_started FROM attempts"
            " WHERE run_id = ? AND finished_at IS NULL AND pgid IS NOT NULL"
            " ORDER BY number DESC LIMIT 1",
            (run_id,),
        )
        return (int(row[0]), int(row[1]), str(row[2])) if row else None

    def set_status(
        self,
        run_id: int,
        status: RunStatus,
        now: datetime,
        *,
        reason: str | None = None,
        only_if: Sequence[RunStatus] = (),
    ) -> bool:
        """Move the run to ``status`` and record the transition; with ``only_if``, only from one
        of those statuses (returns False when the run was elsewhere)."""
        with self._write():
            previous = self._status_of(run_id)
            if previous is None or (only_if and previous not in only_if):
                return False
            self._exec(
                "UPDATE runs SET status = ?, reason = coalesce(?, reason), finished_at = ?"
                " WHERE id = ?",
                (status.value, reason, self.at(now) if status.terminal else None, run_id),
            )
            self._transition(run_id, previous, status, now, reason)
        return True

    def finish_run(
        self,
        run_id: int,
        outcome: RunOutcome,
        now: datetime,
        *,
        attempt: int | None = None,
        lock: str | None = None,
    ) -> bool:
        """Record the run's final status and figures, if it is still active; False if it was
        not. In the same transaction, whether or not the run was still active: with
        ``attempt``, that attempt's end (as ``finish_attempt``); with ``lock``, the release of
        the run's hold on that lock (as ``release_lock``)."""
        with self._write():
            previous = self._status_of(run_id)
            # The attempt's end and the lock's release hold whether or not the run was still
            # active (cancelled from elsewhere, its attempt still ends and its lock goes).
            if attempt is not None:
                self._finish_attempt(run_id, attempt, outcome, now)
            if lock is not None:
                self._delete_lock(lock, run_id)
            if previous is None or previous.terminal:
                return False
            self._exec(
                "UPDATE runs SET status = ?, finished_at = ?, items_processed = ?,"
                " items_failed = ?, total_tokens = ?, total_cost = ?, error = ?,"
                " lease_until = NULL WHERE id = ?",
                (
                    outcome.status.value,
                    self.at(now),
                    outcome.items_processed,
                    outcome.items_failed,
                    outcome.total_tokens,
                    outcome.total_cost,
                    outcome.error,
                    run_id,
                ),
            )
            self._transition(run_id, previous, outcome.status, now, outcome.error)
        return True

    def record_progress(self, run_id: int, done: int, total: int | None) -> None:
        self._write_one(
            "UPDATE runs SET progress_done = ?, progress_total = ? WHERE id = ?",
            (done, total, run_id),
        )

    def renew_run(self, run_id: int, owner: Owner, lease_until: datetime) -> Run | None:
        """Extend the run's lease and return it (to see ``cancel_requested``); None if gone."""
        with self._write():
            self._exec(
                f"UPDATE runs SET lease_until = {self.clock} WHERE id = ? AND host = ? AND pid = ?",
                (self.lease(lease_until), run_id, owner.host, owner.pid),
            )
            return self.get_run(run_id)

    def request_cancel(self, run_id: int) -> None:
        self._write_one("UPDATE runs SET cancel_requested = TRUE WHERE id = ?", (run_id,))

    def get_run(self, run_id: int) -> Run | None:
        row = self._one(f"SELECT {RUN_COLUMNS} FROM runs WHERE id = ?", (run_id,))
        return None if row is None else run_from_row(row, self.when)

    def list_runs(self, query: RunFilter) -> list[Run]:
        where, params = self._run_where(query)
        sql = f"FROM runs{where} ORDER BY id DESC"
        if query.limit is not None:
            sql += " LIMIT ?"
            params.append(query.limit)
        return self._records(RUNS, sql, params)

    def iter_runs(self, query: RunFilter, *, chunk: int = CHUNK) -> Iterator[Run]:
        """The runs of ``list_runs``, newest first, fetched ``chunk`` at a time: memory stays
        bounded however many match, and no query stays open between chunks."""
        # One short query per chunk (below the last id seen), not one cursor held open: no read
        # transaction lasts while the output is written (a pager may hold it for hours), and
        # PostgreSQL's client-side cursor would load the whole result. ``runs_newest_first``
        # walks the primary key down where that is cheaper than an index that would have every
        # chunk sort all the matching runs again.
        where, params = self._run_where(query)
        left = query.limit
        below: int | None = None
        while left is None or left > 0:
            size = chunk if left is None else min(chunk, left)
            bound = "" if below is None else (" AND id < ?" if where else " WHERE id < ?")
            rows = self._all(
                f"SELECT {RUN_COLUMNS} FROM {self.runs_newest_first}{where}{bound}"
                " ORDER BY id DESC LIMIT ?",
                [*params, *([] if below is None else [below]), size],
            )
            for row in rows:
                yield run_from_row(row, self.when)
            if len(rows) < size:
                return
            below = rows[-1][0]
            if left is not None:
                left -= len(rows)

    def count_runs(self, query: RunFilter) -> int:
        where, params = self._run_where(query)
        return self._count(f"SELECT count(*) FROM runs{where}", params)

    def _runs(self, where: str, params: Sequence[Any] = ()) -> list[Run]:
        return self._records(RUNS, f"FROM runs WHERE {where} ORDER BY id", params)

    def _run_where(self, query: RunFilter) -> tuple[str, list[Any]]:
        clauses: list[str] = []
        params: list[Any] = []
        if query.job is not None:
            clauses.append("job = ?")
            params.append(query.job)
        if query.status:
            condition, values = self.any_of("status", list(query.status))
            clauses.append(condition)
            params.extend(values)
        if query.since is not None:
            clauses.append("created_at >= ?")
            params.append(self.at(query.since))
        return (" WHERE " + " AND ".join(clauses) if clauses else ""), params

    def last_run_per_job(self) -> dict[str, Run]:
        latest = "(SELECT max(id) FROM runs GROUP BY job)"
        return {run.job: run for run in self._records(RUNS, f"FROM runs WHERE id IN {latest}")}

    def active_runs(self, job: str | None = None) -> list[Run]:
        if job is None:
            return self._runs(ACTIVE)
        return self._runs(f"{ACTIVE} AND job = ?", (job,))

    def runs_past_lease(self, now: datetime) -> list[Run]:
        """Active runs whose owner's lease has run out (on the lease clock): their process
        died or hangs."""
        return self._runs(
            f"{ACTIVE} AND lease_until IS NOT NULL AND lease_until < {self.clock}",
            (self.lease(now, now),),
        )

    def attempts(self, run_id: int) -> list[Attempt]:
        return self._records(ATTEMPTS, "FROM attempts WHERE run_id = ? ORDER BY number", (run_id,))

    def transitions(self, run_id: int) -> list[Transition]:
        return self._records(
            TRANSITIONS, "FROM transitions WHERE run_id = ? ORDER BY id", (run_id,)
        )

    # --- logs -------------------------------------------------------------------------------------
    def append_logs(self, entries: Sequence[LogEntry]) -> None:
        if not entries:
            return
        with self._write():
            insert_logs(self, entries)

    def logs(
        self,
        run_id: int,
        *,
        after_id: int = 0,
        min_level: LogLevel | None = None,
        limit: int | None = None,
    ) -> list[LogEntry]:
        levels = [lvl.value for lvl in LogLevel if min_level is None or lvl.rank >= min_level.rank]
        condition, values = self.any_of("level", levels)
        return self._records(
            LOGS,
            f"FROM run_logs WHERE run_id = ? AND id > ? AND {condition} ORDER BY id LIMIT ?",
            (run_id, after_id, *values, self.no_limit if limit is None else limit),
        )

    def iter_logs(
        self,
        run_id: int,
        *,
        after_id: int = 0,
        min_level: LogLevel | None = None,
        chunk: int = CHUNK,
    ) -> Iterator[LogEntry]:
        """The lines of ``logs``, oldest first, fetched ``chunk`` at a time: one short query
        each, so no read transaction stays open while the lines are written out."""
        while True:
            entries = self.logs(run_id, after_id=after_id, min_level=min_level, limit=chunk)
            yield from entries
            if len(entries) < chunk:
                return
            after_id = entries[-1].id or after_id

    # --- locks ------------------------------------------------------------------------------------
    def try_lock(
        self, key: str, run_id: int, owner: Owner, lease_until: datetime, now: datetime
    ) -> tuple[bool, LockHolder | None]:
        """Take the lock if it is free or its lease has expired: (True, the expired holder it
        replaced, if any). Else (False, the holder)."""
        with self._write():
            self._serialize(f"lock:{key}")
            row = self._one(
                f"SELECT {LOCK_COLUMNS}, lease_until > {self.clock} FROM locks WHERE key = ?",
                (self.lease(now, now), key),
            )
            holder = None if row is None else lock_from_row(row, self.when)
            if row is not None and row[5]:
                return False, holder
            self._put_lock(key, run_id, owner, lease_until, now)
        return True, holder

    def run_signal(self, run_id: int) -> tuple[RunStatus, bool] | None:
        """The run's status and whether a cancel was requested (cheap: polled often)."""
        row = self._one("SELECT status, cancel_requested FROM runs WHERE id = ?", (run_id,))
        return None if row is None else (RunStatus(row[0]), bool(row[1]))

    def steal_lock(
        self,
        key: str,
        holder: LockHolder,
        run_id: int,
        owner: Owner,
        lease_until: datetime,
        now: datetime,
    ) -> bool:
        """Take the lock from ``holder`` (judged dead by the caller) if it still holds it."""
        with self._write():
            self._serialize(f"lock:{key}")
            current = self.get_lock(key)
            if current is not None and current != holder:
                return False
            self._put_lock(key, run_id, owner, lease_until, now)
        return True

    def renew_lock(self, key: str, run_id: int, lease_until: datetime) -> bool:
        changed = self._write_one(
            f"UPDATE locks SET lease_until = {self.clock} WHERE key = ? AND run_id = ?",
            (self.lease(lease_until), key, run_id),
        )
        return changed == 1

    def release_lock(self, key: str, run_id: int) -> None:
        with self._write():
            self._delete_lock(key, run_id)

    def get_lock(self, key: str) -> LockHolder | None:
        row = self._one(f"SELECT {LOCK_COLUMNS} FROM locks WHERE key = ?", (key,))
        return None if row is None else lock_from_row(row, self.when)

    def _put_lock(
        self, key: str, run_id: int, owner: Owner, lease_until: datetime, now: datetime
    ) -> None:
        self._exec(
            "INSERT INTO locks (key, run_id, host, pid, acquired_at, lease_until)"
            f" VALUES (?,?,?,?,?, {self.clock})"
            " ON CONFLICT (key) DO UPDATE SET run_id = excluded.run_id, host = excluded.host,"
            " pid = excluded.pid, acquired_at = excluded.acquired_at,"
            " lease_until = excluded.lease_until",
            (key, run_id, owner.host, owner.pid, self.at(now), self.lease(lease_until, now)),
        )

    def _delete_lock(self, key: str, run_id: int) -> None:
        self._exec("DELETE FROM locks WHERE key = ? AND run_id = ?", (key, run_id))

    # --- the writes shared by the one-transaction shortcuts (start_run, finish_run) ---------------
    def _insert_run(
        self,
        *,
        job: str,
        scope: str | None,
        trigger: str,
        status: RunStatus,
        max_attempts: int,
        now: datetime,
        reason: str | None,
        retry_of: int | None,
        scheduled_for: datetime | None,
        owner: Owner | None,
        lease_until: datetime | None,
    ) -> int:
        """Insert a run and its first transition, inside the caller's write; its id."""
        at = self.at(now)
        run_id = self._id(
            "INSERT INTO runs (job, scope, status, trigger, max_attempts, created_at,"
            " finished_at, reason, retry_of, scheduled_for, host, pid, lease_until)"
            f" VALUES (?,?,?,?,?,?,?,?,?,?,?,?, {self.clock}) RETURNING id",
            (
                job,
                scope or "",
                status.value,
                trigger,
                max_attempts,
                at,
                at if status.terminal else None,
                reason,
                retry_of,
                self.at(scheduled_for),
                owner.host if owner else None,
                owner.pid if owner else None,
                self.lease(lease_until, now),
            ),
        )
        self._transition(run_id, None, status, now, reason)
        return run_id

    def _start_attempt(
        self,
        run_id: int,
        number: int,
        previous: RunStatus,
        owner: Owner,
        lease_until: datetime,
        now: datetime,
    ) -> None:
        """Start attempt ``number`` of a run found ``previous``, inside the caller's write."""
        at = self.at(now)
        self._exec(
            "UPDATE runs SET status = 'running', attempts = ?,"
            " started_at = coalesce(started_at, ?), host = ?, pid = ?,"
            f" lease_until = {self.clock} WHERE id = ?",
            (number, at, owner.host, owner.pid, self.lease(lease_until, now), run_id),
        )
        self._exec(
            "INSERT INTO attempts (run_id, number, status, started_at) VALUES (?, ?, 'running', ?)",
            (run_id, number, at),
        )
        if previous is not RunStatus.RUNNING:
            self._transition(run_id, previous, RunStatus.RUNNING, now, f"attempt {number}")

    def _finish_attempt(self, run_id: int, number: int, outcome: RunOutcome, now: datetime) -> None:
        self._exec(
            "UPDATE attempts SET status = ?, finished_at = ?, error = ?, exit_code = ?"
            " WHERE run_id = ? AND number = ?",
            (outcome.status.value, self.at(now), outcome.error, outcome.exit_code, run_id, number),
        )


def insert_logs(tables: Tables, entries: Sequence[LogEntry]) -> None:
    """Append log lines inside the caller's write transaction."""
    tables._many(
        "INSERT INTO run_logs (run_id, attempt, at, level, stream, message, fields)"
        " VALUES (?,?,?,?,?,?,?)",
        [
            (
                e.run_id,
                e.attempt,
                tables.at(e.at),
                e.level.value,
                e.stream,
                e.message,
                json.dumps(e.fields, default=str) if e.fields else None,
            )
            for e in entries
        ],
    )
