"""The fast strict parser of input lines (jiter) against the reference (``json`` with checks).

Validation parses each line with jiter and asks the standard library's parser only about what
jiter refuses; for that to change nothing, jiter must never accept a line the reference refuses,
and must read what it accepts as the same value.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from batchctl.batches.validation import _decode, _strict_loads, scan
from tests.batches.jsonl import request, write_jsonl

# Pieces of JSON and of near-JSON: joined at random they make valid lines, and lines invalid in
# every way the reference refuses (duplicate keys, NaN, bad escapes, control characters, bad
# numbers, bad UTF-8, trailing data).
_PIECES = [
    b"{", b"}", b"[", b"]", b",", b":", b" ", b"\t", b"\r", b"\x0c",
    b'"a"', b'"b"', b'"\\u0061"', b'"\\ud800"', b'"\\udc00"', b'"\\ud83d\\ude00"', b'"\\x"',
    b'"\x01"', b'"\xc3\xa9"', b'"\xff"', b'"\xed\xa0\x80"', b"\xef\xbb\xbf",
    b"0", b"1", b"-", b".", b"e", b"E", b"+", b"01", b"1e400", b"-0", b"1.5",
    b"true", b"false", b"null", b"NaN", b"Infinity", b"tru",
]  # fmt: skip

_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=12,
)


def _reference(line: bytes) -> tuple[bool, object]:
    try:
        return True, _decode(line.decode("utf-8"))
    except (ValueError, RecursionError):  # UnicodeDecodeError is a ValueError
        return False, None


def _same(a: object, b: object) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return a == b or (math.isinf(a) and a == b)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


def _agrees(line: bytes) -> None:
    accepted, expected = _reference(line)
    try:
        value = _strict_loads(line)
    except ValueError:
        return  # refused: the reference decides, so nothing changes
    assert accepted, f"jiter accepted {line!r}, which the reference refuses"
    assert _same(value, expected), f"{line!r}: jiter read {value!r}, the reference {expected!r}"


@settings(max_examples=1500, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=12).map(b"".join))
def test_the_fast_parser_accepts_no_piece_string_the_reference_refuses(line: bytes) -> None:
    _agrees(line)


@settings(max_examples=500, deadline=None)
@given(_values)
def test_the_fast_parser_reads_any_json_value_as_the_reference_does(value: object) -> None:
    _agrees(json.dumps(value, ensure_ascii=False).encode())
    _agrees(json.dumps(value, ensure_ascii=True).encode())


@pytest.mark.parametrize(
    "line",
    [
        b'{"custom_id": "a", "custom_id": "b"}',
        b'{"body": {"model": "m", "model": "m"}}',
        b'{"a": 1, "\\u0061": 2}',
        b'{"a": NaN}',
        b'{"a": -Infinity}',
        b'{"a": "\xff"}',
        b'{"a": "\x1f"}',
        b'{"a": 1} x',
    ],
)
def test_the_fast_parser_refuses_what_the_reference_refuses(line: bytes) -> None:
    assert not _reference(line)[0]
    with pytest.raises(ValueError):
        _strict_loads(line)


def test_a_request_nested_deeper_than_the_fast_parser_reaches_is_still_valid(
    tmp_path: Path,
) -> None:
    deep = request("deep", response_format={"type": "json_schema", "json_schema": {}})
    nested: dict[str, object] = deep["body"]["response_format"]["json_schema"]
    for _ in range(250):  # jiter stops at 200 levels; the API and the reference go further
        nested["items"] = {}
        nested = nested["items"]  # type: ignore[assignment]
    plan = scan([write_jsonl(tmp_path / "in.jsonl", [deep])])
    assert plan.problems == []
    assert plan.requests == 1
