"""Refreshing many in-flight submissions at once: a bounded pool, one store connection each."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from batchctl.batches.submission import Batches
from batchctl.config import Config
from batchctl.errors import BatchctlError

if TYPE_CHECKING:
    from batchctl.providers.base import Provider

MAX_WORKERS = 4


def refresh(
    location: str,
    config: Config,
    run_ids: Sequence[int],
    *,
    provider: Provider,
    max_workers: int = MAX_WORKERS,
    on_error: Callable[[int, BaseException], None] | None = None,
) -> int:
    """Advance each submission (refresh, download, settle); how many are now settled.

    Each worker opens its own store connection (SQLite connections are not shared across
    threads); the provider's HTTP client is shared. An error refreshing one submission is
    reported to ``on_error`` and does not stop the others.
    """
    from batchctl.store import open_store

    def advance(run_id: int) -> bool:
        store = open_store(location)
        try:
            return Batches(store, config, provider=provider).advance(run_id)
        except (BatchctlError, OSError) as exc:
            if on_error is not None:
                on_error(run_id, exc)
            return False
        finally:
            store.close()

    if not run_ids:
        return 0
    with ThreadPoolExecutor(max_workers=min(max_workers, len(run_ids))) as pool:
        return sum(pool.map(advance, run_ids))
