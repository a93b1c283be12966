"""An ``InlineProvider`` in process: the emulator's Message Batches state driven directly.

The fast layer's stand-in for Anthropic's API, as ``emulated.EmulatedProvider`` is for OpenAI's:
every call goes through the emulator's own ``MessageBatches`` (its timeline, shuffled results,
cancel) on the test's fake clock, and each batch is mapped by the provider's own mapping
(``providers.anthropic.message_batch``). Only the SDK and the wire are left out.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, TypeVar

from batchctl.emulator.errors import ApiError
from batchctl.emulator.message_batches import MessageBatches
from batchctl.emulator.settings import EmulatorSettings
from batchctl.providers.anthropic import message_batch
from batchctl.providers.base import CreateUnanswered, ProviderError, RemoteBatch, RemoteFile
from tests.core.emulated import FakeClock

T = TypeVar("T")
BASE_URL = "http://emulated"


class EmulatedMessageBatches:
    """Anthropic's Message Batches over an in-process emulator state.

    ``lose_reply("create_inline")`` makes the next create take effect and then fail as a reply
    that never came; ``drop("create_inline")`` makes it fail without taking effect (the request
    never reached the API). Either way batchctl cannot tell which happened."""

    name = "anthropic"
    uploads = False

    def __init__(self, clock: FakeClock, settings: EmulatorSettings | None = None) -> None:
        self.clock = clock
        self.settings = settings or EmulatorSettings(manual_clock=True)
        self._root = Path(tempfile.mkdtemp(prefix="message-batches-"))
        self.state = MessageBatches(self._root, clock.emulator)
        self.calls: list[str] = []
        self._lost: dict[str, BaseException] = {}
        self._dropped: dict[str, BaseException] = {}

    def lose_reply(self, method: str, error: BaseException | None = None) -> None:
        self._lost[method] = error or CreateUnanswered("the connection dropped")

    def drop(self, method: str, error: BaseException | None = None) -> None:
        self._dropped[method] = error or CreateUnanswered("the connection dropped")

    def _call(self, method: str, action: Callable[[], T]) -> T:
        self.calls.append(method)
        dropped = self._dropped.pop(method, None)
        if dropped is not None:
            raise dropped
        try:
            result = action()
        except ApiError as exc:
            raise ProviderError(
                f"Anthropic API: HTTP {exc.status}: {exc.message}", status=exc.status
            ) from exc
        lost = self._lost.pop(method, None)
        if lost is not None:
            raise lost
        return result

    # --- what batchctl calls --------------------------------------------------------------------
    def create_inline(self, requests: Iterable[Mapping[str, Any]]) -> RemoteBatch:
        pairs = [(str(r["custom_id"]), dict(r["params"])) for r in requests]
        return self._call(
            "create_inline",
            lambda: message_batch(self.state.create(pairs, self.settings, BASE_URL)),
        )

    def server_time(self) -> float | None:
        return self._call("server_time", self.clock.emulator.now)

    def get_batch(self, batch_id: str) -> RemoteBatch:
        return self._call("get_batch", lambda: message_batch(self.state.get(batch_id, BASE_URL)))

    def list_batches(self) -> Iterator[RemoteBatch]:
        for page in self.batch_pages():
            yield from page

    def batch_pages(self, *, since: int | None = None) -> Iterator[list[RemoteBatch]]:
        page = self.state.page(base_url=BASE_URL, limit=10_000)
        yield [message_batch(item) for item in page["data"]]

    def cancel_batch(self, batch_id: str) -> RemoteBatch:
        return self._call(
            "cancel_batch", lambda: message_batch(self.state.cancel(batch_id, BASE_URL))
        )

    def download(self, file_id: str, destination: Path) -> int:
        def copy() -> int:
            source, size = self.state.open_results(file_id)
            destination.parent.mkdir(parents=True, exist_ok=True)
            partial = destination.with_name(destination.name + ".part")
            with source, partial.open("wb") as out:
                shutil.copyfileobj(source, out)
            partial.replace(destination)
            return size

        return self._call("download", copy)

    def upload(self, path: Path, filename: str) -> RemoteFile:
        raise AssertionError("an inline provider is never asked to upload")

    def find_file(self, filename: str, size: int, *, within: float) -> RemoteFile | None:
        raise AssertionError("an inline provider is never asked for a file")

    def create_batch(
        self,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: Mapping[str, str],
    ) -> RemoteBatch:
        raise AssertionError("an inline provider creates with create_inline")

    def find_batch(self, key: str, value: str, *, input_file_id: str) -> RemoteBatch | None:
        raise AssertionError("an inline provider's batches carry no metadata")

    def close(self) -> None:
        """Nothing to close: the state lives as long as the test (``discard`` removes it)."""

    def discard(self) -> None:
        shutil.rmtree(self._root, ignore_errors=True)

    # --- what a test looks at -------------------------------------------------------------------
    def batches(self) -> list[RemoteBatch]:
        """Every batch the emulator holds, as of now, oldest first."""
        found = [message_batch(b) for b in self.state.view(BASE_URL).values()]
        return sorted(found, key=lambda b: (b.created_at, b.id))

    def count(self, method: str) -> int:
        return self.calls.count(method)

    def create_foreign(self, count: int) -> RemoteBatch:
        """A batch another tool made on the same account, of ``count`` requests."""
        pairs = [
            (f"other-{i}", {"model": "claude-haiku-4-5", "max_tokens": 8, "messages": []})
            for i in range(count)
        ]
        return message_batch(self.state.create(pairs, self.settings, BASE_URL))
