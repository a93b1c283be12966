"""batchctl: run batch jobs reliably.

The public API for processor authors lives here::

    from batchctl import ProcessResult, RunContext

    def process(ctx: RunContext) -> ProcessResult:
        ...
        return ProcessResult(items_processed=10)

Everything else in the package is internal and may change between releases.
"""

from batchctl.processing import Processor, ProcessResult, RunContext

__version__ = "0.1.0"

__all__ = ["ProcessResult", "Processor", "RunContext", "__version__"]
