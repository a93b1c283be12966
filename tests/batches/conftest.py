"""Fixtures for the batch tests: batchctl talking to the project's OpenAI API emulator.

batchctl uses the real ``openai`` SDK over HTTP; only the environment points it at the emulator.
These are the slow layer's end-to-end checks of submissions (every test here is marked ``slow``);
the same behaviours in process, in milliseconds, are in ``tests/core``.
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from batchctl.emulator import Emulator, EmulatorSettings
from tests.waiting import scaled

HERE = Path(__file__).parent

CONFIG = """\
[openai]
poll_interval = 0.05

[prices."gpt-4o-mini"]
input = 0.15
output = 0.60
"""


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.is_relative_to(HERE):
            item.add_marker(pytest.mark.slow)


# For ``start_api``: poll every 50 ms, and ride out injected faults (retries of 1 s, 2 s, ...).
API_CONFIG = """\
[openai]
poll_interval = 0.05
max_retries = 8
"""


@pytest.fixture
def emulator() -> Iterator[Emulator]:
    """An emulator with its default (fast, wall-clock) timing."""
    with Emulator() as emu:
        yield emu


@pytest.fixture
def api(emulator: Emulator, ws: Any, monkeypatch: pytest.MonkeyPatch) -> Emulator:
    """The emulator, with batchctl pointed at it ($OPENAI_BASE_URL, $OPENAI_API_KEY, and the
    ANTHROPIC_ pair) and a config that polls every 50 ms and prices gpt-4o-mini."""
    monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", emulator.url)  # the same emulator, both APIs
    monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
    ws.write_config(CONFIG)
    return emulator


@pytest.fixture
def start_api(ws: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Emulator]]:
    """``start_api(config=..., key=..., **settings)`` starts an emulator (wall clock, given
    settings), points batchctl at it with that API key, and writes ``config``."""
    started: list[Emulator] = []

    def start(*, config: str = API_CONFIG, key: str = "test-key", **settings: Any) -> Emulator:
        emu = Emulator(EmulatorSettings(**settings))
        started.append(emu)
        monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", key)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", emu.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", key)
        ws.write_config(config)
        return emu

    yield start
    for emu in started:
        emu.stop()


@pytest.fixture
def spawn(ws: Any, batchctl_exe: str) -> Iterator[Callable[..., subprocess.Popen[str]]]:
    """``spawn(*args)`` starts the installed batchctl in the background (stdout and stderr
    piped); every process still running at the end is killed."""
    procs: list[subprocess.Popen[str]] = []

    def start(*args: str) -> subprocess.Popen[str]:
        proc = subprocess.Popen(
            [batchctl_exe, *args],
            env=ws.env(),
            cwd=ws.root,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        procs.append(proc)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.communicate(timeout=scaled(10))
