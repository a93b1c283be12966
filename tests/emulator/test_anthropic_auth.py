"""Authentication of the Message Batches API: x-api-key or Bearer, and anthropic-version."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import anthropic
import pytest

from batchctl.emulator import Emulator


def _get(emu: Emulator, headers: dict[str, str]) -> tuple[int, Any]:
    """GET the batch list with exactly these headers: (status, JSON body)."""
    request = urllib.request.Request(f"{emu.url}/v1/messages/batches", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def test_the_sdk_is_accepted_with_the_right_key(make_emulator: Callable[..., Emulator]) -> None:
    emu = make_emulator(api_key="sk-ant-right")
    with anthropic.Anthropic(base_url=emu.url, api_key="sk-ant-right") as sdk:
        assert sdk.messages.batches.list().data == []


def test_x_api_key_header_is_accepted(make_emulator: Callable[..., Emulator]) -> None:
    emu = make_emulator(api_key="sk-ant-right")
    status, body = _get(emu, {"x-api-key": "sk-ant-right", "anthropic-version": "2023-06-01"})
    assert status == 200 and body["data"] == []


def test_wrong_key_gets_401_authentication_error(make_emulator: Callable[..., Emulator]) -> None:
    emu = make_emulator(api_key="sk-ant-right")
    with (
        anthropic.Anthropic(base_url=emu.url, api_key="sk-ant-wrong") as sdk,
        pytest.raises(anthropic.AuthenticationError) as caught,
    ):
        sdk.messages.batches.list()
    assert caught.value.status_code == 401
    assert caught.value.body == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "invalid x-api-key"},
        "request_id": caught.value.request_id,
    }


def test_missing_key_gets_401(emulator: Emulator) -> None:
    status, body = _get(emulator, {"anthropic-version": "2023-06-01"})
    assert status == 401
    assert body["error"] == {
        "type": "authentication_error",
        "message": "x-api-key header is required",
    }


def test_missing_anthropic_version_gets_400(emulator: Emulator) -> None:
    status, body = _get(emulator, {"x-api-key": "k"})
    assert status == 400
    assert body["error"]["message"] == "anthropic-version: header is required"


def test_any_anthropic_version_is_accepted(emulator: Emulator) -> None:
    status, _ = _get(emulator, {"x-api-key": "k", "anthropic-version": "2099-01-01"})
    assert status == 200
