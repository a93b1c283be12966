"""Anthropic Message Batches lines in process: validation and splitting, derived ids, result lines,
the merge under the user's ids, CSV and prices.

Input files and result files are real files; results are recorded in a real SQLite store and
merged from it, as a submission's settling does. The exchange with the API itself (the inline
create, the results download) is the provider's and the emulator's, tested with them.
"""

from __future__ import annotations

import csv
import io
import json
import random
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from batchctl.batches.anthropic_input import ENDPOINT, MAX_REQUESTS, REFUSED_PARAMS
from batchctl.batches.derived_ids import (
    SENT_ID,
    derived_id,
    inline_requests,
    parse_derived,
    part_marker,
)
from batchctl.batches.files import PartWriter, new_token, part_path
from batchctl.batches.pricing import cost_of
from batchctl.batches.results import MergedWriter, read_results
from batchctl.batches.validation import Plan, scan
from batchctl.records import ModelTokens, PartPlanRow, RequestResult, Submission, utcnow
from batchctl.store.base import Store

HAIKU = "claude-haiku-4-5"
SONNET = "claude-sonnet-4-5"


def line(custom_id: Any = "doc-1", **params: Any) -> dict[str, Any]:
    """A valid Message Batches request line; ``params`` replaces or adds keys of its params."""
    body: dict[str, Any] = {
        "model": HAIKU,
        "max_tokens": 100,
        "messages": [{"role": "user", "content": f"summarise {custom_id}"}],
    }
    body.update(params)
    return {"custom_id": custom_id, "params": body}


def write(path: Path, rows: list[Any]) -> Path:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def problems(path: Path, **options: Any) -> list[str]:
    return [str(p) for p in scan([path], api="anthropic", **options).problems]


# --- validation ---------------------------------------------------------------------------------


def test_a_valid_file_plans_one_part_sent_to_the_messages_endpoint(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", [line(f"docs/{i}.txt") for i in range(3)])
    plan = scan([path], api="anthropic")
    assert plan.problems == []
    assert plan.endpoint == ENDPOINT
    assert [(p.model, p.requests) for p in plan.parts] == [(HAIKU, 3)]


def test_any_non_empty_custom_id_is_accepted(tmp_path: Path) -> None:
    ids = ["a/b/c.txt", "https://example.com/x?y=1", "é 中 ✓", "x" * 1000]
    path = write(tmp_path / "in.jsonl", [line(i) for i in ids])
    assert problems(path) == []


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("{not json", "invalid JSON"),
        ("[1, 2]", "expected a JSON object, got an array"),
        (line(None), "custom_id: missing, blank or not a string"),
        (line(""), "custom_id: missing, blank or not a string"),
        (line("x" * 1001), "custom_id: at most 1,000 characters, got 1,001"),
        ({"custom_id": "b"}, "params: missing or not an object"),
        ({"custom_id": "b", "params": [1]}, "params: missing or not an object"),
        (line("b", model=None), "params.model: missing, blank or not a string"),
        (line("b", max_tokens=None), "params.max_tokens: missing"),
        (line("b", max_tokens=0), "params.max_tokens: expected a positive integer"),
        (line("b", max_tokens="9"), "params.max_tokens: expected a positive integer"),
        (line("b", max_tokens=True), "params.max_tokens: expected a positive integer, got true"),
        (line("b", stream="no"), 'params.stream: expected false or absent, got "no"'),
        (line("b", messages=None), "params.messages: missing"),
        (line("b", messages=[]), "params.messages: empty"),
        (line("b", messages="hi"), "params.messages: expected an array, got a string"),
        (line("b", stream=True), "params.stream: streaming is not allowed"),
        ({**line("b"), "extra": 1}, 'unexpected key(s) "extra"'),
        (
            '{"custom_id": "b", "params": {"model": "m", "max_tokens": 1, "messages": ["\\ud800"]}}',
            "params: holds a lone surrogate \\ud800",
        ),
    ],
)
def test_a_bad_line_is_named_with_its_file_and_line(tmp_path: Path, row: Any, message: str) -> None:
    path = write(tmp_path / "in.jsonl", [line("a"), row])
    found = problems(path)
    assert len(found) == 1 and found[0].startswith(f"{path}:2: {message}"), found


@pytest.mark.parametrize("key", REFUSED_PARAMS)
def test_a_key_the_batch_api_refuses_is_named(tmp_path: Path, key: str) -> None:
    path = write(tmp_path / "in.jsonl", [line("a", **{key: "x"})])
    assert problems(path) == [f"{path}:1: params.{key}: not accepted in a Message Batches request"]


