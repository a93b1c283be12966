"""The /_emulator control API covers Message Batches too."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import anthropic
import pytest
from anthropic_helpers import message_request, run_to_end

from batchctl.emulator import Emulator


def _call(emu: Emulator, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{emu.url}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def test_state_counts_message_batches_by_processing_status(
    emulator: Emulator, anthropic_client: anthropic.Anthropic
) -> None:
    first = anthropic_client.messages.batches.create(requests=[message_request("a")])
    run_to_end(emulator, anthropic_client, first.id)
    anthropic_client.messages.batches.create(requests=[message_request("a")])

    state = _call(emulator, "GET", "/_emulator/state")

    assert state["message_batches"] == {
        "total": 2,
        "by_status": {"ended": 1, "in_progress": 1},
    }


def test_settings_change_the_limits_of_new_message_batches(
    emulator: Emulator, anthropic_client: anthropic.Anthropic
) -> None:
    _call(emulator, "POST", "/_emulator/settings", {"max_message_batch_requests": 1})
    with pytest.raises(anthropic.BadRequestError, match="at most 1 items"):
        anthropic_client.messages.batches.create(
            requests=[message_request("a"), message_request("b")]
        )


def test_reset_forgets_message_batches(
    emulator: Emulator, anthropic_client: anthropic.Anthropic
) -> None:
    anthropic_client.messages.batches.create(requests=[message_request("a")])
    _call(emulator, "POST", "/_emulator/reset")
    assert emulator.message_batches == {}
    assert anthropic_client.messages.batches.list().data == []
