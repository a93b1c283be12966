"""A ``Provider`` in process: the project's emulator state machine driven directly, without HTTP.

The fast layer's stand-in for the OpenAI API. It is not a mock: every call goes through the
emulator's own ``State`` (the same validation, timeline, results and errors the HTTP emulator
serves), on a manual emulator ``Clock`` that the test moves. Only the SDK and the wire are left
out; the SDK over HTTP is checked by the slow layer (tests/batches, tests/emulator).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from batchctl.emulator.clock import Clock
from batchctl.emulator.errors import ApiError
from batchctl.emulator.settings import EmulatorSettings
from batchctl.emulator.state import State
from batchctl.providers.base import ProviderError, RemoteBatch, RemoteFile, RequestCounts

T = TypeVar("T")


class FakeClock:
    """One clock for both sides: the emulator's (Unix seconds) and batchctl's (``datetime``).
    It stands still until ``advance`` moves it; ``sleep`` advances it (a wait costs no time)."""

    def __init__(self) -> None:
        self.emulator = Clock(manual=True)

    def __call__(self) -> datetime:
        return datetime.fromtimestamp(self.emulator.now(), UTC)

    def advance(self, seconds: float) -> None:
        self.emulator.advance(seconds)

    def sleep(self, seconds: float) -> None:
        self.emulator.advance(max(0.0, seconds))


class EmulatedProvider:
    """The ``Provider`` protocol over an in-process emulator ``State``.

    ``lose_reply(method)`` makes the next call of that method take effect and then raise, as a
    process killed (or a connection dropped) after the request left would see it."""

    name = "openai"
    uploads = True

    def __init__(self, clock: FakeClock, settings: EmulatorSettings | None = None) -> None:
        self.clock = clock
        self.state = State(settings or EmulatorSettings(manual_clock=True), clock.emulator)
        self.calls: list[str] = []
        self._lost: dict[str, BaseException] = {}

    def lose_reply(self, method: str, error: BaseException | None = None) -> None:
        self._lost[method] = error or ProviderError("connection dropped", transient=True)

    def _call(self, method: str, action: Callable[[], T]) -> T:
        self.calls.append(method)
        try:
            result = action()
        except ApiError as exc:
            raise ProviderError(
                f"OpenAI API: HTTP {exc.status}: {exc.message}", status=exc.status
            ) from exc
        lost = self._lost.pop(method, None)
        if lost is not None:
            raise lost
        return result

    # --- files ----------------------------------------------------------------------------------
    def upload(self, path: Path, filename: str) -> RemoteFile:
        def create() -> RemoteFile:
            arrived = self.state.upload_dir / f"upload-{len(self.calls)}"
            shutil.copyfile(path, arrived)  # the state moves the upload into its own store
            size = arrived.stat().st_size
            return _file(
                self.state.create_file(
                    arrived, filename=filename, purpose="batch", size=size, expires_after=None
                )
            )

        return self._call("upload", create)

    def find_file(self, filename: str, size: int, *, within: float) -> RemoteFile | None:
        def find() -> RemoteFile | None:
            floor = self.clock.emulator.now() - within
            for item in self.state.list_files(purpose="batch")["data"]:
                if item["filename"] == filename and item["bytes"] == size:
                    return _file(item)
                if item["created_at"] < floor:
                    return None
            return None

        return self._call("find_file", find)

    def download(self, file_id: str, destination: Path) -> int:
        def copy() -> int:
            source, size = self.state.file_content(file_id)
            destination.parent.mkdir(parents=True, exist_ok=True)
            partial = destination.with_name(destination.name + ".part")
            shutil.copyfile(source, partial)
            partial.replace(destination)
            return size

        return self._call("download", copy)

    # --- batches --------------------------------------------------------------------------------
    def create_batch(
        self,
        *,
        input_file_id: str,
        endpoint: str,
        completion_window: str,
        metadata: Mapping[str, str],
    ) -> RemoteBatch:
        payload = {
            "input_file_id": input_file_id,
            "endpoint": endpoint,
            "completion_window": completion_window,
            "metadata": dict(metadata),
        }
        return self._call("create_batch", lambda: _batch(self.state.create_batch(payload)))

    def find_batch(self, key: str, value: str, *, input_file_id: str) -> RemoteBatch | None:
        def find() -> RemoteBatch | None:
            for batch in self.list_batches():
                if batch.metadata.get(key) == value and batch.input_file_id == input_file_id:
                    return batch
            return None

        return self._call("find_batch", find)

    def get_batch(self, batch_id: str) -> RemoteBatch:
        return self._call("get_batch", lambda: _batch(self.state.get_batch(batch_id)))

    def list_batches(self) -> Iterator[RemoteBatch]:
        page = self.state.list_batches(limit=10_000)
        return iter([_batch(item) for item in page["data"]])

    def cancel_batch(self, batch_id: str) -> RemoteBatch:
        return self._call("cancel_batch", lambda: _batch(self.state.cancel_batch(batch_id)))

    def close(self) -> None:
        """Nothing to close: the state lives as long as the test (``discard`` removes it)."""

    def discard(self) -> None:
        self.state.close()

    # --- what a test looks at -------------------------------------------------------------------
    def batches(self) -> list[RemoteBatch]:
        """Every batch the emulator holds, as of now, oldest first."""
        return sorted(
            (_batch(b) for b in self.state.batches_view().values()), key=lambda b: b.created_at
        )

    def count(self, method: str) -> int:
        return self.calls.count(method)


def _file(item: Mapping[str, Any]) -> RemoteFile:
    return RemoteFile(
        id=item["id"],
        filename=item["filename"],
        bytes=item["bytes"],
        purpose=item["purpose"],
        created_at=item["created_at"],
    )


def _batch(item: Mapping[str, Any]) -> RemoteBatch:
    counts = item["request_counts"] or {}
    errors = (item.get("errors") or {}).get("data") or []
    status = item["status"]
    ended = (
        item.get(f"{status}_at")
        if status in ("completed", "failed", "expired", "cancelled")
        else None
    )
    return RemoteBatch(
        id=item["id"],
        status=status,
        endpoint=item["endpoint"],
        input_file_id=item["input_file_id"],
        output_file_id=item["output_file_id"] or None,
        error_file_id=item["error_file_id"] or None,
        created_at=item["created_at"],
        expires_at=item["expires_at"],
        completed_at=item["completed_at"],
        request_counts=RequestCounts(
            counts.get("total", 0), counts.get("completed", 0), counts.get("failed", 0)
        ),
        metadata=dict(item.get("metadata") or {}),
        errors=tuple(errors),
        usage=item.get("usage"),
        model=item.get("model"),
        ended_at=None if ended is None else int(ended),
    )