def test_a_duplicate_custom_id_names_where_it_was_first(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", [line("a/1"), line("b"), line("a/1")])
    assert problems(path) == [f'{path}:3: duplicate custom_id "a/1" (first at line 1)']


def test_an_openai_shaped_line_is_named_as_such(tmp_path: Path) -> None:
    openai = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}}
    path = write(tmp_path / "in.jsonl", [openai])
    assert any("looks like an OpenAI Batch API line" in p for p in problems(path))


def test_an_endpoint_other_than_messages_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", [line("a")])
    assert problems(path, endpoint="/v1/chat/completions") == [
        '--endpoint: "/v1/chat/completions": Message Batches requests are sent to /v1/messages only'
    ]


# --- splitting ----------------------------------------------------------------------------------


def test_parts_split_at_max_requests(tmp_path: Path) -> None:
    path = write(tmp_path / "in.jsonl", [line(f"r{i}") for i in range(5)])
    plan = scan([path], api="anthropic", max_requests=2)
    assert [p.requests for p in plan.parts] == [2, 2, 1]


@pytest.mark.slow  # 100,001 lines: seconds, not milliseconds
def test_parts_never_hold_more_than_the_apis_100000_requests(tmp_path: Path) -> None:
    small = {"model": HAIKU, "max_tokens": 1, "messages": [{"role": "user", "content": "x"}]}
    path = tmp_path / "in.jsonl"
    with path.open("w") as out:
        for i in range(MAX_REQUESTS + 1):
            out.write(json.dumps({"custom_id": f"r{i}", "params": small}) + "\n")
    plan = scan([path], api="anthropic", max_requests=10**9)
    assert [p.requests for p in plan.parts] == [100_000, 1]


def test_each_model_has_its_own_parts(tmp_path: Path) -> None:
    rows = [line("a"), line("b", model=SONNET), line("c")]
    plan = scan([write(tmp_path / "in.jsonl", rows)], api="anthropic")
    assert sorted((p.model, p.requests) for p in plan.parts) == [(HAIKU, 2), (SONNET, 1)]


def written_parts(tmp_path: Path, rows: list[Any], **options: Any) -> tuple[Plan, PartWriter]:
    """The plan of ``rows`` and the writer of its part files (``writer.directory``), as a
    submission has them."""
    writer = PartWriter(tmp_path / new_token())
    plan = scan([write(tmp_path / "in.jsonl", rows)], api="anthropic", sink=writer, **options)
    writer.close()
    assert plan.problems == []
    return plan, writer


def create_body(directory: Path, number: int) -> bytes:
    """The body of a part's create call as the anthropic SDK encodes it (compact UTF-8 JSON),
    under the longest marker a part can have."""
    requests = list(inline_requests(part_path(directory, number), "f" * 16 + "-p999999999"))
    text = json.dumps({"requests": requests}, ensure_ascii=False, separators=(",", ":"))
    return text.encode()


def test_parts_split_so_that_no_create_body_exceeds_max_bytes(tmp_path: Path) -> None:
    # Non-ASCII text takes more bytes than characters: the limit is on bytes.
    rows = [
        line(f"doc/{i}", messages=[{"role": "user", "content": "中文" * 50}]) for i in range(40)
    ]
    plan, writer = written_parts(tmp_path, rows, max_bytes=4000)
    assert len(plan.parts) > 1
    sizes = [len(create_body(writer.directory, p.number)) for p in plan.parts]
    assert max(sizes) <= 4000
    assert sum(p.requests for p in plan.parts) == 40


def test_a_request_larger_than_max_bytes_is_named(tmp_path: Path) -> None:
    rows = [line("a"), line("big", messages=[{"role": "user", "content": "x" * 5000}])]
    path = write(tmp_path / "in.jsonl", rows)
    found = problems(path, max_bytes=4000)
    assert len(found) == 1 and found[0].startswith(f"{path}:2: request of "), found


# --- derived ids --------------------------------------------------------------------------------


@pytest.mark.parametrize(("number", "index"), [(1, 0), (7, 42), (999_999_999, 10**12 - 1)])
def test_a_derived_id_round_trips_and_is_a_valid_sent_id(number: int, index: int) -> None:
    marker = part_marker(new_token(), number)
    sent = derived_id(marker, index)
    assert SENT_ID.fullmatch(sent)
    assert parse_derived(sent) == (marker, index)


