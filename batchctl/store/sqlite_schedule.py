"""The SQLite store's tables for schedules and the daemon: ticks, cursors, pauses, daemons.

A tick is inserted once per (job, scope, scheduled time): ``INSERT OR IGNORE`` against the unique
key is what makes every tick fire at most once, across restarts, clocks stepped back and several
processes. The per-job cursor is kept apart from run history, so pruning runs never makes an old
tick fire again.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from batchctl.records import DaemonInfo, Owner, Run, Tick, from_iso, to_iso
from batchctl.store.rows import TICK_COLUMNS, tick_from_row


class ScheduleTables:
    conn: sqlite3.Connection

    def _write(self) -> AbstractContextManager[sqlite3.Connection]:
        raise NotImplementedError

    def _runs(self, sql: str, params: Sequence[Any]) -> list[Run]:
        raise NotImplementedError

    # --- cursors and ticks ----------------------------------------------------------------------
    def cursor(self, job: str, scope: str | None) -> datetime | None:
        row = self.conn.execute(
            "SELECT last_scheduled_for FROM schedule_cursors WHERE job = ? AND scope = ?",
            (job, scope or ""),
        ).fetchone()
        return None if row is None else from_iso(row[0])

    def set_cursor(self, job: str, scope: str | None, moment: datetime) -> None:
        """Start a job's cursor (only if it has none): its first tick comes after ``moment``."""
        with self._write() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO schedule_cursors (job, scope, last_scheduled_for)"
                " VALUES (?,?,?)",
                (job, scope or "", to_iso(moment)),
            )

    def record_ticks(
        self,
        job: str,
        scope: str | None,
        *,
        pending: Sequence[datetime],
        closed: Sequence[tuple[datetime, str, str]],
        cursor: datetime,
        priority: int,
        now: datetime,
    ) -> list[int]:
        """Insert ticks (if absent) and move the cursor forward, in one transaction.

        ``pending`` ticks are to fire; ``closed`` ones are (time, status, reason) — missed or
        skipped. Returns the ids of the pending ticks this call inserted (none if another
        process got there first).
        """
        key = scope or ""
        stamp = to_iso(now)
        inserted: list[int] = []
        with self._write() as conn:
            for moment in pending:
                cursor_row = conn.execute(
                    "INSERT OR IGNORE INTO ticks (job, scope, scheduled_for, status, priority,"
                    " created_at) VALUES (?,?,?, 'pending', ?, ?)",
                    (job, key, to_iso(moment), priority, stamp),
                )
                if cursor_row.rowcount:
                    inserted.append(int(cursor_row.lastrowid or 0))
            conn.executemany(
                "INSERT OR IGNORE INTO ticks (job, scope, scheduled_for, status, reason, priority,"
                " created_at) VALUES (?,?,?,?,?,?,?)",
                [
                    (job, key, to_iso(m), status, reason, priority, stamp)
                    for m, status, reason in closed
                ],
            )
            conn.execute(
                "INSERT INTO schedule_cursors (job, scope, last_scheduled_for) VALUES (?,?,?)"
                " ON CONFLICT (job, scope) DO UPDATE SET last_scheduled_for ="
                " max(last_scheduled_for, excluded.last_scheduled_for)",
                (job, key, to_iso(cursor)),
            )
        return inserted

    def claim_ticks(
        self,
        limit: int,
        now: datetime,
        *,
        busy: Mapping[tuple[str, str | None], datetime] | None = None,
        serial_jobs: Collection[str] = (),
        claimer: str | None = None,
        closing: Tick | None = None,
    ) -> list[Tick]:
        """Take up to ``limit`` pending ticks, highest priority then oldest first, as fired.

        ``busy`` maps a running (job, scope) to when its run was handed out. For a job in
        ``serial_jobs``, a tick that was already due then waits (a backlog, e.g. catch-up, runs
        one tick after the other, in order); a tick that came due later is handed out, and the
        job's concurrency policy decides (forbid skips it, replace replaces the running one).
        """
        taken: dict[tuple[str, str | None], datetime] = dict(busy or {})
        chosen: list[Tick] = []
        with self._write() as conn:
            if closing is not None:
                _close_tick(conn, closing.id, closing.status, closing.run_id, closing.reason)
            rows = conn.execute(
                f"SELECT {TICK_COLUMNS} FROM ticks WHERE status = 'pending'"
                " ORDER BY priority DESC, scheduled_for, id LIMIT ?",
                (limit * 20 + 100,),
            )
            for tick in (tick_from_row(row, from_iso) for row in rows):
                key = (tick.job, tick.scope)
                if tick.job in serial_jobs and key in taken and tick.scheduled_for <= taken[key]:
                    continue
                taken[key] = now
                chosen.append(tick)
                if len(chosen) == limit:
                    break
            conn.executemany(
                "UPDATE ticks SET status = 'fired', fired_at = ?, claimed_by = ?"
                " WHERE id = ? AND status = 'pending'",
                [(to_iso(now), claimer, tick.id) for tick in chosen],
            )
        return [tick._replace(status="fired") for tick in chosen]

    def refire_orphaned_ticks(self, stale_before: datetime, dead: Collection[str] = ()) -> int:
        """Put back to pending the ticks a daemon claimed and died before it started a run."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE ticks SET status = 'pending', claimed_by = NULL,"
                " reason = 'its daemon stopped before starting it; fired again'"
                " WHERE status = 'fired' AND run_id IS NULL AND claimed_by IN"
                " (SELECT instance FROM daemons WHERE heartbeat_at < ? OR stopped_at IS NOT NULL"
                f" OR instance IN ({','.join('?' * len(dead)) or 'NULL'}))"
                " AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.job = ticks.job"
                " AND r.scope = ticks.scope AND r.scheduled_for = ticks.scheduled_for)",
                (to_iso(stale_before), *dead),
            )
        return cursor.rowcount

    def pending_tick_count(self) -> int:
        return int(
            self.conn.execute("SELECT count(*) FROM ticks WHERE status = 'pending'").fetchone()[0]
        )

    def close_tick(
        self, tick_id: int, status: str, *, run_id: int | None = None, reason: str | None = None
    ) -> None:
        with self._write() as conn:
            _close_tick(conn, tick_id, status, run_id, reason)

    def reopen_ticks(self, job: str, since: datetime, *, latest_only: bool, limit: int) -> int:
        """Make ticks skipped while the job was paused pending again (``resume`` with catch-up)."""
        with self._write() as conn:
            rows = conn.execute(
                "SELECT id FROM ticks WHERE job = ? AND status = 'skipped' AND reason = 'paused'"
                " AND scheduled_for >= ? ORDER BY scheduled_for DESC LIMIT ?",
                (job, to_iso(since), 1 if latest_only else limit),
            ).fetchall()
            conn.executemany(
                "UPDATE ticks SET status = 'pending', reason = 'fired at resume' WHERE id = ?",
                [(row[0],) for row in rows],
            )
        return len(rows)

    def ticks(self, *, job: str | None = None, limit: int = 100) -> list[Tick]:
        where, params = ("WHERE job = ?", [job]) if job else ("", [])
        rows = self.conn.execute(
            f"SELECT {TICK_COLUMNS} FROM ticks {where}"
            " ORDER BY scheduled_for DESC, id DESC LIMIT ?",
            (*params, limit),
        )
        return [tick_from_row(row, from_iso) for row in rows]

    def last_tick_per_job(self) -> dict[str, Tick]:
        rows = self.conn.execute(
            f"SELECT {TICK_COLUMNS} FROM ticks WHERE id IN"
            " (SELECT max(id) FROM ticks WHERE status != 'pending' GROUP BY job)"
        )
        return {row[1]: tick_from_row(row, from_iso) for row in rows}

    def tick_counts(self, since: datetime) -> dict[tuple[str, str], int]:
        rows = self.conn.execute(
            "SELECT job, status, count(*) FROM ticks WHERE scheduled_for >= ? GROUP BY 1, 2",
            (to_iso(since),),
        )
        return {(row[0], row[1]): row[2] for row in rows}

    # --- pauses ---------------------------------------------------------------------------------
    def pause(self, job: str, now: datetime, reason: str | None) -> bool:
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT OR IGNORE INTO pauses (job, paused_at, reason) VALUES (?,?,?)",
                (job, to_iso(now), reason),
            )
        return cursor.rowcount == 1

    def resume(self, job: str) -> datetime | None:
        """Lift a pause; when it began, or None if the job was not paused."""
        with self._write() as conn:
            row = conn.execute("SELECT paused_at FROM pauses WHERE job = ?", (job,)).fetchone()
            conn.execute("DELETE FROM pauses WHERE job = ?", (job,))
        return None if row is None else from_iso(row[0])

    def paused(self) -> dict[str, datetime]:
        rows = self.conn.execute("SELECT job, paused_at FROM pauses")
        return {row[0]: from_iso(row[1]) or datetime.min for row in rows}

    # --- the daemon -----------------------------------------------------------------------------
    def take_daemon_lock(
        self, instance: str, owner: Owner, lease_until: datetime, now: datetime
    ) -> tuple[str, Owner] | None:
        """Become THE daemon of this database; else return (instance, owner) of the holder."""
        with self._write() as conn:
            row = conn.execute(
                "SELECT instance, host, pid, lease_until FROM daemon_lock WHERE name = 'daemon'"
            ).fetchone()
            if row is not None and row[0] != instance and (from_iso(row[3]) or now) > now:
                return row[0], Owner(row[1], row[2])
            conn.execute(
                "INSERT OR REPLACE INTO daemon_lock (name, instance, host, pid, lease_until)"
                " VALUES ('daemon', ?,?,?,?)",
                (instance, owner.host, owner.pid, to_iso(lease_until)),
            )
        return None

    def daemon_lock_holder(self) -> tuple[str, Owner, datetime] | None:
        row = self.conn.execute(
            "SELECT instance, host, pid, lease_until FROM daemon_lock WHERE name = 'daemon'"
        ).fetchone()
        if row is None:
            return None
        return row[0], Owner(row[1], row[2]), from_iso(row[3]) or datetime.min

    def renew_daemon_lock(self, instance: str, lease_until: datetime) -> bool:
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE daemon_lock SET lease_until = ? WHERE name = 'daemon' AND instance = ?",
                (to_iso(lease_until), instance),
            )
        return cursor.rowcount == 1

    def release_daemon_lock(self, instance: str) -> None:
        with self._write() as conn:
            conn.execute(
                "DELETE FROM daemon_lock WHERE name = 'daemon' AND instance = ?", (instance,)
            )

    def register_daemon(self, instance: str, owner: Owner, mode: str, now: datetime) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO daemons (instance, host, pid, mode, started_at,"
                " heartbeat_at) VALUES (?,?,?,?,?,?)",
                (instance, owner.host, owner.pid, mode, to_iso(now), to_iso(now)),
            )

    def daemon_heartbeat(self, instance: str, now: datetime, *, passed: bool = False) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE daemons SET heartbeat_at = ?, last_pass_at ="
                " CASE WHEN ? THEN ? ELSE last_pass_at END WHERE instance = ?",
                (to_iso(now), passed, to_iso(now), instance),
            )

    def daemon_stopped(self, instance: str, now: datetime) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE daemons SET stopped_at = ? WHERE instance = ?", (to_iso(now), instance)
            )

    def daemons(self, limit: int = 20) -> list[DaemonInfo]:
        rows = self.conn.execute(
            "SELECT instance, host, pid, mode, started_at, heartbeat_at, last_pass_at, stopped_at"
            " FROM daemons ORDER BY heartbeat_at DESC LIMIT ?",
            (limit,),
        )
        return [
            DaemonInfo(
                row[0],
                row[1],
                row[2],
                row[3],
                from_iso(row[4]) or datetime.min,
                from_iso(row[5]) or datetime.min,
                from_iso(row[6]),
                from_iso(row[7]),
            )
            for row in rows
        ]

    def runs_past_lease(self, now: datetime) -> list[Run]:
        """Active runs whose owner's lease has run out: their process died or hangs."""
        return self._runs(
            "status IN ('queued', 'running', 'retrying') AND lease_until IS NOT NULL"
            " AND lease_until < ?",
            (to_iso(now),),
        )

    def active_runs(self, job: str | None = None) -> list[Run]:
        if job is None:
            return self._runs("status IN ('queued', 'running', 'retrying')", ())
        return self._runs("status IN ('queued', 'running', 'retrying') AND job = ?", (job,))


def _close_tick(
    conn: sqlite3.Connection, tick_id: int, status: str, run_id: int | None, reason: str | None
) -> None:
    conn.execute(
        "UPDATE ticks SET status = ?, run_id = coalesce(?, run_id),"
        " reason = coalesce(?, reason) WHERE id = ?",
        (status, run_id, reason, tick_id),
    )
