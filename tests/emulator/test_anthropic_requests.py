"""What each request of a Message Batch returns: injected error types, cache tokens, limits."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anthropic
import pytest
from anthropic_helpers import message_request, results, run_to_end

from batchctl.emulator import Emulator

# About 1,250 tokens at four characters a token: over the 1,024-token cache minimum.
LONG_SYSTEM = "You answer questions about the batch emulator. " * 110


def _ended_lines(emu: Emulator, client: anthropic.Anthropic, requests: list[Any]) -> dict[str, Any]:
    batch = client.messages.batches.create(requests=requests)
    run_to_end(emu, client, batch.id)
    return {line.custom_id: line.result for line in results(client, batch.id)}


@pytest.mark.parametrize(
    "error_type",
    ["overloaded_error", "api_error", "invalid_request_error", "rate_limit_error"],
)
def test_an_emulator_error_marker_fails_the_request_with_that_type(
    emulator: Emulator, anthropic_client: anthropic.Anthropic, error_type: str
) -> None:
    lines = _ended_lines(
        emulator,
        anthropic_client,
        [message_request("bad", f"please emulator-error:{error_type}"), message_request("ok")],
    )
    assert lines["ok"].type == "succeeded"
    assert lines["bad"].type == "errored"
    assert lines["bad"].error.error.type == error_type


def test_request_failure_rate_fails_that_share_of_requests_with_retryable_and_invalid_types(
    make_emulator: Callable[..., Emulator],
) -> None:
    emu = make_emulator(request_failure_rate=0.5)
    with anthropic.Anthropic(base_url=emu.url, api_key="k") as sdk:
        lines = _ended_lines(emu, sdk, [message_request(f"r{i}") for i in range(200)])
    types = [r.error.error.type for r in lines.values() if r.type == "errored"]
    assert 60 < len(types) < 140
    assert set(types) == {"api_error", "invalid_request_error"}


def test_first_request_with_a_cached_prefix_writes_it_and_later_ones_read_it(
    emulator: Emulator, anthropic_client: anthropic.Anthropic
) -> None:
    system = [{"type": "text", "text": LONG_SYSTEM, "cache_control": {"type": "ephemeral"}}]
    lines = _ended_lines(
        emulator,
        anthropic_client,
        [message_request(f"r{i}", system=system) for i in range(3)],
    )
    usage = {cid: result.message.usage for cid, result in lines.items()}
    written = usage["r0"].cache_creation_input_tokens
    assert written is not None and written >= 1024
    assert usage["r0"].cache_read_input_tokens == 0
    for later in ("r1", "r2"):
        assert usage[later].cache_creation_input_tokens == 0
        assert usage[later].cache_read_input_tokens == written
        assert 0 < usage[later].input_tokens < written


def test_short_or_unmarked_prompts_use_no_cache(
    emulator: Emulator, anthropic_client: anthropic.Anthropic
) -> None:
    short = [{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}]
    lines = _ended_lines(
        emulator,
        anthropic_client,
        [message_request("short", system=short), message_request("plain", system=LONG_SYSTEM)],
    )
    for result in lines.values():
        assert result.message.usage.cache_creation_input_tokens == 0
        assert result.message.usage.cache_read_input_tokens == 0


def test_an_answer_longer_than_max_tokens_stops_at_max_tokens(
    emulator: Emulator, anthropic_client: anthropic.Anthropic
) -> None:
    lines = _ended_lines(
        emulator, anthropic_client, [message_request("a", "a long question " * 10, max_tokens=2)]
    )
    message = lines["a"].message
    assert message.stop_reason == "max_tokens"
    assert message.usage.output_tokens == 2
