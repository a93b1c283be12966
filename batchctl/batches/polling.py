"""How often to look at batches in flight: often at first and after a change, then less.

A batch can end seconds after it is created, or take hours. Polling at ``[openai] poll_interval``
from the start would see a 2-second batch done only 30 s later; polling every second for a day
would spend the API's rate limits for nothing. So the pause starts at ``FIRST_PAUSE_S``, doubles
after each look that finds nothing changed, and is capped at the configured interval; a change of
any part's status (``validating`` → ``in_progress`` → ``finalizing`` → ...) starts it again.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable

from batchctl.records import Part

FIRST_PAUSE_S = 1.0


class Backoff:
    """The pauses between looks at something that changes: ``FIRST_PAUSE_S``, then doubling up
    to ``ceiling``; back to the first pause whenever the watched state differs."""

    def __init__(self, ceiling: float, first: float = FIRST_PAUSE_S) -> None:
        self.ceiling = max(0.0, ceiling)
        self.first = min(first, self.ceiling)
        self._pause = self.first
        self._state: Hashable = None

    def pause(self, state: Hashable) -> float:
        """The pause before the next look, given what this look saw."""
        if state != self._state:
            self._state = state
            self._pause = self.first
        else:
            self._pause = min(self.ceiling, self._pause * 2)
        return self._pause


def parts_state(parts: Iterable[Part]) -> Hashable:
    """What a change of which resets the backoff: each part and its remote status."""
    return tuple((p.id, p.status) for p in parts)
