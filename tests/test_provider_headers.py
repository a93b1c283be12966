"""What both providers read from an HTTP reply: the wait it asks for, its date, its error."""

from __future__ import annotations

import time
from email.utils import formatdate

from batchctl.providers.base import error_field, retry_after, server_time


def test_retry_after_ms_wins_over_seconds() -> None:
    assert retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25


def test_retry_after_in_seconds() -> None:
    assert retry_after({"retry-after": "3"}) == 3.0


def test_retry_after_as_an_http_date_is_the_time_until_it() -> None:
    wait = retry_after({"retry-after": formatdate(time.time() + 60, usegmt=True)})
    assert wait is not None and 55 <= wait <= 61


def test_an_unreadable_retry_after_asks_for_no_wait() -> None:
    assert retry_after({"retry-after": "soon"}) is None
    assert retry_after({}) is None


def test_a_malformed_date_is_no_server_time() -> None:
    assert server_time("yesterday") is None
    assert server_time(None) is None
    assert server_time("Wed, 02 Dec 2026 12:00:00 GMT") == 1796212800.0


def test_error_fields_are_read_from_either_envelope() -> None:
    assert error_field({"error": {"type": "overloaded_error"}}, "type") == "overloaded_error"
    assert error_field({"code": "server_error"}, "code") == "server_error"
    assert error_field("not json", "message") is None
