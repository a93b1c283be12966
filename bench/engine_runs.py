"""The engine: runs per second of a no-op ``python`` job, in-process and through the CLI.

* ``engine: no-op python runs``: 1,000 runs of a processor that returns at once, through
  ``Engine.run(job)`` against a real SQLite file (a fresh one per repetition, after a short
  warm-up). Baseline: 1,000 bare ``sqlite3`` write transactions (BEGIN IMMEDIATE, one INSERT,
  COMMIT) on a file configured as batchctl configures its own (WAL, synchronous=NORMAL): the
  floor of recording anything durably, once per run.
* ``engine: ms per no-op run``: the same runs as milliseconds per run, beside the store calls
  alone that the engine makes for one run (create, lock, start attempt, finish attempt, finish
  run, unlock, read back), so that ratio - 1 is the engine's own overhead (thread, queue, polls).
* ``cli: batchctl run noop``: one run through the installed console script, beside
  ``batchctl --version`` (the CLI's bare start-up).
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from bench.common import (
    CommandFailed,
    Row,
    Target,
    Workspace,
    check_command,
    console_script,
    failed_row,
    median,
    time_commands,
    workspace,
)

RUNS = 1_000
WARM_UP_RUNS = 20
RUNS_PER_SECOND_TARGET = Target("min", 650)


def measures(quick: bool) -> list[Row]:
    repeats = 3 if quick else 7
    rows: list[Row] = []
    with workspace("engine") as ws:
        rows.extend(_in_process(ws, repeats))
        rows.append(_cli_run(ws, 7 if quick else 21))
    return rows


def _in_process(ws: Workspace, repeats: int) -> list[Row]:
    engine_s: list[float] = []
    bare_s: list[float] = []
    store_s: list[float] = []
    problems: list[str] = []
    for index in range(repeats):
        # Interleaved, each on a fresh file: the measure and its baselines see the same machine.
        seconds, problem = _engine_batch(ws, ws.root / f"engine-{index}.db")
        engine_s.append(seconds)
        if problem:
            problems.append(problem)
        bare_s.append(_bare_sqlite_batch(ws.root / f"bare-{index}.db"))
        store_s.append(_store_batch(ws, ws.root / f"store-{index}.db"))
    engine, bare, store = median(engine_s), median(bare_s), median(store_s)
    note = problems[0] if problems else ""
    return [
        Row(
            f"engine: no-op python runs ({RUNS:,} runs)",
            RUNS / engine,
            "runs/s",
            baseline=RUNS / bare,
            baseline_label="bare sqlite3 insert+commit",
            target=RUNS_PER_SECOND_TARGET,
            samples=repeats,
            note=note,
        ),
        Row(
            "engine: ms per no-op run",
            engine / RUNS * 1000,
            "ms",
            baseline=store / RUNS * 1000,
            baseline_label="its store calls alone",
            samples=repeats,
        ),
    ]


def _engine_batch(ws: Workspace, db: Path) -> tuple[float, str]:
    """Seconds for RUNS engine runs of the no-op job, and a problem if any run did not complete."""
    from batchctl.config import load_config
    from batchctl.engine import Engine
    from batchctl.records import RunFilter, RunStatus
    from batchctl.store import open_store

    config = load_config(ws.config)
    job = config.job("noop")
    store = open_store(str(db))
    try:
        engine = Engine(store, config)
        for _ in range(WARM_UP_RUNS):
            engine.run(job)
        run = engine.run
        start = time.perf_counter()
        for _ in range(RUNS):
            last = run(job)
        seconds = time.perf_counter() - start
        done = store.count_runs(RunFilter(status=(RunStatus.COMPLETED.value,)))
    finally:
        store.close()
    expected = RUNS + WARM_UP_RUNS
    problem = "" if done == expected else f"only {done} of {expected} runs completed ({last.error})"
    return seconds, problem


def _bare_sqlite_batch(db: Path) -> float:
    """Seconds for RUNS bare write transactions of one INSERT each, batchctl's pragmas."""
    conn = sqlite3.connect(db, isolation_level=None)
    try:
        conn.execute("PRAGMA busy_timeout = 30000")
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(
            "CREATE TABLE runs (id INTEGER PRIMARY KEY, job TEXT, status TEXT, created_at TEXT)"
        )
        execute: Callable[..., sqlite3.Cursor] = conn.execute
        start = time.perf_counter()
        for _ in range(RUNS):
            execute("BEGIN IMMEDIATE")
            execute(
                "INSERT INTO runs (job, status, created_at) VALUES (?, ?, ?)",
                ("noop", "completed", "2025-01-01T00:00:00.000000+00:00"),
            )
            execute("COMMIT")
        return time.perf_counter() - start
    finally:
        conn.close()


def _store_batch(ws: Workspace, db: Path) -> float:
    """Seconds for the store calls of RUNS runs, made directly, without the engine."""
    from batchctl.owners import this_process
    from batchctl.records import RunOutcome, RunStatus, utcnow
    from batchctl.store import open_store

    store = open_store(str(db))
    owner = this_process()
    outcome = RunOutcome(RunStatus.COMPLETED, items_processed=1)
    try:
        start = time.perf_counter()
        for _ in range(RUNS):
            now = utcnow()
            run_id = store.create_run(
                job="noop",
                scope=None,
                trigger="manual",
                status=RunStatus.QUEUED,
                max_attempts=1,
                now=now,
            )
            lease = now + timedelta(seconds=30)
            store.try_lock("noop", run_id, owner, lease, now)
            store.start_attempt(run_id, 1, owner, lease, now)
            store.finish_attempt(run_id, 1, outcome, now)
            store.finish_run(run_id, outcome, now)
            store.release_lock("noop", run_id)
            store.get_run(run_id)
        return time.perf_counter() - start
    finally:
        store.close()


def _cli_run(ws: Workspace, repeats: int) -> Row:
    measure = "cli: batchctl run noop"
    script = console_script()
    if not script.exists():
        return failed_row(measure, "ms", f"no console script at {script}")
    env = ws.env()
    commands = {"run": [str(script), "run", "noop"], "version": [str(script), "--version"]}
    try:
        for argv in commands.values():
            check_command(argv, env)
    except CommandFailed as exc:
        return failed_row(measure, "ms", str(exc))
    times = time_commands(commands, env, repeats)
    return Row(
        measure,
        median(times["run"]) * 1000,
        "ms",
        baseline=median(times["version"]) * 1000,
        baseline_label="batchctl --version",
        samples=repeats,
    )
