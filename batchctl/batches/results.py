"""Reading a part's output and error files into outcomes, and writing merged results.

Outcomes are recorded per request with the place of its line in the downloaded file, so merging
in input order is a walk over the requests table that reads each line by offset: nothing is held
in memory but one line at a time.

Two shapes of line are read: the OpenAI Batch API's (``{custom_id, response, error}``) and
Anthropic's Message Batches results (``{custom_id, result}``, the result ``succeeded``,
``errored``, ``canceled`` or ``expired``), which name their request by the id batchctl sent
(``derived_ids``); a merged line shows the user's custom_id whatever was sent.
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import json
import mmap
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any, cast

import jiter

from batchctl.batches.derived_ids import parse_derived
from batchctl.batches.failures import resendable
from batchctl.batches.files import LineReader, recorded_checksum
from batchctl.records import REQUEST_OUTCOMES, RequestResult, RequestState, Submission

# The API's error codes for requests that never ran, mapped to batchctl's outcomes.
_UNRUN = {"batch_expired": "expired", "batch_cancelled": "cancelled"}
#: The outcomes a retry may send again (``retry --failed``/``--expired``/``--missing``, and
#: ``on_expired = "resubmit"``): a part file is kept while it holds such a request.
RESENDABLE = tuple(o for o in REQUEST_OUTCOMES if o != "succeeded")


def read_results(path: Path, kind: str) -> Iterator[RequestResult]:
    """Each line of a downloaded output (``kind="output"``) or error file, as an outcome."""
    offset = 0
    value = _value
    fast = jiter.from_json
    new, succeeded = tuple.__new__, RequestResult  # a result built without a Python call
    with path.open("rb", _READ_BUFFER) as handle:
        for raw in handle:
            start, length = offset, len(raw)
            offset += length
            if raw.isspace():
                continue
            try:
                line = fast(raw)  # jiter (as validation): faster than ``json`` by a third
            except ValueError:
                line = value(raw)  # what jiter refused, as ``json`` reads or refuses it
            # Nearly every line is a chat or completions response that succeeded, with a usage
            # of plain counts: read here in a few lookups, in the loop (a call per line costs as
            # much as they do). Any other line is read the long way, below.
            try:
                custom_id, response = line["custom_id"], line["response"]
                body = response["body"]
                status, usage = response["status_code"], body["usage"]
                tokens_in, tokens_out = usage["prompt_tokens"], usage["completion_tokens"]
                cached = usage["prompt_tokens_details"]["cached_tokens"]
                reasoning = usage["completion_tokens_details"]["reasoning_tokens"]
            except (KeyError, TypeError):  # not a dict where one is read, or a key missing
                status = None
            if (
                type(status) is int
                and 200 <= status < 300
                and type(custom_id) is str
                and type(tokens_in) is int
                and type(tokens_out) is int
                and type(cached) is int
                and type(reasoning) is int
                and 0 <= cached <= tokens_in < _ABSURD
                and 0 <= reasoning <= tokens_out < _ABSURD
                and not line.get("error")
            ):
                # fmt: off
                yield new(succeeded, (
                    custom_id, "succeeded", status, None, None, tokens_in,
                    tokens_out, kind, start, length, cached, reasoning, 0, 0, None,
                ))
                # fmt: on
                continue
            if type(line) is not dict or type(line.get("custom_id")) is not str:
                continue  # names no request: its request is settled with its part
            result = line.get("result")
            if type(result) is dict:
                yield _anthropic_result(line, result, kind, start, length)
            else:
                yield _result(line, kind, start, length)


_READ_BUFFER = 1 << 20
# The C scanner of ``json.loads`` (an attribute that typeshed does not declare).
_scan_once: Callable[[str, int], tuple[Any, int]] = vars(json.JSONDecoder())["scan_once"]


def _value(raw: bytes) -> Any:
    """``json.loads(raw)`` for a downloaded line: a UTF-8 line holding one JSON value and its
    line ending (nearly every line) goes straight to the C scanner, without ``loads``'s
    encoding detection and two regular expression passes; anything else (other whitespace, a
    byte order mark, UTF-16, invalid JSON) to ``loads`` itself, which accepts or refuses it."""
    try:
        text = raw.decode("utf-8", "surrogatepass")
        found, end = _scan_once(text, 0)
    except (ValueError, StopIteration):
        return json.loads(raw)
    if end == len(text) or text[end:] in _LINE_ENDS:
        return found
    return json.loads(raw)


_LINE_ENDS = ("\n", "\r\n")


def _result(line: dict[str, Any], kind: str, offset: int, length: int) -> RequestResult:
    custom_id: str = line["custom_id"]
    response = line.get("response") or None
    error = line.get("error") or None
    status = body = None
    if type(response) is dict:
        status = response.get("status_code")
        body = response.get("body")
    tokens_in, tokens_out, cached, reasoning = usage_of(body)
    code = message = None
    outcome = "succeeded"
    if not (type(status) is int and 200 <= status < 300 and not error):
        code, message = _error_of(error, body, status)
        outcome = _UNRUN.get(code or "", "failed")
    return RequestResult(
        custom_id,
        outcome,
        status,
        code,
        message,
        tokens_in,
        tokens_out,
        kind,
        offset,
        length,
        cached,
        reasoning,
    )


# Anthropic's result types of requests that never ran, as batchctl's outcomes and the codes the
# OpenAI shape gives them (so that both read alike).
_ANTHROPIC_UNRUN = {
    "canceled": ("cancelled", "batch_cancelled"),
    "expired": ("expired", "batch_expired"),
}


def _anthropic_result(
    line: dict[str, Any], result: dict[str, Any], kind: str, offset: int, length: int
) -> RequestResult:
    """A Message Batches result line as an outcome: ``succeeded`` with its usage; ``errored``
    failed with its error's type (``invalid_request_error``, ``overloaded_error``, ...) as its
    code; ``canceled`` and ``expired`` as batchctl's cancelled and expired."""
    sent: str = line["custom_id"]
    derived = parse_derived(sent)
    ordinal = None if derived is None else derived[1]
    shown = result.get("type")
    if shown == "succeeded":
        message = result.get("message")
        tokens_in, tokens_out, cache_read, cache_write, cache_1h = anthropic_usage(
            message.get("usage") if isinstance(message, dict) else None
        )
        return RequestResult(
            sent,
            "succeeded",
            None,
            None,
            None,
            tokens_in,
            tokens_out,
            kind,
            offset,
            length,
            cache_read,
            0,
            cache_write,
            cache_1h,
            ordinal,
        )
    if shown == "errored":
        outcome = "failed"
        code, text = _anthropic_error(result.get("error"))
    elif shown in _ANTHROPIC_UNRUN:
        (outcome, code), text = _ANTHROPIC_UNRUN[shown], None
    else:
        outcome, code, text = "failed", "unknown", f"unknown result type {shown!r}"
    return RequestResult(
        sent, outcome, None, code, text, 0, 0, kind, offset, length, ordinal=ordinal
    )


