"""The OpenAI Files + Batches API: the only module that imports ``openai``.

The SDK's own retries are switched off; every call goes through one tenacity policy that retries
connection errors, timeouts, 408/409/429 and 5xx with exponential backoff and jitter, honouring
``Retry-After`` however long it is (the SDK gives up on waits over 120 s). Other 4xx fail at once
with the API's message.

Creating calls (upload, create batch) are never retried blindly: the SDK sends no idempotency key,
so a retry after a lost reply would create a second file or batch. Before each retry we look for
what the lost call may have created — the file by name and size, the batch by the metadata
batchctl put on it — and adopt it.

The OpenAI-shaped vendors (Azure, Groq, Together, Doubleword, Parasail, any server at a base
URL) go through the same class: Azure through the SDK's ``AzureOpenAI`` client (``api-key``
header, ``?api-version=``, paths without ``/v1``), Together with its own file purpose. Their
answers are read into one shape here (``_from_json``): statuses in lower case (Azure writes
``Validating``, Together ``IN_PROGRESS``), ``""`` for a missing id read as none, Together's
create reply unwrapped from its ``job``.
"""

from __future__ import annotations

import gc
import json
import os
import random
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

import openai
from openai import OpenAI

from batchctl.errors import UsageError
from batchctl.providers import azure_api_version, check_settings
from batchctl.providers.base import (
    TERMINAL,
    ProviderError,
    RemoteBatch,
    RemoteFile,
    RequestCounts,
    error_field,
    notify_retry,
    retry_after,
    server_time,
)
from batchctl.providers.profiles import ProviderSettings

# The SDK's modules leave some 100,000 objects that live as long as the process: frozen, out
# of the collector's reach, so that its full passes (several while 50,000 results are read) do
# not walk them again each time.
gc.freeze()

T = TypeVar("T")
RetryNotice = Callable[[str], None]

BACKOFF_START_S = 1.0
BACKOFF_MAX_S = 60.0
PAGE_SIZE = 100
SERVER_SKEW_S = 300  # how far the API's own services' clocks may differ (files vs batches)


