"""The processor protocol: what a ``python`` job implements and what it is given.

A processor is named in the config as ``module:attr`` (or registered under the entry-point group
``batchctl.processors``). ``attr`` is either a function ``process(ctx)`` or an object (or a class
with a no-argument constructor) that has a ``process(ctx)`` method.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
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


# --- finding a processor by its name (config checks and python jobs both need it) -------------

ENTRY_POINT_GROUP = "batchctl.processors"

ProcessFunction = Callable[[Any], Any]  # called with the attempt's RunContext
_resolved: dict[tuple[str, Path], ProcessFunction] = {}


class ProcessorImportError(Exception):
    """The processor named in the config cannot be loaded; the message says why."""


def resolve_processor(spec: str, base_dir: Path) -> ProcessFunction:
    """The callable that runs one attempt for ``spec``, loaded once per process."""
    key = (spec, base_dir)
    if key not in _resolved:
        _resolved[key] = _as_function(spec, _load(spec, base_dir))
    return _resolved[key]


def _load(spec: str, base_dir: Path) -> Any:
    if ":" not in spec:
        return _load_entry_point(spec)
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ProcessorImportError(f'expected "module:attr", got {spec!r}')
    directory = str(base_dir)
    if directory not in sys.path:
        sys.path.insert(0, directory)
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        raise ProcessorImportError(f"cannot import {spec!r}: {exc}") from None
    except Exception as exc:  # the user's module failed while importing
        raise ProcessorImportError(
            f"cannot import {spec!r}: importing {module_name!r} raised {type(exc).__name__}: {exc}"
        ) from None
    target: Any = module
    for part in attr.split("."):
        if not hasattr(target, part):
            raise ProcessorImportError(f"cannot import {spec!r}: {module_name!r} has no {attr!r}")
        target = getattr(target, part)
    return target


def _load_entry_point(name: str) -> Any:
    from importlib.metadata import entry_points

    found = entry_points(group=ENTRY_POINT_GROUP, name=name)
    if not found:
        raise ProcessorImportError(
            f'{name!r} is neither "module:attr" nor an entry point in the group '
            f"{ENTRY_POINT_GROUP!r}"
        )
    try:
        return next(iter(found)).load()
    except Exception as exc:
        raise ProcessorImportError(f"cannot load entry point {name!r}: {exc}") from None


def _as_function(spec: str, target: Any) -> ProcessFunction:
    if isinstance(target, type):
        try:
            target = target()
        except Exception as exc:
            raise ProcessorImportError(f"cannot create {spec!r}(): {exc}") from None
    method = getattr(target, "process", None)
    if callable(method):
        return method  # type: ignore[no-any-return]
    if callable(target):
        return target  # type: ignore[no-any-return]
    raise ProcessorImportError(f"{spec!r} is neither a function nor an object with process(ctx)")
