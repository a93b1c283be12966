"""Helpers shared by the PostgreSQL store's mixins: lease spans and the transitions row."""

from __future__ import annotations

from contextlib import AbstractContextManager
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from batchctl.records import RunStatus, utcnow

if TYPE_CHECKING:
    import psycopg

    Conn = psycopg.Connection[Any]


def lease_span(until: datetime, now: datetime | None = None) -> timedelta:
    """How long a lease the caller asked for: ``until`` less the caller's ``now`` (or, when the
    method has no ``now``, this host's clock). Both ends come from the same host's clock, so the
    span is right whatever that clock's offset; the store then writes ``now() + span``, a time
    on the database's clock, which every host compares against the same ``now()``."""
    return until - (utcnow() if now is None else now)


def record_transition(
    conn: Conn,
    run_id: int,
    previous: RunStatus | str | None,
    status: RunStatus | str,
    at: datetime,
    reason: str | None,
) -> None:
    conn.execute(
        "INSERT INTO transitions (run_id, from_status, to_status, at, reason)"
        " VALUES (%s, %s, %s, %s, %s)",
        (
            run_id,
            None if previous is None else RunStatus(previous).value,
            RunStatus(status).value,
            at,
            reason,
        ),
    )


def serialize(conn: Conn, name: str) -> None:
    """Take a transaction-scoped advisory lock on ``name``: writers of one key (a lock, the
    daemon lease) take turns, as SQLite's ``BEGIN IMMEDIATE`` makes every writer do. Unlike a
    session lock it is dropped at commit, so it works behind PgBouncer's transaction mode."""
    conn.execute("SELECT pg_advisory_xact_lock(hashtextextended(%s, 0))", (f"batchctl:{name}",))


class Tables:
    """What every mixin needs from ``PostgresStore``: its connection and write transactions."""

    conn: Conn

    def _write(self) -> AbstractContextManager[Conn]:
        raise NotImplementedError


__all__ = ["Tables", "lease_span", "record_transition", "serialize"]