class OpenAIProvider:
    name = "openai"
    uploads = True

    def __init__(
        self,
        client: OpenAI,
        *,
        max_retries: int,
        on_retry: RetryNotice | None = None,
        sleep: Callable[[float], None] = time.sleep,
        name: str = "openai",
        file_purpose: str = "batch",
    ) -> None:
        self.client = client
        self.max_retries = max_retries
        self.on_retry = on_retry
        self.sleep = sleep
        self.name = name
        # The purpose a batch's input file is uploaded (and looked for) with: Together's is
        # "batch-api". The SDK types it as OpenAI's values; the vendor's goes through as is.
        self.file_purpose: Any = file_purpose

    @classmethod
    def from_settings(
        cls, settings: ProviderSettings, on_retry: RetryNotice | None = None
    ) -> OpenAIProvider:
        key, base_url = check_settings(settings)
        client = open_client(
            key=key,
            base_url=base_url,
            organization=settings.organization,
            project=settings.project,
            timeout=settings.timeout,
            azure_api_version=azure_api_version(settings),
        )
        return cls(
            client,
            max_retries=settings.max_retries,
            on_retry=on_retry,
            name=settings.name,
            file_purpose=settings.file_purpose,
        )

    def close(self) -> None:
        self.client.close()

    # --- files ----------------------------------------------------------------------------------
    def upload(self, path: Path, filename: str) -> RemoteFile:
        size = path.stat().st_size
        started = time.monotonic()

        def attempt() -> RemoteFile:
            with path.open("rb") as handle:
                return _file(
                    self.client.files.create(file=(filename, handle), purpose=self.file_purpose)
                )

        def lookup() -> RemoteFile | None:
            return self.find_file(filename, size, within=time.monotonic() - started)

        return self._create(attempt, lookup)

    def find_file(self, filename: str, size: int, *, within: float) -> RemoteFile | None:
        # Newest first, back to ``within`` seconds before the server's own ``Date``: a time
        # span is the same on both clocks, this host's time of day is never compared with it.
        after: str | None = None
        floor: float | None = None
        while True:
            cursor = after or openai.omit
            raw = self._call(
                # The lambda runs before the loop moves on, so binding the loop variable is fine.
                lambda: self.client.files.with_raw_response.list(
                    purpose=self.file_purpose,
                    order="desc",
                    limit=1000,
                    after=cursor,  # noqa: B023
                )
            )
            if floor is None:
                floor = server_time(raw.headers.get("date"))
                if floor is not None:
                    floor -= within + SERVER_SKEW_S
            page = raw.parse()
            for item in page.data:
                if item.filename == filename and item.bytes == size:
                    return _file(item)
                if floor is not None and item.created_at < floor:
                    return None
            if not page.data or not page.has_more:
                return None
            after = page.data[-1].id

    def download(self, file_id: str, destination: Path) -> int:
        partial = destination.with_name(destination.name + ".part")
        destination.parent.mkdir(parents=True, exist_ok=True)

        def attempt() -> int:
            written = 0
            with (
                self.client.files.with_streaming_response.content(file_id) as response,
                partial.open("wb") as out,
            ):
                for chunk in response.iter_bytes():  # as they arrive: no copy to re-cut them
                    out.write(chunk)
                    written += len(chunk)
                out.flush()
                os.fsync(out.fileno())
            partial.replace(destination)  # whole or not at all
            return written

        return self._call(attempt)

    # --- batches --------------------------------------------------------------------------------
    def create_batch(
        self,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: Mapping[str, str],
    ) -> RemoteBatch:
        key, value = next(iter(metadata.items()))

        def attempt() -> RemoteBatch:
            return _batch(
                self.client.batches.with_raw_response.create(
                    input_file_id=input_file_id,
                    endpoint=endpoint,  # type: ignore[arg-type]
                    completion_window=completion_window,  # type: ignore[arg-type]
                    metadata=dict(metadata),
                )
            )

        return self._create(
            attempt, lambda: self.find_batch(key, value, input_file_id=input_file_id)
        )

    def find_batch(self, key: str, value: str, *, input_file_id: str) -> RemoteBatch | None:
        # Newest first, down to the input file's upload: a batch made from it cannot be older.
        # Both times are the server's; this host's clock, however wrong, is never compared.
        floor = self._created_at(input_file_id)
        for batch in self.list_batches():
            if batch.metadata.get(key) == value:
                return batch
            if floor is not None and batch.created_at < floor - SERVER_SKEW_S:
                return None
        return None

    def _created_at(self, file_id: str) -> int | None:
        """When the server received the file; None when it is gone (nothing bounds a search)."""
        if not file_id:
            return None
        try:
            return int(self._call(lambda: self.client.files.retrieve(file_id)).created_at)
        except ProviderError as exc:
            if exc.status == 404:
                return None
            raise

    def get_batch(self, batch_id: str) -> RemoteBatch:
        return _batch(self._call(lambda: self.client.batches.with_raw_response.retrieve(batch_id)))

    def list_batches(self) -> Iterator[RemoteBatch]:
        for page in self.batch_pages():
            yield from page

    def batch_pages(self, *, since: int | None = None) -> Iterator[list[RemoteBatch]]:
        after: str | None = None
        while True:
            cursor = after or openai.omit
            raw = self._call(
                lambda: self.client.batches.with_raw_response.list(
                    limit=PAGE_SIZE,
                    after=cursor,  # noqa: B023
                )
            )
            page = json.loads(raw.content)
            batches = [_from_json(item) for item in page.get("data") or ()]
            yield batches
            if not batches or not page.get("has_more"):
                return
            if since is not None and batches[-1].created_at < since:
                return  # newest first: every batch created since ``since`` has been listed
            after = batches[-1].id

    def cancel_batch(self, batch_id: str) -> RemoteBatch:
        return _batch(self._call(lambda: self.client.batches.with_raw_response.cancel(batch_id)))

    # --- the retry policy -----------------------------------------------------------------------
    def _call(self, action: Callable[[], T]) -> T:
        """Run a call that is safe to repeat, retrying transient failures."""
        return self._create(action, None)

    def _create(self, action: Callable[[], T], lookup: Callable[[], T | None] | None) -> T:
        """Run ``action``; after a transient failure, adopt what ``lookup`` finds, else retry."""
        from tenacity import (
            RetryCallState,
            Retrying,
            retry_if_exception,
            stop_after_attempt,
        )

        def before_sleep(state: RetryCallState) -> None:
            # Called after a failed attempt, before the pause (``before`` would see no outcome:
            # tenacity clears it when it prepares the next attempt).
            error = state.outcome.exception() if state.outcome else None
            delay = state.next_action.sleep if state.next_action else 0.0
            message = (
                f"{_describe(error)}; retrying in {delay:.1f}s"
                f" (attempt {state.attempt_number + 1} of {self.max_retries + 1})"
            )
            notify_retry(message)
            if self.on_retry:
                self.on_retry(message)

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            delay = _retry_after(error)
            if delay is None:
                ceiling = min(BACKOFF_MAX_S, BACKOFF_START_S * 2 ** (state.attempt_number - 1))
                delay = ceiling / 2 + random.random() * ceiling / 2
            return delay

        def attempt() -> T:
            try:
                return action()
            except openai.OpenAIError as exc:
                if lookup is not None and _transient(exc):
                    found = lookup()  # the lost reply may have created it: adopt, never repeat
                    if found is not None:
                        return found
                raise

        retrying = Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, openai.OpenAIError) and _transient(e)),
            stop=stop_after_attempt(self.max_retries + 1),
            wait=wait,
            sleep=self.sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            return retrying(attempt)
        except openai.OpenAIError as exc:
            raise _as_provider_error(exc, self.name) from exc


