"""Refreshing many in-flight submissions at once: a bounded pool, one store connection each."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from batchctl.batches.submission import Batches
from batchctl.config import Config
from batchctl.errors import BatchctlError

if TYPE_CHECKING:
    from batchctl.providers.base import Provider
    from batchctl.store.base import Store

MAX_WORKERS = 4


def refresh(
    location: str,
    config: Config,
    run_ids: Sequence[int],
    *,
    provider: Provider,
    send: bool,
    max_workers: int = MAX_WORKERS,
    on_error: Callable[[int, BaseException], None] | None = None,
) -> int:
    """Advance each submission (refresh, download, settle); how many are now settled. With
    ``send`` (the daemon) unsent parts are uploaded and created too; without (``status``) they
    are left for a command that sends.

    Each worker thread opens one store connection for the whole call (SQLite connections are
    not shared across threads); the provider's HTTP client is shared. An error refreshing one
    submission is reported to ``on_error`` and does not stop the others.
    """
    from batchctl.store import open_store

    local = threading.local()
    opened: list[Store] = []

    def advance(run_id: int) -> bool:
        store: Store | None = getattr(local, "store", None)
        if store is None:
            store = local.store = open_store(location)
            opened.append(store)
        try:
            return Batches(store, config, provider=provider).advance(run_id, send=send)
        except (BatchctlError, OSError) as exc:
            if on_error is not None:
                on_error(run_id, exc)
            return False

    if not run_ids:
        return 0
    try:
        with ThreadPoolExecutor(max_workers=min(max_workers, len(run_ids))) as pool:
            return sum(pool.map(advance, run_ids))
    finally:
        for store in opened:
            store.close()
