"""The envelope of a Message Batch is checked at create, with the API's 400 and 413 replies."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import pytest
from anthropic_helpers import message_request

from batchctl.emulator import Emulator


def _refusal(client: anthropic.Anthropic, requests: list[Any]) -> Any:
    """The error body of a refused create."""
    with pytest.raises(anthropic.BadRequestError) as caught:
        client.messages.batches.create(requests=requests)
    return caught.value.body


def test_custom_id_over_64_characters_is_refused_with_the_api_message(
    emulator: Emulator, anthropic_client: anthropic.Anthropic
) -> None:
    body = _refusal(anthropic_client, [message_request("a"), message_request("x" * 65)])
    assert body["type"] == "error"
    assert body["error"] == {
        "type": "invalid_request_error",
        "message": "requests.1.custom_id: String should have at most 64 characters",
    }
    assert emulator.message_batches == {}


@pytest.mark.parametrize("custom_id", ["has/slash", "has.dot", "has space", "é"])
def test_custom_id_outside_the_pattern_is_refused(
    anthropic_client: anthropic.Anthropic, custom_id: str
) -> None:
    body = _refusal(anthropic_client, [message_request(custom_id)])
    assert body["error"]["message"] == (
        "requests.0.custom_id: String should match pattern '^[a-zA-Z0-9_-]{1,64}$'"
    )


def test_custom_id_of_64_allowed_characters_is_accepted(
    anthropic_client: anthropic.Anthropic,
) -> None:
    custom_id = "Az09_-" * 10 + "abcd"
    batch = anthropic_client.messages.batches.create(requests=[message_request(custom_id)])
    assert batch.request_counts.processing == 1


def test_empty_custom_id_is_refused(anthropic_client: anthropic.Anthropic) -> None:
    body = _refusal(anthropic_client, [message_request("")])
    assert body["error"]["message"] == (
        "requests.0.custom_id: String should have at least 1 character"
    )


def test_duplicate_custom_id_is_refused(anthropic_client: anthropic.Anthropic) -> None:
    body = _refusal(anthropic_client, [message_request("a"), message_request("a")])
    assert body["error"]["message"].startswith("requests.1.custom_id: Duplicate custom_id 'a'")


def test_missing_params_is_refused(anthropic_client: anthropic.Anthropic) -> None:
    body = _refusal(anthropic_client, [{"custom_id": "a"}])
    assert body["error"]["message"] == "requests.0.params: Field required"


def test_empty_request_list_is_refused(anthropic_client: anthropic.Anthropic) -> None:
    body = _refusal(anthropic_client, [])
    assert body["error"]["message"] == (
        "requests: List should have at least 1 item after validation, not 0"
    )


def test_more_requests_than_the_limit_are_refused(
    make_emulator: Callable[..., Emulator],
) -> None:
    emu = make_emulator(max_message_batch_requests=3)
    with anthropic.Anthropic(base_url=emu.url, api_key="k") as sdk:
        body = _refusal(sdk, [message_request(f"r{i}") for i in range(4)])
        accepted = sdk.messages.batches.create(
            requests=[message_request(f"r{i}") for i in range(3)]
        )
    assert body["error"]["message"] == (
        "requests: List should have at most 3 items after validation, not 4"
    )
    assert accepted.request_counts.processing == 3


def test_body_over_the_byte_limit_gets_413_request_too_large(
    make_emulator: Callable[..., Emulator],
) -> None:
    emu = make_emulator(max_message_batch_bytes=10_000)
    with anthropic.Anthropic(base_url=emu.url, api_key="k", max_retries=0) as sdk:
        with pytest.raises(anthropic.APIStatusError) as caught:
            sdk.messages.batches.create(requests=[message_request("a", "x" * 20_000)])
        small = sdk.messages.batches.create(requests=[message_request("a", "x" * 1_000)])
    assert caught.value.status_code == 413
    assert caught.value.body["error"]["type"] == "request_too_large"
    assert emu.message_batches.keys() == {small.id}
