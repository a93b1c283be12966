"""The emulator's own clock: wall time plus an offset that ``advance()`` grows."""

from __future__ import annotations

import threading
import time


class Clock:
    """Emulated Unix time, in seconds.

    It starts at the real time plus ``offset`` (a server whose clock differs from the host's).
    In running mode it moves with the wall clock; in manual mode it stands still. ``advance()``
    moves it forward in either mode.
    """

    def __init__(self, *, manual: bool = False, offset: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._epoch = time.time() + offset
        self._mono0 = time.monotonic()
        self._frozen_elapsed = 0.0
        self._offset = 0.0
        self._manual = manual

    def _elapsed(self) -> float:
        return self._frozen_elapsed if self._manual else time.monotonic() - self._mono0

    def now(self) -> float:
        """The current emulated time."""
        with self._lock:
            return self._epoch + self._elapsed() + self._offset

    def advance(self, seconds: float) -> float:
        """Move emulated time forward by ``seconds`` (>= 0); returns the new time."""
        if seconds < 0:
            raise ValueError("time only moves forward")
        with self._lock:
            self._offset += seconds
            return self._epoch + self._elapsed() + self._offset

    @property
    def manual(self) -> bool:
        """Whether the clock only moves with ``advance()``."""
        return self._manual

    def set_manual(self, manual: bool) -> None:
        """Switch modes without a jump in emulated time."""
        with self._lock:
            if manual and not self._manual:
                self._frozen_elapsed = time.monotonic() - self._mono0
            elif not manual and self._manual:
                self._mono0 = time.monotonic() - self._frozen_elapsed
            self._manual = manual
