"""Fault injection: make chosen /v1 requests fail the way real networks and servers do.

Kinds:

- ``429``: a rate-limit error with a ``Retry-After`` header (``retry_after`` seconds) and
  error code ``rate_limit_exceeded`` (``rate_limit_error`` on Anthropic's paths).

Error replies take the shape of the API whose path was called (``anthropic.fault_response``
for ``/v1/messages``).
- ``500`` / ``503``: server errors.
- ``529``: Anthropic's ``overloaded_error`` (on OpenAI's paths, a 529 with the 503's body).
- ``drop``: close the connection without reading further or replying; nothing is done.
- ``slow``: wait ``delay`` seconds, then handle the request normally.
- ``lost_reply``: handle the request (a file or batch IS created) and then close the
  connection without replying. A client that retries blindly creates a duplicate: this is
  the hazard of the real API, whose SDK sends no idempotency key.

Each request draws one random number (from a generator seeded with ``fault_seed``) and walks
the faults that match it, adding up their rates; the first fault whose running total exceeds
the draw is applied. So ``[Fault("429", rate=0.1), Fault("500", rate=0.1)]`` fails 20% of
requests, half of each kind.
"""

from __future__ import annotations

import fnmatch
import random
import threading
from dataclasses import dataclass
from typing import Any, Literal, get_args

FaultKind = Literal["429", "500", "503", "529", "drop", "slow", "lost_reply"]
FAULT_KINDS: tuple[str, ...] = get_args(FaultKind)


@dataclass(frozen=True)
class Fault:
    """One fault rule.

    ``method`` (e.g. ``"POST"``) and ``path`` (a glob such as ``"/v1/batches"`` or
    ``"/v1/files*"``, matched against the path without the query) limit which requests it
    hits; None matches all. ``rate`` is the fraction of matching requests hit; ``count``, if
    set, is how many requests it hits in all before it stops.
    """

    kind: FaultKind
    method: str | None = None
    path: str | None = None
    count: int | None = None
    rate: float = 1.0
    retry_after: float = 1.0
    delay: float = 1.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; expected one of {FAULT_KINDS}")
        if not 0 <= self.rate <= 1:
            raise ValueError("rate must be between 0 and 1")
        if self.count is not None and self.count < 0:
            raise ValueError("count must be >= 0")
        if self.retry_after < 0 or self.delay < 0:
            raise ValueError("retry_after and delay must be >= 0")

    def matches(self, method: str, path: str) -> bool:
        """Whether this rule applies to a request (rate and count aside)."""
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path is None or fnmatch.fnmatchcase(path, self.path)

    def to_json(self) -> dict[str, Any]:
        """The rule as JSON, as the control API takes it."""
        return {
            "kind": self.kind,
            "method": self.method,
            "path": self.path,
            "count": self.count,
            "rate": self.rate,
            "retry_after": self.retry_after,
            "delay": self.delay,
        }

    @classmethod
    def from_json(cls, data: Any) -> Fault:
        """Build a rule from the control API's JSON; raises ValueError if malformed."""
        if not isinstance(data, dict):
            raise ValueError("a fault must be a JSON object")
        unknown = set(data) - {"kind", "method", "path", "count", "rate", "retry_after", "delay"}
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        kind = str(data.get("kind"))
        if kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {kind!r}; expected one of {FAULT_KINDS}")
        try:
            return cls(
                kind=kind,  # type: ignore[arg-type]  # checked just above
                method=_opt_str(data.get("method")),
                path=_opt_str(data.get("path")),
                count=None if data.get("count") is None else int(data["count"]),
                rate=float(data.get("rate", 1.0)),
                retry_after=float(data.get("retry_after", 1.0)),
                delay=float(data.get("delay", 1.0)),
            )
        except (TypeError, ValueError) as exc:
            raise ValueError(f"bad fault {data!r}: {exc}") from exc


def _opt_str(value: Any) -> str | None:
    return None if value is None else str(value)


class FaultInjector:
    """Decides, request by request, which fault (if any) applies. Thread-safe."""

    def __init__(self, faults: list[Fault] | None = None, *, seed: int = 0) -> None:
        self._lock = threading.Lock()
        self._random = random.Random(seed)
        self._faults: list[Fault] = []
        self._remaining: list[int | None] = []
        self.set(faults or [], seed=seed)

    def set(self, faults: list[Fault], *, seed: int | None = None) -> None:
        """Replace every rule (an empty list clears them); optionally reseed."""
        with self._lock:
            self._faults = list(faults)
            self._remaining = [f.count for f in faults]
            if seed is not None:
                self._random.seed(seed)

    def active(self) -> list[dict[str, Any]]:
        """The rules with the hits each has left (``remaining`` None = unlimited)."""
        with self._lock:
            return [
                {**f.to_json(), "remaining": left}
                for f, left in zip(self._faults, self._remaining, strict=True)
            ]

    def pick(self, method: str, path: str) -> Fault | None:
        """The fault to apply to this request, if any (and count it as used)."""
        with self._lock:
            if not self._faults:
                return None
            candidates = [
                i
                for i, f in enumerate(self._faults)
                if f.matches(method, path) and self._remaining[i] != 0
            ]
            if not candidates:
                return None
            draw = self._random.random()
            total = 0.0
            for i in candidates:
                total += self._faults[i].rate
                if draw < total:
                    left = self._remaining[i]
                    if left is not None:
                        self._remaining[i] = left - 1
                    return self._faults[i]
            return None
