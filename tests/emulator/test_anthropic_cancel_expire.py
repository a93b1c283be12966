"""Canceled, expired, deleted and archived Message Batches."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import anthropic
import pytest
from anthropic_helpers import message_request, result_types, run_to_end

from batchctl.emulator import Emulator


def test_cancel_goes_canceling_then_ended_with_canceled_lines(
    make_emulator: Callable[..., Emulator],
) -> None:
    emu = make_emulator(processing_rate=10.0, cancel_delay=30.0)
    with anthropic.Anthropic(base_url=emu.url, api_key="k") as sdk:
        batch = sdk.messages.batches.create(requests=[message_request(f"r{i}") for i in range(100)])
        emu.advance(3.2)
        canceling = sdk.messages.batches.cancel(batch.id)
        emu.advance(10)
        still = sdk.messages.batches.retrieve(batch.id)
        emu.advance(20)
        ended = sdk.messages.batches.retrieve(batch.id)
        kinds = Counter(result_types(sdk, batch.id).values())

    assert canceling.processing_status == "canceling"
    assert canceling.cancel_initiated_at is not None
    assert canceling.request_counts.processing == 100
    assert still.processing_status == "canceling"
    assert ended.processing_status == "ended" and ended.results_url is not None
    counts = ended.request_counts
    assert 0 < counts.succeeded < 100
    assert counts.canceled == 100 - counts.succeeded
    assert counts.processing == counts.errored == counts.expired == 0
    assert kinds == {"succeeded": counts.succeeded, "canceled": counts.canceled}


def test_canceling_twice_returns_the_batch_unchanged(
    anthropic_client: anthropic.Anthropic,
) -> None:
    batch = anthropic_client.messages.batches.create(requests=[message_request("a")])
    first = anthropic_client.messages.batches.cancel(batch.id)
    second = anthropic_client.messages.batches.cancel(batch.id)
    assert second.processing_status == "canceling"
    assert second.cancel_initiated_at == first.cancel_initiated_at


def test_canceling_an_ended_batch_is_refused(
    emulator: Emulator, anthropic_client: anthropic.Anthropic
) -> None:
    batch = anthropic_client.messages.batches.create(requests=[message_request("a")])
    run_to_end(emulator, anthropic_client, batch.id)
    with pytest.raises(anthropic.BadRequestError, match="has already ended"):
        anthropic_client.messages.batches.cancel(batch.id)


def test_batch_not_done_within_the_window_expires_with_expired_lines(
    make_emulator: Callable[..., Emulator],
) -> None:
    emu = make_emulator(expire_after_fraction=0.5, completion_window=3600)
    with anthropic.Anthropic(base_url=emu.url, api_key="k") as sdk:
        batch = sdk.messages.batches.create(requests=[message_request(f"r{i}") for i in range(10)])
        emu.advance(3599)
        held = sdk.messages.batches.retrieve(batch.id)
        emu.advance(1)
        ended = sdk.messages.batches.retrieve(batch.id)
        kinds = Counter(result_types(sdk, batch.id).values())

    assert held.processing_status == "in_progress"
    assert held.request_counts.processing == 10
    assert ended.processing_status == "ended"
    assert ended.request_counts.succeeded == 5 and ended.request_counts.expired == 5
    assert kinds == {"succeeded": 5, "expired": 5}


def test_nothing_runs_while_held_with_expire_after_fraction_zero(
    make_emulator: Callable[..., Emulator],
) -> None:
    emu = make_emulator(expire_after_fraction=0.0)
    with anthropic.Anthropic(base_url=emu.url, api_key="k") as sdk:
        batch = sdk.messages.batches.create(requests=[message_request("a")])
        emu.advance(86_399)
        held = sdk.messages.batches.retrieve(batch.id)
        emu.advance(1)
        ended = sdk.messages.batches.retrieve(batch.id)
    assert held.processing_status == "in_progress"
    assert ended.request_counts.expired == 1


def test_delete_is_refused_until_the_batch_has_ended(
    emulator: Emulator, anthropic_client: anthropic.Anthropic
) -> None:
    batch = anthropic_client.messages.batches.create(requests=[message_request("a")])
    with pytest.raises(anthropic.BadRequestError, match="cancel it"):
        anthropic_client.messages.batches.delete(batch.id)
    assert batch.id in emulator.message_batches


def test_deleted_batch_is_gone(emulator: Emulator, anthropic_client: anthropic.Anthropic) -> None:
    batch = anthropic_client.messages.batches.create(requests=[message_request("a")])
    run_to_end(emulator, anthropic_client, batch.id)

    deleted = anthropic_client.messages.batches.delete(batch.id)

    assert deleted.to_dict() == {"id": batch.id, "type": "message_batch_deleted"}
    with pytest.raises(anthropic.NotFoundError):
        anthropic_client.messages.batches.retrieve(batch.id)
    assert anthropic_client.messages.batches.list().data == []


def test_results_are_archived_29_days_after_creation(
    emulator: Emulator, anthropic_client: anthropic.Anthropic
) -> None:
    batch = anthropic_client.messages.batches.create(requests=[message_request("a")])
    run_to_end(emulator, anthropic_client, batch.id)
    emulator.advance(29 * 86_400)

    archived = anthropic_client.messages.batches.retrieve(batch.id)

    assert archived.archived_at is not None
    assert archived.processing_status == "ended"
    with pytest.raises(anthropic.NotFoundError, match="no longer available"):
        anthropic_client.messages.batches.results(batch.id)
