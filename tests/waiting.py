"""Waiting in end-to-end tests: poll a condition with a deadline, never sleep a fixed time."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import pytest

T = TypeVar("T")


def wait_for(
    predicate: Callable[[], T | None], what: str | Callable[[], str], timeout: float = 10.0
) -> T:
    """Poll ``predicate`` until it returns something truthy, and return that. After ``timeout``
    seconds fail, naming ``what`` (or what it returns: details read at the failure)."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            named = what if isinstance(what, str) else what()
            pytest.fail(f"timed out after {timeout}s waiting for {named}")
        time.sleep(0.05)
