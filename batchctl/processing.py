"""The processor protocol: what a ``python`` job implements and what it is given.

A processor is named in the config as ``module:attr`` (or registered under the entry-point group
``batchctl.processors``). ``attr`` is either a function ``process(ctx)`` or an object (or a class
with a no-argument constructor) that has a ``process(ctx)`` method.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


@dataclass
class ProcessResult:
    """What a processor reports when it returns.

    ``items_processed`` counts the items that succeeded and ``items_failed`` the ones that did not:
    a run with both is ``partial``, one with only failures is ``failed``.
    """

    items_processed: int = 0
    items_failed: int = 0
    total_tokens: int = 0
    total_cost: float = 0.0
    errors: list[str] = field(default_factory=list)


class RunContext(Protocol):
    """What a processor is handed: who it runs for and how to report back."""

    @property
    def run_id(self) -> int: ...

    @property
    def job(self) -> str: ...

    @property
    def scope(self) -> str | None: ...

    @property
    def attempt(self) -> int: ...

    @property
    def options(self) -> dict[str, Any]: ...

    @property
    def env(self) -> dict[str, str]: ...

    @property
    def cancelled(self) -> bool:
        """True once the run is being cancelled or timed out: stop early and return."""
        ...

    def progress(self, done: int, total: int | None = None) -> None: ...

    def log(self, level: str, message: str, **fields: Any) -> None: ...


@runtime_checkable
class Processor(Protocol):
    """An object whose ``process`` method does one run's work."""

    def process(self, ctx: RunContext) -> ProcessResult | None: ...
