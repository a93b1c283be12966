"""Fixtures for the batch tests: batchctl talking to the project's OpenAI API emulator.

batchctl uses the real ``openai`` SDK over HTTP; only the environment points it at the emulator.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from batchctl.emulator import Emulator

CONFIG = """\
[openai]
poll_interval = 0.05

[prices."gpt-4o-mini"]
input = 0.15
output = 0.60
"""


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """An emulator with its default (fast, wall-clock) timing."""
    with Emulator() as emu:
        yield emu


@pytest.fixture
def api(emulator: Emulator, ws: Any, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """The emulator, with batchctl pointed at it ($OPENAI_BASE_URL, $OPENAI_API_KEY) and a config
    that polls every 50 ms and prices gpt-4o-mini."""
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    ws.write_config(CONFIG)
    return emulator