def _anthropic_error(error: Any) -> tuple[str, str | None]:
    """The type and message of an errored result's ``{"type": "error", "error": {type,
    message}}``."""
    inner = error.get("error") if isinstance(error, dict) else None
    if not isinstance(inner, dict):
        return "unknown", None
    return _text(inner.get("type")) or "unknown", _text(inner.get("message"))


def anthropic_usage(usage: Any) -> tuple[int, int, int, int, int]:
    """Input, output, cache-read, cache-write and one-hour cache-write tokens of a Messages
    ``usage``. Anthropic's ``input_tokens`` leaves out the cached ones; batchctl's input tokens
    are all of them (as OpenAI counts, and as prices are computed), cache reads and writes
    being parts of it."""
    if not isinstance(usage, dict):
        return 0, 0, 0, 0, 0
    written = _count(usage.get("cache_creation_input_tokens"))
    read = _count(usage.get("cache_read_input_tokens"))
    detail = usage.get("cache_creation")
    hour = _count(detail.get("ephemeral_1h_input_tokens")) if isinstance(detail, dict) else 0
    if not written and isinstance(detail, dict):
        written = hour + _count(detail.get("ephemeral_5m_input_tokens"))
    tokens_in = _count(usage.get("input_tokens")) + written + read
    return tokens_in, _count(usage.get("output_tokens")), read, written, min(hour, written)


