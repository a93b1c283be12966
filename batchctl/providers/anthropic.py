"""Anthropic's Message Batches API: the only module that imports ``anthropic``.

Its shape differs from OpenAI's: the requests go inline in the create call (no upload, no input
file), a batch carries no metadata, and its results are read from ``…/{id}/results`` once it has
ended. This module maps it onto the ``InlineProvider`` interface:

- ``processing_status`` ``in_progress`` → ``in_progress``, ``canceling`` → ``cancelling``,
  ``ended`` → ``cancelled`` when a cancel was initiated, else ``expired`` when every request
  expired, else ``completed``.
- ``request_counts`` → total (their sum), completed (``succeeded``), failed (``errored`` +
  ``canceled`` + ``expired``). The API keeps all but ``processing`` at 0 until the batch ends,
  so a batch in flight shows 0 done: no progress is invented.
- RFC 3339 times → Unix seconds; ``output_file_id`` is the batch's id once ``results_url`` is
  set (``download`` streams its results), ``error_file_id`` None, ``input_file_id`` ``""``,
  ``metadata`` ``{}``.

The SDK's own retries are switched off; one tenacity policy (as ``providers.openai``) retries
connection errors, timeouts, 408/409/429, 5xx and 529 with backoff and jitter, honouring
``retry-after``. Create is never retried blindly (the SDK sends no idempotency key): it is
retried only when the API provably did nothing — the connection was never made, or a 429/529
refused it — and otherwise raises ``CreateUnanswered`` for ``batchctl.batches.inline`` to find
what it may have made.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import anthropic
from anthropic import Anthropic

from batchctl.providers.base import (
    CreateUnanswered,
    ProviderError,
    RemoteBatch,
    RemoteFile,
    RequestCounts,
    error_field,
    notify_retry,
    retry_after,
    server_time,
)

if TYPE_CHECKING:
    from batchctl.providers.profiles import ProviderSettings

T = TypeVar("T")

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 60.0
PAGE_SIZE = 100
ENDPOINT = "/v1/messages"
# Refusals that come before the API does anything: a create refused so is safe to send again.
_REFUSED_BEFORE_WORK = (429, 529)


class AnthropicProvider:
    name = "anthropic"
    uploads = False

    def __init__(
        self,
        client: Anthropic,
        *,
        max_retries: int,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.client = client
        self.max_retries = max_retries
        self.sleep = sleep

    @classmethod
    def from_settings(cls, settings: ProviderSettings) -> AnthropicProvider:
        key, base_url = _credentials(settings)
        headers = {"anthropic-version": settings.api_version} if settings.api_version else None
        client = Anthropic(
            api_key=key,
            base_url=base_url,  # None: the SDK's default (or $ANTHROPIC_BASE_URL)
            timeout=settings.timeout,
            max_retries=0,  # our policy retries, and knows which calls must not be repeated
            default_headers=headers,
        )
        return cls(client, max_retries=settings.max_retries)

    def close(self) -> None:
        self.client.close()

    # --- create ---------------------------------------------------------------------------------
    def create_inline(self, requests: Iterable[Mapping[str, Any]]) -> RemoteBatch:
        body = list(requests)

        def attempt() -> RemoteBatch:
            raw = self.client.messages.batches.with_raw_response.create(
                requests=body,  # type: ignore[arg-type]
            )
            return message_batch(json.loads(raw.read()))

        return self._retrying(attempt, _refused_before_work, unanswered=True)

    def server_time(self) -> float | None:
        raw = self._call(lambda: self.client.messages.batches.with_raw_response.list(limit=1))
        return server_time(raw.headers.get("date"))

    # --- batches --------------------------------------------------------------------------------
    def get_batch(self, batch_id: str) -> RemoteBatch:
        raw = self._call(lambda: self.client.messages.batches.with_raw_response.retrieve(batch_id))
        return message_batch(json.loads(raw.read()))

    def list_batches(self) -> Iterator[RemoteBatch]:
        for page in self.batch_pages():
            yield from page

    def batch_pages(self, *, since: int | None = None) -> Iterator[list[RemoteBatch]]:
        after: str | None = None
        while True:
            cursor = after or anthropic.omit
            raw = self._call(
                # The lambda runs before the loop moves on, so binding the loop variable is fine.
                lambda: self.client.messages.batches.with_raw_response.list(
                    limit=PAGE_SIZE,
                    after_id=cursor,  # noqa: B023
                )
            )
            page = json.loads(raw.read())
            batches = [message_batch(item) for item in page.get("data") or ()]
            yield batches
            if not batches or not page.get("has_more"):
                return
            if since is not None and batches[-1].created_at < since:
                return  # newest first: every batch created since ``since`` has been listed
            after = str(page.get("last_id") or batches[-1].id)

    def cancel_batch(self, batch_id: str) -> RemoteBatch:
        raw = self._call(lambda: self.client.messages.batches.with_raw_response.cancel(batch_id))
        return message_batch(json.loads(raw.read()))

    def download(self, file_id: str, destination: Path) -> int:
        """Stream the results of batch ``file_id`` (``GET …/{id}/results``) to ``destination``,
        whole or not at all (a temporary file renamed into place)."""
        partial = destination.with_name(destination.name + ".part")
        destination.parent.mkdir(parents=True, exist_ok=True)

        def attempt() -> int:
            written = 0
            with (
                self.client.messages.batches.with_streaming_response.results(file_id) as response,
                partial.open("wb") as out,
            ):
                for chunk in response.iter_bytes():  # as they arrive: no copy to re-cut them
                    out.write(chunk)
                    written += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            partial.replace(destination)
            return written

        return self._call(attempt)

    # --- what an inline API does not have -------------------------------------------------------
    def upload(self, path: Path, filename: str) -> RemoteFile:
        raise _no_files()

    def find_file(self, filename: str, size: int, *, within: float) -> RemoteFile | None:
        raise _no_files()

    def create_batch(
        self,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: Mapping[str, str],
    ) -> RemoteBatch:
        raise _no_files()

    def find_batch(self, key: str, value: str, *, input_file_id: str) -> RemoteBatch | None:
        raise _no_files()

    # --- the retry policy -----------------------------------------------------------------------
    def _call(self, action: Callable[[], T]) -> T:
        """Run a call that is safe to repeat, retrying transient failures."""
        return self._retrying(action, _transient, unanswered=False)

    def _retrying(
        self,
        action: Callable[[], T],
        retry_on: Callable[[BaseException], bool],
        *,
        unanswered: bool,
    ) -> T:
        """Run ``action``, repeating it after the failures ``retry_on`` accepts. ``unanswered``
        (a create): a transient failure not retried is ``CreateUnanswered``."""
        from tenacity import RetryCallState, Retrying, retry_if_exception, stop_after_attempt

        def before_sleep(state: RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome else None
            delay = state.next_action.sleep if state.next_action else 0.0
            notify_retry(
                f"{_describe(error)}; retrying in {delay:.1f}s"
                f" (attempt {state.attempt_number + 1} of {self.max_retries + 1})"
            )

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            delay = _retry_after(error)
            if delay is None:
                ceiling = min(BACKOFF_MAX_S, BACKOFF_START_S * 2 ** (state.attempt_number - 1))
                delay = ceiling / 2 + random.random() * ceiling / 2
            return delay

        retrying = Retrying(
            retry=retry_if_exception(
                lambda e: isinstance(e, anthropic.AnthropicError) and retry_on(e)
            ),
            stop=stop_after_attempt(self.max_retries + 1),
            wait=wait,
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(action)
        except anthropic.AnthropicError as exc:
            if unanswered and _transient(exc) and not _refused_before_work(exc):
                status = exc.status_code if isinstance(exc, anthropic.APIStatusError) else None
                raise CreateUnanswered(
                    f"Anthropic API: the create got no answer ({_describe(exc)}); a batch may"
                    " have been made",
                    status=status,
                ) from exc
            raise _as_provider_error(exc) from exc


def _credentials(settings: ProviderSettings) -> tuple[str, str | None]:
    """The key and base URL, checked by ``providers.check_settings`` before anything is
    recorded."""
    from batchctl.providers import check_settings

    return check_settings(settings)


def _no_files() -> ProviderError:
    return ProviderError("Anthropic's Message Batches API has no files: requests are sent inline")


def _transient(error: BaseException) -> bool:
    if isinstance(error, anthropic.APIConnectionError):  # includes timeouts
        return True
    if isinstance(error, anthropic.APIStatusError):
        if error.status_code == 429:
            return _retry_after(error) is not None or _error_type(error) != "rate_limit_error"
        return error.status_code in (408, 409) or error.status_code >= 500
    return False


def _refused_before_work(error: BaseException) -> bool:
    """Whether the API provably did nothing with the request: the connection was never made
    (nothing was sent), or it was refused for load (429, 529) before being handled."""
    if isinstance(error, anthropic.APIStatusError):
        return error.status_code in _REFUSED_BEFORE_WORK and _transient(error)
    if isinstance(error, anthropic.APITimeoutError):
        return False  # the request may have been sent and handled
    if isinstance(error, anthropic.APIConnectionError):
        return _never_connected(error)
    return False


def _never_connected(error: BaseException) -> bool:
    """A connection error raised while connecting (refused, unresolvable): no byte was sent."""
    cause = error.__cause__
    while cause is not None:
        if type(cause).__name__ in ("ConnectError", "ConnectTimeout"):
            return True
        cause = cause.__cause__
    return False


def _retry_after(error: BaseException | None) -> float | None:
    if not isinstance(error, anthropic.APIStatusError):
        return None
    return retry_after(error.response.headers)


def _error_type(error: anthropic.APIStatusError) -> str | None:
    return error_field(error.body, "type")


def _describe(error: BaseException | None) -> str:
    if isinstance(error, anthropic.APIStatusError):
        return f"HTTP {error.status_code}: {_message(error)}"
    if isinstance(error, anthropic.APITimeoutError):
        return "the request timed out"
    if isinstance(error, anthropic.APIConnectionError):
        return f"connection failed: {error.__cause__ or error}"
    return str(error)


def _message(error: anthropic.APIStatusError) -> str:
    return error_field(error.body, "message") or error.message


def _as_provider_error(error: anthropic.AnthropicError) -> ProviderError:
    transient = _transient(error)
    status = error.status_code if isinstance(error, anthropic.APIStatusError) else None
    hint = None
    if status == 401:
        hint = "check the API key in the environment variable the provider's api_key_env names"
    elif transient:
        hint = "the API kept failing; batchctl will pick up where it stopped when run again"
    prefix = "Anthropic API" if status else "Anthropic API unreachable"
    return ProviderError(
        f"{prefix}: {_describe(error)}", status=status, transient=transient, hint=hint
    )


def message_batch(item: Mapping[str, Any]) -> RemoteBatch:
    """A Message Batch object as the API sent it, as plain values (see the module's mapping):
    the one place it is mapped (the fast tests' in-process stand-in maps through it too). Read
    from the JSON rather than the SDK's pydantic model, as ``providers.openai`` does."""
    counts = item.get("request_counts") or {}
    succeeded = int(counts.get("succeeded") or 0)
    errored = int(counts.get("errored") or 0)
    canceled = int(counts.get("canceled") or 0)
    expired = int(counts.get("expired") or 0)
    total = int(counts.get("processing") or 0) + succeeded + errored + canceled + expired
    ended = _seconds(item.get("ended_at"))
    status = _status(str(item.get("processing_status")), item, expired, total)
    return RemoteBatch(
        id=str(item["id"]),
        status=status,
        endpoint=ENDPOINT,
        input_file_id="",
        output_file_id=str(item["id"]) if item.get("results_url") else None,
        error_file_id=None,
        created_at=_seconds(item.get("created_at")) or 0,
        expires_at=_seconds(item.get("expires_at")),
        completed_at=ended if status == "completed" else None,
        request_counts=RequestCounts(total, succeeded, errored + canceled + expired),
        metadata={},
        errors=(),
        usage=None,
        model=None,
        ended_at=ended if status in ("completed", "expired", "cancelled") else None,
    )


def _status(processing: str, item: Mapping[str, Any], expired: int, total: int) -> str:
    if processing == "in_progress":
        return "in_progress"
    if processing == "canceling":
        return "cancelling"
    if processing != "ended":
        return processing  # a status this mapping does not know: shown as the API said it
    if item.get("cancel_initiated_at"):
        return "cancelled"
    return "expired" if total and expired == total else "completed"


def _seconds(value: Any) -> int | None:
    """Unix seconds of an RFC 3339 time (the API's ``…Z`` included); None for none."""
    if value is None or value == "":
        return None
    if isinstance(value, int | float):
        return int(value)
    return int(datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp())
