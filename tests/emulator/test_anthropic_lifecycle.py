"""A Message Batch's life through the real anthropic SDK: create, retrieve, end, results."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import anthropic
import pytest
from anthropic_helpers import MODEL, message_request, result_types, results, run_to_end

from batchctl.emulator import Emulator


def test_create_returns_an_in_progress_batch_with_every_request_processing(
    anthropic_client: anthropic.Anthropic,
) -> None:
    batch = anthropic_client.messages.batches.create(
        requests=[message_request(f"r{i}") for i in range(3)]
    )

    assert batch.id.startswith("msgbatch_")
    assert batch.type == "message_batch"
    assert batch.processing_status == "in_progress"
    assert batch.request_counts.to_dict() == {
        "processing": 3,
        "succeeded": 0,
        "errored": 0,
        "canceled": 0,
        "expired": 0,
    }
    assert batch.expires_at - batch.created_at == timedelta(hours=24)
    assert batch.ended_at is None and batch.results_url is None
    assert batch.cancel_initiated_at is None and batch.archived_at is None
    assert "metadata" not in batch.to_dict()


def test_retrieve_returns_the_created_batch(anthropic_client: anthropic.Anthropic) -> None:
    created = anthropic_client.messages.batches.create(requests=[message_request("a")])
    assert anthropic_client.messages.batches.retrieve(created.id).id == created.id


def test_unknown_batch_is_not_found(anthropic_client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as caught:
        anthropic_client.messages.batches.retrieve("msgbatch_01unknown")
    assert caught.value.body == {
        "type": "error",
        "error": {
            "type": "not_found_error",
            "message": "Message Batch msgbatch_01unknown not found.",
        },
        "request_id": caught.value.request_id,
    }


def test_counts_stay_processing_until_the_whole_batch_ends(
    make_emulator: Callable[..., Emulator],
) -> None:
    emu = make_emulator(processing_rate=10.0)
    with anthropic.Anthropic(base_url=emu.url, api_key="k") as sdk:
        batch = sdk.messages.batches.create(requests=[message_request(f"r{i}") for i in range(100)])
        emu.advance(5)  # about half of the requests have run
        midway = sdk.messages.batches.retrieve(batch.id)
        ended = run_to_end(emu, sdk, batch.id)

    assert emu.message_batches[batch.id]["processing_status"] == "ended"
    assert midway.processing_status == "in_progress"
    assert midway.request_counts.processing == 100 and midway.request_counts.succeeded == 0
    assert ended.request_counts.processing == 0 and ended.request_counts.succeeded == 100
    assert ended.ended_at is not None and ended.ended_at >= ended.created_at


def test_ended_batch_has_an_absolute_results_url_on_the_emulator(
    emulator: Emulator, anthropic_client: anthropic.Anthropic
) -> None:
    batch = anthropic_client.messages.batches.create(requests=[message_request("a")])
    ended = run_to_end(emulator, anthropic_client, batch.id)
    assert ended.results_url == f"{emulator.url}/v1/messages/batches/{batch.id}/results"


def test_results_through_the_sdk_give_one_line_per_request_with_its_message(
    emulator: Emulator, anthropic_client: anthropic.Anthropic
) -> None:
    batch = anthropic_client.messages.batches.create(
        requests=[message_request("a", "Hello there"), message_request("b", "Bonjour")]
    )
    run_to_end(emulator, anthropic_client, batch.id)

    lines = {line.custom_id: line.result for line in results(anthropic_client, batch.id)}
    assert set(lines) == {"a", "b"}
    result = lines["a"]
    assert result.type == "succeeded"
    message = result.message
    assert message.id.startswith("msg_") and message.role == "assistant"
    assert message.model == MODEL
    assert [block.to_dict() for block in message.content] == [
        {"type": "text", "text": "Echo: Hello there"}
    ]
    assert message.stop_reason == "end_turn"
    assert message.usage.input_tokens > 0 and message.usage.output_tokens > 0
    assert message.usage.cache_creation_input_tokens == 0
    assert message.usage.cache_read_input_tokens == 0
    assert message.usage.service_tier == "batch"


def test_results_come_in_a_shuffled_order(
    emulator: Emulator, anthropic_client: anthropic.Anthropic
) -> None:
    ids = [f"r{i:02}" for i in range(30)]
    batch = anthropic_client.messages.batches.create(requests=[message_request(i) for i in ids])
    run_to_end(emulator, anthropic_client, batch.id)
    order = [line.custom_id for line in results(anthropic_client, batch.id)]
    assert sorted(order) == ids
    assert order != ids


def test_results_before_the_end_are_refused(
    anthropic_client: anthropic.Anthropic,
) -> None:
    batch = anthropic_client.messages.batches.create(requests=[message_request("a")])
    with pytest.raises(anthropic.AnthropicError, match="No `results_url`"):
        anthropic_client.messages.batches.results(batch.id)


def test_invalid_params_give_errored_lines_not_a_refused_batch(
    emulator: Emulator, anthropic_client: anthropic.Anthropic
) -> None:
    batch = anthropic_client.messages.batches.create(
        requests=[
            message_request("ok"),
            message_request("no-model", model=None),
            message_request("no-max", max_tokens=None),
            message_request("no-messages", messages=None),
            message_request("zero-max", max_tokens=0),
            message_request("stream", stream=True),
        ]
    )
    ended = run_to_end(emulator, anthropic_client, batch.id)

    assert ended.request_counts.succeeded == 1 and ended.request_counts.errored == 5
    errors = {
        line.custom_id: line.result.error.to_dict()
        for line in results(anthropic_client, batch.id)
        if line.result.type == "errored"
    }
    messages = {cid: (e["error"]["type"], e["error"]["message"]) for cid, e in errors.items()}
    assert messages == {
        "no-model": ("invalid_request_error", "model: Field required"),
        "no-max": ("invalid_request_error", "max_tokens: Field required"),
        "no-messages": ("invalid_request_error", "messages: Field required"),
        "zero-max": (
            "invalid_request_error",
            "max_tokens: Input should be greater than or equal to 1",
        ),
        "stream": (
            "invalid_request_error",
            "stream: Message Batches do not support streaming requests",
        ),
    }
    assert all(e["type"] == "error" and e["request_id"].startswith("req_") for e in errors.values())


def test_unknown_model_gives_a_not_found_error_line(
    emulator: Emulator, anthropic_client: anthropic.Anthropic
) -> None:
    batch = anthropic_client.messages.batches.create(
        requests=[message_request("a", model="nonexistent-claude")]
    )
    run_to_end(emulator, anthropic_client, batch.id)
    [line] = results(anthropic_client, batch.id)
    assert line.result.type == "errored"
    assert line.result.error.error.type == "not_found_error"


def test_mixed_models_are_allowed_in_one_batch(
    emulator: Emulator, anthropic_client: anthropic.Anthropic
) -> None:
    batch = anthropic_client.messages.batches.create(
        requests=[message_request("a"), message_request("b", model="claude-sonnet-4-5")]
    )
    run_to_end(emulator, anthropic_client, batch.id)
    assert result_types(anthropic_client, batch.id) == {"a": "succeeded", "b": "succeeded"}
