"""Request and result files of the batch tests: one chat request line, JSONL written and read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

CHAT = "/v1/chat/completions"


def request(
    custom_id: str, *, model: str = "gpt-4o-mini", text: str | None = None, **body: Any
) -> dict[str, Any]:
    """One valid chat-completions request line; ``body`` adds fields (``prompt_cache_key``, ...)."""
    content = text if text is not None else f"say something about {custom_id}"
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": CHAT,
        "body": {"model": model, "messages": [{"role": "user", "content": content}], **body},
    }


def write_jsonl(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The lines of a JSONL file, each a JSON value (a blank line is an error)."""
    return [json.loads(line) for line in path.read_text().splitlines()]
