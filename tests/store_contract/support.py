"""Helpers of the store contract suite: the back ends under test and the tables they empty."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from batchctl.store import open_store
from batchctl.store.base import Store
from tests import databases

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
        return databases.sql(self.location, query, *params)

    def close(self) -> None:
        for store in self.opened:
            store.close()
