"""The one way a run's status change is written: a row in ``transitions`` (SQLite store)."""

from __future__ import annotations

import sqlite3

from batchctl.records import RunStatus


def record_transition(
    conn: sqlite3.Connection,
    run_id: int,
    previous: RunStatus | str | None,
    status: RunStatus | str,
    stamp: str | None,
    reason: str | None,
) -> None:
    conn.execute(
        "INSERT INTO transitions (run_id, from_status, to_status, at, reason) VALUES (?,?,?,?,?)",
        (
            run_id,
            None if previous is None else RunStatus(previous).value,
            RunStatus(status).value,
            stamp,
            reason,
        ),
    )
