"""``batchctl submit``: validation, splitting, duplicates, --dry-run and --metadata.

batchctl talks to the project's OpenAI API emulator through the real ``openai`` SDK over HTTP;
the tests look only at what a user sees: exit codes, output, files, the database and what reached
the API (the emulator's request log and batches).
"""

from __future__ import annotations

import json
import re
import socket
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import openai
import pytest

from batchctl.batches.validation import scan
from batchctl.emulator import Emulator
from tests.batches.jsonl import CHAT, request, write_jsonl
from tests.conftest import run_exe
from tests.waiting import scaled, wait_for


def uploads(emu: Emulator) -> list[Any]:
    return [r for r in emu.requests if r.method == "POST" and r.path == "/v1/files"]


def assert_nothing_submitted(emu: Emulator, cli: Any) -> None:
    assert uploads(emu) == []
    assert [r for r in emu.requests if r.method == "POST"] == []
    listed = cli("status", "--json")
    assert listed.exit_code == 0
    assert listed.json() == []


# --- submit, wait and the exit codes -------------------------------------------------------------


def test_submit_json_prints_the_run_with_its_parts_and_requests(api: Emulator, ws: Any, cli: Any):
    write_jsonl(ws.root / "in.jsonl", [request(f"r{i}") for i in range(5)])

    result = cli("submit", "in.jsonl", "--json")

    assert result.exit_code == 0, result.stderr
    run = result.json()
    assert isinstance(run, dict)
    assert ws.sql("SELECT id, job FROM runs") == [(run["id"], "submit")]
    assert len(run["parts"]) == 1
    part = run["parts"][0]
    assert part["batch_id"] in api.batches
    assert part["model"] == "gpt-4o-mini"
    assert part["requests"] == 5
    assert sum(run["requests"].values()) == 5
    assert len(uploads(api)) == 1


def test_submit_then_wait_exits_0_when_every_request_succeeds(api: Emulator, ws: Any, cli: Any):
    write_jsonl(ws.root / "in.jsonl", [request(f"r{i}") for i in range(5)])
    run_id = cli("submit", "in.jsonl", "--json").json()["id"]

    waited = cli("wait", str(run_id))

    assert waited.exit_code == 0, waited.stderr
    assert f"run {run_id} completed: 5 succeeded" in waited.stdout
    assert ws.sql(
        "SELECT status, items_processed, items_failed FROM runs WHERE id = ?", run_id
    ) == [("completed", 5, 0)]


def test_submit_wait_json_prints_the_finished_summary_and_exits_3_when_some_fail(
    api: Emulator, ws: Any, cli: Any
):
    rows = [request(f"r{i}") for i in range(6)]
    rows[2] = request("r2", model="nonexistent-model")
    write_jsonl(ws.root / "in.jsonl", rows)

    result = cli("submit", "in.jsonl", "--wait", "--json")

    assert result.exit_code == 3, result.stderr
    summary = result.json()
    assert summary["status"] == "partial"
    assert summary["requests"] == {"succeeded": 5, "failed": 1}
    assert Path(summary["output"]).exists()
    assert summary["cost"] == pytest.approx(summary["synchronous_cost"] / 2, abs=1e-6)
    (run_id,) = [r[0] for r in ws.sql("SELECT id FROM runs")]
    assert summary["id"] == run_id
    assert ws.sql("SELECT status, items_processed, items_failed FROM runs") == [("partial", 5, 1)]


def test_wait_exits_3_when_some_requests_fail(api: Emulator, ws: Any, cli: Any):
    write_jsonl(ws.root / "in.jsonl", [request("ok"), request("bad", model="nonexistent-gpt")])
    run_id = cli("submit", "in.jsonl", "--json").json()["id"]

    waited = cli("wait", str(run_id))

    assert waited.exit_code == 3
    assert "1 failed" in waited.stdout
    assert "1 succeeded" in waited.stdout


# --- splitting -----------------------------------------------------------------------------------


def _many_requests(path: Path, count: int) -> Path:
    line = '{"custom_id":"r%d","method":"POST","url":"/v1/embeddings","body":{"model":"text-embedding-3-small","input":"x"}}\n'
    with path.open("w") as out:
        out.writelines(line % i for i in range(count))
    return path


