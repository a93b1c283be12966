"""Authentication: a bearer key on every /v1 request."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable

import openai
import pytest

from batchctl.emulator import Emulator


def _status_and_body(url: str, headers: dict[str, str]) -> tuple[int, dict[str, object]]:
    request = urllib.request.Request(url, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_request_without_key_is_401(emulator: Emulator) -> None:
    status, body = _status_and_body(f"{emulator.base_url}/files", {})
    assert status == 401
    error = body["error"]
    assert isinstance(error, dict)
    assert error["message"].startswith("You didn't provide an API key.")
    assert error["type"] == "invalid_request_error"


def test_empty_bearer_is_401(emulator: Emulator) -> None:
    status, _ = _status_and_body(f"{emulator.base_url}/batches", {"Authorization": "Bearer "})
    assert status == 401


def test_any_key_is_accepted_by_default(emulator: Emulator) -> None:
    status, _ = _status_and_body(f"{emulator.base_url}/files", {"Authorization": "Bearer x"})
    assert status == 200


def test_wrong_key_is_401_when_a_key_is_required(
    make_emulator: Callable[..., Emulator],
) -> None:
    emu = make_emulator(api_key="sk-right-key-123")
    with (
        openai.OpenAI(base_url=emu.base_url, api_key="sk-wrong-key-456") as wrong,
        pytest.raises(openai.AuthenticationError) as caught,
    ):
        wrong.files.list()
    assert caught.value.code == "invalid_api_key"
    with openai.OpenAI(base_url=emu.base_url, api_key="sk-right-key-123") as right:
        assert right.files.list().data == []