def open_client(
    *,
    key: str,
    base_url: str | None,
    timeout: float,
    organization: str | None = None,
    project: str | None = None,
    azure_api_version: str | None = None,
) -> OpenAI:
    """The SDK's client. With ``azure_api_version``, Azure's (``AzureOpenAI``): the key in the
    ``api-key`` header, ``?api-version=`` on every call, ``base_url`` the resource's endpoint
    (``https://{resource}.openai.azure.com``), under which the SDK adds ``/openai``."""
    if azure_api_version is not None:
        from openai import AzureOpenAI

        if base_url is None:
            raise UsageError(
                "no Azure endpoint: set AZURE_OPENAI_ENDPOINT (or base_url in [providers.azure])",
                hint="the resource's endpoint, e.g. https://my-resource.openai.azure.com",
            )
        return AzureOpenAI(
            azure_endpoint=base_url,
            api_version=azure_api_version,
            api_key=key,
            timeout=timeout,
            max_retries=0,
        )
    return OpenAI(
        api_key=key,
        base_url=base_url,  # None: the SDK's default
        organization=organization,
        project=project,
        timeout=timeout,
        max_retries=0,  # our policy retries, and knows which calls must not be repeated
    )


def _transient(error: BaseException) -> bool:
    if isinstance(error, openai.APIConnectionError):  # includes timeouts
        return True
    if isinstance(error, openai.APIStatusError):
        if error.status_code == 429:
            return _error_code(error) != "insufficient_quota"  # billing: waiting will not help
        return error.status_code in (408, 409) or error.status_code >= 500
    return False


def _retry_after(error: BaseException | None) -> float | None:
    if not isinstance(error, openai.APIStatusError):
        return None
    return retry_after(error.response.headers)


def _error_code(error: openai.APIStatusError) -> str | None:
    return error_field(error.body, "code")


