"""Helpers of the store contract suite: the PostgreSQL test server and the back ends."""

from __future__ import annotations

import os
import sqlite3
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from batchctl.store import open_store
from batchctl.store.base import Store

PG_ENV = "BATCHCTL_TEST_PG"
PG_REQUIRED_ENV = "BATCHCTL_TEST_PG_REQUIRED"
BACKENDS = ["sqlite", "postgres"]
# Emptied before each test (DELETE: much faster than TRUNCATE on a handful of small tables).
TABLES = (
    "requests",
    "parts",
    "submissions",
    "run_logs",
    "transitions",
    "attempts",
    "runs",
    "locks",
    "ticks",
    "schedule_cursors",
    "pauses",
    "daemons",
    "daemon_lock",
)


def _unavailable(reason: str) -> None:
    message = f"PostgreSQL store tests skipped: {reason}"
    if os.environ.get(PG_REQUIRED_ENV) == "1":
        pytest.fail(f"{message} (but ${PG_REQUIRED_ENV}=1: they must run)", pytrace=False)
    pytest.skip(message)


@dataclass
class PgServer:
    """The test server: creates and drops databases for the tests."""

    admin_url: str
    created: list[str] = field(default_factory=list)

    def url_for(self, name: str) -> str:
        parts = urlsplit(self.admin_url)
        return urlunsplit((parts.scheme, parts.netloc, "/" + name, parts.query, parts.fragment))

    def _admin(self) -> Any:
        import psycopg

        return psycopg.connect(self.admin_url, autocommit=True, connect_timeout=5)

    def create(self) -> str:
        name = f"batchctl_test_{uuid.uuid4().hex[:12]}"
        with self._admin() as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        self.created.append(name)
        return self.url_for(name)

    def drop(self, url: str) -> None:
        name = urlsplit(url).path.lstrip("/")
        with self._admin() as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if name in self.created:
            self.created.remove(name)


def require_pg(pg_server: PgServer | str) -> PgServer:
    if isinstance(pg_server, str):
        _unavailable(pg_server)
    assert isinstance(pg_server, PgServer)
    return pg_server


@dataclass
class Backend:
    """A store back end under test, and how to reach its database directly for setup."""

    name: str
    location: str
    opened: list[Store] = field(default_factory=list)

    def open(self) -> Store:
        store = open_store(self.location)
        self.opened.append(store)
        return store

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run raw SQL (``?`` placeholders) against the database; setup and checks only."""
        if self.name == "sqlite":
            with sqlite3.connect(self.location) as conn:
                return conn.execute(query, params).fetchall()
        import psycopg

        with psycopg.connect(self.location, autocommit=True) as conn:
            cursor = conn.execute(query.replace("?", "%s"), params)
            return cursor.fetchall() if cursor.description else []

    def close(self) -> None:
        for store in self.opened:
            store.close()
