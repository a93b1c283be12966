"""A batchctl database with a realistic history of N runs, built in about a second.

A few hundred real runs go through batchctl's own engine into a scratch database (completed,
failed and partial runs, scoped and not, with their attempts, transitions and log rows). Those
runs are then copied, in one transaction, into a fresh database that batchctl's store created
and migrated, until it holds N runs: ids ascend with time, one run a minute, each copy keeping
its template's durations, attempts, transitions and logs.
"""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import Workspace

TEMPLATE_RUNS = 300
# Of every 20 template runs: 17 no-op (completed), 1 failing, 2 partial (one per scope).
_PATTERN = ["noop"] * 17 + ["fail", "partial"]

# The time columns of each table, shifted when a template row is copied.
_TIME_COLUMNS = {
    "runs": ("created_at", "started_at", "finished_at", "lease_until", "scheduled_for"),
    "attempts": ("started_at", "finished_at"),
    "transitions": ("at",),
    "run_logs": ("at",),
}


def _template(ws: Workspace, path: Path, count: int) -> None:
    """``count`` real runs through the engine into the database at ``path``."""
    from batchctl.config import load_config
    from batchctl.engine import Engine
    from batchctl.store import open_store

    config = load_config(ws.config)
    store = open_store(str(path))
    try:
        engine = Engine(store, config)
        made = 0
        while made < count:
            for name in _PATTERN:
                job = config.job(name)
                for scope in job.run_scopes():
                    trigger = "schedule" if made % 3 == 0 else "manual"
                    engine.run(job, scope, trigger=trigger)
                    made += 1
    finally:
        store.close()


def _rows(conn: sqlite3.Connection, table: str) -> tuple[list[str], list[dict[str, Any]]]:
    cursor = conn.execute(f"SELECT * FROM {table}")
    columns = [d[0] for d in cursor.description]
    return columns, [dict(zip(columns, row, strict=True)) for row in cursor]


def _shift(row: dict[str, Any], table: str, delta: timedelta) -> None:
    for column in _TIME_COLUMNS[table]:
        if row.get(column):
            moment = datetime.fromisoformat(row[column]) + delta
            row[column] = moment.isoformat(timespec="microseconds")


def build_history(ws: Workspace, path: Path, runs: int = 10_000) -> dict[str, int]:
    """Make ``path`` a batchctl database holding ``runs`` runs; return its row counts."""
    from batchctl.store import open_store

    scratch = ws.root / "template.db"
    _template(ws, scratch, min(TEMPLATE_RUNS, runs))
    open_store(str(path)).close()  # the schema, exactly as batchctl creates and migrates it

    source = sqlite3.connect(scratch)
    tables = {name: _rows(source, name) for name in _TIME_COLUMNS}
    source.close()
    run_columns, templates = tables["runs"]
    children: dict[str, dict[int, list[dict[str, Any]]]] = {}
    for table in ("attempts", "transitions", "run_logs"):
        by_run: dict[int, list[dict[str, Any]]] = {}
        for row in tables[table][1]:
            by_run.setdefault(row["run_id"], []).append(row)
        children[table] = by_run

    start = datetime.now(UTC) - timedelta(minutes=runs + 5)
    out: dict[str, list[tuple[Any, ...]]] = {name: [] for name in _TIME_COLUMNS}
    for index in range(runs):
        template = templates[index % len(templates)]
        new_id = index + 1
        delta = start + timedelta(minutes=index) - datetime.fromisoformat(template["created_at"])
        run = dict(template, id=new_id, lease_until=None)
        _shift(run, "runs", delta)
        out["runs"].append(tuple(run[c] for c in run_columns))
        for table, by_run in children.items():
            columns = tables[table][0]
            for child in by_run.get(template["id"], []):
                row = dict(child, run_id=new_id)
                if "id" in row:
                    row["id"] = None  # a new INTEGER PRIMARY KEY
                _shift(row, table, delta)
                out[table].append(tuple(row[c] for c in columns))

    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        for table, rows in out.items():
            columns = tables[table][0]
            marks = ",".join("?" * len(columns))
            conn.executemany(f"INSERT INTO {table} ({','.join(columns)}) VALUES ({marks})", rows)
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        counts = {
            table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])
            for table in _TIME_COLUMNS
        }
    finally:
        conn.close()
    scratch.unlink(missing_ok=True)
    return counts
