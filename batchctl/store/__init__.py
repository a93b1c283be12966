"""The store: the only code that speaks SQL.

``Store`` (in ``base``) is what the core uses, the base class of every back end. The queries are
written once, in mixins that a part of the core may ask for instead (``runs.RunTables``: runs,
attempts, logs and locks; ``batches.BatchTables``; ``schedule.ScheduleTables``: ticks, pauses and
daemons; ``maintenance.MaintenanceTables``), against the verbs of ``dialect``; ``SQLiteStore`` is
the embedded default, ``PostgresStore`` (``postgresql://`` or ``postgres://`` URLs, psycopg 3 from
the ``postgres`` extra) serves a database shared by several hosts. ``open_store`` chooses one from
the location's form. ``Store`` is imported for type checking only, to keep start-up lean.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batchctl.store.base import Store


def open_store(location: str) -> Store:
    """Open (creating and migrating when needed) the store at ``location``: a path or a URL."""
    if location.startswith(("postgres://", "postgresql://")):
        from batchctl.store.postgres import PostgresStore

        return PostgresStore.open(location)
    if "://" in location:  # e.g. sqlite:///x.db: not a path, which would make a "sqlite:" dir
        from batchctl.errors import StoreError

        scheme = location.split("://", 1)[0]
        raise StoreError(
            f"cannot open database {location}: {scheme}:// URLs are not taken",
            hint="give a SQLite database as its file's path, or a postgresql:// URL",
        )
    from batchctl.store.sqlite import SQLiteStore

    return SQLiteStore.open(location)


__all__ = ["Store", "open_store"]
