"""Synthetic response bodies for the requests of a batch.

Everything here is deterministic: the same request line gives the same body, so tests can
compare outputs. Token counts are estimates (about four characters a token), not real
tokenizer counts.

Chat and responses bodies report the two token details that change a price, by rules a test
can predict: a request with a ``prompt_cache_key`` whose prompt is at least 1,024 tokens is a
cache hit for its prompt rounded down to 128 tokens (the API caches prefixes of 1,024 tokens
and more, in steps of 128); a request with a reasoning effort (``reasoning_effort``, or
``reasoning.effort`` on responses; "medium" by default for the reasoning models o1, o3, o4 and
gpt-5) spends ``REASONING_TOKENS[effort]`` reasoning tokens, counted in its output tokens as
the API counts them.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# The message the real API writes for a model that does not exist (openai-python #3071).
_MODEL_NOT_FOUND = "The model `{model}` does not exist or you do not have access to it."
_SERVER_ERROR = (
    "The server had an error while processing your request. Sorry about that! "
    "You can retry your request."
)
_EMBEDDING_DIMENSIONS = 8
_ECHO_CHARS = 40
# A 1x1 transparent PNG: the smallest thing an image endpoint can honestly return.
_TINY_PNG_B64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR4nGNgYGBgAAAABQABpfZFQAAAAABJ"
    "RU5ErkJggg=="
)
# Reasoning tokens spent per request, by reasoning effort.
REASONING_TOKENS = {"none": 0, "minimal": 0, "low": 64, "medium": 256, "high": 1024}
_REASONING_MODELS = ("o1", "o3", "o4", "gpt-5")
_CACHE_MIN_TOKENS = 1024
_CACHE_STEP_TOKENS = 128
_MODERATION_CATEGORIES = (
    "harassment",
    "hate",
    "illicit",
    "self-harm",
    "sexual",
    "violence",
)


@dataclass(frozen=True)
class Outcome:
    """What one request of a batch returned."""

    status_code: int
    body: dict[str, Any]
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0  # of input_tokens
    reasoning_tokens: int = 0  # of output_tokens

    @property
    def ok(self) -> bool:
        """Whether the request succeeded (its line goes to the output file)."""
        return self.status_code == 200


def digest(*parts: str, size: int = 16) -> str:
    """A stable hex digest of ``parts``, used for deterministic ids."""
    h = hashlib.blake2b(digest_size=size)
    for part in parts:
        h.update(part.encode("utf-8", "surrogatepass"))
        h.update(b"\0")
    return h.hexdigest()


def unit_fraction(*parts: str) -> float:
    """A stable number in [0, 1) derived from ``parts``."""
    raw = hashlib.blake2b("\0".join(parts).encode("utf-8", "surrogatepass"), digest_size=8)
    return int.from_bytes(raw.digest(), "big") / 2.0**64


def estimate_tokens(text: str) -> int:
    """About four characters a token, at least one."""
    return max(1, len(text) // 4)


def cached_tokens(body: dict[str, Any], prompt: int) -> int:
    """The prompt tokens a request reads from the cache (see the module's docstring)."""
    if not isinstance(body.get("prompt_cache_key"), str) or prompt < _CACHE_MIN_TOKENS:
        return 0
    return prompt - prompt % _CACHE_STEP_TOKENS


def reasoning_tokens(body: dict[str, Any]) -> int:
    """The reasoning tokens a request spends (see the module's docstring)."""
    effort = body.get("reasoning_effort")
    reasoning = body.get("reasoning")
    if isinstance(reasoning, dict) and reasoning.get("effort") is not None:
        effort = reasoning.get("effort")
    model = body.get("model")
    if effort is None and isinstance(model, str) and model.startswith(_REASONING_MODELS):
        effort = "medium"
    return REASONING_TOKENS.get(effort, 0) if isinstance(effort, str) else 0


def http_error(
    status: int, message: str, *, type: str, code: str | None, param: str | None = None
) -> Outcome:
    """An outcome carrying an API error body, as an error-file line shows it."""
    return Outcome(
        status,
        {"error": {"message": message, "type": type, "param": param, "code": code}},
    )


def run_request(
    endpoint: str,
    body: dict[str, Any],
    custom_id: str,
    *,
    created: int,
    failure_rate: float = 0.0,
    seed: int = 0,
    key: str | None = None,
    body_chars: int | None = None,
) -> Outcome:
    """Execute one request of a batch, synthetically.

    ``key`` (hex) seeds the response ids; ``body_chars`` is the size of the body as JSON,
    from which prompt tokens are estimated (computed here if not given).
    """
    model = body.get("model")
    if isinstance(model, str) and model.startswith("nonexistent"):
        return http_error(
            404,
            _MODEL_NOT_FOUND.format(model=model),
            type="invalid_request_error",
            code="model_not_found",
        )
    if failure_rate > 0 and unit_fraction(str(seed), "fail", custom_id) < failure_rate:
        if unit_fraction(str(seed), "kind", custom_id) < 0.5:
            return http_error(500, _SERVER_ERROR, type="server_error", code=None)
        return http_error(
            400,
            "Invalid request: the emulator's request_failure_rate rejected this request.",
            type="invalid_request_error",
            code="invalid_request",
        )
    if body.get("stream") is True:
        return http_error(
            400,
            "Streaming is not supported in the Batch API.",
            type="invalid_request_error",
            code="unsupported_value",
            param="stream",
        )
    if endpoint != "/v1/moderations" and not isinstance(model, str):
        return http_error(
            400,
            "you must provide a model parameter",
            type="invalid_request_error",
            code=None,
        )
    builder = _BUILDERS.get(endpoint)
    if builder is None:
        return http_error(
            404,
            f"Invalid URL (POST {endpoint})",
            type="invalid_request_error",
            code=None,
        )
    required = _REQUIRED[endpoint]
    if required is not None and required not in body:
        return http_error(
            400,
            f"Missing required parameter: '{required}'.",
            type="invalid_request_error",
            code="missing_required_parameter",
            param=required,
        )
    if key is None:
        key = digest(endpoint, custom_id)
    if body_chars is None:
        body_chars = len(json.dumps(body, separators=(",", ":")))
    return builder(body, key, created, max(1, body_chars // 4))


def _text_of(value: Any) -> str:
    """The first text found in a prompt, message content or input item."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        for item in value:
            text = _text_of(item)
            if text:
                return text
        return ""
    if isinstance(value, dict):
        for name in ("text", "content", "input_text"):
            if name in value:
                text = _text_of(value[name])
                if text:
                    return text
    return ""


def echo(text: str) -> str:
    """The synthetic answer to a prompt: its first words, echoed."""
    snippet = " ".join(text.split())[:_ECHO_CHARS]
    return f"Echo: {snippet}" if snippet else "Echo."


def last_user_text(messages: Any) -> str:
    """The text of the last user message (of chat or Messages API ``messages``)."""
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, dict) and message.get("role") == "user":
            return _text_of(message.get("content"))
    return _text_of(messages)


def _chat(body: dict[str, Any], key: str, created: int, prompt: int) -> Outcome:
    content = echo(last_user_text(body.get("messages")))
    reasoning = reasoning_tokens(body)
    completion = estimate_tokens(content) + reasoning
    return Outcome(
        200,
        {
            "id": f"chatcmpl-{key[:29]}",
            "object": "chat.completion",
            "created": created,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {
                        "role": "assistant",
                        "content": content,
                        "refusal": None,
                        "annotations": [],
                    },
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "prompt_tokens_details": {
                    "cached_tokens": cached_tokens(body, prompt),
                    "audio_tokens": 0,
                },
                "completion_tokens_details": {"reasoning_tokens": reasoning, "audio_tokens": 0},
            },
            "service_tier": "default",
            "system_fingerprint": None,
        },
        prompt,
        completion,
        cached_tokens(body, prompt),
        reasoning,
    )


def _completion(body: dict[str, Any], key: str, created: int, prompt: int) -> Outcome:
    text = echo(_text_of(body.get("prompt")))
    completion = estimate_tokens(text)
    return Outcome(
        200,
        {
            "id": f"cmpl-{key[:29]}",
            "object": "text_completion",
            "created": created,
            "model": body["model"],
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": "stop"}],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
        },
        prompt,
        completion,
    )


def _vector(text: str) -> list[float]:
    raw = hashlib.blake2b(
        text.encode("utf-8", "surrogatepass"), digest_size=4 * _EMBEDDING_DIMENSIONS
    )
    values = [v / 2**31 for v in struct.unpack(f">{_EMBEDDING_DIMENSIONS}i", raw.digest())]
    norm = sum(v * v for v in values) ** 0.5 or 1.0
    return [round(v / norm, 6) for v in values]


def _inputs(value: Any) -> list[str]:
    if isinstance(value, list):
        return [json.dumps(v) if not isinstance(v, str) else v for v in value] or [""]
    return [value if isinstance(value, str) else json.dumps(value)]


def _embedding(body: dict[str, Any], key: str, created: int, prompt: int) -> Outcome:
    inputs = _inputs(body.get("input"))
    prompt = sum(estimate_tokens(text) for text in inputs)
    return Outcome(
        200,
        {
            "object": "list",
            "data": [
                {"object": "embedding", "index": i, "embedding": _vector(text)}
                for i, text in enumerate(inputs)
            ],
            "model": body["model"],
            "usage": {"prompt_tokens": prompt, "total_tokens": prompt},
        },
        prompt,
        0,
    )


def _response(body: dict[str, Any], key: str, created: int, prompt: int) -> Outcome:
    text = echo(_text_of(body.get("input")))
    reasoning = reasoning_tokens(body)
    completion = estimate_tokens(text) + reasoning
    return Outcome(
        200,
        {
            "id": f"resp_{key}",
            "object": "response",
            "created_at": created,
            "status": "completed",
            "error": None,
            "incomplete_details": None,
            "model": body["model"],
            "output": [
                {
                    "type": "message",
                    "id": f"msg_{key}",
                    "status": "completed",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            ],
            "usage": {
                "input_tokens": prompt,
                "input_tokens_details": {"cached_tokens": cached_tokens(body, prompt)},
                "output_tokens": completion,
                "output_tokens_details": {"reasoning_tokens": reasoning},
                "total_tokens": prompt + completion,
            },
        },
        prompt,
        completion,
        cached_tokens(body, prompt),
        reasoning,
    )


def _moderation(body: dict[str, Any], key: str, created: int, prompt: int) -> Outcome:
    # Moderations are free: no usage, no tokens counted.
    results = [
        {
            "flagged": False,
            "categories": dict.fromkeys(_MODERATION_CATEGORIES, False),
            "category_scores": dict.fromkeys(_MODERATION_CATEGORIES, 0.0),
        }
        for _ in _inputs(body.get("input"))
    ]
    model = body.get("model")
    return Outcome(
        200,
        {
            "id": f"modr-{key[:29]}",
            "model": model if isinstance(model, str) else "omni-moderation-latest",
            "results": results,
        },
    )


def _image(body: dict[str, Any], key: str, created: int, prompt: int) -> Outcome:
    count = body.get("n", 1)
    count = count if isinstance(count, int) and 1 <= count <= 10 else 1
    return Outcome(
        200,
        {
            "created": created,
            "data": [{"b64_json": _TINY_PNG_B64} for _ in range(count)],
            "usage": {
                "input_tokens": prompt,
                "input_tokens_details": {"text_tokens": prompt, "image_tokens": 0},
                "output_tokens": 0,
                "total_tokens": prompt,
            },
        },
        prompt,
        0,
    )


def _video(body: dict[str, Any], key: str, created: int, prompt: int) -> Outcome:
    return Outcome(
        200,
        {
            "id": f"video_{key}",
            "object": "video",
            "created_at": created,
            "model": body["model"],
            "status": "queued",
            "progress": 0,
        },
        prompt,
        0,
    )


_Builder = Callable[[dict[str, Any], str, int, int], Outcome]
_BUILDERS: dict[str, _Builder] = {
    "/v1/chat/completions": _chat,
    "/v1/completions": _completion,
    "/v1/embeddings": _embedding,
    "/v1/responses": _response,
    "/v1/moderations": _moderation,
    "/v1/images/generations": _image,
    "/v1/images/edits": _image,
    "/v1/videos": _video,
}
_REQUIRED: dict[str, str | None] = {
    "/v1/chat/completions": "messages",
    "/v1/completions": "prompt",
    "/v1/embeddings": "input",
    "/v1/responses": "input",
    "/v1/moderations": "input",
    "/v1/images/generations": "prompt",
    "/v1/images/edits": "prompt",
    "/v1/videos": "prompt",
}

#: The batch endpoints the real API accepts (SDK ``batch_create_params``).
SUPPORTED_ENDPOINTS: tuple[str, ...] = tuple(_BUILDERS)
