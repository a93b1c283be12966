"""batchctl: run batch jobs reliably.

The public API for processor authors lives here::

    from batchctl import ProcessResult, RunContext

    def process(ctx: RunContext) -> ProcessResult:
        ...
        return ProcessResult(items_processed=10)

Everything else in the package is internal and may change between releases.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from batchctl.processing import Processor, ProcessResult, RunContext

__version__ = "0.1.0"

__all__ = ["ProcessResult", "Processor", "RunContext", "__version__"]


def __getattr__(name: str) -> Any:
    # Loaded on first use, so that the CLI's start-up does not pay for the processor API.
    if name in ("ProcessResult", "Processor", "RunContext"):
        from batchctl import processing

        return getattr(processing, name)
    raise AttributeError(f"module 'batchctl' has no attribute {name!r}")