def _describe(error: BaseException | None) -> str:
    if isinstance(error, openai.APIStatusError):
        return f"HTTP {error.status_code}: {_message(error)}"
    if isinstance(error, openai.APITimeoutError):
        return "the request timed out"
    if isinstance(error, openai.APIConnectionError):
        return f"cannot connect: {error.__cause__ or error}"
    return str(error)


def _message(error: openai.APIStatusError) -> str:
    return error_field(error.body, "message") or error.message


def _as_provider_error(error: openai.OpenAIError, provider: str = "openai") -> ProviderError:
    transient = _transient(error)
    status = error.status_code if isinstance(error, openai.APIStatusError) else None
    hint = None
    table = "[openai]" if provider == "openai" else f"[providers.{provider}]"
    if status == 401:
        hint = f"check the API key in the environment variable named by {table} api_key_env"
    elif transient:
        hint = "the API kept failing; batchctl will pick up where it stopped when run again"
    api = "OpenAI API" if provider == "openai" else f"{provider} API"
    prefix = api if status else f"{api} unreachable"
    return ProviderError(
        f"{prefix}: {_describe(error)}", status=status, transient=transient, hint=hint
    )


def _file(item: Any) -> RemoteFile:
    return RemoteFile(
        id=item.id,
        filename=item.filename,
        bytes=item.bytes,
        purpose=item.purpose,
        created_at=item.created_at,
    )


def _batch(raw: Any) -> RemoteBatch:
    """The batch in a raw response (``with_raw_response``: its JSON, not the SDK's model)."""
    return _from_json(json.loads(raw.content))


def _from_json(item: Mapping[str, Any]) -> RemoteBatch:
    """A Batch object as the API sent it, as plain values. Read from the JSON rather than the
    SDK's pydantic model: building those models costs four times what the HTTP request does
    (a refresh reads 1,000 batches a pass), and every batch call maps through here, so a
    batch reads the same whichever call reported it, from whichever vendor."""
    if "id" not in item and isinstance(item.get("job"), Mapping):
        item = item["job"]  # Together's create reply: {"job": {...}}
    counts = item.get("request_counts") or {}
    errors = (item.get("errors") or {}).get("data") or ()
    status = _status(item["status"])
    ended = item.get(f"{status}_at") if status in TERMINAL else None
    return RemoteBatch(
        id=str(item["id"]),
        status=status,
        endpoint=str(item.get("endpoint") or ""),
        input_file_id=str(item.get("input_file_id") or ""),
        output_file_id=item.get("output_file_id") or None,  # Azure writes "" for "none"
        error_file_id=item.get("error_file_id") or None,
        created_at=int(item["created_at"]),
        expires_at=item.get("expires_at"),
        completed_at=item.get("completed_at"),
        request_counts=RequestCounts(
            int(counts.get("total") or 0),
            int(counts.get("completed") or 0),
            int(counts.get("failed") or 0),
        ),
        metadata=dict(item.get("metadata") or {}),
        # The four fields of a BatchError, each present (None when the API left it out).
        errors=tuple({name: e.get(name) for name in _ERROR_FIELDS} for e in errors),
        usage=item.get("usage") or None,
        model=item.get("model") or None,
        ended_at=int(ended) if ended is not None else None,
    )


_ERROR_FIELDS = ("code", "line", "message", "param")
# Spellings of OpenAI's statuses seen (or plausible) from the vendors, once lower-cased.
_STATUS_SPELLINGS = {
    "inprogress": "in_progress",
    "canceled": "cancelled",
    "canceling": "cancelling",
}


def _status(value: object) -> str:
    """A vendor's status as OpenAI writes it: ``Validating`` and ``IN_PROGRESS`` are
    ``validating`` and ``in_progress``."""
    status = str(value).strip().lower().replace("-", "_").replace(" ", "_")
    return _STATUS_SPELLINGS.get(status, status)
