"""Ctrl-C, SIGTERM and SIGHUP in foreground commands: stop cleanly, never mid-write."""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)  # SIGHUP: the terminal was closed


@contextmanager
def stop_on_signals(event: threading.Event, *, second_interrupts: bool = False) -> Iterator[None]:
    """Within the block, Ctrl-C, SIGTERM and SIGHUP set ``event`` for the work to notice.

    With ``second_interrupts``, a second signal raises ``KeyboardInterrupt`` at once: whoever
    asks twice is not kept waiting for a slow call to end. Off the main thread (where Python
    cannot set handlers) the block runs with the handlers as they are.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        if second_interrupts and event.is_set():
            raise KeyboardInterrupt
        event.set()

    previous = {s: signal.signal(s, handler) for s in SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)