@pytest.mark.slow
@pytest.mark.timeout(scaled(600))  # four commands over 84 MB: a bound for a hang only
def test_120000_requests_are_split_into_three_parts_of_one_run(
    api: Emulator, ws: Any, batchctl_exe: str
):
    _many_requests(ws.root / "big.jsonl", 120_000)
    env = ws.env()

    submitted = run_exe(
        batchctl_exe,
        "submit",
        "big.jsonl",
        "--max-requests",
        "40000",
        "--json",
        env=env,
        timeout=180,  # only bounds a hang: 84 MB on a loaded machine
    )

    assert submitted.returncode == 0, submitted.stderr
    run_id = json.loads(submitted.stdout)["id"]
    assert ws.sql("SELECT count(*) FROM runs") == [(1,)]
    shown = run_exe(batchctl_exe, "status", str(run_id), "--json", env=env, timeout=180)
    assert shown.returncode == 0, shown.stderr
    parts = json.loads(shown.stdout)["parts"]
    assert [p["requests"] for p in parts] == [40_000, 40_000, 40_000]
    batch_ids = [p["batch_id"] for p in parts]
    assert all(b and b.startswith("batch_") for b in batch_ids)
    assert len(set(batch_ids)) == 3
    assert set(batch_ids) == set(api.batches)
    assert all(api.batches[b]["metadata"]["batchctl_run"] == str(run_id) for b in batch_ids)

    waited = run_exe(batchctl_exe, "wait", str(run_id), env=env, timeout=300)
    assert waited.returncode == 0, waited.stderr
    out = ws.root / "out.jsonl"
    merged = run_exe(batchctl_exe, "results", str(run_id), "-o", str(out), env=env, timeout=180)
    assert merged.returncode == 0, merged.stderr
    with out.open() as handle:
        ids = [json.loads(line)["custom_id"] for line in handle]
    assert ids == [f"r{i}" for i in range(120_000)]


def test_120000_requests_make_three_parts_at_the_default_limit(api: Emulator, ws: Any, cli: Any):
    _many_requests(ws.root / "big.jsonl", 120_000)

    plan = cli("submit", "big.jsonl", "--dry-run", "--json")

    assert plan.exit_code == 0, plan.stderr
    assert [p["requests"] for p in plan.json()["parts"]] == [50_000, 50_000, 20_000]
    assert plan.json()["requests"] == 120_000


def test_max_bytes_keeps_every_part_within_the_limit(api: Emulator, ws: Any, cli: Any):
    path = write_jsonl(ws.root / "in.jsonl", [request(f"r{i:02d}") for i in range(10)])
    line_bytes = path.stat().st_size // 10  # every line has the same length
    limit = line_bytes * 3 + 10

    result = cli("submit", "in.jsonl", "--max-bytes", str(limit), "--json")

    assert result.exit_code == 0, result.stderr
    parts = result.json()["parts"]
    assert [p["requests"] for p in parts] == [3, 3, 3, 1]
    for part in parts:
        assert part["bytes"] <= limit
        assert api.files[part["input_file_id"]]["bytes"] == part["bytes"]


def test_requests_for_different_models_go_to_one_part_per_model(api: Emulator, ws: Any, cli: Any):
    models = ["gpt-4o-mini", "gpt-4.1-nano", "gpt-4o"]
    rows = [request(f"r{i}", model=models[i % 3]) for i in range(12)]
    write_jsonl(ws.root / "in.jsonl", rows)

    result = cli("submit", "in.jsonl", "--json")

    assert result.exit_code == 0, result.stderr
    parts = result.json()["parts"]
    assert sorted(p["model"] for p in parts) == sorted(models)
    assert all(p["requests"] == 4 for p in parts)
    for part in parts:
        sent = api.file_content(part["input_file_id"]).decode().splitlines()
        assert {json.loads(line)["body"]["model"] for line in sent} == {part["model"]}
        assert len(sent) == 4


