"""Synthetic replies of Anthropic's Messages API, for the requests of a Message Batch.

Like ``responses`` (the OpenAI bodies), everything is deterministic and token counts are
estimates (about four characters a token). The rules a test can rely on:

- ``params`` are checked as the real API checks them after a batch is created: a missing
  ``model``, ``max_tokens`` or ``messages``, ``max_tokens`` below 1, ``stream: true`` and the
  fields batches refuse (``speed``, ``store``, ...) make the request ``errored`` with an
  ``invalid_request_error``.
- A model whose name starts with ``nonexistent`` gives ``not_found_error``.
- A request whose ``params`` contain the text ``emulator-error:<type>`` (anywhere, e.g. in a
  message) fails with that error type (``overloaded_error``, ``api_error``,
  ``rate_limit_error``, ``invalid_request_error``, ... any of ``ERROR_TYPES``).
- ``request_failure_rate`` fails that fraction of requests (by a hash of custom_id), half
  with ``api_error`` and half with ``invalid_request_error``.
- Prompt caching: the prompt up to the last block carrying ``cache_control`` (tools, then
  system, then messages, as the API orders its cache prefix) is cached when it is at least
  ``CACHE_MIN_TOKENS`` long. The first request of a batch (in input order) with a given
  prefix writes it (``cache_creation_input_tokens``), later ones read it
  (``cache_read_input_tokens``); ``input_tokens`` counts only the uncached rest, as the API's
  usage does.
- The answer echoes the last user message; past ``max_tokens`` it is cut and ``stop_reason``
  is ``max_tokens``.
"""

from __future__ import annotations

import json
import re
from typing import Any

from batchctl.emulator.responses import (
    Outcome,
    digest,
    echo,
    estimate_tokens,
    last_user_text,
    unit_fraction,
)

#: Error types of the API (SDK ``types/shared/error_type.py``) with their HTTP statuses.
ERROR_STATUS: dict[str, int] = {
    "invalid_request_error": 400,
    "authentication_error": 401,
    "billing_error": 402,
    "permission_error": 403,
    "not_found_error": 404,
    "rate_limit_error": 429,
    "timeout_error": 504,
    "api_error": 500,
    "overloaded_error": 529,
}
ERROR_TYPES: tuple[str, ...] = tuple(ERROR_STATUS)
#: The shortest prompt prefix the API caches (Sonnet's; Haiku's and Opus's are longer).
CACHE_MIN_TOKENS = 1024

_MARKER = re.compile(r"emulator-error:([a-z_]+)")
# Fields a Messages request may carry but a batch request may not (GUIDE-A).
_REFUSED_FIELDS = ("speed", "store", "previous_thread_event_id", "cache_hint", "context_hint")
_MARKER_MESSAGES = {
    "overloaded_error": "Overloaded",
    "api_error": "Internal server error",
    "rate_limit_error": "This request would exceed the rate limit for your organization.",
    "timeout_error": "Request timed out",
}


def error(error_type: str, message: str) -> Outcome:
    """An ``errored`` outcome; its body is the inner ``{"type", "message"}`` of the error."""
    return Outcome(ERROR_STATUS[error_type], {"type": error_type, "message": message})


def run_message(
    params: dict[str, Any],
    custom_id: str,
    *,
    key: str,
    cached_prefixes: set[str],
    failure_rate: float = 0.0,
    seed: int = 0,
) -> Outcome:
    """Execute one request of a Message Batch, synthetically.

    ``key`` (hex) seeds the message id; ``cached_prefixes`` holds the cache prefixes already
    written in this batch (this call adds its own).
    """
    problem = check_params(params)
    if problem is not None:
        return error("invalid_request_error", problem)
    model: str = params["model"]
    if model.startswith("nonexistent"):
        return error("not_found_error", f"model: {model}")
    text = json.dumps(params, separators=(",", ":"))
    marked = _MARKER.search(text)
    if marked is not None and marked.group(1) in ERROR_STATUS:
        kind = marked.group(1)
        return error(kind, _MARKER_MESSAGES.get(kind, f"{kind} (emulator-error marker)"))
    if failure_rate > 0 and unit_fraction(str(seed), "fail", custom_id) < failure_rate:
        if unit_fraction(str(seed), "kind", custom_id) < 0.5:
            return error("api_error", "Internal server error")
        return error(
            "invalid_request_error",
            "The emulator's request_failure_rate rejected this request.",
        )
    return _reply(params, key, cached_prefixes)


