"""The provider interface: what the core needs from a Batch API, whoever offers it.

Everything here is plain data. Each provider maps its statuses onto ``TERMINAL``/``ACTIVE`` below
(OpenAI's names); the engine never changes. Two shapes of API are served:

- ``uploads = True`` (OpenAI's Files + Batches and the vendors that copy it): a part's file is
  uploaded, the batch is made from it and carries batchctl's metadata, so a batch whose create
  reply was lost is found by that metadata (``find_batch``).
- ``uploads = False`` (Anthropic's Message Batches, ``InlineProvider``): the requests go inline
  in the create call. There is no input file and no metadata on a batch, so a lost create is
  found by time and request count and proved by the ids its results carry
  (``batchctl.batches.inline``). Such a provider's ``RemoteBatch`` has ``input_file_id`` ``""``,
  ``metadata`` ``{}``, ``error_file_id`` None, and ``output_file_id`` the batch's own id once
  its results can be read (what ``download`` takes: every result line, failures too, is in it).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from batchctl.errors import BatchctlError, ExitCode
from batchctl.records import ACTIVE_PART_STATUSES, TERMINAL_PART_STATUSES

# The remote statuses (OpenAI's names, ``PartStatus``) and which of them are final.
TERMINAL = TERMINAL_PART_STATUSES
ACTIVE = ACTIVE_PART_STATUSES


class ProviderError(BatchctlError):
    """A call to the API failed. ``transient`` errors were retried until the policy gave up."""

    exit_code = ExitCode.FAILED

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        transient: bool = False,
        hint: str | None = None,
    ) -> None:
        super().__init__(message, hint=hint)
        self.status = status
        self.transient = transient


RetryListener = Callable[[str], None]
# Who hears of a call retried after a transient failure, in this thread: the submission being
# driven, which records it in its run's log.
_retry_listener: ContextVar[RetryListener | None] = ContextVar("retry_listener", default=None)


@contextmanager
def retry_notices(listener: RetryListener) -> Iterator[None]:
    """Within the block, tell ``listener`` (in this thread) of each API call a provider
    retries, with the reason."""
    token = _retry_listener.set(listener)
    try:
        yield
    finally:
        _retry_listener.reset(token)


def notify_retry(message: str) -> None:
    """A provider's report of a retried call, to the listener of this thread (if any)."""
    listener = _retry_listener.get()
    if listener is not None:
        listener(message)


class CreateUnanswered(ProviderError):
    """A create was sent and no answer came (the connection dropped, the reply timed out, or a
    server error that may have come after the batch was made): a batch may exist. Never
    retried; the caller finds it later (``batchctl.batches.inline``)."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(
            message,
            status=status,
            transient=True,
            hint="batchctl looks for the batch this create may have made before it sends again",
        )


class RequestCounts(NamedTuple):
    total: int = 0
    completed: int = 0
    failed: int = 0

    def to_json(self) -> dict[str, int]:
        return {"total": self.total, "completed": self.completed, "failed": self.failed}


class RemoteFile(NamedTuple):
    id: str
    filename: str
    bytes: int
    purpose: str
    created_at: int


class RemoteBatch(NamedTuple):
    """A batch as the API reports it (times are Unix seconds, as the API gives them).

    ``ended_at`` is when it reached its final status on the API's clock (its ``completed_at``,
    ``failed_at``, ``expired_at`` or ``cancelled_at``); None while it is in flight.
    """

    id: str
    status: str
    endpoint: str
    input_file_id: str
    output_file_id: str | None
    error_file_id: str | None
    created_at: int
    expires_at: int | None
    completed_at: int | None
    request_counts: RequestCounts
    metadata: Mapping[str, str]
    errors: tuple[Mapping[str, Any], ...]
    usage: Mapping[str, Any] | None
    model: str | None
    ended_at: int | None = None

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


class Provider(Protocol):
    name: str
    uploads: bool  # True: Files + Batches (upload, then create); False: an ``InlineProvider``

    def upload(self, path: Path, filename: str) -> RemoteFile:
        """Upload a JSONL file for batch use. Never retried blindly: see ``find_file``."""
        ...

    def find_file(self, filename: str, size: int, *, within: float) -> RemoteFile | None:
        """A batch file with this name and size uploaded in the last ``within`` seconds (a span
        measured here, laid on the server's clock: this host's time of day is never trusted)."""
        ...

    def create_batch(
        self,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: Mapping[str, str],
    ) -> RemoteBatch:
        """Create a batch. Never retried blindly: see ``find_batch``."""
        ...

    def find_batch(self, key: str, value: str, *, input_file_id: str) -> RemoteBatch | None:
        """The batch whose metadata has ``key`` = ``value``, among those created since the
        input file ``input_file_id`` was uploaded (by the server's clock, never this host's)."""
        ...

    def get_batch(self, batch_id: str) -> RemoteBatch: ...

    def list_batches(self) -> Iterator[RemoteBatch]:
        """Every batch of the account, newest first, page by page."""
        ...

    def batch_pages(self, *, since: int | None = None) -> Iterator[list[RemoteBatch]]:
        """The account's batches a page at a time (up to 100, one request each), newest first;
        with ``since`` (a ``created_at`` the API gave, never this host's clock) the last page is
        the one that reaches a batch created before it. The caller may stop any time sooner."""
        ...

    def cancel_batch(self, batch_id: str) -> RemoteBatch: ...

    def download(self, file_id: str, destination: Path) -> int:
        """Stream a file's content to ``destination`` (written whole or not at all); its size."""
        ...

    def close(self) -> None: ...


class InlineProvider(Provider, Protocol):
    """A provider whose create call carries the requests (``uploads`` False): no upload, no
    input file, no metadata on a batch. ``upload``, ``find_file`` and ``find_batch`` are never
    called on it."""

    def create_inline(self, requests: Iterable[Mapping[str, Any]]) -> RemoteBatch:
        """Create a batch of these requests. Retried only when the API refused it before doing
        anything (a connection never made, 429, 529); ``CreateUnanswered`` when a batch may have
        been made without the reply reaching us."""
        ...

    def server_time(self) -> float | None:
        """The API's own time now (Unix seconds, from the ``Date`` header of a cheap call);
        None when it sends none. Recorded before a create, it bounds the search for it."""
        ...


def retry_after(headers: Mapping[str, str]) -> float | None:
    """The wait an HTTP reply asks for (``retry-after-ms``, else ``retry-after`` in seconds or
    as an HTTP date), in seconds; None when it asks for none or says it unreadably."""
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return max(0.0, float(value) * scale)
        except ValueError:
            moment = server_time(value)
            return None if moment is None else max(0.0, moment - time.time())
    return None


def server_time(date: str | None) -> float | None:
    """The Unix time of an HTTP date (a ``Date`` header); None if absent or malformed."""
    from email.utils import parsedate_to_datetime

    if not date:
        return None
    try:
        return parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError):
        return None


def error_field(body: object, name: str) -> str | None:
    """``name`` (``code``, ``type``, ``message``) of an API error body, ``{"error": {...}}`` or
    the inner object itself, as both vendors' SDKs give it."""
    inner = body.get("error", body) if isinstance(body, dict) else None
    value = inner.get(name) if isinstance(inner, dict) else None
    return str(value) if value else None