def test_several_input_files_are_one_submission(api: Emulator, ws: Any, cli: Any):
    write_jsonl(ws.root / "a.jsonl", [request("a1"), request("a2")])
    write_jsonl(ws.root / "b.jsonl", [request("b1"), request("b2"), request("b3")])

    result = cli("submit", "a.jsonl", "b.jsonl", "--wait", "--json")

    assert result.exit_code == 0, result.stderr
    assert result.json()["requests"] == {"succeeded": 5}
    assert ws.sql("SELECT count(*) FROM runs") == [(1,)]
    assert len(uploads(api)) == 1
    with open(result.json()["output"]) as handle:
        ids = [json.loads(line)["custom_id"] for line in handle]
    assert ids == ["a1", "a2", "b1", "b2", "b3"]


def test_windows_line_endings_are_accepted(api: Emulator, ws: Any, cli: Any):
    rows = [json.dumps(request(f"r{i}")).encode() for i in range(3)]
    (ws.root / "a.jsonl").write_bytes(b"\r\n".join(rows) + b"\r\n")
    write_jsonl(ws.root / "b.jsonl", [request("b1")])

    result = cli("submit", "a.jsonl", "b.jsonl", "--wait", "--json")

    assert result.exit_code == 0, result.stderr
    assert result.json()["requests"] == {"succeeded": 4}


def test_a_last_line_ending_in_a_lone_carriage_return_is_sent_intact(
    api: Emulator, ws: Any, cli: Any
):
    (ws.root / "a.jsonl").write_bytes(json.dumps(request("a1")).encode() + b"\r")
    write_jsonl(ws.root / "b.jsonl", [request("b1")])

    result = cli("submit", "a.jsonl", "b.jsonl", "--wait", "--json")

    assert result.exit_code == 0, result.stdout
    assert result.json()["requests"] == {"succeeded": 2}


def test_a_line_longer_than_one_read_is_sent_intact(api: Emulator, ws: Any, cli: Any):
    rows = [request("r1"), request("long", text="y" * 3_000_000), request("r3")]
    data = write_jsonl(ws.root / "in.jsonl", rows).read_bytes()

    result = cli("submit", "in.jsonl", "--json")

    assert result.exit_code == 0, result.stderr
    (part,) = (ws.root / "batchctl-files").glob("*/part-001.jsonl")
    assert part.read_bytes() == data


@pytest.mark.parametrize("stream", [False, None])
def test_stream_false_or_null_is_accepted(api: Emulator, ws: Any, cli: Any, stream: bool | None):
    row = _with(body_changes={"stream": stream})
    write_jsonl(ws.root / "in.jsonl", [row])

    result = cli("submit", "in.jsonl", "--dry-run", "--json")

    assert result.exit_code == 0, result.stderr
    assert result.json()["requests"] == 1


def test_custom_id_duplicated_across_files_names_both_places(api: Emulator, ws: Any, cli: Any):
    write_jsonl(ws.root / "a.jsonl", [request("x"), request("y")])
    write_jsonl(ws.root / "b.jsonl", [request("z"), request("x")])

    result = cli("submit", "a.jsonl", "b.jsonl")

    assert result.exit_code == 2
    assert 'error: b.jsonl:2: duplicate custom_id "x" (first at a.jsonl:1)' in result.stderr
    assert_nothing_submitted(api, cli)


# --- validation ----------------------------------------------------------------------------------

_OK = request("ok")


def _lines(*rows: Any) -> bytes:
    return b"".join((r if isinstance(r, bytes) else json.dumps(r).encode()) + b"\n" for r in rows)


def _without(key: str, inner: str | None = None) -> dict[str, Any]:
    row = json.loads(json.dumps(request("r2")))
    if inner is None:
        del row[key]
    else:
        del row[key][inner]
    return row


def _with(**changes: Any) -> dict[str, Any]:
    row = request("r2")
    body = changes.pop("body_changes", None)
    row.update(changes)
    if body:
        row["body"] = {**row["body"], **body}
    return row


def _raw(row: dict[str, Any], value: str, text: str) -> bytes:
    """``row`` as a JSON line in which the string ``value`` is replaced by the raw ``text``."""
    return json.dumps(row).replace(json.dumps(value), text).encode()


_DEEP = "[" * 5000 + "]" * 5000
_CHUNK = 1 << 20  # how much of a line batchctl reads at a time

