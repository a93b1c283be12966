"""Refreshing many in-flight submissions at once: the list pages once, then a bounded pool that
drives only the submissions with something to do."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

from batchctl.batches.listing import listed
from batchctl.batches.submission import TERMINAL, Batches, unchanged
from batchctl.config import Config
from batchctl.errors import BatchctlError

if TYPE_CHECKING:
    from batchctl.providers.base import Provider, RemoteBatch
    from batchctl.records import Part
    from batchctl.store.base import Store

MAX_WORKERS = 4


def refresh(
    location: str,
    config: Config,
    run_ids: Sequence[int],
    *,
    providers: Callable[[str], Provider],
    send: bool,
    max_workers: int = MAX_WORKERS,
    on_error: Callable[[int, BaseException], None] | None = None,
    on_provider_error: Callable[[str, BaseException], None] | None = None,
) -> int:
    """Advance each submission (refresh, download, settle); how many are now settled. With
    ``send`` (the daemon) unsent parts are uploaded and created too; without (``status``) they
    are left for a command that sends.

    The parts in flight of all the submissions are looked up in the list pages first (one
    request per 100 batches, ``listing``); a submission whose parts the pages show as recorded
    is left alone (no lease taken, nothing written), the others are driven with what the pages
    said, a part they did not show fetched on its own. Each worker thread opens one store
    connection for the whole call (SQLite connections are not shared across threads); the
    provider's HTTP client is shared. An error refreshing one submission is reported to
    ``on_error`` and does not stop the others; a provider that cannot be opened (no key) is
    reported to ``on_provider_error`` and its submissions are left alone.
    """
    from batchctl.store import open_store

    if not run_ids:
        return 0
    reader = open_store(location)
    try:
        parts = reader.parts_for_runs(run_ids)
        by_provider: dict[str, list[int]] = {}
        for run_id, name in reader.providers_of(run_ids).items():
            by_provider.setdefault(name, []).append(run_id)
    except BaseException:
        reader.close()
        raise
    busy: list[tuple[Provider, int]] = []
    known: dict[str, RemoteBatch] = {}
    for name, ids in by_provider.items():
        try:
            provider = providers(name)
            found = listed(provider, [p for r in ids for p in parts.get(r, [])])
        except BatchctlError as exc:
            if on_provider_error is None:
                reader.close()
                raise
            on_provider_error(name, exc)
            continue
        known.update(found)  # batch ids are the providers' own: none is shared by two
        busy.extend((provider, r) for r in sorted(ids) if not _idle(parts.get(r, []), found))

    local = threading.local()
    local.store = reader  # the calling thread's connection serves as one worker's
    opened: list[Store] = [reader]

    def advance(job: tuple[Provider, int]) -> bool:
        provider, run_id = job
        store: Store | None = getattr(local, "store", None)
        if store is None:
            store = local.store = open_store(location)
            opened.append(store)
        try:
            batches = Batches(store, config, provider=provider)
            return batches.advance(run_id, send=send, known=known)
        except (BatchctlError, OSError) as exc:
            if on_error is not None:
                on_error(run_id, exc)
            return False

    try:
        if len(busy) <= 1:  # no pool for one submission (or none): its thread would only wait
            return sum(map(advance, busy))
        with ThreadPoolExecutor(max_workers=min(max_workers, len(busy))) as pool:
            return sum(pool.map(advance, busy))
    finally:
        for store in opened:
            store.close()


def _idle(parts: Sequence[Part], known: Mapping[str, RemoteBatch]) -> bool:
    """Whether driving the submission now would do nothing: a part is in flight and the pages
    show it as recorded, and every other part is too, or has ended and been downloaded."""
    in_flight = False
    for part in parts:
        if part.status in TERMINAL:
            if part.downloaded_at is None:
                return False
            continue
        batch = known.get(part.batch_id or "")
        if batch is None or not unchanged(part, batch):
            return False
        in_flight = True
    return in_flight