def usage_of(body: Any) -> tuple[int, int, int, int]:
    """Input, output, cached input and reasoning tokens of a response body, whatever the
    endpoint's naming (chat and completions: ``prompt_tokens``, ``completion_tokens`` and their
    ``*_details``; responses and images: ``input_tokens``, ``output_tokens``)."""
    usage = body.get("usage") if isinstance(body, dict) else None
    if not isinstance(usage, dict):
        return 0, 0, 0, 0
    get = usage.get
    tokens_in = _count(get("prompt_tokens", get("input_tokens")))
    tokens_out = _count(get("completion_tokens", get("output_tokens")))
    details = get("prompt_tokens_details")
    cached = (
        _count(details.get("cached_tokens"))
        if type(details) is dict
        else _detail(usage, ("prompt_tokens_details", "input_tokens_details"), "cached_tokens")
    )
    details = get("completion_tokens_details")
    reasoning = (
        _count(details.get("reasoning_tokens"))
        if type(details) is dict
        else _detail(
            usage, ("completion_tokens_details", "output_tokens_details"), "reasoning_tokens"
        )
    )
    # A detail is a part of its total: never more than it, whatever a server reports.
    return (
        tokens_in,
        tokens_out,
        cached if cached <= tokens_in else tokens_in,
        reasoning if reasoning <= tokens_out else tokens_out,
    )


def _detail(usage: dict[str, Any], names: tuple[str, ...], key: str) -> int:
    for name in names:
        details = usage.get(name)
        if isinstance(details, dict):
            return _count(details.get(key))
    return 0


def _count(value: Any) -> int:
    if type(value) is int and 0 < value < _ABSURD:
        return value  # nearly always: a plain count
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < _ABSURD:
        return 0  # absent, negative, NaN or absurd: nothing to price
    return int(value)


_ABSURD = 2**62  # a count at least this large is no count


