"""The store the core depends on: ``Store``, the base class of every back end.

The queries are written once, in the mixins of ``runs``, ``batches``, ``schedule`` and
``maintenance``; ``Store`` gathers them and declares the few members each back end provides
itself. A part of the core that needs one part of the store only asks for that mixin (e.g.
``RunTables``): take the narrowest that serves.
"""

from __future__ import annotations

from batchctl.store.batches import BatchTables
from batchctl.store.maintenance import MaintenanceTables
from batchctl.store.runs import RunTables
from batchctl.store.schedule import ScheduleTables


class Store(RunTables, BatchTables, ScheduleTables, MaintenanceTables):
    """Everything a store does: for the code that opens one and hands out its parts."""

    # Where the store is, as given to ``open_store`` (a URL may hold a password): for opening it
    # again, in another thread or process. Never print it; messages use ``shown``.
    location: str
    shown: str  # the location without a password
    # True when several daemons (on several hosts) may share the database (PostgreSQL): no
    # single-daemon lock, every daemon fires and refreshes.
    shared: bool

    def close(self) -> None:
        self.conn.close()

    def compact(self, *, vacuum: bool = False) -> None:
        """Reclaim the space of deleted rows (``vacuum``: all of it, rewriting the database)."""
        raise NotImplementedError
