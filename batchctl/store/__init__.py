"""The store: the only code that speaks SQL.

``Store`` is the interface the core uses; ``SQLiteStore`` is the embedded default. A second back end
(PostgreSQL) implements the same protocol and is chosen by ``open_store`` from the location's form.
"""

from __future__ import annotations

from batchctl.store.base import LockHolder, Store
from batchctl.store.sqlite import SQLiteStore


def open_store(location: str) -> Store:
    """Open (creating and migrating when needed) the store at ``location``: a path or a URL."""
    if location.startswith(("postgres://", "postgresql://")):
        from batchctl.errors import UsageError

        raise UsageError(
            "PostgreSQL stores are not available in this version",
            hint="use a SQLite file path for --db",
        )
    return SQLiteStore.open(location)


__all__ = ["LockHolder", "SQLiteStore", "Store", "open_store"]
