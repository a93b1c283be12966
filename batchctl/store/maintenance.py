"""The read-mostly queries for monitoring and retention: metrics, health, prune.

Written once for both databases against ``dialect.Tables``. Every query here aggregates in SQL
and stays cheap on large databases: runs are read in one ``GROUP BY`` pass, ticks only through
the ``ticks_pending`` index (by status) and the ``(job, scope, scheduled_for)`` unique key, never
scanned whole.

Pruning deletes runs in chunks, one short write transaction each, so that a daemon writing
beside it waits milliseconds, not the whole prune; every delete re-checks its conditions inside
its transaction, so a run reopened meanwhile (``retry`` of a submission) is never deleted.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from batchctl.records import PrunableRun, RunStats, SchedulePosition
from batchctl.store.dialect import Tables
from batchctl.store.rows import ACTIVE_RUNS

# A run that may be pruned: ended, and not a batch submission whose results are not merged yet
# (its run may be terminal for a moment before the merge is recorded, or reopened by a retry).
_PRUNABLE = (
    f"r.status NOT IN {ACTIVE_RUNS} AND r.finished_at IS NOT NULL"
    " AND r.finished_at < ?"
    " AND NOT EXISTS (SELECT 1 FROM submissions s WHERE s.run_id = r.id AND s.merged_at IS NULL)"
)


class MaintenanceTables(Tables):
    # --- metrics ----------------------------------------------------------------------------------
    def run_stats(self) -> list[RunStats]:
        """Per (job, status): run count, tokens, cost, duration sum and count, last finish."""
        rows = self._all(
            "SELECT job, status, count(*), coalesce(sum(total_tokens), 0),"
            " coalesce(sum(total_cost), 0.0),"
            " coalesce(sum(CASE WHEN started_at IS NOT NULL AND finished_at IS NOT NULL"
            f" THEN {self.greatest}(0.0, {self.seconds}) END), 0.0),"
            " count(CASE WHEN started_at IS NOT NULL AND finished_at IS NOT NULL THEN 1 END),"
            " max(finished_at), count(unpriced_models)"
            f" FROM runs GROUP BY job, status"
            f" ORDER BY job{self.text_order}, status{self.text_order}"
        )
        return [
            RunStats(
                job=row[0],
                status=row[1],
                runs=int(row[2]),
                total_tokens=int(row[3]),
                total_cost=float(row[4]),
                duration_sum=float(row[5]),
                duration_count=int(row[6]),
                last_finished_at=self.when(row[7]),
                unpriced_runs=int(row[8]),
            )
            for row in rows
        ]

    def tick_stats(self, statuses: Sequence[str]) -> dict[tuple[str, str], int]:
        """Tick counts per (job, status) for the given statuses (through the status index)."""
        if not statuses:
            return {}
        condition, params = self.any_of("status", statuses)
        rows = self._all(
            f"SELECT job, status, count(*) FROM ticks WHERE {condition} GROUP BY job, status",
            params,
        )
        return {(row[0], row[1]): int(row[2]) for row in rows}

    def part_stats(self) -> dict[tuple[str, str], int]:
        """Parts of the submissions still in flight (not merged, run active), by provider and
        remote status."""
        rows = self._all(
            "SELECT s.provider, p.status, count(*) FROM parts p"
            " JOIN submissions s ON s.run_id = p.run_id JOIN runs r ON r.id = p.run_id"
            f" WHERE s.merged_at IS NULL AND r.status IN {ACTIVE_RUNS}"
            " GROUP BY s.provider, p.status"
        )
        return {(row[0], row[1]): int(row[2]) for row in rows}

    # --- health -----------------------------------------------------------------------------------
    def schedule_positions(self) -> dict[tuple[str, str | None], SchedulePosition]:
        """Per (job, scope) with a cursor: the cursor and the newest tick's scheduled time."""
        rows = self._all(
            "SELECT c.job, c.scope, c.last_scheduled_for,"
            " (SELECT max(t.scheduled_for) FROM ticks t WHERE t.job = c.job AND t.scope = c.scope)"
            " FROM schedule_cursors c"
        )
        positions: dict[tuple[str, str | None], SchedulePosition] = {}
        for row in rows:
            cursor = self.when(row[2])
            if cursor is not None:
                positions[(row[0], row[1] or None)] = SchedulePosition(cursor, self.when(row[3]))
        return positions

    # --- prune ------------------------------------------------------------------------------------
    def prunable_runs(
        self, before: datetime, *, after_id: int = 0, limit: int = 500
    ) -> list[PrunableRun]:
        """Runs that ended before ``before`` and may be deleted, by id, ``limit`` at a time."""
        rows = self._all(
            "SELECT r.id, (SELECT count(*) FROM run_logs l WHERE l.run_id = r.id),"
            " (SELECT s.directory FROM submissions s WHERE s.run_id = r.id)"
            f" FROM runs r WHERE r.id > ? AND {_PRUNABLE} ORDER BY r.id LIMIT ?",
            (after_id, self.at(before), limit),
        )
        return [PrunableRun(int(row[0]), int(row[1]), row[2]) for row in rows]

    def unmerged_finished_count(self, before: datetime) -> int:
        """Ended runs older than ``before`` kept because their submission is not merged."""
        return self._count(
            "SELECT count(*) FROM runs r JOIN submissions s ON s.run_id = r.id"
            f" WHERE s.merged_at IS NULL AND r.status NOT IN {ACTIVE_RUNS}"
            " AND r.finished_at < ?",
            (self.at(before),),
        )

    def delete_runs(self, run_ids: Sequence[int], before: datetime) -> list[int]:
        """Delete these runs (their attempts, transitions, logs, submission, parts and requests
        go with them by ``ON DELETE CASCADE``) if they are still prunable; the ids deleted."""
        if not run_ids:
            return []
        condition, params = self.any_of("r.id", run_ids)
        with self._write():
            rows = self._all(
                "DELETE FROM runs WHERE id IN (SELECT r.id FROM runs r"
                f" WHERE {condition} AND {_PRUNABLE}{self.for_update}) RETURNING id",
                (*params, self.at(before)),
            )
        return sorted(int(row[0]) for row in rows)

    def prune_ticks(
        self, before: datetime, firing_since: datetime, *, dry_run: bool = False
    ) -> int:
        """Delete ticks scheduled before ``before``; never pending ones, nor one fired since
        ``firing_since`` whose run is not recorded yet, nor one whose run is still active.
        The cursors stay, so no deleted tick fires again."""
        where = (
            " WHERE t.scheduled_for < ? AND t.status != 'pending'"
            " AND NOT (t.status = 'fired' AND t.run_id IS NULL"
            " AND coalesce(t.fired_at, t.created_at) >= ?)"
            " AND NOT EXISTS (SELECT 1 FROM runs r"
            f" WHERE r.status IN {ACTIVE_RUNS} AND (r.id = t.run_id"
            " OR (r.job = t.job AND r.scope = t.scope AND r.scheduled_for = t.scheduled_for)))"
        )
        params = (self.at(before), self.at(firing_since))
        if dry_run:
            return self._count(f"SELECT count(*) FROM ticks t{where}", params)
        return self._write_one(
            f"DELETE FROM ticks WHERE id IN (SELECT t.id FROM ticks t{where})", params
        )

    def prune_daemons(
        self, before: datetime, dead_before: datetime, *, dry_run: bool = False
    ) -> int:
        """Delete daemon records that stopped before ``before``, and those never marked
        stopped whose last heartbeat is older than both ``before`` and ``dead_before`` (their
        process died); never the holder of the daemon lock."""
        where = (
            " WHERE ((stopped_at IS NOT NULL AND stopped_at < ?)"
            " OR (stopped_at IS NULL AND heartbeat_at < ? AND heartbeat_at < ?))"
            " AND instance NOT IN (SELECT instance FROM daemon_lock)"
        )
        params = (self.at(before), self.at(before), self.at(dead_before))
        if dry_run:
            return self._count(f"SELECT count(*) FROM daemons{where}", params)
        return self._write_one(f"DELETE FROM daemons{where}", params)
