"""Helpers shared by the tests of the emulated Anthropic Message Batches API."""

from __future__ import annotations

from typing import Any

import anthropic
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse

from batchctl.emulator import Emulator

MODEL = "claude-haiku-4-5"


def message_request(custom_id: str, text: str | None = None, **params: Any) -> dict[str, Any]:
    """One request of a Message Batch: ``params`` override the defaults (None drops one)."""
    content = text if text is not None else f"Say something about item {custom_id}."
    body: dict[str, Any] = {
        "model": MODEL,
        "max_tokens": 256,
        "messages": [{"role": "user", "content": content}],
    }
    body.update(params)
    return {"custom_id": custom_id, "params": {k: v for k, v in body.items() if v is not None}}


def run_to_end(
    emu: Emulator, client: anthropic.Anthropic, batch_id: str, *, step: float = 1.0
) -> MessageBatch:
    """Poll the batch through the SDK, advancing emulated time, until it has ended."""
    for _ in range(10_000):
        batch = client.messages.batches.retrieve(batch_id)
        if batch.processing_status == "ended":
            return batch
        emu.advance(step)
    raise AssertionError(f"batch {batch_id} never ended")


def results(client: anthropic.Anthropic, batch_id: str) -> list[MessageBatchIndividualResponse]:
    """The result lines of an ended batch, through the SDK's ``results()``."""
    return list(client.messages.batches.results(batch_id))


def result_types(client: anthropic.Anthropic, batch_id: str) -> dict[str, str]:
    """custom_id -> result type (succeeded, errored, canceled, expired)."""
    return {line.custom_id: line.result.type for line in results(client, batch_id)}
