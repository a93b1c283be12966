"""OpenAI Batch API result lines read from a real downloaded file: every line as ``json.loads``
reads it, and its outcome and tokens whatever shape its usage has."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from batchctl.batches.results import read_results


def response_line(usage: Any, *, status: Any = 200, error: Any = None) -> dict[str, Any]:
    body = {"id": "chatcmpl-1", "choices": [{"message": {"content": "hi"}}], "usage": usage}
    return {
        "id": "batch_req_1",
        "custom_id": "req-1",
        "response": {"status_code": status, "request_id": "r1", "body": body},
        "error": error,
    }


def read_one(tmp_path: Path, raw: bytes) -> Any:
    path = tmp_path / "part-001.output.jsonl"
    path.write_bytes(raw)
    (result,) = read_results(path, "output")
    return result


DETAILED = {
    "prompt_tokens": 40,
    "completion_tokens": 9,
    "prompt_tokens_details": {"cached_tokens": 8},
    "completion_tokens_details": {"reasoning_tokens": 3},
}
COMPACT = json.dumps(response_line(DETAILED), separators=(",", ":")).encode()


@pytest.mark.parametrize(
    "raw",
    [
        COMPACT + b"\n",
        COMPACT,  # the last line of a file without its end of line
        COMPACT + b"\r\n",
        b"  " + COMPACT + b" \t\n",  # JSON whitespace around the value
        b"\xef\xbb\xbf" + COMPACT + b"\n",  # a UTF-8 byte order mark
    ],
    ids=["lf", "no-end", "crlf", "whitespace", "bom"],
)
def test_a_line_is_read_whatever_its_encoding_and_whitespace(tmp_path: Path, raw: bytes) -> None:
    result = read_one(tmp_path, raw)

    assert (result.custom_id, result.outcome, result.status_code) == ("req-1", "succeeded", 200)
    assert (result.input_tokens, result.output_tokens) == (40, 9)
    assert (result.cached_tokens, result.reasoning_tokens) == (8, 3)
    assert (result.offset, result.length) == (0, len(raw))


@pytest.mark.parametrize(
    "raw",
    [
        COMPACT + b" x\n",  # extra data after the value
        COMPACT + b"\x0b\n",  # not JSON whitespace
        COMPACT[:-1] + b"\n",  # cut short
        COMPACT.replace(b"hi", b"\xff") + b"\n",  # not UTF-8
    ],
    ids=["extra-data", "vertical-tab", "cut-short", "not-utf-8"],
)
def test_a_line_that_is_no_json_value_is_refused_as_json_loads_refuses_it(
    tmp_path: Path, raw: bytes
) -> None:
    with pytest.raises(ValueError):
        read_one(tmp_path, raw)


@pytest.mark.parametrize(
    ("usage", "tokens"),
    [
        (DETAILED, (40, 9, 8, 3)),
        ({"prompt_tokens": 40, "completion_tokens": 9}, (40, 9, 0, 0)),
        ({"input_tokens": 40, "output_tokens": 9}, (40, 9, 0, 0)),
        (
            {
                "input_tokens": 40,
                "output_tokens": 9,
                "input_tokens_details": {"cached_tokens": 8},
                "output_tokens_details": {"reasoning_tokens": 3},
            },
            (40, 9, 8, 3),
        ),
        (
            {**DETAILED, "prompt_tokens_details": {"cached_tokens": 41}},
            (40, 9, 40, 3),
        ),  # a detail is never more than its total
        ({**DETAILED, "prompt_tokens": True}, (0, 9, 0, 3)),  # a boolean is no count
        ({**DETAILED, "completion_tokens": -9}, (40, 0, 8, 0)),
        ({**DETAILED, "prompt_tokens": 40.0}, (40, 9, 8, 3)),
        (None, (0, 0, 0, 0)),
    ],
    ids=[
        "chat-details",
        "chat-plain",
        "responses-plain",
        "responses-details",
        "cached-over-total",
        "boolean",
        "negative",
        "float",
        "no-usage",
    ],
)
def test_a_succeeded_line_counts_its_tokens_whatever_its_usage_holds(
    tmp_path: Path, usage: Any, tokens: tuple[int, int, int, int]
) -> None:
    result = read_one(tmp_path, json.dumps(response_line(usage)).encode() + b"\n")

    assert result.outcome == "succeeded"
    read = (result.input_tokens, result.output_tokens)
    assert (*read, result.cached_tokens, result.reasoning_tokens) == tokens


@pytest.mark.parametrize(
    ("line", "outcome", "code"),
    [
        (response_line(DETAILED, status=400), "failed", "http_400"),
        (response_line(DETAILED, status="200"), "failed", "http_200"),
        (
            response_line(DETAILED, error={"code": "batch_expired", "message": "expired"}),
            "expired",
            "batch_expired",
        ),
    ],
    ids=["status-400", "status-text", "error"],
)
def test_a_line_that_did_not_succeed_keeps_its_outcome_and_its_tokens(
    tmp_path: Path, line: dict[str, Any], outcome: str, code: str
) -> None:
    result = read_one(tmp_path, json.dumps(line).encode() + b"\n")

    assert (result.outcome, result.error_code) == (outcome, code)
    assert (result.input_tokens, result.output_tokens) == (40, 9)


@pytest.mark.parametrize(
    "other",
    [
        b"[1, 2]\n",  # JSON, but not an object
        b'"req-2"\n',
        json.dumps({**response_line(DETAILED), "custom_id": None}).encode() + b"\n",
        json.dumps({**response_line(DETAILED), "custom_id": 2}).encode() + b"\n",
        json.dumps({"custom_id": ["req-2"], "error": {"code": "x"}}).encode() + b"\n",
    ],
    ids=["array", "string", "null-id", "number-id", "list-id"],
)
def test_a_line_that_names_no_request_is_passed_over_and_the_next_keeps_its_place(
    tmp_path: Path, other: bytes
) -> None:
    path = tmp_path / "part-001.output.jsonl"
    path.write_bytes(other + COMPACT + b"\n")

    (result,) = read_results(path, "output")

    assert (result.custom_id, result.outcome) == ("req-1", "succeeded")
    assert (result.offset, result.length) == (len(other), len(COMPACT) + 1)