@pytest.mark.parametrize("sent", ["doc-1", "a/b.txt", "0123456789abcdef-p1", "abc-p1-r2", ""])
def test_an_id_batchctl_did_not_derive_parses_as_none(sent: str) -> None:
    assert parse_derived(sent) is None


def test_inline_requests_send_each_params_under_the_parts_marker(tmp_path: Path) -> None:
    rows = [line("a/1"), line("b/2", max_tokens=7)]
    _, writer = written_parts(tmp_path, rows)
    marker = part_marker(writer.directory.name, 1)
    requests = list(inline_requests(part_path(writer.directory, 1), marker))
    assert [r["custom_id"] for r in requests] == [derived_id(marker, 0), derived_id(marker, 1)]
    assert [r["params"] for r in requests] == [rows[0]["params"], rows[1]["params"]]


# --- results ------------------------------------------------------------------------------------

USAGE = {
    "input_tokens": 100,
    "output_tokens": 40,
    "cache_creation_input_tokens": 30,
    "cache_read_input_tokens": 20,
    "cache_creation": {"ephemeral_5m_input_tokens": 20, "ephemeral_1h_input_tokens": 10},
}


def message(text: str, usage: dict[str, Any] = USAGE) -> dict[str, Any]:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": HAIKU,
        "content": [
            {"type": "thinking", "thinking": "hm", "signature": "s"},
            {"type": "text", "text": text},
            {"type": "text", "text": "!"},
        ],
        "stop_reason": "end_turn",
        "stop_sequence": None,
        "usage": usage,
    }


def succeeded(sent: str, text: str = "Hi") -> dict[str, Any]:
    return {"custom_id": sent, "result": {"type": "succeeded", "message": message(text)}}


def errored(sent: str, kind: str = "invalid_request_error") -> dict[str, Any]:
    error = {"type": kind, "message": "max_tokens: too large"}
    envelope = {"type": "error", "error": error, "request_id": "req_1"}
    return {"custom_id": sent, "result": {"type": "errored", "error": envelope}}


def unrun(sent: str, kind: str) -> dict[str, Any]:
    return {"custom_id": sent, "result": {"type": kind}}


def read_one(tmp_path: Path, row: dict[str, Any]) -> RequestResult:
    (result,) = read_results(write(tmp_path / "results.jsonl", [row]), "output")
    return result


MARKER = part_marker("0123456789abcdef", 1)


def test_a_succeeded_result_counts_every_input_token_with_the_cache_reads_and_writes(
    tmp_path: Path,
) -> None:
    result = read_one(tmp_path, succeeded(derived_id(MARKER, 4)))
    assert (result.outcome, result.ordinal, result.error_code) == ("succeeded", 4, None)
    assert (result.input_tokens, result.output_tokens) == (150, 40)
    assert (result.cached_tokens, result.cache_write_tokens, result.cache_write_1h_tokens) == (
        20,
        30,
        10,
    )


def test_an_errored_result_fails_with_its_error_type(tmp_path: Path) -> None:
    result = read_one(tmp_path, errored(derived_id(MARKER, 2), "overloaded_error"))
    assert (result.outcome, result.error_code, result.error_message) == (
        "failed",
        "overloaded_error",
        "max_tokens: too large",
    )
    assert (result.ordinal, result.input_tokens) == (2, 0)


@pytest.mark.parametrize(("kind", "outcome"), [("canceled", "cancelled"), ("expired", "expired")])
def test_a_request_that_never_ran_is_cancelled_or_expired(
    tmp_path: Path, kind: str, outcome: str
) -> None:
    result = read_one(tmp_path, unrun(derived_id(MARKER, 0), kind))
    assert (result.outcome, result.error_code) == (outcome, f"batch_{outcome}")


# --- the merge ----------------------------------------------------------------------------------


def settled(
    store: Store, tmp_path: Path, ids: list[str], *, id_last: bool = False
) -> tuple[int, Path]:
    """A submission of ``ids`` (one part) whose results came back shuffled and were recorded:
    its run id and its results file. ``id_last``: each line names its id after its result."""
    plan, writer = written_parts(tmp_path, [line(i) for i in ids])
    directory = writer.directory
    submission = Submission(
        0, "anthropic", ENDPOINT, "24h", {}, plan.sha256, ["in.jsonl"], str(directory),
        directory.name, plan.requests, plan.bytes, "keep", 3, None, None,
    )  # fmt: skip
    (part,) = plan.parts
    run_id = store.record_submission(
        job="submit",
        scope=None,
        trigger="submit",
        now=utcnow(),
        submission=submission,
        parts=[PartPlanRow(1, 1, part.model, part.requests, part.bytes, "p", "f")],
        requests=writer.requests(),
    )
    marker = part_marker(directory.name, 1)
    lines = [succeeded(derived_id(marker, i), f"answer {i}") for i in range(len(ids))]
    lines[1] = errored(derived_id(marker, 1))
    lines[2] = unrun(derived_id(marker, 2), "expired")
    random.Random(7).shuffle(lines)
    if id_last:
        lines = [{"result": row["result"], "custom_id": row["custom_id"]} for row in lines]
    results = write(tmp_path / "results.jsonl", lines)
    (recorded,) = store.parts(run_id)
    store.record_results(recorded.id, read_results(results, "output"), utcnow())
    return run_id, results