# (id, file content, or None for a missing file, or a function that makes the path; extra submit
# options; FILE:LINE, or "FILE: " for a problem with the whole file; problem text)
INVALID: list[tuple[str, bytes | Callable[[Path], object] | None, list[str], str, str]] = [
    ("invalid-json", _lines(_OK, b'{"custom_id": "r2",'), [], "in.jsonl:2", "invalid JSON"),
    (
        "not-an-object",
        _lines(_OK, b"[1, 2]"),
        [],
        "in.jsonl:2",
        "expected a JSON object, got an array",
    ),
    ("missing-custom-id", _lines(_OK, _without("custom_id")), [], "in.jsonl:2", "custom_id"),
    ("empty-custom-id", _lines(_OK, _with(custom_id="")), [], "in.jsonl:2", "custom_id"),
    (
        "duplicate-custom-id",
        _lines(_OK, request("r2"), request("ok")),
        [],
        "in.jsonl:3",
        'duplicate custom_id "ok" (first at line 1)',
    ),
    ("method-not-post", _lines(_OK, _with(method="GET")), [], "in.jsonl:2", "method"),
    (
        "unsupported-url",
        _lines(_OK, _with(url="/v1/audio/speech")),
        [],
        "in.jsonl:2",
        "not a supported batch endpoint",
    ),
    (
        "url-differs-from-first-line",
        _lines(_OK, _with(url="/v1/responses")),
        [],
        "in.jsonl:2",
        'differs from the batch\'s endpoint "/v1/chat/completions"',
    ),
    (
        "url-differs-from-endpoint-option",
        _lines(_OK),
        ["--endpoint", "/v1/responses"],
        "in.jsonl:1",
        'differs from the batch\'s endpoint "/v1/responses"',
    ),
    ("missing-body", _lines(_OK, _without("body")), [], "in.jsonl:2", "body: missing"),
    ("missing-model", _lines(_OK, _without("body", "model")), [], "in.jsonl:2", "body.model"),
    (
        "stream-true",
        _lines(_OK, _with(body_changes={"stream": True})),
        [],
        "in.jsonl:2",
        "streaming is not allowed",
    ),
    ("empty-line", _lines(_OK, b"", request("r3")), [], "in.jsonl:2", "empty line"),
    ("empty-file", b"", [], "in.jsonl: ", "no requests: the file is empty"),
    ("missing-file", None, [], "in.jsonl: ", "cannot read: No such file or directory"),
    ("directory", Path.mkdir, [], "in.jsonl: ", "cannot read a directory"),
    ("utf8-bom", b"\xef\xbb\xbf" + _lines(_OK), [], "in.jsonl:1", "byte order mark"),
    (
        "invalid-utf8",
        _lines(_OK, json.dumps(request("r\u00e9")).encode().replace(b"\\u00e9", b"\xe9")),
        [],
        "in.jsonl:2",
        "not valid UTF-8",
    ),
    *[
        (
            f"not-a-json-number-{name}",
            _lines(_OK, _raw(_with(body_changes={"temperature": "@"}), "@", name)),
            [],
            "in.jsonl:2",
            f"invalid JSON: {name} is not a JSON number",
        )
        for name in ("NaN", "Infinity", "-Infinity")
    ],
    (
        "duplicate-key-custom-id",
        _lines(_OK, _raw(_with(custom_id="@"), "@", '"r2", "custom_id": "r3"')),
        [],
        "in.jsonl:2",
        'invalid JSON: duplicate key "custom_id"',
    ),
    (
        "duplicate-key-deep-in-the-body",
        _lines(_OK, _raw(_with(body_changes={"messages": ["@"]}), "@", '{"a": 1, "a": 1}')),
        [],
        "in.jsonl:2",
        'invalid JSON: duplicate key "a"',
    ),
    (
        "nested-too-deeply",
        _lines(_OK, _raw(_with(body_changes={"metadata": "@"}), "@", _DEEP)),
        [],
        "in.jsonl:2",
        "invalid JSON: nested too deeply",
    ),
    (
        "lone-surrogate-in-custom-id",
        _lines(_OK, _raw(_with(custom_id="@"), "@", '"r\\ud800"')),
        [],
        "in.jsonl:2",
        "custom_id: holds a lone surrogate \\ud800",
    ),
    (
        "lone-surrogate-in-model",
        _lines(_OK, _raw(_with(body_changes={"model": "@"}), "@", '"gpt\\udc00"')),
        [],
        "in.jsonl:2",
        "body.model: holds a lone surrogate \\udc00",
    ),
    (
        "surrogate-encoded-in-utf8",
        _lines(
            _OK, _raw(_with(custom_id="@"), "@", '"r\\udcad"').replace(b"\\udcad", b"\xed\xb2\xad")
        ),
        [],
        "in.jsonl:2",
        "not valid UTF-8 (byte 0xed",
    ),
    ("blank-custom-id", _lines(_OK, _with(custom_id=" \t")), [], "in.jsonl:2", "custom_id"),
    (
        "blank-model",
        _lines(_OK, _with(body_changes={"model": " "})),
        [],
        "in.jsonl:2",
        "body.model",
    ),
    *[
        (
            f"stream-{name}",
            _lines(_OK, _with(body_changes={"stream": value})),
            [],
            "in.jsonl:2",
            f"body.stream: expected false or absent, got {json.dumps(value)}",
        )
        for name, value in (("string-true", "true"), ("string-false", "false"), ("one", 1))
    ],
    *[
        (
            f"output-limit-{name}",
            _lines(_OK, _with(body_changes={key: value})),
            [],
            "in.jsonl:2",
            f"body.{key}: expected a positive integer, got {json.dumps(value)}",
        )
        for name, key, value in (
            ("negative", "max_tokens", -5),
            ("zero", "max_completion_tokens", 0),
            ("text", "max_tokens", "512"),
            ("fraction", "max_completion_tokens", 1.5),
        )
    ],
    (
        "line-longer-than-a-read-and-max-bytes",
        _lines(_OK, request("long", text="x" * 3 * _CHUNK)),
        ["--max-bytes", "2000000"],
        "in.jsonl:2",
        "exceeds the batch limit of 2,000,000",
    ),
    (
        "line-longer-than-max-bytes",
        _lines(request("short", text="hi"), request("long", text="x" * 500)),
        ["--max-bytes", "400"],
        "in.jsonl:2",
        "exceeds the batch limit of 400",
    ),
]


