"""The daemon: fires due ticks, runs them in a bounded pool, refreshes in-flight batches.

One daemon per SQLite database (an flock beside the file, which the kernel drops when the
process dies, plus a lease row naming the holder for other hosts and for ``health``). A shared
store (PostgreSQL) has no such lock: several daemons work it at once, and ticks, claims and
leases in the database keep them from doing anything twice. ``--once`` is one
pass without the lock — for crontab and systemd timers — and is safe beside a running daemon:
each tick is inserted once per (job, scope, scheduled time), so only one process fires it.

Stopping (SIGTERM, SIGINT): no new ticks are taken; running jobs get ``[daemon] grace`` to
finish, then they are cancelled and recorded so. Remote batches in flight are simply picked up by
the next daemon. SIGHUP, or a change of the config file, reloads the config; a config that no
longer validates is refused and the old one kept.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import random
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING

from batchctl.config import Config, JobConfig
from batchctl.engine import EngineSettings
from batchctl.errors import BatchctlError, ConfigError, ExitCode, UsageError
from batchctl.locations import create_private_file
from batchctl.owners import is_dead, this_process
from batchctl.providers import Providers
from batchctl.records import Owner, Run, RunStatus, Tick, TickStatus, utcnow
from batchctl.runs import Runs
from batchctl.schedule import Schedule, plan_ticks

if TYPE_CHECKING:
    from batchctl.store.base import Store

log = logging.getLogger("batchctl.daemon")
MAX_SLEEP_S = 60.0
RELOAD_SETTLE_S = 0.2
# How often housekeeping (heartbeat, lease renewal, recovery of abandoned runs) runs while runs
# are in flight; when none is, every lease/3, which is what keeps the lease.
BUSY_HOUSEKEEPING_S = 1.0
# How many pending ticks a worker that needs its next one claims in one write: the first it runs,
# the others wait in memory for the next free worker (a free slot of the pool is filled at once).
# A backlog of short runs then costs one claim write per CLAIM_AHEAD runs instead of one per run;
# a tick of higher priority that comes due waits at most for the ticks claimed ahead of it.
CLAIM_AHEAD = 8


class DaemonBusy(BatchctlError):
    """Another daemon holds this database."""

    exit_code = ExitCode.SKIPPED


class Daemon:
    def __init__(
        self,
        location: str,
        load_config: Callable[[], Config],
        *,
        once: bool = False,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        from batchctl.store import open_store

        self.location = location
        self.load_config = load_config
        self.config = load_config()
        self.once = once
        self.clock = clock
        self.store: Store = open_store(location)
        self.instance = uuid.uuid4().hex
        self.owner = this_process()
        self.stopping = threading.Event()
        self.reload_requested = threading.Event()
        self.wake = threading.Event()
        self.pool = ThreadPoolExecutor(
            max_workers=self.config.daemon.max_workers, thread_name_prefix="batchctl-run"
        )
        self.running: dict[Future[None], threading.Event] = {}
        # What each worker (named by its cancel event) runs, and since when: workers claim their
        # next tick themselves, so this is shared with them, under ``claiming``.
        self.busy: dict[threading.Event, tuple[tuple[str, str | None], datetime]] = {}
        # Ticks claimed ahead (with when they were claimed), not yet started; and ticks fired
        # whose close waits for the next claim's write. Both under ``claiming``.
        self.ready: deque[tuple[Tick, datetime]] = deque()
        self.unclosed: list[Tick] = []
        self.claiming = threading.Lock()
        # When each scheduled (job, scope) has its next tick: scheduling is skipped until then.
        self.next_due: dict[tuple[str, str | None], datetime] = {}
        self.next_housekeeping = 0.0  # time.monotonic()
        self.local = threading.local()
        self.lock_file: IO[str] | None = None
        self.config_mtime = self._config_mtime()
        self.next_refresh = 0.0
        # Opened on first use, by name, with the config of the moment (it may be reloaded).
        self.providers = Providers(lambda name: self.config.provider(name))
        self.api_down_since: float | None = None

    # --- life cycle -----------------------------------------------------------------------------
    def run(self) -> int:
        """Run until stopped (or one pass with ``once``); the exit code."""
        # A shared database (PostgreSQL) is worked by every daemon pointed at it, on any host:
        # no single-daemon lock (ticks are inserted and claimed once, runs and submissions carry
        # leases on the database's clock).
        if not self.once and not self.store.shared:
            self._take_lock()
        self.store.register_daemon(
            self.instance, self.owner, "once" if self.once else "daemon", self.clock()
        )
        log.info(
            "started (%s, pid %s, %s workers)",
            self.owner.host,
            self.owner.pid,
            self.config.daemon.max_workers,
        )
        try:
            if self.once:
                self.pass_once()
                self._drain()
                self._wait_for_runs(None)
                self.pass_once(schedule=False)  # collect what finished during the pass
            while not self.once and not self.stopping.is_set():
                self.pass_once(housekeeping=time.monotonic() >= self.next_housekeeping)
                self._sleep()
        finally:
            self._shutdown()
        return 0

    def stop(self) -> None:
        self.stopping.set()
        self.wake.set()

    def request_reload(self) -> None:
        self.reload_requested.set()
        self.wake.set()

    def _take_lock(self) -> None:
        path = Path(self.location).expanduser().resolve()
        lock_path = path.with_name(path.name + ".daemon.lock")
        create_private_file(lock_path)
        handle = open(lock_path, "a+", encoding="utf-8")  # noqa: SIM115
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            raise self._busy() from None
        self.lock_file = handle
        lease = timedelta(seconds=self.config.daemon.lease)
        while True:
            now = self.clock()
            holder = self.store.take_daemon_lock(self.instance, self.owner, now + lease, now)
            if holder is None:
                return
            _, owner = holder
            if owner.host == self.owner.host:
                # We hold the flock, so that daemon is gone: take over at once.
                self.store.release_daemon_lock(holder[0])
                continue
            log.warning(
                "waiting for the lease of the daemon on %s (pid %s) to expire",
                owner.host,
                owner.pid,
            )
            if self.stopping.wait(self.config.daemon.lease / 3):
                raise self._busy()

    def _busy(self) -> DaemonBusy:
        holder = self.store.daemon_lock_holder()
        who = (
            "another daemon"
            if holder is None
            else (f"the daemon on host {holder[1].host} (pid {holder[1].pid})")
        )
        return DaemonBusy(
            f"{who} already runs for database {self.store.shown}",
            hint="one daemon per database; use `batchctl daemon --once` beside it if needed",
        )

    def _shutdown(self) -> None:
        if self.running:
            grace = self.config.daemon.grace
            log.info(
                "stopping: waiting up to %.0fs for %d running job(s)", grace, len(self.running)
            )
            if not self._wait_for_runs(grace):
                for cancel in list(self.running.values()):
                    cancel.set()
                self._wait_for_runs(None)
        self.pool.shutdown(wait=True)
        with self.claiming:
            self._close_fired(self.store)
            if self.ready:  # claimed ahead, never started: pending again, for the next daemon
                self.store.release_ticks([tick.id for tick, _ in self.ready])
                self.ready.clear()
        now = self.clock()
        self.store.daemon_stopped(self.instance, now)
        if not self.once and not self.store.shared:
            self.store.release_daemon_lock(self.instance)
        self.providers.close()
        if self.lock_file is not None:
            self.lock_file.close()
        log.info("stopped")

    def _wait_for_runs(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.running:
            self._reap()
            if not self.running:
                break
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True

    # --- one pass -------------------------------------------------------------------------------
    def pass_once(self, *, schedule: bool = True, housekeeping: bool = True) -> None:
        """Fire what is due, refresh what is in flight, and with ``housekeeping`` beat the
        heartbeat and recover abandoned runs. The running daemon's passes do housekeeping only
        when it is due (every lease/3, every second while runs are in flight), and schedule only
        the jobs whose next tick has come; a worker that finishes a run claims the next due tick
        itself, so a backlog of ticks does not go through here tick by tick."""
        now = self.clock()
        self._maybe_reload()
        if housekeeping:
            self._heartbeat(now)
            self._recover_abandoned(now)
        if schedule and not self.stopping.is_set():
            for job in self.config.jobs.values():
                if job.schedule and job.enabled:
                    for scope in job.run_scopes():
                        due = self.next_due.get((job.name, scope))
                        if due is None or due <= now:
                            self._schedule(job, scope, now)
            self._dispatch()
        self._refresh_batches()
        self._reap()
        if housekeeping:
            self.store.daemon_heartbeat(self.instance, self.clock(), passed=True)
            self._write_metrics()
            interval = self.config.daemon.lease / 3
            if self.running:
                interval = min(interval, BUSY_HOUSEKEEPING_S)
            self.next_housekeeping = time.monotonic() + interval

    def _schedule(self, job: JobConfig, scope: str | None, now: datetime) -> None:
        assert job.schedule is not None
        cursor = self.store.cursor(job.name, scope)
        schedule = Schedule.of(job.schedule, job.timezone)
        if cursor is None:
            # A job seen for the first time starts now: no backfill of its past.
            self.store.set_cursor(job.name, scope, now)
            self._plan_next(schedule, job.name, scope, now, now)
            return
        plan = plan_ticks(
            schedule,
            cursor,
            now,
            catchup=job.catchup,
            max_catchup=job.max_catchup,
            starting_deadline=job.starting_deadline,
        )
        self._plan_next(schedule, job.name, scope, plan.cursor or cursor, now)
        if plan.cursor is None:
            return
        paused = job.name in self.store.paused()
        closed = [(t, "missed", f"catchup={job.catchup}") for t in plan.missed]
        pending = plan.fire
        if paused:
            closed += [(t, "skipped", "paused") for t in pending]
            pending = []
        self.store.record_ticks(
            job.name,
            scope,
            pending=pending,
            closed=closed,
            cursor=plan.cursor,
            priority=job.priority,
            now=now,
        )
        if plan.missed:
            label = f"{job.name}[{scope}]" if scope else job.name
            log.warning(
                "%s: %d tick(s) missed (catchup=%s), the oldest recorded %s",
                label,
                len(plan.missed) + plan.more_missed,
                job.catchup,
                plan.missed[0].isoformat(),
            )

    def _plan_next(
        self, schedule: Schedule, job: str, scope: str | None, cursor: datetime, now: datetime
    ) -> None:
        """Note when (job, scope) has its next tick after ``cursor``: no pass plans it before.
        Only the daemon moves cursors forward, so a cursor moved by another daemon only makes
        a pass plan it early, for nothing."""
        self.next_due[(job, scope)] = schedule.next_after(max(cursor, now - timedelta(days=1)))

    def _dispatch(self) -> int:
        """Hand pending ticks to free workers; how many were handed out."""
        self._reap()
        free = self.config.daemon.max_workers - len(self.running)
        if free <= 0:
            return 0
        with self.claiming:
            now = self.clock()
            handed: list[tuple[Tick, datetime]] = []
            while self.ready and len(handed) < free:
                handed.append(self.ready.popleft())
            if len(handed) < free:
                claimed = self._claim(self.store, free - len(handed), now, busy=self._held())
                handed.extend((tick, now) for tick in claimed)
            for tick, since in handed:
                cancel = threading.Event()
                self.busy[cancel] = ((tick.job, tick.scope), since)
                self.running[self.pool.submit(self._work, tick, cancel)] = cancel
        return len(handed)

    def _held(
        self, worker: threading.Event | None = None
    ) -> list[tuple[tuple[str, str | None], datetime]]:
        """The (job, scope) of every tick handed out or claimed ahead, and since when, but for
        the one ``worker`` has just fired (under ``claiming``)."""
        held = [work for other, work in self.busy.items() if other is not worker]
        held.extend(((tick.job, tick.scope), since) for tick, since in self.ready)
        return held

    def _claim(
        self,
        store: Store,
        limit: int,
        now: datetime,
        *,
        busy: Iterable[tuple[tuple[str, str | None], datetime]],
        closing: Iterable[Tick] = (),
    ) -> list[Tick]:
        # Ticks of a job that must not overlap itself go one at a time per scope, in order.
        serial = {j.name for j in self.config.jobs.values() if j.concurrency != "allow"}
        return store.claim_ticks(
            limit,
            now,
            busy=dict(busy),
            serial_jobs=serial,
            claimer=self.instance,
            closing=list(closing),
        )

    def _drain(self) -> None:
        """``--once``: keep handing out due ticks as workers free up until none is left."""
        while not self.stopping.is_set():
            if not self._dispatch() and not self.running:
                return
            time.sleep(0.02)

    def _reap(self) -> None:
        for future in [f for f in self.running if f.done()]:
            cancel = self.running.pop(future)
            with self.claiming:
                self.busy.pop(cancel, None)
            error = future.exception()
            if error is not None:
                log.error("a run failed inside the daemon: %s", error, exc_info=error)

    # --- firing a tick (on a worker thread, with its own store connection) ---------------------
    def _thread_store(self) -> Store:
        """This worker thread's own connection (SQLite connections are per thread), kept for
        the thread's life: opening one per run costs more than a no-op run."""
        store: Store | None = getattr(self.local, "store", None)
        if store is None:
            from batchctl.store import open_store

            store = self.local.store = open_store(self.location)
        return store

    def _work(self, tick: Tick, cancel: threading.Event) -> None:
        """Fire ``tick``, then each next due tick this worker can claim, until none is left.
        One ``Runs`` serves them all while the config stays the same (one per tick cost about
        a tenth of a no-op run)."""
        try:
            store = self._thread_store()
            runs = self._runs(store, cancel)
            claimed: Tick | None = tick
            while claimed is not None:
                if runs.config is not self.config:  # reloaded: the next tick sees the new one
                    runs = self._runs(store, cancel)
                claimed = self._claim_next(store, cancel, self._fire_with(runs, claimed))
        finally:
            self.wake.set()  # a free worker: the loop may hand out a tick it could not claim

    def _claim_next(self, store: Store, cancel: threading.Event, done: Tick) -> Tick | None:
        """The next tick for this worker, which has just fired ``done`` (so its job and scope
        are no longer busy): one claimed ahead, else up to ``CLAIM_AHEAD`` due ticks claimed in
        the write that closes the fired ticks not yet closed. None when stopping or when none
        can be had; the fired ticks are then closed at once."""
        with self.claiming:
            self.unclosed.append(done)
            if self.stopping.is_set() or cancel.is_set():
                self.busy.pop(cancel, None)
                self._close_fired(store)
                return None
            if self.ready:
                tick, since = self.ready.popleft()
                self.busy[cancel] = ((tick.job, tick.scope), since)
                return tick
            now = self.clock()
            closing, self.unclosed = self.unclosed, []
            claimed = self._claim(store, CLAIM_AHEAD, now, busy=self._held(cancel), closing=closing)
            if not claimed:
                self.busy.pop(cancel, None)
                return None
            first, *ahead = claimed
            self.busy[cancel] = ((first.job, first.scope), now)
            self.ready.extend((tick, now) for tick in ahead)
            if ahead and len(self.busy) < self.config.daemon.max_workers:
                self.wake.set()  # a free slot in the pool: the loop hands it a tick claimed ahead
            return first

    def _close_fired(self, store: Store) -> None:
        """Close the fired ticks whose close was left to the next claim (under ``claiming``)."""
        closing, self.unclosed = self.unclosed, []
        if closing:
            store.claim_ticks(0, self.clock(), closing=closing)

    def _fire_with(self, runs: Runs, tick: Tick) -> Tick:
        """Fire ``tick`` through ``runs`` (a worker's store, config and cancel event); the tick
        as it is to be closed: its status, run and reason (a reason of None keeps the one it
        has)."""
        job = runs.config.jobs.get(tick.job)
        label = f"{tick.job}[{tick.scope}]" if tick.scope else tick.job
        if job is None or not job.enabled or not job.schedule:
            return tick._replace(status=TickStatus.SKIPPED, reason="job removed or disabled")
        if job.jitter and runs.cancel_event.wait(random.uniform(0, job.jitter)):
            return tick._replace(status=TickStatus.SKIPPED, reason="daemon stopping")
        late = (self.clock() - tick.scheduled_for).total_seconds()
        if job.starting_deadline is not None and late > job.starting_deadline:
            return tick._replace(status=TickStatus.MISSED, reason=f"started {late:.0f}s late")
        log.info("firing %s for %s", label, tick.scheduled_for.isoformat())
        run = runs.start(job, tick.scope, trigger="schedule", scheduled_for=tick.scheduled_for)
        log.info("%s run %d %s", label, run.id, run.status)
        if run.status is RunStatus.SKIPPED:
            return tick._replace(status=TickStatus.SKIPPED, run_id=run.id, reason=run.reason)
        return tick._replace(status=TickStatus.FIRED, run_id=run.id, reason=None)

    def _runs(self, store: Store, cancel: threading.Event) -> Runs:
        """The lifecycle of runs for one worker: its store connection, stopped by ``cancel``."""
        return Runs(
            store,
            self.config,
            clock=self.clock,
            cancel=cancel,
            settings=EngineSettings(lease=self.config.daemon.lease),
            provider_factory=self.providers.get,
        )

    # --- batches in flight ----------------------------------------------------------------------
    def _refresh_batches(self) -> None:
        if time.monotonic() < self.next_refresh:
            return
        interval = self.config.daemon.poll_interval or self.config.openai.poll_interval
        self.next_refresh = time.monotonic() + interval
        in_flight = self.store.submissions_in_flight()
        if not in_flight:
            return
        from batchctl.batches.refresh import refresh

        errors: list[str] = []

        def unreachable(name: str, exc: BaseException) -> None:
            message = exc.message if isinstance(exc, BatchctlError) else str(exc)
            log.error("cannot refresh the %s submissions: %s", name, message)

        refresh(
            self.location,
            self.config,
            in_flight,
            providers=self.providers.get,
            send=True,  # the daemon drives submissions: a killed submit's parts are sent here
            on_error=lambda run_id, exc: errors.append(f"run {run_id}: {exc}"),
            on_provider_error=unreachable,
        )
        self._report_api(errors, len(in_flight), interval)

    def _report_api(self, errors: list[str], total: int, interval: float) -> None:
        """One log line per interval while the API fails, not one per request."""
        if not errors:
            if self.api_down_since is not None:
                down = time.monotonic() - self.api_down_since
                log.info("the API answers again (it failed for %.0fs)", down)
                self.api_down_since = None
            return
        if self.api_down_since is None:
            self.api_down_since = time.monotonic()
        log.error(
            "could not refresh %d of %d submission(s) (retrying every %.0fs): %s",
            len(errors),
            total,
            interval,
            errors[0],
        )

    # --- recovery, heartbeat, reload --------------------------------------------------------------
    def _recover_abandoned(self, now: datetime) -> None:
        dead = [  # daemons on this host that were killed: their claims will not be honoured
            other.instance
            for other in self.store.daemons()
            if other.stopped_at is None
            and other.instance != self.instance
            and is_dead(Owner(other.host, other.pid))
        ]
        stale = now - timedelta(seconds=2 * self.config.daemon.lease)
        refired = self.store.refire_orphaned_ticks(stale, dead)
        if refired:
            log.warning(
                "%d tick(s) claimed by a daemon that died before running them: firing them again",
                refired,
            )
        for lost in self._runs(self.store, threading.Event()).abandon_lost(self.owner, now):
            run = lost.run
            log.warning("run %d of %s abandoned: %s", run.id, run.job, lost.reason)
            if lost.stopped:
                log.warning("run %d of %s: %s", run.id, run.job, lost.stopped)
            if lost.retry is not None:
                self._retry_abandoned(run, lost.retry)

    def _retry_abandoned(self, run: Run, job: JobConfig) -> None:
        cancel = threading.Event()

        def retry() -> None:
            self._runs(self._thread_store(), cancel).start(
                job, run.scope, trigger="retry", retry_of=run.id
            )

        self.running[self.pool.submit(retry)] = cancel

    def _heartbeat(self, now: datetime) -> None:
        self.store.daemon_heartbeat(self.instance, now)
        if self.once or self.store.shared:
            return
        until = now + timedelta(seconds=self.config.daemon.lease)
        if not self.store.renew_daemon_lock(self.instance, until):
            log.error("lost the daemon lease to another daemon; stopping")
            self.stop()

    def _config_mtime(self) -> float | None:
        path = self.config.path
        try:
            return None if path is None else path.stat().st_mtime
        except OSError:
            return None

    def _maybe_reload(self) -> None:
        mtime = self._config_mtime()
        if not self.reload_requested.is_set() and mtime == self.config_mtime:
            return
        # An editor may be writing the file right now: read it only once it has stood still,
        # and apply it only if it did not change while it was read (else: the next pass).
        time.sleep(RELOAD_SETTLE_S)
        if self._config_mtime() != mtime:
            return
        try:
            config = self.load_config()
        except ConfigError as exc:
            if self._config_mtime() != mtime:
                return
            self.reload_requested.clear()
            self.config_mtime = mtime
            problems = "; ".join(exc.problems) or exc.message
            log.error("config reload refused, keeping the previous config: %s", problems)
            return
        if self._config_mtime() != mtime:
            return
        self.reload_requested.clear()
        self.config_mtime = mtime
        if config.daemon.max_workers != self.config.daemon.max_workers:
            log.warning("[daemon] max_workers takes effect at the next start")
            config = replace(
                config, daemon=replace(config.daemon, max_workers=self.config.daemon.max_workers)
            )
        self.config = config
        self.next_due.clear()  # schedules may have changed
        log.info("config reloaded from %s (%d jobs)", config.path, len(config.jobs))

    def _write_metrics(self) -> None:
        target = self.config.daemon.metrics_textfile
        if target is None:
            return
        from batchctl.metrics import write_textfile

        with contextlib.suppress(OSError, UsageError):  # a heartbeat shrugs off a textfile
            write_textfile(self.store, self.config, target, now=self.clock())

    def _sleep(self) -> None:
        now = self.clock()
        wake_at = min([now + timedelta(seconds=MAX_SLEEP_S), *self.next_due.values()])
        seconds = max(0.0, (wake_at - now).total_seconds())
        # The heartbeat keeps the lease; recovery finds abandoned runs.
        seconds = min(seconds, max(0.0, self.next_housekeeping - time.monotonic()))
        if self.store.submissions_in_flight() or self.store.pending_tick_count():
            interval = self.config.daemon.poll_interval or self.config.openai.poll_interval
            seconds = min(seconds, interval)
        self.wake.wait(seconds)
        self.wake.clear()
