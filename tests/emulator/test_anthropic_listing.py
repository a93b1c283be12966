"""Listing Message Batches: newest first, with before_id/after_id cursors."""

from __future__ import annotations

import anthropic
import pytest
from anthropic_helpers import message_request

from batchctl.emulator import Emulator


def _create(client: anthropic.Anthropic, count: int) -> list[str]:
    """Create ``count`` batches; their ids, oldest first."""
    return [
        client.messages.batches.create(requests=[message_request(f"r{i}")]).id for i in range(count)
    ]


def test_list_is_newest_first_with_first_and_last_ids(
    anthropic_client: anthropic.Anthropic,
) -> None:
    ids = _create(anthropic_client, 3)
    page = anthropic_client.messages.batches.list()
    assert [b.id for b in page.data] == ids[::-1]
    assert page.first_id == ids[2] and page.last_id == ids[0]
    assert page.has_more is False


def test_auto_paging_walks_every_batch_with_after_id(
    emulator: Emulator, anthropic_client: anthropic.Anthropic
) -> None:
    ids = _create(anthropic_client, 7)
    seen = [b.id for b in anthropic_client.messages.batches.list(limit=3)]
    assert seen == ids[::-1]
    queries = [r.query for r in emulator.requests if r.method == "GET"]
    assert len(queries) == 3 and "after_id=" in queries[-1]


def test_after_id_gives_the_older_batches(anthropic_client: anthropic.Anthropic) -> None:
    ids = _create(anthropic_client, 5)
    page = anthropic_client.messages.batches.list(after_id=ids[3], limit=2)
    assert [b.id for b in page.data] == [ids[2], ids[1]]
    assert page.has_more is True


def test_before_id_gives_the_newer_batches_nearest_the_cursor(
    anthropic_client: anthropic.Anthropic,
) -> None:
    ids = _create(anthropic_client, 5)
    page = anthropic_client.messages.batches.list(before_id=ids[1], limit=2)
    assert [b.id for b in page.data] == [ids[3], ids[2]]
    assert page.has_more is True
    rest = anthropic_client.messages.batches.list(before_id=page.first_id, limit=2)
    assert [b.id for b in rest.data] == [ids[4]] and rest.has_more is False


def test_limit_outside_1_to_1000_is_refused(anthropic_client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.BadRequestError, match="less than or equal to 1000"):
        anthropic_client.messages.batches.list(limit=1001)
    with pytest.raises(anthropic.BadRequestError, match="greater than or equal to 1"):
        anthropic_client.messages.batches.list(limit=0)


def test_unknown_cursor_gives_an_empty_page(anthropic_client: anthropic.Anthropic) -> None:
    _create(anthropic_client, 2)
    page = anthropic_client.messages.batches.list(after_id="msgbatch_01unknown")
    assert page.data == [] and page.has_more is False
