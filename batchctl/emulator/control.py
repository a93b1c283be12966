"""The control API under ``/_emulator``: for tests and tools driving an emulator in another
process. No authentication; faults never apply here.

- ``GET /_emulator/requests``: the request log, ``{"object": "list", "data": [record, ...]}``
  (fields of RequestRecord); optional ``?method=POST&path=/v1/files`` filters.
- ``GET /_emulator/state``: ``{"time", "files": {"total", "by_purpose"},
  "batches": {"total", "by_status"}, "message_batches": {"total", "by_status"}}``.
- ``GET /_emulator/faults``: the fault rules, each with the hits it has left.
- ``POST /_emulator/faults``: ``{"faults": [{"kind", "method", "path", "count", "rate",
  "retry_after", "delay"}, ...], "seed": int (optional)}`` replaces the rules;
  ``{"faults": []}`` clears them.
- ``POST /_emulator/advance``: ``{"seconds": N}`` moves emulated time forward; returns
  ``{"time"}``.
- ``GET /_emulator/settings``: the settings.
- ``POST /_emulator/settings``: ``{field: value, ...}`` changes some settings (not
  ``state_dir``); batches already created keep the timing they started with.
- ``POST /_emulator/reset``: forgets files, batches (both APIs'), faults and the request log.

Errors are 400 with the same JSON error shape as the API.
"""

from __future__ import annotations

from typing import Any

from batchctl.emulator.backend import Backend
from batchctl.emulator.errors import ApiError, bad_request
from batchctl.emulator.faults import Fault
from batchctl.emulator.httpio import Request, Response


def handle(backend: Backend, request: Request) -> Response:
    """Answer one /_emulator request."""
    try:
        return _route(backend, request)
    except ApiError as error:
        return Response.error(error)


def _route(backend: Backend, request: Request) -> Response:
    name = request.path.rstrip("/").removeprefix("/_emulator/")
    match name, request.method:
        case "requests", "GET":
            method, path = request.param("method"), request.param("path")
            records = [
                r.to_json()
                for r in backend.log.records()
                if (method is None or r.method == method.upper())
                and (path is None or r.path == path)
            ]
            return Response.json(200, {"object": "list", "data": records})
        case "state", "GET":
            return Response.json(200, backend.summary())
        case "faults", "GET":
            return Response.json(200, {"faults": backend.faults.active()})
        case "faults", "POST":
            body = _object(request)
            raw = body.get("faults", [])
            if not isinstance(raw, list):
                raise bad_request("'faults' must be a list", param="faults")
            seed = body.get("seed")
            if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
                raise bad_request("'seed' must be an integer", param="seed")
            try:
                faults = [Fault.from_json(item) for item in raw]
            except ValueError as exc:
                raise bad_request(str(exc), param="faults") from None
            backend.faults.set(faults, seed=seed)
            return Response.json(200, {"faults": backend.faults.active()})
        case "advance", "POST":
            seconds = _object(request).get("seconds")
            if isinstance(seconds, bool) or not isinstance(seconds, int | float) or seconds < 0:
                raise bad_request("'seconds' must be a number >= 0", param="seconds")
            return Response.json(200, {"time": backend.advance(float(seconds))})
        case "settings", "GET":
            return Response.json(200, backend.settings.to_json())
        case "settings", "POST":
            try:
                settings = backend.settings.updated(_object(request))
            except ValueError as exc:
                raise bad_request(str(exc)) from None
            backend.update_settings(settings)
            return Response.json(200, settings.to_json())
        case "reset", "POST":
            request.body.drain(1 << 20)
            backend.reset()
            return Response.json(200, {"reset": True})
    raise ApiError(404, f"Invalid URL ({request.method} {request.path})")


def _object(request: Request) -> dict[str, Any]:
    body = request.json()
    if body is None:
        return {}
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body