def _error_of(error: Any, body: Any, status: Any) -> tuple[str | None, str | None]:
    if isinstance(error, dict):
        return _text(error.get("code")), _text(error.get("message"))
    inner = body.get("error") if isinstance(body, dict) else None
    if isinstance(inner, dict):
        return _text(inner.get("code")) or f"http_{status}", _text(inner.get("message"))
    return (f"http_{status}" if status else "unknown"), None


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class MergedWriter:
    """Writes one result line per request: JSONL (the API's lines, merged) or CSV.

    A succeeded request's JSONL line is the API's own line, copied as it is: it holds custom_id
    and the response exactly as the API sent it, and copying it costs a fraction of re-encoding
    it. Lines are gathered into blocks of about a megabyte and written in bytes; ``digest``,
    when given, is fed every byte written to ``handle``. With ``derived_ids`` (Message Batches:
    the API's lines name the ids batchctl sent) a succeeded line is copied but for its id, the
    user's in place of the one sent; the ``result`` stays as the API sent it.
    """

    CSV_COLUMNS = (
        "custom_id",
        "outcome",
        "status_code",
        "error_code",
        "error_message",
        "input_tokens",
        "output_tokens",
        "content",
        "retryable",  # for a request that did not succeed: whether a retry sends it by default
    )

    def __init__(
        self,
        handle: IO[str],
        fmt: str,
        errors: IO[str] | None = None,
        *,
        digest: hashlib._Hash | None = None,
        derived_ids: bool = False,
    ) -> None:
        self.handle = handle
        self.fmt = fmt
        self.errors = errors
        self.digest = digest
        self.derived_ids = derived_ids
        self.csv = csv.writer(handle) if fmt == "csv" else None
        if self.csv is not None:
            self.csv.writerow(self.CSV_COLUMNS)
        self.binary = _binary(handle) if self.csv is None else None

    def write_all(
        self,
        requests: Iterable[Sequence[Any]],
        download: Callable[[int, str], Path],
    ) -> None:
        """Write each request's result, in the order given; ``download(part_id, kind)`` names
        the downloaded file where a request's result line is (``result_offset``). A request is a
        ``RequestState``, or for a line copied as it is, a row of its first fields
        (``merge_rows``)."""
        lines = LineReader()
        try:
            self._write_all(requests, download, lines)
        finally:
            lines.close()

    def _write_all(
        self,
        requests: Iterable[Sequence[Any]],
        download: Callable[[int, str], Path],
        lines: LineReader,
    ) -> None:
        # The loop of every merge: one slice and one append for a succeeded request's line.
        copy = self.csv is None
        renamed = self.derived_ids
        files: dict[tuple[int, str], mmap.mmap | bytes] = {}
        block: list[bytes] = []
        size = 0
        for request in requests:
            part_id, offset = request[_PART], request[_OFFSET]
            if part_id is None or offset is None:
                self._write_block(block)
                block, size = [], 0
                self._record(_state(request), None)
                continue
            key = (part_id, request[_KIND] or "output")
            mapped = files.get(key)
            if mapped is None:
                mapped = files[key] = lines.mapped(download(*key))
            line = mapped[offset : offset + (request[_LENGTH] or 0)]
            if copy and request[_OUTCOME] == "succeeded":
                copied = _under_user_id(line, request[_CUSTOM_ID]) if renamed else line
                if copied is not None:
                    block.append(copied)
                    size += len(copied)
                    if size >= _BLOCK:
                        self._write_block(block)
                        block, size = [], 0
                    continue
            self._write_block(block)
            block, size = [], 0
            self._record(_state(request), line)
        self._write_block(block)

    def _write_block(self, block: list[bytes]) -> None:
        """Write API lines as they are, each ending with one "\n" (no "\r" before it)."""
        if not block:
            return
        data = b"".join(block)
        # A line holds no "\n" but its last byte: as many "\n" as lines means each ends with
        # one. A "\r" may stand alone inside a line (JSON whitespace), not before its "\n".
        # (A lone "\r" is searched for first: one byte is found by memchr, faster than a pair.)
        if data.count(b"\n") != len(block) or (b"\r" in data and b"\r\n" in data):
            data = b"".join(line.rstrip(b"\r\n") + b"\n" for line in block)
        self._emit(data)

    def _emit(self, data: bytes) -> None:
        if self.digest is not None:
            self.digest.update(data)
        if self.binary is not None:
            self.binary.write(data)
        else:
            self.handle.write(data.decode("utf-8"))

    def _record(self, request: RequestState, raw: bytes | None) -> None:
        """Write the merged record of a request that has no API line to copy as it is."""
        record = merged_record(request, None if raw is None else json.loads(raw))
        if self.errors is not None and request.outcome != "succeeded":
            self.errors.write(json.dumps(record) + "\n")
        if self.csv is None:
            self._emit((json.dumps(record) + "\n").encode())
            return
        response = record.get("response") or {}
        error = record.get("error") or {}
        result = record.get("result")
        self.csv.writerow(
            [
                request.custom_id,
                request.outcome or "pending",
                response.get("status_code"),
                request.error_code,
                error.get("message"),
                request.input_tokens,
                request.output_tokens,
                message_text(result.get("message"))
                if isinstance(result, dict)
                else content_of(response.get("body")),
                _flag(error.get("retryable")),
            ]
        )


_BLOCK = 1 << 20  # bytes of lines gathered before they are written
# Where the merge finds what it reads of a request, a ``RequestState`` or a plain row.
_FIELDS = RequestState._fields
_CUSTOM_ID, _OUTCOME = _FIELDS.index("custom_id"), _FIELDS.index("outcome")
_PART, _KIND = _FIELDS.index("result_part_id"), _FIELDS.index("result_kind")
_OFFSET, _LENGTH = _FIELDS.index("result_offset"), _FIELDS.index("result_length")


def _state(request: Sequence[Any]) -> RequestState:
    assert isinstance(request, RequestState), "a row of a line copied as it is, not copied"
    return request


# The sent id a Message Batches result line opens with (as the API and the SDK write it).
_LEADING_SENT_ID = re.compile(rb'\{\s*"custom_id"\s*:\s*"[A-Za-z0-9_-]*"')


def _under_user_id(line: bytes, custom_id: str) -> bytes | None:
    """A result line that opens with the id batchctl sent, as it is but for that id: the
    user's; None when it opens otherwise (then it is written again whole, under that id)."""
    found = _LEADING_SENT_ID.match(line)
    if found is None:
        return None
    return b'{"custom_id": ' + json.dumps(custom_id).encode() + line[found.end() :]


def _flag(value: Any) -> str:
    return "" if value is None else str(bool(value)).lower()