def _write_invalid(ws: Any, content: bytes | Callable[[Path], object] | None) -> None:
    if isinstance(content, bytes):
        (ws.root / "in.jsonl").write_bytes(content)
    elif content is not None:
        content(ws.root / "in.jsonl")


@pytest.mark.parametrize(
    ("content", "options"), [pytest.param(c, o, id=i) for i, c, o, _, _ in INVALID]
)
def test_invalid_input_exits_2_and_submits_nothing(
    api: Emulator, ws: Any, cli: Any, content: bytes | None, options: list[str]
):
    _write_invalid(ws, content)

    result = cli("submit", "in.jsonl", *options)

    assert result.exit_code == 2
    assert result.stderr.startswith("error: ")
    assert "problem(s) in the input; nothing was submitted" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
    assert_nothing_submitted(api, cli)
    assert not [p for p in ws.root.iterdir() if p.name.endswith("-files")]


@pytest.mark.parametrize(
    ("content", "options", "where", "problem"),
    [pytest.param(c, o, w, p, id=i) for i, c, o, w, p in INVALID],
)
def test_invalid_input_names_file_line_and_problem(
    api: Emulator,
    ws: Any,
    cli: Any,
    content: bytes | None,
    options: list[str],
    where: str,
    problem: str,
):
    _write_invalid(ws, content)

    result = cli("submit", "in.jsonl", *options)

    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith(f"error: {where}")]
    assert lines, result.stderr
    assert problem in lines[0]
    assert all(line.startswith(("error: ", "hint: ")) for line in result.stderr.splitlines())


