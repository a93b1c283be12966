"""Validation and splitting of Anthropic Message Batches input: ``{"custom_id", "params"}`` lines.

The same streaming pass as the OpenAI shape's (``validation``: files, encodings, strict JSON,
problems with file and line), with Anthropic's rules for a line and its own limits: 100,000
requests or 256 MB per batch. Nothing is uploaded: a part's requests go inline in the body of the
create call, so a part's bytes are those of that body, as the ``anthropic`` SDK sends it (compact
UTF-8 JSON), with every request under the longest id batchctl could send for it; a part never
exceeds the limit, whatever ids it is finally sent under.

Each request goes to its part file as it will be sent — its ``params`` in that same encoding —
with its index in the input as its ``custom_id``: the user's id stays in the database, and the
create call sends a derived id instead (``derived_ids``).

Parts hold one model each, as the OpenAI shape's do, although Anthropic accepts mixed models in
one batch: a part's model is what its tokens are priced at, what a dry run estimates by and what
``status`` shows, and Anthropic's rate limits count requests, not batches, so a part per model
costs nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

from batchctl.batches.derived_ids import MAX_SENT_ID
from batchctl.batches.validation import (
    _INVALID,
    PartSink,
    _lone_surrogate,
    _Scanner,
    json_type,
    spelled,
)

ENDPOINT = "/v1/messages"  # what a submission of Message Batches records as its endpoint
MAX_REQUESTS = 100_000
MAX_BYTES = 256 * 1000 * 1000  # the API's "256 MB", counted in decimal megabytes to be safe
MAX_CUSTOM_ID = 1_000  # characters of a user's custom_id: any text, but not a document
# Keys of ``params`` that the Message Batches API refuses (the reference's list), and ``stream``.
REFUSED_PARAMS = ("speed", "store", "previous_thread_event_id", "cache_hint", "context_hint")
_LINE_KEYS = ("custom_id", "params")
_ENVELOPE = len(b'{"requests":[]}')  # the create body around its requests
# What a request takes of the body besides its params: its keys, the longest sent id, a comma.
_REQUEST_OVERHEAD = len(b'{"custom_id":"","params":}') + MAX_SENT_ID + 1
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def is_message_batches(endpoint: str) -> bool:
    """Whether a submission recorded with ``endpoint`` was sent as Message Batches: its requests
    under derived ids, its results in Anthropic's shape, its prices Anthropic's."""
    return endpoint == ENDPOINT


class AnthropicScanner(_Scanner):
    """``validation._Scanner`` for Message Batches lines (chosen by ``scan(api="anthropic")``)."""

    BATCH_BYTES = MAX_BYTES

    def __init__(
        self,
        endpoint: str | None,
        max_requests: int,
        max_bytes: int,
        sink: PartSink | None,
        bound_output: bool = False,
    ) -> None:
        max_bytes = min(max_bytes, MAX_BYTES)
        super().__init__(None, min(max_requests, MAX_REQUESTS), max_bytes, sink, bound_output)
        self.plan.endpoint = ENDPOINT
        self.max_bytes = max_bytes - _ENVELOPE  # what a part's requests may take of a body
        if endpoint is not None and endpoint != ENDPOINT:
            self.problem(
                Path("--endpoint"),
                None,
                f"{spelled(endpoint)}: Message Batches requests are sent to {ENDPOINT} only",
            )

    def scan_line(self, path: Path, number: int, raw: bytes) -> None:
        line = raw.rstrip(b"\r\n")
        if not line or line.isspace():
            if raw.endswith(b"\n") or line:
                self.problem(path, number, "empty line")
            return
        request = self.parse(path, number, line)
        if request is _INVALID:
            return
        checked = self.check_line(path, number, request)
        if checked is None:
            return
        custom_id, params, model = checked
        if custom_id in self.seen:
            self.duplicate(path, number, custom_id)
            return
        try:
            encoded = _encoder.encode(params).encode("utf-8")
        except UnicodeEncodeError as exc:
            code = ord(exc.object[exc.start])
            self.problem(
                path, number, f"params: holds a lone surrogate \\u{code:04x}, not valid Unicode"
            )
            return
        size = len(encoded) + _REQUEST_OVERHEAD
        if size > self.max_bytes:
            limit = self.max_bytes + _ENVELOPE
            self.problem(
                path,
                number,
                f"request of {size:,} bytes as sent (with its id) does not fit the batch limit"
                f" of {limit:,} bytes",
            )
            return
        self.seen.accept(custom_id, len(self.files) - 1, number)
        # Its index in the input (the ordinal recorded with the user's id) stands for its id.
        sent = b'{"custom_id":"%d","params":%s}\n' % (self.plan.requests, encoded)
        part = self.assign(sent, model, custom_id, size)
        if self.bound_output:
            bound = params["max_tokens"]
            assert type(bound) is int  # checked by check_params
            part.max_output_tokens += bound

    def check_line(
        self, path: Path, number: int, request: object
    ) -> tuple[str, dict[str, object], str] | None:
        """``(custom_id, params, model)`` of a valid line, else None (problems recorded)."""
        if not isinstance(request, dict):
            self.problem(path, number, f"expected a JSON object, got {json_type(request)}")
            return None
        problems_before = self.plan.problem_count
        custom_id = request.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id.strip():
            self.problem(path, number, "custom_id: missing, blank or not a string")
        elif len(custom_id) > MAX_CUSTOM_ID:
            self.problem(
                path,
                number,
                f"custom_id: at most {MAX_CUSTOM_ID:,} characters, got {len(custom_id):,}",
            )
        elif not custom_id.isascii() and (surrogate := _lone_surrogate(custom_id)):
            self.problem(path, number, f"custom_id: {surrogate}")
        self.check_keys(path, number, request)
        params = request.get("params")
        if isinstance(params, dict):
            self.check_params(path, number, params)
        else:
            self.problem(path, number, "params: missing or not an object")
        if self.plan.problem_count != problems_before:
            return None
        assert isinstance(custom_id, str) and isinstance(params, dict)
        return custom_id, params, params["model"]

    def check_keys(self, path: Path, number: int, request: dict[str, object]) -> None:
        """The API refuses a whole batch for one line with other keys: refuse the line."""
        extra = [key for key in request if key not in _LINE_KEYS]
        if not extra:
            return
        message = (
            f"unexpected key(s) {', '.join(spelled(k) for k in extra)}: a Message Batches request"
            " line has only custom_id and params"
        )
        if "body" in request or "url" in request:
            message += " (this looks like an OpenAI Batch API line)"
        self.problem(path, number, message)

    def check_params(self, path: Path, number: int, params: dict[str, object]) -> None:
        model = params.get("model")
        if not isinstance(model, str) or not model.strip():
            self.problem(path, number, "params.model: missing, blank or not a string")
        elif not model.isascii() and (surrogate := _lone_surrogate(model)):
            self.problem(path, number, f"params.model: {surrogate}")
        max_tokens = params.get("max_tokens")
        if max_tokens is None:
            self.problem(path, number, "params.max_tokens: missing (a positive integer)")
        elif type(max_tokens) is not int or max_tokens < 1:
            self.problem(
                path,
                number,
                f"params.max_tokens: expected a positive integer, got {spelled(max_tokens)}",
            )
        messages = params.get("messages")
        if messages is None:
            self.problem(path, number, "params.messages: missing (a non-empty list)")
        elif not isinstance(messages, list):
            self.problem(
                path, number, f"params.messages: expected an array, got {json_type(messages)}"
            )
        elif not messages:
            self.problem(path, number, "params.messages: empty; give at least one message")
        stream = params.get("stream")
        if stream is True:
            self.problem(path, number, "params.stream: streaming is not allowed in a batch")
        elif stream is not False and stream is not None:
            self.problem(
                path, number, f"params.stream: expected false or absent, got {spelled(stream)}"
            )
        for key in REFUSED_PARAMS:
            if key in params:
                self.problem(
                    path, number, f"params.{key}: not accepted in a Message Batches request"
                )