def check_params(params: dict[str, Any]) -> str | None:
    """The validation message for a ``params`` the Messages API refuses in a batch, if any."""
    for name in ("model", "max_tokens", "messages"):
        if name not in params:
            return f"{name}: Field required"
    if not isinstance(params["model"], str) or not params["model"]:
        return "model: Input should be a valid string"
    max_tokens = params["max_tokens"]
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int):
        return "max_tokens: Input should be a valid integer"
    if max_tokens < 1:
        return "max_tokens: Input should be greater than or equal to 1"
    messages = params["messages"]
    if not isinstance(messages, list):
        return "messages: Input should be a valid list"
    if not messages:
        return "messages: at least one message is required"
    for index, message in enumerate(messages):
        if not isinstance(message, dict):
            return f"messages.{index}: Input should be a valid dictionary"
        if message.get("role") not in ("user", "assistant"):
            return f"messages.{index}.role: Input should be 'user' or 'assistant'"
        if "content" not in message:
            return f"messages.{index}.content: Field required"
    if params.get("stream") is True:
        return "stream: Message Batches do not support streaming requests"
    for name in _REFUSED_FIELDS:
        if name in params:
            return f"{name}: Extra inputs are not permitted in a Message Batch request"
    return None


def _prompt_items(params: dict[str, Any]) -> list[Any]:
    """The prompt in the API's cache order: tools, system blocks, then message blocks."""
    items: list[Any] = []
    tools = params.get("tools")
    if isinstance(tools, list):
        items.extend(tools)
    system = params.get("system")
    if isinstance(system, list):
        items.extend(system)
    elif system is not None:
        items.append(system)
    for message in params["messages"]:
        content = message.get("content")
        if isinstance(content, list):
            items.extend(content)
        else:
            items.append(content)
    return items


def _usage(params: dict[str, Any], cached_prefixes: set[str]) -> tuple[int, int, int]:
    """(uncached input, cache write, cache read) tokens of the prompt."""
    sizes: list[int] = []
    prefix_end = 0
    for item in _prompt_items(params):
        sizes.append(len(json.dumps(item, separators=(",", ":"))))
        if isinstance(item, dict) and item.get("cache_control") is not None:
            prefix_end = len(sizes)
    prompt = max(1, sum(sizes) // 4)
    cacheable = sum(sizes[:prefix_end]) // 4
    if cacheable < CACHE_MIN_TOKENS:
        return prompt, 0, 0
    items = _prompt_items(params)[:prefix_end]
    prefix = digest(params["model"], json.dumps(items, sort_keys=True))
    uncached = max(1, prompt - cacheable)
    if prefix in cached_prefixes:
        return uncached, 0, cacheable
    cached_prefixes.add(prefix)
    return uncached, cacheable, 0


def _reply(params: dict[str, Any], key: str, cached_prefixes: set[str]) -> Outcome:
    text = echo(last_user_text(params["messages"]))
    output = estimate_tokens(text)
    stop_reason = "end_turn"
    max_tokens: int = params["max_tokens"]
    if output > max_tokens:
        text, output, stop_reason = text[: max_tokens * 4], max_tokens, "max_tokens"
    uncached, written, read = _usage(params, cached_prefixes)
    message = {
        "id": f"msg_{key[:24]}",
        "type": "message",
        "role": "assistant",
        "model": params["model"],
        "content": [{"type": "text", "text": text}],
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {
            "input_tokens": uncached,
            "output_tokens": output,
            "cache_creation_input_tokens": written,
            "cache_read_input_tokens": read,
            "service_tier": "batch",
        },
    }
    return Outcome(200, message, uncached + written + read, output, read)