def _dumped(row: dict[str, Any], **changes: Any) -> str:
    return json.dumps({**row, **changes})


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("null", "expected a JSON object, got null"),
        ("[1, 2]", "expected a JSON object, got an array"),
        ('"text"', "expected a JSON object, got a string"),
        ("true", "expected a JSON object, got true"),
        (_dumped(_OK, method=None), 'method: expected "POST", got null'),
        (_dumped(_OK, method=True), 'method: expected "POST", got true'),
        (_dumped(_OK, method="GET"), 'method: expected "POST", got "GET"'),
        (
            json.dumps({k: v for k, v in _OK.items() if k != "method"}),
            'method: missing (expected "POST")',
        ),
        (_dumped(_OK, url=False), "url: false is not a supported batch endpoint (one of"),
        (_dumped(_OK, url="/v1/nope"), 'url: "/v1/nope" is not a supported batch endpoint'),
        (json.dumps({k: v for k, v in _OK.items() if k != "url"}), "url: missing (one of"),
        (
            _dumped(_OK, body={**_OK["body"], "stream": "true"}),
            'body.stream: expected false or absent, got "true"',
        ),
        (
            _dumped(_OK, body={**_OK["body"], "stream": [False]}),
            "body.stream: expected false or absent, got [false]",
        ),
        (
            _dumped(_OK, body={**_OK["body"], "max_tokens": True}),
            "body.max_tokens: expected a positive integer, got true",
        ),
        ('{"a": 1, "a": null}', 'invalid JSON: duplicate key "a" in one object'),
    ],
)
def test_values_in_problems_are_spelled_as_json(tmp_path: Path, line: str, problem: str) -> None:
    path = tmp_path / "in.jsonl"
    path.write_text(line + "\n")
    [found] = [str(p) for p in scan([path]).problems]
    assert found.startswith(f"{path}:1: {problem}")
    assert not re.search(r"\b(None|True|False|NoneType|list|dict|str)\b", found), found


def test_more_than_20_problems_are_counted(api: Emulator, ws: Any, cli: Any):
    (ws.root / "in.jsonl").write_text("not json\n" * 25)

    result = cli("submit", "in.jsonl")

    assert result.exit_code == 2
    assert "error: 25 problem(s) in the input; nothing was submitted" in result.stderr
    assert_nothing_submitted(api, cli)


def test_more_than_20_problems_show_the_first_20_and_how_many_more(
    api: Emulator, ws: Any, cli: Any
):
    (ws.root / "in.jsonl").write_text("not json\n" * 25)

    result = cli("submit", "in.jsonl")

    assert result.exit_code == 2
    named = re.findall(r"^error: in\.jsonl:(\d+): invalid JSON", result.stderr, re.MULTILINE)
    assert named == [str(n) for n in range(1, 21)]
    assert "... and 5 more" in result.stderr


def test_duplicate_custom_ids_beyond_the_first_20_are_counted_and_the_shown_name_the_first(
    tmp_path: Path,
) -> None:
    lines = [request("same", text=f"line {n}") for n in range(26)]  # 25 repeats of line 1

    plan = scan([write_jsonl(tmp_path / "in.jsonl", lines)])

    assert plan.problem_count == 25
    assert [(p.line, p.message) for p in plan.problems] == [
        (n, 'duplicate custom_id "same" (first at line 1)') for n in range(2, 22)
    ]


def test_problems_beyond_the_first_20_are_counted_once(api: Emulator, ws: Any, cli: Any):
    (ws.root / "a.jsonl").write_text("not json\n" * 25)
    write_jsonl(ws.root / "b.jsonl", [{"custom_id": "b1"}])  # 3 problems: method, url, body

    result = cli("submit", "a.jsonl", "b.jsonl")

    assert result.exit_code == 2
    assert "error: 28 problem(s) in the input" in result.stderr


# --- the same input twice ------------------------------------------------------------------------


def test_submitting_the_same_content_twice_is_refused_naming_the_run(
    api: Emulator, ws: Any, cli: Any
):
    write_jsonl(ws.root / "in.jsonl", [request("r1"), request("r2")])
    first = cli("submit", "in.jsonl", "--json").json()["id"]
    (ws.root / "copy.jsonl").write_bytes((ws.root / "in.jsonl").read_bytes())

    again = cli("submit", "copy.jsonl")

    assert again.exit_code == 2
    assert f"error: this input was already submitted as run {first}" in again.stderr
    assert "--force" in again.stderr
    assert len(uploads(api)) == 1
    assert ws.sql("SELECT id FROM runs") == [(first,)]


def test_force_submits_the_same_content_again(api: Emulator, ws: Any, cli: Any):
    write_jsonl(ws.root / "in.jsonl", [request("r1"), request("r2")])
    first = cli("submit", "in.jsonl", "--json").json()["id"]

    again = cli("submit", "in.jsonl", "--force", "--json")

    assert again.exit_code == 0, again.stderr
    assert again.json()["id"] != first
    assert len(uploads(api)) == 2
    assert ws.sql("SELECT count(*) FROM runs") == [(2,)]


