"""Handlers of the emulated ``/v1`` API: authentication, Files and Batches."""

from __future__ import annotations

import hmac
from typing import Literal

from batchctl.emulator import anthropic
from batchctl.emulator.backend import Backend
from batchctl.emulator.errors import ApiError, bad_request, missing_parameter
from batchctl.emulator.httpio import Request, Response
from batchctl.emulator.multipart import (
    MultipartError,
    boundary_from_content_type,
    parse_multipart,
)
from batchctl.emulator.params import check_expiry_seconds
from batchctl.emulator.state import UPLOAD_PURPOSES

_NO_KEY = (
    "You didn't provide an API key. You need to provide your API key in an Authorization "
    "header using Bearer auth (i.e. Authorization: Bearer YOUR_KEY), or as the password field "
    "(with blank username) if you're accessing the API from your browser and are prompted for "
    "a username and password. You can obtain an API key from "
    "https://platform.openai.com/account/api-keys."
)
_WRONG_KEY = (
    "Incorrect API key provided: {masked}. You can find your API key at "
    "https://platform.openai.com/account/api-keys."
)


def handle(backend: Backend, request: Request) -> Response:
    """Answer one /v1 request; API errors become JSON error responses."""
    if anthropic.serves(request.path):
        return anthropic.handle(backend, request)
    try:
        authenticate(request, backend.settings.api_key)
        return _route(backend, request)
    except ApiError as error:
        return Response.error(error)


def authenticate(request: Request, required_key: str | None) -> None:
    """401 unless the request carries ``Authorization: Bearer <key>`` (the right key, if set)."""
    header = request.headers.get("Authorization") or ""
    scheme, _, key = header.strip().partition(" ")
    key = key.strip()
    if scheme.lower() != "bearer" or not key:
        raise ApiError(401, _NO_KEY)
    if required_key is not None and not hmac.compare_digest(key, required_key):
        raise ApiError(401, _WRONG_KEY.format(masked=_mask(key)), code="invalid_api_key")


def _mask(key: str) -> str:
    if len(key) <= 8:
        return "*" * len(key)
    return f"{key[:3]}{'*' * (len(key) - 7)}{key[-4:]}"


def invalid_url(request: Request) -> ApiError:
    """The real API's answer to an unknown path or method."""
    return ApiError(404, f"Invalid URL ({request.method} {request.path})")


def _route(backend: Backend, request: Request) -> Response:
    parts = request.path.rstrip("/").split("/")[2:]  # drop "" and "v1"
    method = request.method
    state = backend.state
    match parts, method:
        case ["files"], "POST":
            return Response.json(200, _upload(backend, request))
        case ["files"], "GET":
            order = request.param("order") or "desc"
            if order not in ("asc", "desc"):
                raise bad_request(
                    f"Invalid value: '{order}'. Supported values are: 'asc', 'desc'.",
                    param="order",
                    code="invalid_value",
                )
            page = state.list_files(
                purpose=request.param("purpose"),
                limit=_limit(request, 10_000, 10_000),
                order=_order(order),
                after=request.param("after"),
            )
            return Response.json(200, page)
        case ["files", file_id], "GET":
            return Response.json(200, state.get_file(file_id))
        case ["files", file_id], "DELETE":
            return Response.json(200, state.delete_file(file_id))
        case ["files", file_id, "content"], "GET":
            stream, size = state.open_file(file_id)
            return Response(
                200,
                content_type="application/octet-stream",
                stream=stream,
                length=size,
            )
        case ["batches"], "POST":
            return Response.json(200, state.create_batch(request.json()))
        case ["batches"], "GET":
            page = state.list_batches(after=request.param("after"), limit=_limit(request, 100, 20))
            return Response.json(200, page)
        case ["batches", batch_id], "GET":
            return Response.json(200, state.get_batch(batch_id))
        case ["batches", batch_id, "cancel"], "POST":
            return Response.json(200, state.cancel_batch(batch_id))
    raise invalid_url(request)


def _order(value: str) -> Literal["asc", "desc"]:
    return "asc" if value == "asc" else "desc"


def _limit(request: Request, maximum: int, default: int) -> int:
    raw = request.param("limit")
    if raw is None:
        return default
    try:
        limit = int(raw)
    except ValueError:
        raise bad_request(
            f"Invalid type for 'limit': expected an integer, but got '{raw}' instead.",
            param="limit",
            code="invalid_type",
        ) from None
    if not 1 <= limit <= maximum:
        raise bad_request(
            f"Invalid 'limit': must be between 1 and {maximum}, but got {limit} instead.",
            param="limit",
            code="invalid_value",
        )
    return limit


def _upload(backend: Backend, request: Request) -> dict[str, object]:
    """``POST /v1/files``: stream the multipart body to disk, then check and store it."""
    settings = backend.settings
    try:
        boundary = boundary_from_content_type(request.headers.get("Content-Type") or "")
        form = parse_multipart(
            request.body,
            boundary,
            backend.state.upload_dir,
            max_file_bytes=settings.max_file_bytes,
        )
    except MultipartError as exc:
        raise bad_request(f"Could not parse multipart form: {exc}") from None
    try:
        upload = form.files.get("file")
        purpose = form.fields.get("purpose")
        if purpose is None:
            raise missing_parameter("purpose")
        if upload is None:
            raise missing_parameter("file")
        if purpose not in UPLOAD_PURPOSES:
            allowed = ", ".join(f"'{p}'" for p in UPLOAD_PURPOSES)
            raise bad_request(
                f"Invalid value: '{purpose}'. Supported values are: {allowed}.",
                param="purpose",
                code="invalid_value",
            )
        if purpose == "batch" and not upload.filename.lower().endswith(".jsonl"):
            raise bad_request("Invalid file format for Batch API. Must be .jsonl", param="file")
        limit = settings.max_batch_file_bytes if purpose == "batch" else settings.max_file_bytes
        if upload.too_large or upload.size > limit:
            raise bad_request("File is too large.", param="file")
        expires_after = _expires_after(form.fields)
        assert upload.path is not None
        return backend.state.create_file(
            upload.path,
            filename=upload.filename,
            purpose=purpose,
            size=upload.size,
            expires_after=expires_after,
        )
    finally:
        form.discard_files()


def _expires_after(fields: dict[str, str]) -> int | None:
    anchor = fields.get("expires_after[anchor]")
    seconds = fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return None
    if anchor is None:
        raise missing_parameter("expires_after[anchor]")
    if seconds is None:
        raise missing_parameter("expires_after[seconds]")
    if anchor != "created_at":
        raise bad_request(
            f"Invalid value: '{anchor}'. Supported values are: 'created_at'.",
            param="expires_after[anchor]",
            code="invalid_value",
        )
    try:
        value: object = int(seconds)
    except ValueError:
        value = seconds
    return check_expiry_seconds(value, "expires_after[seconds]")
