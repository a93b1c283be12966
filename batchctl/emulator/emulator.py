"""The Emulator: an emulated API server running in a background thread, and ``serve()``."""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from types import FrameType, TracebackType
from typing import Any

from batchctl.emulator.backend import Backend
from batchctl.emulator.errors import ApiError
from batchctl.emulator.faults import Fault
from batchctl.emulator.requestlog import RequestRecord
from batchctl.emulator.server import EmulatorHTTPServer
from batchctl.emulator.settings import EmulatorSettings


class Emulator:
    """An emulated OpenAI Files + Batches API, listening from construction until ``stop()``.

    ``port=0`` picks a free port. Use it as a context manager to stop it at the end.
    """

    def __init__(
        self,
        settings: EmulatorSettings | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        faults: list[Fault] | None = None,
    ) -> None:
        self._backend = Backend(settings or EmulatorSettings(), faults)
        try:
            self._server = EmulatorHTTPServer((host, port), self._backend)
        except BaseException:
            self._backend.close()
            raise
        self._stopped = False
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"batchctl-emulator:{self.port}",
            daemon=True,
        )
        self._thread.start()

    # ------------------------------------------------------------ addresses

    @property
    def host(self) -> str:
        """The address the server listens on."""
        return str(self._server.server_address[0])

    @property
    def port(self) -> int:
        """The port the server listens on."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """The root URL, e.g. ``http://127.0.0.1:41234``: the Anthropic SDK's base URL (what
        ``ANTHROPIC_BASE_URL`` should be)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The API base URL (what ``OPENAI_BASE_URL`` should be), ending in ``/v1``."""
        return f"{self.url}/v1"

    # ----------------------------------------------------------- inspection

    @property
    def requests(self) -> list[RequestRecord]:
        """Every HTTP request received so far, oldest first."""
        return self._backend.log.records()

    @property
    def files(self) -> dict[str, dict[str, Any]]:
        """A snapshot of every live file's FileObject, by id."""
        return self._backend.state.files_view()

    @property
    def batches(self) -> dict[str, dict[str, Any]]:
        """A snapshot of every batch's Batch object as of now, by id."""
        return self._backend.state.batches_view()

    @property
    def message_batches(self) -> dict[str, dict[str, Any]]:
        """A snapshot of every Anthropic Message Batch as of now, by id."""
        return self._backend.message_batches.view(self.url)

    def file_content(self, file_id: str) -> bytes:
        """The bytes of a stored file (KeyError if there is no such file)."""
        try:
            stream, _ = self._backend.state.open_file(file_id)
        except ApiError:
            raise KeyError(file_id) from None
        with stream:
            data: bytes = stream.read()
        return data

    def summary(self) -> dict[str, Any]:
        """Counts of files by purpose and batches by status (as ``GET /_emulator/state``)."""
        return self._backend.summary()

    @property
    def now(self) -> float:
        """The current emulated Unix time."""
        return self._backend.clock.now()

    # -------------------------------------------------------------- control

    def advance(self, seconds: float) -> float:
        """Move emulated time forward by ``seconds``; returns the new emulated time."""
        return self._backend.advance(seconds)

    def set_faults(self, faults: list[Fault], *, seed: int | None = None) -> None:
        """Replace the fault rules (an empty list clears them); optionally reseed."""
        self._backend.faults.set(faults, seed=seed)

    def clear_faults(self) -> None:
        """Remove every fault rule."""
        self._backend.faults.set([])

    @property
    def settings(self) -> EmulatorSettings:
        """The settings in force."""
        return self._backend.settings

    def update_settings(self, **changes: Any) -> EmulatorSettings:
        """Change some settings; batches already created keep the timing they started with."""
        settings = self._backend.settings.updated(changes)
        self._backend.update_settings(settings)
        return settings

    def reset(self) -> None:
        """Forget files, batches, faults and the request log."""
        self._backend.reset()

    # ------------------------------------------------------------- lifetime

    def stop(self) -> None:
        """Stop serving, close open connections and delete the temporary state. Idempotent."""
        if self._stopped:
            return
        self._stopped = True
        self._server.shutdown()
        self._server.server_close()
        self._server.close_connections()
        self._thread.join(timeout=5)
        self._backend.close()

    def __enter__(self) -> Emulator:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve(
    host: str = "127.0.0.1",
    port: int = 8089,
    settings: EmulatorSettings | None = None,
    *,
    on_ready: Callable[[Emulator], None] | None = None,
) -> None:
    """Run an emulator until KeyboardInterrupt or SIGTERM.

    ``on_ready`` is called with the started Emulator (e.g. to print ``emu.base_url``).
    SIGTERM is only handled when called from the main thread.
    """
    stop = threading.Event()
    previous: Any = None
    in_main = threading.current_thread() is threading.main_thread()

    def on_sigterm(signum: int, frame: FrameType | None) -> None:
        stop.set()

    if in_main:
        previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        with Emulator(settings, host, port) as emu:
            if on_ready is not None:
                on_ready(emu)
            try:
                # A timed wait keeps the main thread responsive to Ctrl-C.
                while not stop.wait(0.5):
                    pass
            except KeyboardInterrupt:
                pass
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)
