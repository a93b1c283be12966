"""Handlers of the emulated Anthropic Message Batches API, ``/v1/messages/batches``.

The real ``anthropic`` SDK talks to it with the emulator's root URL as its base URL
(``Anthropic(base_url=emu.url, api_key="anything")``; the SDK adds ``/v1/...`` itself).

- ``POST /v1/messages/batches``: ``{"requests": [{"custom_id", "params"}, ...]}``. The
  envelope is checked at once, with the API's messages (400 ``invalid_request_error``,
  ``requests.0.custom_id: String should have at most 64 characters``); a body over
  ``max_message_batch_bytes`` gets 413 ``request_too_large``. Each ``params`` is checked
  later: its problems come back as ``errored`` result lines (``messages``).
- ``GET /v1/messages/batches``: ``?before_id=&after_id=&limit=`` (1-1000, default 20), newest
  first, ``{data, has_more, first_id, last_id}``.
- ``GET /v1/messages/batches/{id}``, ``POST .../{id}/cancel``, ``DELETE .../{id}`` (only once
  ended), ``GET .../{id}/results`` (JSONL, once ended; ``results_url`` is absolute, on the
  host the client called).

Authentication: ``x-api-key: KEY`` or ``Authorization: Bearer KEY`` (the SDK sends the latter
since 2.10); any ``anthropic-version`` is accepted, but one must be sent. Errors use the API's
envelope ``{"type": "error", "error": {"type", "message"}, "request_id"}`` and its statuses.

Choices where the real API is undocumented
    - A duplicate ``custom_id`` is refused at create (400), not reported per request.
    - Cancelling an ended batch gives 400 ``invalid_request_error``; cancelling a
      ``canceling`` batch returns it unchanged.
    - An unknown ``before_id``/``after_id`` cursor gives an empty page; both at once a 400.
"""

from __future__ import annotations

import hmac
import json
import re
import secrets
from typing import Any

from batchctl.emulator.backend import Backend
from batchctl.emulator.errors import ApiError
from batchctl.emulator.faults import Fault
from batchctl.emulator.httpio import Request, Response

PREFIX = "/v1/messages"
_CUSTOM_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")
_CUSTOM_ID_PATTERN = "^[a-zA-Z0-9_-]{1,64}$"
_REQUEST_FIELDS = frozenset({"custom_id", "params"})
_TOO_LARGE = "Request exceeds the maximum allowed number of bytes."
_BAD_JSON = "There was an issue with the JSON body of your request: it is not valid JSON."


def serves(path: str) -> bool:
    """Whether a path belongs to this API (rather than OpenAI's under ``/v1``)."""
    return path == PREFIX or path.startswith(PREFIX + "/")


def handle(backend: Backend, request: Request) -> Response:
    """Answer one ``/v1/messages`` request; errors become the API's error responses."""
    try:
        _authenticate(request, backend.settings.api_key)
        return _route(backend, request)
    except ApiError as exc:
        return error_response(exc.status, exc.type, exc.message, exc.headers)


def error_response(
    status: int, error_type: str, message: str, headers: dict[str, str] | None = None
) -> Response:
    """A response in the API's error envelope, with its ``request-id`` header."""
    request_id = f"req_{secrets.token_hex(12)}"
    body = {
        "type": "error",
        "error": {"type": error_type, "message": message},
        "request_id": request_id,
    }
    return Response.json(status, body, {**(headers or {}), "request-id": request_id})


def fault_response(fault: Fault) -> Response | None:
    """The error reply of a 429/500/503/529 fault, as this API words it; None otherwise."""
    if fault.kind == "429":
        retry_after = fault.retry_after
        text = str(int(retry_after)) if float(retry_after).is_integer() else str(retry_after)
        return error_response(
            429,
            "rate_limit_error",
            "This request would exceed the rate limit for your organization.",
            {"retry-after": text},
        )
    if fault.kind == "500":
        return error_response(500, "api_error", "Internal server error")
    if fault.kind == "503":
        return error_response(503, "api_error", "Service unavailable")
    if fault.kind == "529":
        return error_response(529, "overloaded_error", "Overloaded")
    return None


def _authenticate(request: Request, required_key: str | None) -> None:
    key = (request.headers.get("x-api-key") or "").strip()
    if not key:
        scheme, _, token = (request.headers.get("Authorization") or "").strip().partition(" ")
        if scheme.lower() == "bearer":
            key = token.strip()
    if not key:
        raise ApiError(401, "x-api-key header is required", type="authentication_error")
    if required_key is not None and not hmac.compare_digest(key, required_key):
        raise ApiError(401, "invalid x-api-key", type="authentication_error")
    if not request.headers.get("anthropic-version"):
        raise ApiError(400, "anthropic-version: header is required")


