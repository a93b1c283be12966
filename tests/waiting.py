"""Waiting in end-to-end tests: poll a condition with a deadline, never sleep a fixed time."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")

# Every deadline of a test scales by this factor: a loaded machine (CI, two busy loops beside the
# suite) may set it above 1. A deadline only bounds a wait for an event; it never paces a test.
TIMEOUT_SCALE = float(os.environ.get("BATCHCTL_TEST_TIMEOUT_SCALE", "1"))


def scaled(seconds: float) -> float:
    """``seconds`` stretched by ``TIMEOUT_SCALE``: the bound of a wait (a process to exit, a reply
    to arrive), or of how long something may take, on this machine."""
    return seconds * TIMEOUT_SCALE


def timeout_arg(seconds: float) -> str:
    """A ``--timeout`` duration for ``batchctl wait``: ``seconds`` scaled, as "Ns"."""
    return f"{scaled(seconds):g}s"


def wait_for(
    predicate: Callable[[], T | None], what: str | Callable[[], str], timeout: float = 10.0
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that. After ``timeout``
    seconds (scaled) fail, naming ``what`` (or what it returns: details read at the failure)."""
    timeout = scaled(timeout)
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            named = what if isinstance(what, str) else what()
            pytest.fail(f"timed out after {timeout}s waiting for {named}")
        time.sleep(0.05)


def next_second() -> None:
    """Wait until the wall clock enters a new second: a per-second schedule has a new tick due."""
    now = int(time.time())
    wait_for(lambda: int(time.time()) > now, "the next second", timeout=2.0)