def _binary(handle: IO[str]) -> IO[bytes] | None:
    """The byte stream under a UTF-8 text handle that writes "\n" as it is (flushed first, so
    that bytes written to it follow the text already written), else None."""
    binary = getattr(handle, "buffer", None)
    encoding = (getattr(handle, "encoding", None) or "").lower().replace("-", "")
    if binary is None or encoding != "utf8" or os.linesep != "\n":
        return None
    handle.flush()
    return cast("IO[bytes]", binary)


def merged_record(request: RequestState, line: dict[str, Any] | None) -> dict[str, Any]:
    """The merged result of one request: the API's ``response`` (or Message Batches' ``result``)
    as it was, and for anything but success an ``error`` whose ``code`` is the outcome (failed,
    expired, cancelled, missing) and ``retryable``: whether ``retry`` sends it again without
    ``--include-invalid`` (``failures.resendable``)."""
    record: dict[str, Any] = {"custom_id": request.custom_id}
    if line is not None:
        if line.get("response"):
            record["response"] = line["response"]
        elif line.get("result"):
            record["result"] = line["result"]
    outcome = request.outcome or "missing"
    if outcome != "succeeded":
        error: dict[str, Any] = {"code": outcome}
        if request.error_code:
            error["type"] = request.error_code
        error["message"] = request.error_message or _DEFAULT_MESSAGES.get(outcome, outcome)
        error["retryable"] = resendable(outcome, request.error_code, request.status_code)
        record["error"] = error
    return record


_DEFAULT_MESSAGES = {
    "missing": "the batch finished without a result for this request",
    "expired": "the batch's completion window ended before this request ran",
    "cancelled": "the batch was cancelled before this request ran",
    "failed": "the request failed",
}


def content_of(body: Any) -> str:
    """The text of a response, for the CSV format: chat, responses and completions."""
    if not isinstance(body, dict):
        return ""
    choices = body.get("choices")
    if isinstance(choices, list) and choices:
        first = choices[0]
        message = first.get("message") if isinstance(first, dict) else None
        if isinstance(message, dict):
            return str(message.get("content") or "")
        return str(first.get("text") or "") if isinstance(first, dict) else ""
    if isinstance(body.get("output_text"), str):
        return str(body["output_text"])
    output = body.get("output")
    if isinstance(output, list):
        texts = [
            part.get("text", "")
            for item in output
            if isinstance(item, dict)
            for part in item.get("content", []) or []
            if isinstance(part, dict)
        ]
        return "".join(str(t) for t in texts)
    return ""


def message_text(message: Any) -> str:
    """The text of a Messages API answer, for the CSV format: its text blocks, joined."""
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        return ""
    return "".join(
        str(block.get("text") or "")
        for block in content
        if isinstance(block, dict) and block.get("type") == "text"
    )


def merged_copy_source(
    submission: Submission, *, fmt: str, order: str, errors_path: Path | None
) -> Path | None:
    """The merged file written when the submission settled, when it is exactly what a merge
    with these options would write now: JSONL in input order, no errors file, still settled
    (a retry clears ``merged_at``) and its SHA-256, recorded at the merge, still beside it
    (``copy_merged`` checks the content against it). None when a merge is needed."""
    if fmt != "jsonl" or order != "input" or errors_path is not None:
        return None
    if submission.merged_at is None or submission.results_path is None:
        return None
    merged = Path(submission.results_path)
    return merged if recorded_checksum(merged) is not None else None


class MergedChanged(Exception):
    """The merged file no longer has the SHA-256 recorded when it was written."""


def copy_merged(source: Path, out: IO[str], *, checked: bool = False) -> None:
    """Copy a merged results file to ``out`` as it is, in blocks (nothing parsed), checking its
    SHA-256 on the way unless ``checked`` already: ``MergedChanged`` after the last block when
    it differs, and what was written must be discarded (one pass over the file, not two)."""
    expected = None if checked else recorded_checksum(source)
    digest = None if checked else hashlib.sha256()
    binary = _binary(out)
    decoder = codecs.getincrementaldecoder("utf-8")()
    with source.open("rb") as handle:
        while block := handle.read(_COPY_BLOCK):
            if digest is not None:
                digest.update(block)
            if binary is not None:
                binary.write(block)
            else:
                out.write(decoder.decode(block))
    if binary is None:
        out.write(decoder.decode(b"", final=True))
    if digest is not None and digest.hexdigest() != expected:
        raise MergedChanged(str(source))


_COPY_BLOCK = 1 << 20