def _base_url(request: Request) -> str:
    """The root URL the client called, for absolute ``results_url``s."""
    host = request.headers.get("Host") or "127.0.0.1"
    return f"http://{host}"


def _route(backend: Backend, request: Request) -> Response:
    parts = request.path.rstrip("/").split("/")[3:]  # drop "", "v1" and "messages"
    batches = backend.message_batches
    base_url = _base_url(request)
    match parts, request.method:
        case ["batches"], "POST":
            requests = _envelope(request, backend.settings.max_message_batch_bytes)
            _check_count(len(requests), backend.settings.max_message_batch_requests)
            return Response.json(200, batches.create(requests, backend.settings, base_url))
        case ["batches"], "GET":
            before_id, after_id = request.param("before_id"), request.param("after_id")
            if before_id is not None and after_id is not None:
                raise ApiError(400, "Only one of before_id and after_id may be given.")
            page = batches.page(
                base_url=base_url,
                limit=_limit(request.param("limit")),
                before_id=before_id,
                after_id=after_id,
            )
            return Response.json(200, page)
        case ["batches", batch_id], "GET":
            return Response.json(200, batches.get(batch_id, base_url))
        case ["batches", batch_id], "DELETE":
            return Response.json(200, batches.delete(batch_id))
        case ["batches", batch_id, "cancel"], "POST":
            return Response.json(200, batches.cancel(batch_id, base_url))
        case ["batches", batch_id, "results"], "GET":
            stream, size = batches.open_results(batch_id)
            return Response(200, content_type="application/binary", stream=stream, length=size)
    raise ApiError(404, f"Not found: {request.method} {request.path}", type="not_found_error")


def _limit(raw: str | None) -> int:
    if raw is None:
        return 20
    try:
        limit = int(raw)
    except ValueError:
        raise ApiError(400, "limit: Input should be a valid integer") from None
    if limit < 1:
        raise ApiError(400, "limit: Input should be greater than or equal to 1")
    if limit > 1000:
        raise ApiError(400, "limit: Input should be less than or equal to 1000")
    return limit


def _envelope(request: Request, max_bytes: int) -> list[tuple[str, dict[str, Any]]]:
    """The (custom_id, params) of a create body, checked as the API checks them at once."""
    length = request.headers.get("Content-Length")
    if length is not None and length.isdigit() and int(length) > max_bytes:
        raise ApiError(413, _TOO_LARGE, type="request_too_large")
    try:
        raw = request.body.read_all(max_bytes)
    except ApiError:
        raise ApiError(413, _TOO_LARGE, type="request_too_large") from None
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError):
        raise ApiError(400, _BAD_JSON) from None
    if not isinstance(payload, dict):
        raise ApiError(400, "Input should be a valid dictionary")
    items = payload.get("requests")
    if items is None:
        raise ApiError(400, "requests: Field required")
    if not isinstance(items, list):
        raise ApiError(400, "requests: Input should be a valid list")
    requests: list[tuple[str, dict[str, Any]]] = []
    seen: set[str] = set()
    for index, item in enumerate(items):
        custom_id, params = _request(index, item)
        if custom_id in seen:
            raise ApiError(
                400,
                f"requests.{index}.custom_id: Duplicate custom_id {custom_id!r}; "
                "each request in a batch needs a unique custom_id.",
            )
        seen.add(custom_id)
        requests.append((custom_id, params))
    return requests


def _request(index: int, item: Any) -> tuple[str, dict[str, Any]]:
    where = f"requests.{index}"
    if not isinstance(item, dict):
        raise ApiError(400, f"{where}: Input should be a valid dictionary")
    for name in ("custom_id", "params"):
        if name not in item:
            raise ApiError(400, f"{where}.{name}: Field required")
    for name in item:
        if name not in _REQUEST_FIELDS:
            raise ApiError(400, f"{where}.{name}: Extra inputs are not permitted")
    custom_id, params = item["custom_id"], item["params"]
    if not isinstance(custom_id, str):
        raise ApiError(400, f"{where}.custom_id: Input should be a valid string")
    if not custom_id:
        raise ApiError(400, f"{where}.custom_id: String should have at least 1 character")
    if len(custom_id) > 64:
        raise ApiError(400, f"{where}.custom_id: String should have at most 64 characters")
    if not _CUSTOM_ID.fullmatch(custom_id):
        raise ApiError(
            400, f"{where}.custom_id: String should match pattern '{_CUSTOM_ID_PATTERN}'"
        )
    if not isinstance(params, dict):
        raise ApiError(400, f"{where}.params: Input should be a valid dictionary")
    return custom_id, params


def _check_count(count: int, maximum: int) -> None:
    if count < 1:
        raise ApiError(400, "requests: List should have at least 1 item after validation, not 0")
    if count > maximum:
        raise ApiError(
            400,
            f"requests: List should have at most {maximum} items after validation, not {count}",
        )