def merged(store: Store, run_id: int, results: Path, fmt: str) -> str:
    out = io.StringIO()
    writer = MergedWriter(out, fmt, derived_ids=True)
    writer.write_all(store.requests_in_order(run_id), lambda _part, _kind: results)
    return out.getvalue()


IDS = ["docs/a.txt", "docs/b.txt", "c:d", "e f", "g.h"]


def test_merged_lines_show_the_users_ids_in_input_order_with_the_apis_results(
    store: Store, tmp_path: Path
) -> None:
    run_id, results = settled(store, tmp_path, IDS)
    lines = [json.loads(text) for text in merged(store, run_id, results, "jsonl").splitlines()]
    assert [m["custom_id"] for m in lines] == IDS
    assert lines[0] == {"custom_id": IDS[0], "result": succeeded("x", "answer 0")["result"]}
    assert lines[1]["result"]["type"] == "errored"
    assert lines[1]["error"]["type"] == "invalid_request_error"
    assert (lines[2]["result"], lines[2]["error"]["code"]) == ({"type": "expired"}, "expired")


def test_a_succeeded_line_is_merged_as_the_api_wrote_it_but_for_its_id(
    store: Store, tmp_path: Path
) -> None:
    run_id, results = settled(store, tmp_path, IDS)
    first = merged(store, run_id, results, "jsonl").splitlines()[0]
    assert first == json.dumps(
        {"custom_id": IDS[0], "result": succeeded("x", "answer 0")["result"]}
    )


def test_a_line_that_names_its_id_after_its_result_is_merged_under_the_users_id(
    store: Store, tmp_path: Path
) -> None:
    run_id, results = settled(store, tmp_path, IDS, id_last=True)
    lines = [json.loads(text) for text in merged(store, run_id, results, "jsonl").splitlines()]
    assert [m["custom_id"] for m in lines] == IDS
    assert lines[0]["result"] == succeeded("x", "answer 0")["result"]


def test_csv_content_is_the_answers_text_blocks_joined(store: Store, tmp_path: Path) -> None:
    run_id, results = settled(store, tmp_path, IDS)
    rows = list(csv.DictReader(io.StringIO(merged(store, run_id, results, "csv"))))
    assert list(rows[0]) == list(MergedWriter.CSV_COLUMNS)
    assert [(r["custom_id"], r["outcome"], r["content"]) for r in rows] == [
        (IDS[0], "succeeded", "answer 0!"),
        (IDS[1], "failed", ""),
        (IDS[2], "expired", ""),
        (IDS[3], "succeeded", "answer 3!"),
        (IDS[4], "succeeded", "answer 4!"),
    ]
    assert (rows[0]["input_tokens"], rows[1]["error_code"]) == ("150", "invalid_request_error")


# --- prices -------------------------------------------------------------------------------------


def test_cache_reads_and_writes_cost_genai_prices_own_batch_figure(
    store: Store, tmp_path: Path
) -> None:
    import genai_prices

    run_id, _ = settled(store, tmp_path, IDS)
    tokens = store.request_totals(run_id).tokens
    assert tokens == [ModelTokens(HAIKU, 450, 120, 60, 0, 90, 30)]  # three succeeded
    cost = cost_of(tokens, {}, 0.5, provider_id="anthropic")

    usage = genai_prices.extract_usage(message("x"), provider_id="anthropic").usage
    one = genai_prices.calc_price(
        usage, HAIKU, provider_id="anthropic", price_context={"processing": "batch"}
    )
    standard = genai_prices.calc_price(usage, HAIKU, provider_id="anthropic")
    assert cost.unpriced_models == ()
    assert Decimal(str(cost.batch)) == pytest.approx(3 * one.total_price)
    assert Decimal(str(cost.synchronous)) == pytest.approx(3 * standard.total_price)
    assert cost.batch == pytest.approx(cost.synchronous / 2)