# --- --dry-run -----------------------------------------------------------------------------------


def _dry_run_input(ws: Any) -> Path:
    rows = [request(f"r{i}", text="lorem ipsum " * 40) for i in range(200)]
    rows += [request(f"e{i}", model="acme-private-1") for i in range(3)]
    return write_jsonl(ws.root / "in.jsonl", rows)


def test_dry_run_json_gives_the_plan_and_no_number_for_an_unpriced_model(
    api: Emulator, ws: Any, cli: Any
):
    path = _dry_run_input(ws)

    result = cli("submit", "in.jsonl", "--dry-run", "--max-requests", "150", "--json")

    assert result.exit_code == 0, result.stderr
    plan = result.json()
    assert plan["endpoint"] == CHAT
    assert plan["requests"] == 203
    assert plan["bytes"] == path.stat().st_size
    assert plan["models"] == ["acme-private-1", "gpt-4o-mini"]
    assert [(p["model"], p["requests"]) for p in plan["parts"]] == [
        ("gpt-4o-mini", 150),
        ("gpt-4o-mini", 50),
        ("acme-private-1", 3),
    ]
    assert plan["estimated_input_tokens"] == sum(p["estimated_input_tokens"] for p in plan["parts"])
    # one model has no price: the estimate is no number (tests/batches/test_costs.py)
    assert plan["estimated_cost"] == {"batch": None, "synchronous": None}
    assert plan["unpriced_models"] == ["acme-private-1"]
    assert api.requests == []
    assert cli("status", "--json").json() == []


def test_dry_run_prints_the_plan_and_both_prices(api: Emulator, ws: Any, cli: Any):
    _dry_run_input(ws)

    result = cli("submit", "in.jsonl", "--dry-run")

    assert result.exit_code == 0, result.stderr
    assert "plan: 203 requests" in result.stdout
    assert f"endpoint {CHAT}, 2 part(s)" in result.stdout
    assert "gpt-4o-mini" in result.stdout
    assert "acme-private-1" in result.stdout
    assert re.search(
        r"estimated cost \(an estimate, not a quote\): ≥ \$[\d.]+ at batch price, "
        r"≥ \$[\d.]+ synchronous",
        result.stdout,
    )
    assert "unpriced (no price in [prices] or the published data): acme-private-1" in (
        result.stdout
    )
    assert api.requests == []
    assert cli("status", "--json").json() == []


def test_dry_run_of_models_without_any_price_says_unpriced_once(api: Emulator, ws: Any, cli: Any):
    write_jsonl(ws.root / "in.jsonl", [request(f"e{i}", model="acme-private-1") for i in range(3)])

    result = cli("submit", "in.jsonl", "--dry-run")

    assert result.exit_code == 0, result.stderr
    assert "estimated cost (an estimate, not a quote): unpriced\n" in result.stdout
    assert "unpriced (no price in [prices] or the published data): acme-private-1" in (
        result.stdout
    )


# --- --metadata ----------------------------------------------------------------------------------


def test_metadata_is_put_on_the_remote_batch(api: Emulator, ws: Any, cli: Any):
    write_jsonl(ws.root / "in.jsonl", [request("r1")])

    result = cli("submit", "in.jsonl", "-m", "team=search", "--metadata", "note=a=b", "--json")

    assert result.exit_code == 0, result.stderr
    (part,) = result.json()["parts"]
    metadata = api.batches[part["batch_id"]]["metadata"]
    assert metadata["team"] == "search"
    assert metadata["note"] == "a=b"
    remote = cli("status", "--remote", "--json").json()
    assert remote[0]["metadata"]["team"] == "search"


@pytest.mark.parametrize(
    "pairs",
    [
        pytest.param(["novalue"], id="no-equals"),
        pytest.param(["=value"], id="empty-key"),
        pytest.param(["batchctl_run=7"], id="reserved-prefix"),
        pytest.param([f"k{i}=v" for i in range(15)], id="too-many"),
        pytest.param(["k" * 65 + "=v"], id="key-too-long"),
    ],
)
def test_bad_metadata_exits_2_and_submits_nothing(
    api: Emulator, ws: Any, cli: Any, pairs: list[str]
):
    write_jsonl(ws.root / "in.jsonl", [request("r1")])
    options = [arg for pair in pairs for arg in ("--metadata", pair)]

    result = cli("submit", "in.jsonl", *options)

    assert result.exit_code == 2
    assert result.stderr.startswith("error: --metadata: ")
    assert_nothing_submitted(api, cli)


