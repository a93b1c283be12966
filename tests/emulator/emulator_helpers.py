"""Helpers shared by the emulator tests: input lines, uploads, waiting for a batch."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import openai
from openai.types import Batch, FileObject

from batchctl.emulator import Emulator

FINAL = {"completed", "failed", "expired", "cancelled"}


def chat_line(
    custom_id: str,
    *,
    model: str = "gpt-4o-mini",
    text: str | None = None,
    url: str = "/v1/chat/completions",
) -> dict[str, Any]:
    """One chat-completions request line of a batch input file."""
    content = text if text is not None else f"Say something about item {custom_id}."
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": url,
        "body": {"model": model, "messages": [{"role": "user", "content": content}]},
    }


def jsonl(lines: Iterable[dict[str, Any]]) -> bytes:
    """Encode lines as JSONL."""
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def upload(client: openai.OpenAI, data: bytes, name: str = "input.jsonl") -> FileObject:
    """Upload a batch input file."""
    return client.files.create(file=(name, data), purpose="batch")


def start_batch(
    client: openai.OpenAI,
    lines: Iterable[dict[str, Any]],
    endpoint: str = "/v1/chat/completions",
) -> Batch:
    """Upload ``lines`` and create a batch on them."""
    uploaded = upload(client, jsonl(lines))
    return client.batches.create(
        input_file_id=uploaded.id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window="24h",
    )


def run_to_end(emu: Emulator, client: openai.OpenAI, batch_id: str, *, step: float = 1.0) -> Batch:
    """Poll the batch through the SDK, advancing emulated time, until it is final."""
    for _ in range(10_000):
        batch = client.batches.retrieve(batch_id)
        if batch.status in FINAL:
            return batch
        emu.advance(step)
    raise AssertionError(f"batch {batch_id} never finished")


def read_jsonl(client: openai.OpenAI, file_id: str) -> list[dict[str, Any]]:
    """Download a file through the SDK and parse its lines."""
    text = client.files.content(file_id).text
    return [json.loads(line) for line in text.splitlines()]
