"""The queries of schedules and daemons: ticks, cursors, pauses, the daemon lease and records.

Written once for both databases against ``dialect.Tables``. A tick is inserted once per (job,
scope, scheduled time): ``ON CONFLICT DO NOTHING`` on that unique key is what makes every tick
fire at most once, across restarts, clocks stepped back and several daemons (on PostgreSQL,
exactly one daemon gets the row back). Pending ticks are claimed ``skip_locked``, so two daemons
claiming at the same moment get disjoint ticks. The per-job cursor only moves forward, whoever
writes it, and is kept apart from run history, so pruning runs never makes an old tick fire
again.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime

from batchctl.records import DaemonInfo, Owner, Tick
from batchctl.store.dialect import Tables
from batchctl.store.rows import DAEMONS, TICK_COLUMNS, TICKS, tick_from_row


class ScheduleTables(Tables):
    # --- cursors and ticks ------------------------------------------------------------------------
    def cursor(self, job: str, scope: str | None) -> datetime | None:
        row = self._one(
            "SELECT last_scheduled_for FROM schedule_cursors WHERE job = ? AND scope = ?",
            (job, scope or ""),
        )
        return None if row is None else self.when(row[0])

    def set_cursor(self, job: str, scope: str | None, moment: datetime) -> None:
        """Start a job's cursor (only if it has none): its first tick comes after ``moment``."""
        self._write_one(
            "INSERT INTO schedule_cursors (job, scope, last_scheduled_for) VALUES (?,?,?)"
            " ON CONFLICT (job, scope) DO NOTHING",
            (job, scope or "", self.at(moment)),
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
        at = self.at(now)
        inserted: list[int] = []
        per_statement = max(1, self.in_chunk // 5)  # rows of 5 parameters
        with self._write():
            # Many rows a statement (a catch-up may record 10,000 ticks before its first run);
            # each row is inserted or passed over on its own, and ids rise in insertion order.
            for first in range(0, len(pending), per_statement):
                chunk = pending[first : first + per_statement]
                values = ",".join(["(?,?,?, 'pending', ?, ?)"] * len(chunk))
                rows = self._all(
                    "INSERT INTO ticks (job, scope, scheduled_for, status, priority, created_at)"
                    f" VALUES {values}"
                    " ON CONFLICT (job, scope, scheduled_for) DO NOTHING RETURNING id",
                    [v for moment in chunk for v in (job, key, self.at(moment), priority, at)],
                )
                inserted.extend(sorted(int(row[0]) for row in rows))
            if closed:
                self._many(
                    "INSERT INTO ticks (job, scope, scheduled_for, status, reason, priority,"
                    " created_at) VALUES (?,?,?,?,?,?,?)"
                    " ON CONFLICT (job, scope, scheduled_for) DO NOTHING",
                    [
                        (job, key, self.at(m), status, reason, priority, at)
                        for m, status, reason in closed
                    ],
                )
            self._exec(
                "INSERT INTO schedule_cursors (job, scope, last_scheduled_for) VALUES (?,?,?)"
                " ON CONFLICT (job, scope) DO UPDATE SET last_scheduled_for ="
                f" {self.greatest}(schedule_cursors.last_scheduled_for,"
                " excluded.last_scheduled_for)",
                (job, key, self.at(cursor)),
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
        closing: Tick | Sequence[Tick] | None = None,
    ) -> list[Tick]:
        """Take up to ``limit`` pending ticks, highest priority then oldest first, as fired;
        ticks another daemon is claiming at this moment are skipped, not waited for, so two
        daemons never get the same tick.

        ``busy`` maps a running (job, scope) to when its run was handed out. For a job in
        ``serial_jobs``, a tick that was already due then waits (a backlog, e.g. catch-up, runs
        one tick after the other, in order); a tick that came due later is handed out, and the
        job's concurrency policy decides (forbid skips it, replace replaces the running one).

        ``closing``: a tick the claimer has fired (or several), closed first in the same
        transaction (as ``close_tick`` would), so a worker's end of one tick and claim of the next
        is one write.
        """
        done = [closing] if isinstance(closing, Tick) else list(closing or ())
        if limit <= 0 and not done:
            return []
        # Only when some ticks may be passed over are more candidates than ``limit`` read (and
        # locked, for the few milliseconds of this transaction).
        window = limit * 20 + 100 if serial_jobs else limit
        taken: dict[tuple[str, str | None], datetime] = dict(busy or {})
        chosen: list[Tick] = []
        with self._write():
            for tick in done:
                self._close_tick(tick.id, tick.status, tick.run_id, tick.reason)
            rows = self._all(
                f"SELECT {TICK_COLUMNS} FROM ticks WHERE status = 'pending'"
                f" ORDER BY priority DESC, scheduled_for, id LIMIT ?{self.skip_locked}",
                (window,),
            )
            for tick in (tick_from_row(row, self.when) for row in rows):
                key = (tick.job, tick.scope)
                if tick.job in serial_jobs and key in taken and tick.scheduled_for <= taken[key]:
                    continue
                taken[key] = now
                chosen.append(tick)
                if len(chosen) == limit:
                    break
            for condition, params in self._any_of_chunks("id", [tick.id for tick in chosen]):
                self._exec(
                    f"UPDATE ticks SET status = 'fired', fired_at = ?, claimed_by = ?"
                    f" WHERE {condition}",
                    (self.at(now), claimer, *params),
                )
        return [tick._replace(status="fired") for tick in chosen]

    def refire_orphaned_ticks(self, stale_before: datetime, dead: Collection[str] = ()) -> int:
        """Put back to pending the fired ticks without a run whose daemon is gone: its heartbeat
        older than ``stale_before``, stopped, or one of the ``dead`` instances."""
        condition, params = self.any_of("instance", list(dead))
        return self._write_one(
            "UPDATE ticks SET status = 'pending', claimed_by = NULL,"
            " reason = 'its daemon stopped before starting it; fired again'"
            " WHERE status = 'fired' AND run_id IS NULL AND claimed_by IN"
            " (SELECT instance FROM daemons WHERE heartbeat_at < ? OR stopped_at IS NOT NULL"
            f" OR {condition})"
            " AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.job = ticks.job"
            " AND r.scope = ticks.scope AND r.scheduled_for = ticks.scheduled_for)",
            (self.at(stale_before), *params),
        )

    def pending_tick_count(self) -> int:
        return self._count("SELECT count(*) FROM ticks WHERE status = 'pending'")

    def close_tick(
        self, tick_id: int, status: str, *, run_id: int | None = None, reason: str | None = None
    ) -> None:
        with self._write():
            self._close_tick(tick_id, status, run_id, reason)

    def _close_tick(
        self, tick_id: int, status: str, run_id: int | None, reason: str | None
    ) -> None:
        self._exec(
            "UPDATE ticks SET status = ?, run_id = coalesce(?, run_id),"
            " reason = coalesce(?, reason) WHERE id = ?",
            (status, run_id, reason, tick_id),
        )

    def reopen_ticks(self, job: str, since: datetime, *, latest_only: bool, limit: int) -> int:
        """Make ticks skipped while the job was paused pending again (``resume`` with catch-up)."""
        return self._write_one(
            "UPDATE ticks SET status = 'pending', reason = 'fired at resume' WHERE id IN ("
            " SELECT id FROM ticks WHERE job = ? AND status = 'skipped'"
            " AND reason = 'paused' AND scheduled_for >= ?"
            f" ORDER BY scheduled_for DESC LIMIT ?{self.for_update})",
            (job, self.at(since), 1 if latest_only else limit),
        )

    def ticks(self, *, job: str | None = None, limit: int = 100) -> list[Tick]:
        where, params = ("WHERE job = ?", [job]) if job else ("", [])
        return self._records(
            TICKS,
            f"FROM ticks {where} ORDER BY scheduled_for DESC, id DESC LIMIT ?",
            (*params, limit),
        )

    def last_tick_per_job(self) -> dict[str, Tick]:
        latest = "(SELECT max(id) FROM ticks WHERE status != 'pending' GROUP BY job)"
        return {tick.job: tick for tick in self._records(TICKS, f"FROM ticks WHERE id IN {latest}")}

    def tick_counts(self, since: datetime) -> dict[tuple[str, str], int]:
        rows = self._all(
            "SELECT job, status, count(*) FROM ticks WHERE scheduled_for >= ? GROUP BY 1, 2",
            (self.at(since),),
        )
        return {(row[0], row[1]): int(row[2]) for row in rows}

    # --- pauses -----------------------------------------------------------------------------------
    def pause(self, job: str, now: datetime, reason: str | None) -> bool:
        inserted = self._write_one(
            "INSERT INTO pauses (job, paused_at, reason) VALUES (?,?,?)"
            " ON CONFLICT (job) DO NOTHING",
            (job, self.at(now), reason),
        )
        return inserted == 1

    def resume(self, job: str) -> datetime | None:
        """Lift a pause; when it began, or None if the job was not paused."""
        with self._write():
            row = self._one("DELETE FROM pauses WHERE job = ? RETURNING paused_at", (job,))
        return None if row is None else self.when(row[0])

    def paused(self) -> dict[str, datetime]:
        rows = self._all("SELECT job, paused_at FROM pauses")
        return {row[0]: self.when(row[1]) or datetime.min for row in rows}

    # --- the daemons ------------------------------------------------------------------------------
    def take_daemon_lock(
        self, instance: str, owner: Owner, lease_until: datetime, now: datetime
    ) -> tuple[str, Owner] | None:
        """Take the daemon lease (on the lease clock); else return (instance, owner) of the live
        holder."""
        with self._write():
            self._serialize("daemon_lock")
            row = self._one(
                f"SELECT instance, host, pid, lease_until > {self.clock} FROM daemon_lock"
                " WHERE name = 'daemon'",
                (self.lease(now, now),),
            )
            if row is not None and row[0] != instance and row[3]:
                return row[0], Owner(row[1], row[2])
            self._exec(
                "INSERT INTO daemon_lock (name, instance, host, pid, lease_until)"
                f" VALUES ('daemon', ?,?,?, {self.clock})"
                " ON CONFLICT (name) DO UPDATE SET instance = excluded.instance,"
                " host = excluded.host, pid = excluded.pid, lease_until = excluded.lease_until",
                (instance, owner.host, owner.pid, self.lease(lease_until, now)),
            )
        return None

    def daemon_lock_holder(self) -> tuple[str, Owner, datetime] | None:
        row = self._one(
            "SELECT instance, host, pid, lease_until FROM daemon_lock WHERE name = 'daemon'"
        )
        if row is None:
            return None
        return row[0], Owner(row[1], row[2]), self.when(row[3]) or datetime.min

    def renew_daemon_lock(self, instance: str, lease_until: datetime) -> bool:
        changed = self._write_one(
            f"UPDATE daemon_lock SET lease_until = {self.clock}"
            " WHERE name = 'daemon' AND instance = ?",
            (self.lease(lease_until), instance),
        )
        return changed == 1

    def release_daemon_lock(self, instance: str) -> None:
        self._write_one(
            "DELETE FROM daemon_lock WHERE name = 'daemon' AND instance = ?", (instance,)
        )

    def register_daemon(self, instance: str, owner: Owner, mode: str, now: datetime) -> None:
        self._write_one(
            "INSERT INTO daemons (instance, host, pid, mode, started_at, heartbeat_at)"
            " VALUES (?,?,?,?,?,?)"
            " ON CONFLICT (instance) DO UPDATE SET host = excluded.host, pid = excluded.pid,"
            " mode = excluded.mode, started_at = excluded.started_at,"
            " heartbeat_at = excluded.heartbeat_at, last_pass_at = NULL, stopped_at = NULL",
            (instance, owner.host, owner.pid, mode, self.at(now), self.at(now)),
        )

    def daemon_heartbeat(self, instance: str, now: datetime, *, passed: bool = False) -> None:
        self._write_one(
            "UPDATE daemons SET heartbeat_at = ?, last_pass_at ="
            " CASE WHEN ? THEN ? ELSE last_pass_at END WHERE instance = ?",
            (self.at(now), passed, self.at(now), instance),
        )

    def daemon_stopped(self, instance: str, now: datetime) -> None:
        self._write_one(
            "UPDATE daemons SET stopped_at = ? WHERE instance = ?", (self.at(now), instance)
        )

    def daemons(self, limit: int = 20) -> list[DaemonInfo]:
        return self._daemons(" ORDER BY heartbeat_at DESC LIMIT ?", (limit,))

    def latest_daemon(self, mode: str) -> DaemonInfo | None:
        """The daemon record of ``mode`` ("daemon" or "once") not marked stopped, newest
        heartbeat first; None if there is none."""
        found = self._daemons(
            " WHERE mode = ? AND stopped_at IS NULL ORDER BY heartbeat_at DESC LIMIT 1", (mode,)
        )
        return found[0] if found else None

    def daemons_since(self, since: datetime, limit: int = 50) -> list[DaemonInfo]:
        """Daemon records that beat at or after ``since``, or are not marked stopped; newest
        heartbeat first."""
        return self._daemons(
            " WHERE heartbeat_at >= ? OR stopped_at IS NULL ORDER BY heartbeat_at DESC LIMIT ?",
            (self.at(since), limit),
        )

    def _daemons(self, tail: str, params: Sequence[object]) -> list[DaemonInfo]:
        return self._records(DAEMONS, f"FROM daemons{tail}", params)

    def release_ticks(self, tick_ids: Sequence[int]) -> int:
        """Put back to pending the ticks claimed (fired) but not yet started, as a daemon
        that claimed ahead does when it stops before starting them; how many were put back."""
        released = 0
        with self._write():
            for condition, params in self._any_of_chunks("id", list(tick_ids)):
                released += self._exec(
                    "UPDATE ticks SET status = 'pending', claimed_by = NULL"
                    f" WHERE status = 'fired' AND run_id IS NULL AND {condition}",
                    params,
                )
        return released