def test_metadata_at_the_limit_reaches_the_api_beside_batchctl_keys(
    api: Emulator, ws: Any, cli: Any
):
    """14 pairs is what the API's 16 leave: the emulator, which enforces the API's limits, takes
    them together with the keys batchctl puts on every batch to find it after a crash."""
    write_jsonl(ws.root / "in.jsonl", [request("r1")])
    options = [arg for i in range(14) for arg in ("--metadata", f"k{i}={'v' * 512}")]

    result = cli("submit", "in.jsonl", *options, "--json")

    assert result.exit_code == 0, result.stderr
    (part,) = result.json()["parts"]
    metadata = api.batches[part["batch_id"]]["metadata"]
    assert len(metadata) == 16
    assert metadata["batchctl_run"] == str(result.json()["id"])


@pytest.mark.parametrize("option", ["--max-requests", "--max-bytes"])
@pytest.mark.parametrize("value", ["0", "-1"])
def test_a_limit_option_of_zero_or_less_is_refused_not_read_as_the_default(
    api: Emulator, ws: Any, cli: Any, option: str, value: str
):
    write_jsonl(ws.root / "in.jsonl", [request("r1")])

    result = cli("submit", "in.jsonl", "--dry-run", option, value)

    assert result.exit_code == 2
    assert result.stderr.startswith("error: --max-requests and --max-bytes must be 1 or more")


# --- the emulator command ------------------------------------------------------------------------


def _stop(process: subprocess.Popen[str]) -> None:
    """Stop an emulator the test started: SIGTERM, then SIGKILL if it does not go."""
    process.terminate()
    try:
        process.wait(timeout=scaled(10))
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_emulator_command_serves_the_api_on_the_given_port(ws: Any, batchctl_exe: str):
    port = _free_port()
    process = subprocess.Popen(
        [batchctl_exe, "emulator", "--port", str(port)],
        env=ws.env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:

        def listening() -> bool:
            assert process.poll() is None, "the emulator exited"
            try:
                socket.create_connection(("127.0.0.1", port), timeout=scaled(0.5)).close()
            except OSError:
                return False
            return True

        wait_for(listening, "the emulator to listen", timeout=20)
        base_url = f"http://127.0.0.1:{port}/v1"
        with openai.OpenAI(base_url=base_url, api_key="anything", max_retries=0) as sdk:
            assert sdk.batches.list().data == []
            uploaded = sdk.files.create(
                file=("in.jsonl", json.dumps(request("r1")).encode() + b"\n"), purpose="batch"
            )
            assert sdk.files.retrieve(uploaded.id).filename == "in.jsonl"
    finally:
        _stop(process)


def test_following_the_emulator_banner_for_a_vendor_submits_to_it_with_that_provider(
    ws: Any, batchctl_exe: str
):
    port = _free_port()
    env = {k: v for k, v in ws.env().items() if not k.endswith(("_API_KEY", "_BASE_URL"))}
    process = subprocess.Popen(
        [batchctl_exe, "emulator", "--port", str(port), "--vendor", "groq"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    banner: list[str] = []
    reader = threading.Thread(target=lambda: banner.extend(process.stderr or []), daemon=True)
    reader.start()
    try:
        wait_for(lambda: any("base_url" in line for line in banner), "the banner", timeout=20)
        for line in banner:  # what a user would do: export what it says, copy its config
            for name, value in re.findall(r"\b([A-Z_]+)=([^\s,]+)", line):
                env[name] = value
        ws.write_config("".join(line[4:] for line in banner if line.startswith("    ")))
        write_jsonl(ws.root / "in.jsonl", [request("r1"), request("r2")])

        done = run_exe(batchctl_exe, "submit", "in.jsonl", "--provider", "groq", "--wait", env=env)

        assert done.returncode == 0, done.stderr
        assert "2 succeeded" in done.stdout
    finally:
        _stop(process)
