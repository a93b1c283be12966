"""The store: the only code that speaks SQL.

``Store`` (in ``base``) is the interface the core uses; ``SQLiteStore`` is the embedded default. A
second back end implements the same protocol and is chosen by ``open_store`` from the location's
form. The protocol is imported for type checking only, to keep start-up lean.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batchctl.store.base import Store


def open_store(location: str) -> Store:
    """Open (creating and migrating when needed) the store at ``location``: a path or a URL."""
    if location.startswith(("postgres://", "postgresql://")):
        from batchctl.errors import UsageError

        raise UsageError(
            "PostgreSQL stores are not available in this version",
            hint="use a SQLite file path for --db",
        )
    from batchctl.store.sqlite import SQLiteStore

    return SQLiteStore.open(location)


__all__ = ["Store", "open_store"]
