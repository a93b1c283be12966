"""Refreshing many parts from the list endpoint: one request per 100 batches, not one per part.

A GET of one batch costs a request; a page of ``GET /v1/batches?limit=100`` costs about what ten
GETs do (measured against the emulator: one request, a hundred objects to parse). So listing pays
from about ten parts in flight, and then only while the pages hold our batches: a page budget of
one page per ten parts stops a listing that wades through another tool's batches. The pages are
read newest first down to the oldest part's ``created_at`` (the API's own time, as recorded when
the part was created; this host's clock is never compared with it). A part the pages did not
show (the listing stopped early, failed, or its batch belongs elsewhere) is fetched on its own.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from batchctl.providers.base import TERMINAL, ProviderError

if TYPE_CHECKING:
    from batchctl.providers.base import Provider, RemoteBatch
    from batchctl.records import Part

#: From this many parts in flight, a refresh lists pages instead of one GET per part; below it
#: (a ``wait`` on a submission of a few parts) the GETs are cheaper than a page of 100.
LIST_FROM_PARTS = 10
#: At most one page per this many parts in flight (a page costs about as much as ten GETs).
PARTS_PER_PAGE = 10


def to_refresh(parts: Iterable[Part]) -> dict[str, Part]:
    """The parts a refresh asks the API about, by batch id: sent and not ended."""
    return {p.batch_id: p for p in parts if p.batch_id is not None and p.status not in TERMINAL}


def listed(provider: Provider, parts: Iterable[Part]) -> dict[str, RemoteBatch]:
    """What the list pages say of the parts in flight, by batch id (those the pages showed).
    Empty when too few are in flight to be worth a page. A part missing from it (the listing
    stopped early or failed) is fetched on its own, which says what is wrong for it."""
    wanted = to_refresh(parts)
    if len(wanted) < LIST_FROM_PARTS:
        return {}
    known = [p.remote_created_at for p in wanted.values() if p.remote_created_at is not None]
    since = min(known) if len(known) == len(wanted) else None  # unbounded: the budget stops it
    budget = -(-len(wanted) // PARTS_PER_PAGE)
    found: dict[str, RemoteBatch] = {}
    try:
        for read, page in enumerate(provider.batch_pages(since=since), 1):
            found.update((b.id, b) for b in page if b.id in wanted)
            if len(found) == len(wanted) or read >= budget:
                break
    except ProviderError:
        pass  # what the pages read so far stands; the rest is fetched part by part
    return found
