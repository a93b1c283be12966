"""How the requests of a running batch progress over emulated time.

Shared by both emulated APIs (OpenAI's Batches in ``state``, Anthropic's Message Batches in
``message_batches``): requests finish at ``processing_rate`` per emulated second from
``start``; ``expire_after_fraction`` stalls them part-way; a batch not done within
``completion_window`` of its creation expires; a cancel stops processing at once.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from batchctl.emulator.settings import EmulatorSettings


@dataclass(frozen=True)
class Progress:
    """The timeline of the ``total`` requests of a batch created at ``created`` that started
    processing at ``start``, with the settings in force when it was created."""

    timing: EmulatorSettings
    created: float
    start: float
    total: int

    def cap(self) -> int:
        """How many requests can ever finish (fewer than all with expire_after_fraction)."""
        fraction = self.timing.expire_after_fraction
        if fraction is None:
            return self.total
        return math.floor(fraction * self.total)

    def done_at(self, t: float, stop_at: float | None = None) -> int:
        """Requests finished by emulated time ``t`` (processing stopped at ``stop_at``)."""
        if stop_at is not None:
            t = min(t, stop_at)
        # The epsilon absorbs float error at Unix-time magnitudes (9.8 * 5 = 48.99999...).
        done = math.floor(max(0.0, t - self.start) * self.timing.processing_rate + 1e-6)
        return min(done, self.cap(), self.total)

    def end(self) -> tuple[bool, float]:
        """When processing ends: ``(True, t)`` if the last request finishes at ``t`` inside the
        window, ``(False, t)`` if the batch expires at ``t`` with requests left."""
        if self.cap() >= self.total:
            all_done = self.start + self.total / self.timing.processing_rate
        else:
            all_done = math.inf
        deadline = self.created + self.timing.completion_window
        if all_done < deadline:
            return True, all_done
        return False, max(deadline, self.start)
