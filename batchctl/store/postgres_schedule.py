"""The PostgreSQL store's tables for schedules and the daemons: ticks, cursors, pauses, daemons.

No leader: every daemon, on every host, evaluates the schedules and records the ticks it finds
due with ``INSERT ... ON CONFLICT DO NOTHING RETURNING id`` on the unique (job, scope, scheduled
time); exactly one of them gets the row back. Pending ticks are taken with ``FOR UPDATE SKIP
LOCKED``, so two daemons claiming at the same moment get disjoint ticks, never the same one. The
per-job cursor only moves forward (``greatest``), whoever writes it.

The daemon lease (``daemon_lock``) and ``runs_past_lease`` are judged on the database's clock
(see ``postgres.py``). ``daemons`` lists every daemon that shares the database.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from batchctl.records import DaemonInfo, Owner, Run, Tick
from batchctl.store.postgres_common import Tables, lease_span, serialize
from batchctl.store.rows import TICK_COLUMNS, as_stored, tick_from_row

if TYPE_CHECKING:
    from batchctl.store.postgres_common import Conn

DAEMON_COLUMNS = "instance, host, pid, mode, started_at, heartbeat_at, last_pass_at, stopped_at"


class ScheduleTables(Tables):
    def _runs(self, where: str, params: Sequence[Any]) -> list[Run]:
        raise NotImplementedError

    # --- cursors and ticks ----------------------------------------------------------------------
    def cursor(self, job: str, scope: str | None) -> datetime | None:
        row = self.conn.execute(
            "SELECT last_scheduled_for FROM schedule_cursors WHERE job = %s AND scope = %s",
            (job, scope or ""),
        ).fetchone()
        return None if row is None else row[0]

    def set_cursor(self, job: str, scope: str | None, moment: datetime) -> None:
        """Start a job's cursor (only if it has none): its first tick comes after ``moment``."""
        with self._write() as conn:
            conn.execute(
                "INSERT INTO schedule_cursors (job, scope, last_scheduled_for) VALUES (%s,%s,%s)"
                " ON CONFLICT (job, scope) DO NOTHING",
                (job, scope or "", moment),
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
        """Insert ticks (if absent) and move the cursor forward, in one transaction; the ids of
        the pending ticks this call inserted (none if another daemon got there first)."""
        key = scope or ""
        inserted: list[int] = []
        with self._write() as conn:
            for moment in pending:
                row = conn.execute(
                    "INSERT INTO ticks (job, scope, scheduled_for, status, priority, created_at)"
                    " VALUES (%s,%s,%s, 'pending', %s, %s)"
                    " ON CONFLICT (job, scope, scheduled_for) DO NOTHING RETURNING id",
                    (job, key, moment, priority, now),
                ).fetchone()
                if row is not None:
                    inserted.append(int(row[0]))
            if closed:
                conn.cursor().executemany(
                    "INSERT INTO ticks (job, scope, scheduled_for, status, reason, priority,"
                    " created_at) VALUES (%s,%s,%s,%s,%s,%s,%s)"
                    " ON CONFLICT (job, scope, scheduled_for) DO NOTHING",
                    [(job, key, m, status, reason, priority, now) for m, status, reason in closed],
                )
            conn.execute(
                "INSERT INTO schedule_cursors (job, scope, last_scheduled_for) VALUES (%s,%s,%s)"
                " ON CONFLICT (job, scope) DO UPDATE SET last_scheduled_for ="
                " greatest(schedule_cursors.last_scheduled_for, excluded.last_scheduled_for)",
                (job, key, cursor),
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
        """Take up to ``limit`` pending ticks, highest priority then oldest first, as fired;
        ticks another daemon is claiming at this moment are skipped (``SKIP LOCKED``), not
        waited for, so two daemons never get the same tick.

        ``busy`` maps a running (job, scope) of this daemon to when its run was handed out. For
        a job in ``serial_jobs``, a tick that was already due then waits; a tick that came due
        later is handed out, and the job's concurrency policy decides (as in SQLite's).
        """
        if limit <= 0 and closing is None:
            return []
        # Only when some ticks may be passed over do more candidates than ``limit`` get locked
        # (for the few milliseconds of this transaction).
        window = limit * 20 + 100 if serial_jobs else limit
        taken: dict[tuple[str, str | None], datetime] = dict(busy or {})
        chosen: list[Tick] = []
        with self._write() as conn:
            if closing is not None:
                _close_tick(conn, closing.id, closing.status, closing.run_id, closing.reason)
            rows = conn.execute(
                f"SELECT {TICK_COLUMNS} FROM ticks WHERE status = 'pending'"
                " ORDER BY priority DESC, scheduled_for, id LIMIT %s FOR UPDATE SKIP LOCKED",
                (window,),
            ).fetchall()
            for tick in (tick_from_row(row, as_stored) for row in rows):
                key = (tick.job, tick.scope)
                if tick.job in serial_jobs and key in taken and tick.scheduled_for <= taken[key]:
                    continue
                taken[key] = now
                chosen.append(tick)
                if len(chosen) == limit:
                    break
            if chosen:
                conn.execute(
                    "UPDATE ticks SET status = 'fired', fired_at = %s, claimed_by = %s"
                    " WHERE id = ANY(%s)",
                    (now, claimer, [tick.id for tick in chosen]),
                )
        return [tick._replace(status="fired") for tick in chosen]

    def refire_orphaned_ticks(self, stale_before: datetime, dead: Collection[str] = ()) -> int:
        """Put back to pending the ticks a daemon claimed and died before it started a run."""
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE ticks t SET status = 'pending', claimed_by = NULL,"
                " reason = 'its daemon stopped before starting it; fired again'"
                " WHERE t.status = 'fired' AND t.run_id IS NULL AND t.claimed_by IN"
                " (SELECT instance FROM daemons WHERE heartbeat_at < %s OR stopped_at IS NOT NULL"
                " OR instance = ANY(%s))"
                " AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.job = t.job AND r.scope = t.scope"
                " AND r.scheduled_for = t.scheduled_for)",
                (stale_before, list(dead)),
            )
            return cursor.rowcount

    def pending_tick_count(self) -> int:
        row = self.conn.execute("SELECT count(*) FROM ticks WHERE status = 'pending'").fetchone()
        return int(row[0]) if row else 0

    def close_tick(
        self, tick_id: int, status: str, *, run_id: int | None = None, reason: str | None = None
    ) -> None:
        with self._write() as conn:
            _close_tick(conn, tick_id, status, run_id, reason)

    def reopen_ticks(self, job: str, since: datetime, *, latest_only: bool, limit: int) -> int:
        """Make ticks skipped while the job was paused pending again (``resume`` with catch-up)."""
        with self._write() as conn:
            rows = conn.execute(
                "UPDATE ticks SET status = 'pending', reason = 'fired at resume' WHERE id IN ("
                " SELECT id FROM ticks WHERE job = %s AND status = 'skipped'"
                " AND reason = 'paused' AND scheduled_for >= %s"
                " ORDER BY scheduled_for DESC LIMIT %s FOR UPDATE) RETURNING id",
                (job, since, 1 if latest_only else limit),
            ).fetchall()
        return len(rows)

    def ticks(self, *, job: str | None = None, limit: int = 100) -> list[Tick]:
        where, params = ("WHERE job = %s", [job]) if job else ("", [])
        rows = self.conn.execute(
            f"SELECT {TICK_COLUMNS} FROM ticks {where}"
            " ORDER BY scheduled_for DESC, id DESC LIMIT %s",
            (*params, limit),
        )
        return [tick_from_row(row, as_stored) for row in rows]

    def last_tick_per_job(self) -> dict[str, Tick]:
        rows = self.conn.execute(
            f"SELECT {TICK_COLUMNS} FROM ticks WHERE id IN"
            " (SELECT max(id) FROM ticks WHERE status != 'pending' GROUP BY job)"
        )
        return {row[1]: tick_from_row(row, as_stored) for row in rows}

    def tick_counts(self, since: datetime) -> dict[tuple[str, str], int]:
        rows = self.conn.execute(
            "SELECT job, status, count(*) FROM ticks WHERE scheduled_for >= %s GROUP BY 1, 2",
            (since,),
        )
        return {(row[0], row[1]): int(row[2]) for row in rows}

    # --- pauses ---------------------------------------------------------------------------------
    def pause(self, job: str, now: datetime, reason: str | None) -> bool:
        with self._write() as conn:
            cursor = conn.execute(
                "INSERT INTO pauses (job, paused_at, reason) VALUES (%s,%s,%s)"
                " ON CONFLICT (job) DO NOTHING",
                (job, now, reason),
            )
            return cursor.rowcount == 1

    def resume(self, job: str) -> datetime | None:
        """Lift a pause; when it began, or None if the job was not paused."""
        with self._write() as conn:
            row = conn.execute(
                "DELETE FROM pauses WHERE job = %s RETURNING paused_at", (job,)
            ).fetchone()
        return None if row is None else row[0]

    def paused(self) -> dict[str, datetime]:
        rows = self.conn.execute("SELECT job, paused_at FROM pauses")
        return {row[0]: row[1] for row in rows}

    # --- the daemons ----------------------------------------------------------------------------
    def take_daemon_lock(
        self, instance: str, owner: Owner, lease_until: datetime, now: datetime
    ) -> tuple[str, Owner] | None:
        """Take the daemon lease (its lease on the database's clock); else return (instance,
        owner) of the live holder."""
        with self._write() as conn:
            serialize(conn, "daemon_lock")
            row = conn.execute(
                "SELECT instance, host, pid, lease_until > now() FROM daemon_lock"
                " WHERE name = 'daemon'"
            ).fetchone()
            if row is not None and row[0] != instance and row[3]:
                return row[0], Owner(row[1], row[2])
            conn.execute(
                "INSERT INTO daemon_lock (name, instance, host, pid, lease_until)"
                " VALUES ('daemon', %s, %s, %s, now() + %s)"
                " ON CONFLICT (name) DO UPDATE SET instance = excluded.instance,"
                " host = excluded.host, pid = excluded.pid, lease_until = excluded.lease_until",
                (instance, owner.host, owner.pid, lease_span(lease_until, now)),
            )
        return None

    def daemon_lock_holder(self) -> tuple[str, Owner, datetime] | None:
        row = self.conn.execute(
            "SELECT instance, host, pid, lease_until FROM daemon_lock WHERE name = 'daemon'"
        ).fetchone()
        if row is None:
            return None
        return row[0], Owner(row[1], row[2]), row[3]

    def renew_daemon_lock(self, instance: str, lease_until: datetime) -> bool:
        with self._write() as conn:
            cursor = conn.execute(
                "UPDATE daemon_lock SET lease_until = now() + %s"
                " WHERE name = 'daemon' AND instance = %s",
                (lease_span(lease_until), instance),
            )
            return cursor.rowcount == 1

    def release_daemon_lock(self, instance: str) -> None:
        with self._write() as conn:
            conn.execute(
                "DELETE FROM daemon_lock WHERE name = 'daemon' AND instance = %s", (instance,)
            )

    def register_daemon(self, instance: str, owner: Owner, mode: str, now: datetime) -> None:
        with self._write() as conn:
            conn.execute(
                "INSERT INTO daemons (instance, host, pid, mode, started_at, heartbeat_at)"
                " VALUES (%s,%s,%s,%s,%s,%s)"
                " ON CONFLICT (instance) DO UPDATE SET host = excluded.host, pid = excluded.pid,"
                " mode = excluded.mode, started_at = excluded.started_at,"
                " heartbeat_at = excluded.heartbeat_at, last_pass_at = NULL, stopped_at = NULL",
                (instance, owner.host, owner.pid, mode, now, now),
            )

    def daemon_heartbeat(self, instance: str, now: datetime, *, passed: bool = False) -> None:
        with self._write() as conn:
            conn.execute(
                "UPDATE daemons SET heartbeat_at = %s, last_pass_at ="
                " CASE WHEN %s THEN %s ELSE last_pass_at END WHERE instance = %s",
                (now, passed, now, instance),
            )

    def daemon_stopped(self, instance: str, now: datetime) -> None:
        with self._write() as conn:
            conn.execute("UPDATE daemons SET stopped_at = %s WHERE instance = %s", (now, instance))

    def daemons(self, limit: int = 20) -> list[DaemonInfo]:
        rows = self.conn.execute(
            f"SELECT {DAEMON_COLUMNS} FROM daemons ORDER BY heartbeat_at DESC LIMIT %s", (limit,)
        )
        return [daemon_from_row(row) for row in rows]

    def runs_past_lease(self, now: datetime) -> list[Run]:
        """Active runs whose lease has run out on the database's clock (``now`` is not used:
        hosts' clocks may disagree): their process died or hangs."""
        return self._runs(
            "status IN ('queued', 'running', 'retrying') AND lease_until IS NOT NULL"
            " AND lease_until < now()",
            (),
        )

    def active_runs(self, job: str | None = None) -> list[Run]:
        if job is None:
            return self._runs("status IN ('queued', 'running', 'retrying')", ())
        return self._runs("status IN ('queued', 'running', 'retrying') AND job = %s", (job,))


def daemon_from_row(row: Sequence[Any]) -> DaemonInfo:
    return DaemonInfo(row[0], row[1], row[2], row[3], row[4], row[5], row[6], row[7])


def _close_tick(
    conn: Conn, tick_id: int, status: str, run_id: int | None, reason: str | None
) -> None:
    conn.execute(
        "UPDATE ticks SET status = %s, run_id = coalesce(%s, run_id),"
        " reason = coalesce(%s, reason) WHERE id = %s",
        (status, run_id, reason, tick_id),
    )
