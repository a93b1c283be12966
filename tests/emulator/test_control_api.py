"""The /_emulator control API, over HTTP."""

from __future__ import annotations

import json
import urllib.request
from typing import Any

import openai
import pytest
from emulator_helpers import chat_line, start_batch

from batchctl.emulator import Emulator


def _call(emu: Emulator, method: str, path: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"{emu.url}{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def test_advance_moves_emulated_time(emulator: Emulator, client: openai.OpenAI) -> None:
    batch = start_batch(client, [chat_line("a")])
    before = emulator.now
    reply = _call(emulator, "POST", "/_emulator/advance", {"seconds": 5})
    assert reply["time"] >= before + 5
    assert client.batches.retrieve(batch.id).status == "completed"


def test_state_counts_files_and_batches(emulator: Emulator, client: openai.OpenAI) -> None:
    start_batch(client, [chat_line("a")])
    state = _call(emulator, "GET", "/_emulator/state")
    assert state["files"] == {"total": 1, "by_purpose": {"batch": 1}}
    assert state["batches"] == {"total": 1, "by_status": {"validating": 1}}


def test_requests_lists_the_log_with_filters(emulator: Emulator, client: openai.OpenAI) -> None:
    start_batch(client, [chat_line("a")])
    log = _call(emulator, "GET", "/_emulator/requests?method=POST&path=/v1/files")["data"]
    assert [(r["method"], r["path"], r["status"], r["succeeded"]) for r in log] == [
        ("POST", "/v1/files", 200, True)
    ]


def test_faults_can_be_set_listed_and_cleared(emulator: Emulator, client: openai.OpenAI) -> None:
    rule = {"kind": "500", "method": "GET", "path": "/v1/files", "count": 1}
    set_reply = _call(emulator, "POST", "/_emulator/faults", {"faults": [rule], "seed": 1})
    assert set_reply["faults"][0]["remaining"] == 1
    with pytest.raises(openai.InternalServerError):
        client.with_options(max_retries=0).files.list()
    assert _call(emulator, "GET", "/_emulator/faults")["faults"][0]["remaining"] == 0
    assert _call(emulator, "POST", "/_emulator/faults", {"faults": []}) == {"faults": []}


def test_settings_change_timing_of_new_batches(emulator: Emulator, client: openai.OpenAI) -> None:
    reply = _call(emulator, "POST", "/_emulator/settings", {"validation_delay": 100})
    assert reply["validation_delay"] == 100.0
    assert _call(emulator, "GET", "/_emulator/settings")["validation_delay"] == 100.0
    batch = start_batch(client, [chat_line("a")])
    emulator.advance(50)
    assert client.batches.retrieve(batch.id).status == "validating"


def test_bad_settings_are_rejected(emulator: Emulator) -> None:
    request = urllib.request.Request(
        f"{emulator.url}/_emulator/settings",
        data=json.dumps({"processing_rate": -1}).encode(),
        method="POST",
    )
    try:
        urllib.request.urlopen(request, timeout=5)
    except urllib.error.HTTPError as error:
        assert error.code == 400
        assert "processing_rate" in json.loads(error.read())["error"]["message"]
    else:
        raise AssertionError("expected a 400")


def test_reset_forgets_everything(emulator: Emulator, client: openai.OpenAI) -> None:
    start_batch(client, [chat_line("a")])
    assert _call(emulator, "POST", "/_emulator/reset") == {"reset": True}
    assert emulator.files == {} and emulator.batches == {}
    assert client.files.list().data == []
