"""Fixtures: a started emulator on a manual clock, and SDK clients (openai, anthropic) pointed
at it."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import openai
import pytest

from batchctl.emulator import Emulator, EmulatorSettings


@pytest.fixture
def make_emulator() -> Iterator[Callable[..., Emulator]]:
    """Start emulators with given settings (manual clock unless told otherwise)."""
    started: list[Emulator] = []

    def make(**settings: Any) -> Emulator:
        settings.setdefault("manual_clock", True)
        emu = Emulator(EmulatorSettings(**settings))
        started.append(emu)
        return emu

    yield make
    for emu in started:
        emu.stop()


@pytest.fixture
def emulator(make_emulator: Callable[..., Emulator]) -> Emulator:
    """A started emulator with default timing on a manual clock: time moves with advance()."""
    return make_emulator()


@pytest.fixture
def client(emulator: Emulator) -> Iterator[openai.OpenAI]:
    """The real SDK, talking to ``emulator`` over HTTP."""
    with openai.OpenAI(base_url=emulator.base_url, api_key="test-key") as sdk:
        yield sdk


@pytest.fixture
def anthropic_client(emulator: Emulator) -> Iterator[anthropic.Anthropic]:
    """The real Anthropic SDK, talking to ``emulator`` over HTTP (its root URL is the base)."""
    with anthropic.Anthropic(base_url=emulator.url, api_key="test-key") as sdk:
        yield sdk
