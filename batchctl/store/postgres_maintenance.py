"""The PostgreSQL store's queries for monitoring and retention: metrics, health, prune.

The counterpart of ``sqlite_maintenance.py``, query for query. Text is ordered with the "C"
collation, byte by byte as SQLite orders it, whatever the database's locale. Pruning deletes
in chunks, one short transaction each, and re-checks every condition inside it. ``compact`` runs
``VACUUM (ANALYZE)`` on batchctl's tables when asked for ``vacuum`` (autovacuum does the rest).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from batchctl.records import DaemonInfo, PrunableRun, RunStats, SchedulePosition
from batchctl.store.postgres_common import Tables
from batchctl.store.postgres_schedule import DAEMON_COLUMNS, daemon_from_row

# A run that may be pruned: ended, and not a batch submission whose results are not merged yet.
_PRUNABLE = (
    "r.status NOT IN ('queued', 'running', 'retrying') AND r.finished_at IS NOT NULL"
    " AND r.finished_at < %s"
    " AND NOT EXISTS (SELECT 1 FROM submissions s WHERE s.run_id = r.id AND s.merged_at IS NULL)"
)
_SECONDS = "extract(epoch FROM finished_at - started_at)::float8"
_TABLES = (
    "runs, attempts, transitions, run_logs, locks, meta, submissions, parts, requests, ticks,"
    " schedule_cursors, pauses, daemons, daemon_lock"
)


class MaintenanceTables(Tables):
    # --- metrics ------------------------------------------------------------------------------
    def run_stats(self) -> list[RunStats]:
        """Per (job, status): run count, tokens, cost, duration sum and count, last finish."""
        rows = self.conn.execute(
            "SELECT job, status, count(*), coalesce(sum(total_tokens), 0),"
            " coalesce(sum(total_cost), 0.0),"
            " coalesce(sum(CASE WHEN started_at IS NOT NULL AND finished_at IS NOT NULL"
            f" THEN greatest(0.0, {_SECONDS}) END), 0.0),"
            " count(CASE WHEN started_at IS NOT NULL AND finished_at IS NOT NULL THEN 1 END),"
            " max(finished_at), count(unpriced_models)"
            ' FROM runs GROUP BY job, status ORDER BY job COLLATE "C", status COLLATE "C"'
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
                last_finished_at=row[7],
                unpriced_runs=int(row[8]),
            )
            for row in rows
        ]

    def tick_stats(self, statuses: Sequence[str]) -> dict[tuple[str, str], int]:
        """Tick counts per (job, status) for the given statuses (through the status index)."""
        if not statuses:
            return {}
        rows = self.conn.execute(
            "SELECT job, status, count(*) FROM ticks WHERE status = ANY(%s) GROUP BY job, status",
            (list(statuses),),
        )
        return {(row[0], row[1]): int(row[2]) for row in rows}

    def part_stats(self) -> dict[str, int]:
        """Parts of the submissions still in flight (not merged, run active), by remote status."""
        rows = self.conn.execute(
            "SELECT p.status, count(*) FROM parts p"
            " JOIN submissions s ON s.run_id = p.run_id JOIN runs r ON r.id = p.run_id"
            " WHERE s.merged_at IS NULL AND r.status IN ('queued', 'running', 'retrying')"
            " GROUP BY p.status"
        )
        return {row[0]: int(row[1]) for row in rows}

    # --- health ---------------------------------------------------------------------------------
    def schedule_positions(self) -> dict[tuple[str, str | None], SchedulePosition]:
        """Per (job, scope) with a cursor: the cursor and the newest tick's scheduled time."""
        rows = self.conn.execute(
            "SELECT c.job, c.scope, c.last_scheduled_for,"
            " (SELECT max(t.scheduled_for) FROM ticks t WHERE t.job = c.job AND t.scope = c.scope)"
            " FROM schedule_cursors c"
        )
        return {(row[0], row[1] or None): SchedulePosition(row[2], row[3]) for row in rows}

    def latest_daemon(self, mode: str) -> DaemonInfo | None:
        """The daemon record of ``mode`` not marked stopped, newest heartbeat first."""
        row = self.conn.execute(
            f"SELECT {DAEMON_COLUMNS} FROM daemons WHERE mode = %s AND stopped_at IS NULL"
            " ORDER BY heartbeat_at DESC LIMIT 1",
            (mode,),
        ).fetchone()
        return None if row is None else daemon_from_row(row)

    def daemons_since(self, since: datetime, limit: int = 50) -> list[DaemonInfo]:
        """Daemon records that beat at or after ``since``, or are not marked stopped; newest
        heartbeat first."""
        rows = self.conn.execute(
            f"SELECT {DAEMON_COLUMNS} FROM daemons WHERE heartbeat_at >= %s OR stopped_at IS NULL"
            " ORDER BY heartbeat_at DESC LIMIT %s",
            (since, limit),
        )
        return [daemon_from_row(row) for row in rows]

    # --- prune ----------------------------------------------------------------------------------
    def prunable_runs(
        self, before: datetime, *, after_id: int = 0, limit: int = 500
    ) -> list[PrunableRun]:
        """Runs that ended before ``before`` and may be deleted, by id, ``limit`` at a time."""
        rows = self.conn.execute(
            "SELECT r.id, (SELECT count(*) FROM run_logs l WHERE l.run_id = r.id),"
            " (SELECT s.directory FROM submissions s WHERE s.run_id = r.id)"
            f" FROM runs r WHERE r.id > %s AND {_PRUNABLE} ORDER BY r.id LIMIT %s",
            (after_id, before, limit),
        )
        return [PrunableRun(int(row[0]), int(row[1]), row[2]) for row in rows]

    def unmerged_finished_count(self, before: datetime) -> int:
        """Ended runs older than ``before`` kept because their submission is not merged."""
        row = self.conn.execute(
            "SELECT count(*) FROM runs r JOIN submissions s ON s.run_id = r.id"
            " WHERE s.merged_at IS NULL AND r.status NOT IN ('queued', 'running', 'retrying')"
            " AND r.finished_at < %s",
            (before,),
        ).fetchone()
        return int(row[0]) if row else 0

    def delete_runs(self, run_ids: Sequence[int], before: datetime) -> list[int]:
        """Delete these runs (their dependants go by ``ON DELETE CASCADE``) if they are still
        prunable; the ids deleted."""
        if not run_ids:
            return []
        with self._write() as conn:
            rows = conn.execute(
                "DELETE FROM runs WHERE id IN (SELECT r.id FROM runs r WHERE r.id = ANY(%s)"
                f" AND {_PRUNABLE} FOR UPDATE) RETURNING id",
                (list(run_ids), before),
            ).fetchall()
        return sorted(int(row[0]) for row in rows)

    def prune_ticks(
        self, before: datetime, firing_since: datetime, *, dry_run: bool = False
    ) -> int:
        """Delete ticks scheduled before ``before``; never pending ones, nor one fired since
        ``firing_since`` whose run is not recorded yet, nor one whose run is still active."""
        where = (
            " WHERE t.scheduled_for < %s AND t.status != 'pending'"
            " AND NOT (t.status = 'fired' AND t.run_id IS NULL"
            " AND coalesce(t.fired_at, t.created_at) >= %s)"
            " AND NOT EXISTS (SELECT 1 FROM runs r"
            " WHERE r.status IN ('queued', 'running', 'retrying') AND (r.id = t.run_id"
            " OR (r.job = t.job AND r.scope = t.scope AND r.scheduled_for = t.scheduled_for)))"
        )
        params = (before, firing_since)
        if dry_run:
            row = self.conn.execute(f"SELECT count(*) FROM ticks t{where}", params).fetchone()
            return int(row[0]) if row else 0
        with self._write() as conn:
            cursor = conn.execute(
                f"DELETE FROM ticks WHERE id IN (SELECT t.id FROM ticks t{where})", params
            )
            return int(cursor.rowcount)

    def prune_daemons(
        self, before: datetime, dead_before: datetime, *, dry_run: bool = False
    ) -> int:
        """Delete daemon records that stopped before ``before``, and those never marked
        stopped whose last heartbeat is older than both ``before`` and ``dead_before``; never
        the holder of the daemon lock."""
        where = (
            " WHERE ((stopped_at IS NOT NULL AND stopped_at < %s)"
            " OR (stopped_at IS NULL AND heartbeat_at < %s AND heartbeat_at < %s))"
            " AND instance NOT IN (SELECT instance FROM daemon_lock)"
        )
        params = (before, before, dead_before)
        if dry_run:
            row = self.conn.execute(f"SELECT count(*) FROM daemons{where}", params).fetchone()
            return int(row[0]) if row else 0
        with self._write() as conn:
            return int(conn.execute(f"DELETE FROM daemons{where}", params).rowcount)

    def compact(self, *, vacuum: bool = False) -> None:
        """Nothing to fold (PostgreSQL has no write-ahead log file of its own to truncate, and
        autovacuum reclaims space); with ``vacuum``, ``VACUUM (ANALYZE)`` batchctl's tables."""
        if vacuum:
            self.conn.execute(f"VACUUM (ANALYZE) {_TABLES}")
