"""Several daemons on one PostgreSQL database: ticks per second and claims per second.

What the daemons of issue #6 race on, measured through the store API (``batchctl.store``) from
K separate **processes** (K = 1, 3, 6), each with its own connection, as K daemons on K hosts:

* ``postgres: record ticks, K daemons``: every process records the same M ticks of one job, one
  tick per ``record_ticks`` call (what each daemon does at each due moment: ``INSERT ... ON
  CONFLICT DO NOTHING RETURNING id`` plus the cursor update, one transaction), all processes
  released together. Figure: DISTINCT ticks recorded per second (M over the time until the last
  process is done), so with K = 3 each tick costs three racing inserts and two of them lose.
  Checked: the table holds exactly M ticks and the inserts that got a row back sum to M.
* ``postgres: claim ticks, K daemons``: N pending ticks recorded beforehand (``record_ticks``),
  then every process loops ``claim_ticks(limit=L)`` (``FOR UPDATE SKIP LOCKED``) and
  ``close_tick`` on each tick it got, until a claim comes back empty. Figure: ticks claimed and
  closed per second (N over the time until the last process is done). Checked: every tick was
  claimed exactly once (no tick handed to two processes) and none is left pending.

Baseline of every row: the same measure with K = 1 on a SQLite file (a SQLite database has one
daemon), so the ratio reads "a tick costs N times the single-daemon SQLite cost"; the rates are
in the ``runs/s`` unit of the table (ticks or claims per second). Informational: no target.

The server is ``$BATCHCTL_TEST_PG`` (an admin URL, as for the tests); a database is created for
each measure and dropped afterwards. Without it (or without psycopg, or unreachable), the
PostgreSQL rows say "skipped: no PostgreSQL server (set BATCHCTL_TEST_PG)" and the SQLite
figures are still measured. Medians of 3 rounds (1 with ``--quick``).
"""

from __future__ import annotations

import multiprocessing
import os
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from bench.common import Row

PG_ENV = "BATCHCTL_TEST_PG"
SKIPPED = f"skipped: no PostgreSQL server (set {PG_ENV})"
DAEMON_COUNTS = (1, 3, 6)
CLAIM_LIMIT = 5  # ticks per claim_ticks call (a daemon asks for its free workers, often 1-10)
JOB = "bench"
EPOCH = datetime(2030, 1, 1, tzinfo=UTC)

# (ticks recorded, ticks claimed, rounds) per run of the suite
FULL = (600, 3000, 3)
QUICK = (300, 1200, 1)

Measure = Callable[[str, int, int], float]


def measures(quick: bool) -> list[Row]:
    record_ticks, claim_ticks, rounds = QUICK if quick else FULL
    admin, why_not = _server()
    rows: list[Row] = []
    for label, measure, size, what in (
        ("record ticks", _record_rate, record_ticks, "ticks, each recorded by every process"),
        (
            "claim ticks",
            _claim_rate,
            claim_ticks,
            f"pending ticks, claim_ticks(limit={CLAIM_LIMIT}) + close_tick",
        ),
    ):
        baseline = _median([_on_sqlite(measure, size) for _ in range(rounds)])
        for daemons in DAEMON_COUNTS:
            name = f"postgres: {label}, {daemons} daemon{'s' if daemons > 1 else ''} (per s)"
            row = Row(
                name,
                None,
                "runs/s",
                baseline=baseline,
                baseline_label="SQLite, 1 daemon",
                samples=rounds,
            )
            if admin is None:
                row.note = f"{SKIPPED}: {why_not}"
            else:
                try:
                    row.value = _median(
                        [_on_postgres(admin, measure, size, daemons) for _ in range(rounds)]
                    )
                    row.note = f"{size:,} {what}; {daemons} process(es)"
                except Exception as exc:
                    row.error = f"{type(exc).__name__}: {exc}"
            rows.append(row)
    return rows


# --- where ---------------------------------------------------------------------------------------


def _server() -> tuple[str | None, str]:
    url = os.environ.get(PG_ENV)
    if not url:
        return None, f"${PG_ENV} is not set"
    try:
        import psycopg
    except ImportError:
        return None, "psycopg is not installed (pip install 'batchctl[postgres]')"
    try:
        psycopg.connect(url, autocommit=True, connect_timeout=5).close()
    except psycopg.Error as exc:
        return None, f"cannot connect: {str(exc).strip().splitlines()[0]}"
    return url, ""


def _admin_sql(admin: str, statement: str) -> None:
    import psycopg

    with psycopg.connect(admin, autocommit=True, connect_timeout=5) as conn:
        conn.execute(statement)


