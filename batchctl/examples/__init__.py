"""Example processors used by ``sample-config.toml`` and the README's demo.

They do real (small) work so the demo shows progress, partial results and retries; read them as
templates for your own processors.
"""

from __future__ import annotations

import time

from batchctl.processing import ProcessResult, RunContext

DOCUMENTS = {
    "firm-a": ["quarterly report", "board minutes", "", "risk memo", "audit letter"],
    "firm-b": ["customer survey", "pricing sheet", "onboarding guide"],
}


def count_words(ctx: RunContext) -> ProcessResult:
    """Count the words of each document of the run's scope; an empty document is a failed item.

    Options: ``delay`` (seconds per document, to make progress visible), ``price_per_1k``
    (a pretend token price, to show cost accounting).
    """
    documents = DOCUMENTS.get(ctx.scope or "", ["one", "two three"])
    delay = float(ctx.options.get("delay", 0.0))
    price = float(ctx.options.get("price_per_1k", 0.0))
    result = ProcessResult()
    for index, text in enumerate(documents, start=1):
        if ctx.cancelled:
            ctx.log("warning", "cancelled; stopping early", done=index - 1)
            break
        time.sleep(delay)
        words = len(text.split())
        if words == 0:
            result.items_failed += 1
            result.errors.append(f"document {index} is empty")
        else:
            result.items_processed += 1
            result.total_tokens += words * 3
            ctx.log("info", "counted", document=index, words=words)
        ctx.progress(index, len(documents))
    result.total_cost = result.total_tokens / 1000 * price
    return result


def flaky(ctx: RunContext) -> ProcessResult:
    """Fails its first attempt and succeeds on the next: shows retries with backoff."""
    if ctx.attempt == 1:
        raise ConnectionError("upstream service unavailable (this example fails once)")
    ctx.log("info", "succeeded on retry", attempt=ctx.attempt)
    return ProcessResult(items_processed=1)


def noop(ctx: RunContext) -> ProcessResult:
    """Does nothing, successfully: for benchmarks and smoke tests."""
    return ProcessResult(items_processed=1)
