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


def wait_for(
    predicate: Callable[[], T | None], what: str | Callable[[], str], timeout: float = 10.0
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that. After ``timeout``
    seconds fail, naming ``what`` (or what it returns: details read at the failure)."""
    timeout *= TIMEOUT_SCALE
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            named = what if isinstance(what, str) else what()
            pytest.fail(f"timed out after {timeout}s waiting for {named}")
        time.sleep(0.05)