def _on_postgres(admin: str, measure: Measure, size: int, daemons: int) -> float:
    name = f"batchctl_bench_{uuid.uuid4().hex[:12]}"
    parts = urlsplit(admin)
    url = urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))
    _admin_sql(admin, f'CREATE DATABASE "{name}"')
    try:
        return measure(url, size, daemons)
    finally:
        _admin_sql(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _on_sqlite(measure: Measure, size: int) -> float:
    with tempfile.TemporaryDirectory(prefix="batchctl-bench-pg-") as root:
        return measure(str(Path(root) / "batchctl.db"), size, 1)


def _median(figures: list[float]) -> float:
    return statistics.median(figures)


# --- the measures --------------------------------------------------------------------------------


def _moments(count: int) -> list[datetime]:
    return [EPOCH + timedelta(seconds=i) for i in range(count)]


def _record_rate(location: str, size: int, daemons: int) -> float:
    """Distinct ticks recorded per second when ``daemons`` processes record the same ticks."""
    from batchctl.store import open_store

    open_store(location).close()  # create and migrate before the clock starts
    results, elapsed = _race(location, daemons, _record_worker, size)
    inserted = sum(int(r) for r in results)
    store = open_store(location)
    try:
        recorded = len(store.ticks(job=JOB, limit=size + 10))
    finally:
        store.close()
    if recorded != size or inserted != size:
        raise RuntimeError(f"{recorded} ticks in the table, {inserted} inserts won; want {size}")
    return size / elapsed


def _claim_rate(location: str, size: int, daemons: int) -> float:
    """Ticks claimed (and closed) per second by ``daemons`` processes draining ``size`` ticks."""
    from batchctl.store import open_store

    store = open_store(location)
    try:
        moments = _moments(size)
        store.record_ticks(
            JOB, None, pending=moments, closed=[], cursor=moments[-1], priority=0, now=EPOCH
        )
    finally:
        store.close()
    results, elapsed = _race(location, daemons, _claim_worker, size)
    claimed = [tick_id for ids in results for tick_id in ids]
    store = open_store(location)
    try:
        left = store.pending_tick_count()
    finally:
        store.close()
    if len(claimed) != size or len(set(claimed)) != size or left:
        twice = len(claimed) - len(set(claimed))
        raise RuntimeError(f"{len(claimed)} claims ({twice} twice), {left} left; want {size}")
    return size / elapsed


# --- the processes -------------------------------------------------------------------------------


def _race(
    location: str, daemons: int, worker: Callable[..., Any], size: int
) -> tuple[list[Any], float]:
    """Start ``daemons`` processes running ``worker``; each opens its store, says it is ready,
    waits for the start, works, and sends its result back. (results, seconds from the start
    until the last one finished)."""
    context = multiprocessing.get_context("fork")
    start = context.Event()
    processes = []
    pipes: list[Connection] = []
    for _ in range(daemons):
        ours, theirs = context.Pipe()
        process = context.Process(target=worker, args=(location, size, start, theirs))
        process.start()
        processes.append(process)
        pipes.append(ours)
    try:
        for pipe in pipes:
            if not pipe.poll(60) or pipe.recv() != "ready":
                raise RuntimeError("a worker process did not start")
        began = time.perf_counter()
        start.set()
        results = []
        for pipe in pipes:
            if not pipe.poll(120):
                raise RuntimeError("a worker process did not finish")
            kind, value = pipe.recv()
            if kind == "error":
                raise RuntimeError(f"a worker process failed: {value}")
            results.append(value)
        elapsed = time.perf_counter() - began
    finally:
        for process in processes:
            process.join(timeout=10)
            if process.is_alive():
                process.kill()
    return results, elapsed


def _record_worker(location: str, size: int, start: Any, pipe: Connection) -> None:
    from batchctl.store import open_store

    try:
        store = open_store(location)
        pipe.send("ready")
        start.wait()
        won = 0
        for moment in _moments(size):
            won += len(
                store.record_ticks(
                    JOB, None, pending=[moment], closed=[], cursor=moment, priority=0, now=moment
                )
            )
        store.close()
        pipe.send(("ok", won))
    except Exception as exc:
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))


def _claim_worker(location: str, size: int, start: Any, pipe: Connection) -> None:
    from batchctl.store import open_store

    try:
        store = open_store(location)
        pipe.send("ready")
        start.wait()
        got: list[int] = []
        now = EPOCH + timedelta(days=1)
        while True:
            ticks = store.claim_ticks(CLAIM_LIMIT, now)
            if not ticks:
                break
            for tick in ticks:
                store.close_tick(tick.id, "fired")
                got.append(tick.id)
        store.close()
        pipe.send(("ok", got))
    except Exception as exc:
        pipe.send(("error", f"{type(exc).__name__}: {exc}"))
