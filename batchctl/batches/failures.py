"""Which failed requests are worth sending again: one rule for every provider.

A failure is *retryable* when the same request can succeed on a second try: the server erred
or was overloaded, a rate limit or a timeout stopped it, or it never ran. It is *invalid* when
it cannot until the request or the account changes: a bad request, a key, permission or
billing refused, a model or endpoint not found. ``retry`` sends the retryable ones again and
leaves the invalid ones alone unless asked (``--include-invalid``); ``status`` and ``results``
count them apart.

The rule reads only what is recorded per request: its error code and its HTTP status.
- OpenAI-shaped APIs: the error line's ``error.code``, else the response body's
  ``error.code``, else ``http_<status>`` (``results._error_of``), and ``response.status_code``.
- Anthropic: ``error.error.type`` of an ``errored`` line (no HTTP status per request).
- A batch that ended as a whole: ``batch_expired``, ``batch_cancelled``, ``missing``, and for a
  failed batch its first error's code (``token_limit_exceeded``, ...) or ``batch_failed``.

A known code decides; else the HTTP status (4xx but 408, 409 and 429 is the request's fault);
else the failure is retryable: nothing says the request is at fault, and ``[batches]
max_request_attempts`` bounds what a resend can spend. Requests that expired, were cancelled
or got no result never ran, so they are always retryable (``resendable``).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

#: Codes of failures that can succeed on a second try.
RETRYABLE_CODES = frozenset(
    {
        # Anthropic's error types (error.error.type; SDK shared/error_type.py): 429, 500, 504,
        # 529 and 409 (ERR-A); the guide says errors other than invalid_request "can be
        # retried directly".
        "rate_limit_error",
        "api_error",
        "timeout_error",
        "overloaded_error",
        "conflict_error",
        # OpenAI's error codes and types of a per-request failure (a 500's code is null: it is
        # recorded as http_500 and judged by its status).
        "server_error",
        "rate_limit_exceeded",
        "engine_overloaded",
        "timeout",
        # A whole batch's end (batches/submission.py _SETTLE): its requests never ran. A batch
        # refused for the organisation's enqueued-token limit can be created again later.
        "batch_expired",
        "batch_cancelled",
        "batch_failed",
        "missing",
        "token_limit_exceeded",
    }
)

#: Codes of failures that sending the same request again cannot cure.
INVALID_CODES = frozenset(
    {
        # Anthropic's error types: 400, 401, 402, 403, 404, 413 (ERR-A); the guide says to fix
        # an invalid_request body before sending it again.
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        # OpenAI: a 429 that no wait cures (the account's quota or credit is spent), and the
        # codes of an invalid request whatever status comes with them.
        "insufficient_quota",
        "invalid_api_key",
        "model_not_found",
        "invalid_request",
        "context_length_exceeded",
    }
)

#: HTTP statuses of a request's fault (4xx) that are nonetheless worth another try: a timeout,
#: a conflict and a rate limit (the SDKs retry these too).
RETRYABLE_CLIENT_STATUSES = frozenset({408, 409, 429})

#: The outcomes of requests that never ran: always worth sending again.
UNRUN_OUTCOMES = frozenset({"expired", "cancelled", "missing"})


def retryable(code: str | None, http_status: int | None) -> bool:
    """Whether a failed request with this recorded error code and HTTP status can succeed if
    it is sent again unchanged."""
    if code in RETRYABLE_CODES:
        return True
    if code in INVALID_CODES:
        return False
    if http_status is not None and 400 <= http_status < 500:
        return http_status in RETRYABLE_CLIENT_STATUSES
    return True


def resendable(outcome: str | None, code: str | None, http_status: int | None) -> bool:
    """Whether a request that did not succeed is worth sending again unchanged: it never ran,
    or it failed in a way that can pass on a second try."""
    if outcome in UNRUN_OUTCOMES:
        return True
    return outcome == "failed" and retryable(code, http_status)


class FailureSplit(NamedTuple):
    """A submission's failed requests, counted by whether a retry sends them by default."""

    retryable: int = 0
    invalid: int = 0

    def to_json(self) -> dict[str, int]:
        return {"retryable": self.retryable, "invalid": self.invalid}

    def describe(self) -> str:
        """E.g. ``9 retryable, 3 invalid``."""
        return f"{self.retryable:,} retryable, {self.invalid:,} invalid"


def split(failures: Iterable[tuple[str | None, int | None, int]]) -> FailureSplit:
    """Failed requests counted apart, from ``(error_code, http_status, count)`` rows."""
    retry = invalid = 0
    for code, status, count in failures:
        if retryable(code, status):
            retry += count
        else:
            invalid += count
    return FailureSplit(retry, invalid)
