"""Bad input, generated: broken JSONL never uploads and always names the file and line; broken
configs always name the key. Property-based (hypothesis)."""

from __future__ import annotations

import json
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import Workspace

UNREACHABLE = "http://127.0.0.1:9/v1"  # any upload attempt would fail with exit 1, not 2
EXAMPLES = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def _no_config(ws: Workspace, monkeypatch) -> None:
    """submit needs no config file; without one it uses the defaults."""
    monkeypatch.delenv("BATCHCTL_CONFIG", raising=False)
    monkeypatch.setenv("OPENAI_BASE_URL", UNREACHABLE)
    monkeypatch.setenv("OPENAI_API_KEY", "test")


def _valid_lines(count: int) -> list[str]:
    lines = []
    for i in range(count):
        body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"question {i}"}]}
        lines.append(
            json.dumps(
                {
                    "custom_id": f"req-{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": body,
                }
            )
        )
    return lines


def _break(lines: list[str], kind: str, index: int) -> tuple[list[str], int]:
    """Apply one mutation that makes the input invalid; returns the lines and the bad line (1-based)."""
    lines = list(lines)
    request = json.loads(lines[index])
    if kind == "truncated json":
        lines[index] = lines[index][: len(lines[index]) // 2]
    elif kind == "duplicate id":
        lines.insert(index + 1, lines[index])
        return lines, index + 2
    elif kind == "get method":
        request["method"] = "GET"
    elif kind == "no custom_id":
        del request["custom_id"]
    elif kind == "numeric custom_id":
        request["custom_id"] = 7
    elif kind == "other url":
        request["url"] = "/v1/embeddings" if index else "/v1/nope"
    elif kind == "no model":
        del request["body"]["model"]
    elif kind == "array line":
        lines[index] = json.dumps([request])
    elif kind == "blank line":
        lines.insert(index, "   ")
        return lines, index + 1
    elif kind == "streaming":
        request["body"]["stream"] = True
    if kind in (
        "get method",
        "no custom_id",
        "numeric custom_id",
        "other url",
        "no model",
        "streaming",
    ):
        lines[index] = json.dumps(request)
    return lines, index + 1


MUTATIONS = [
    "truncated json",
    "duplicate id",
    "get method",
    "no custom_id",
    "numeric custom_id",
    "other url",
    "no model",
    "array line",
    "blank line",
    "streaming",
]


@EXAMPLES
@given(
    count=st.integers(min_value=1, max_value=12),
    kind=st.sampled_from(MUTATIONS),
    where=st.floats(min_value=0, max_value=0.999),
    crlf=st.booleans(),
)
def test_broken_jsonl_exits_2_naming_file_and_line(
    ws: Workspace, cli, monkeypatch, count: int, kind: str, where: float, crlf: bool
) -> None:
    _no_config(ws, monkeypatch)
    lines, bad = _break(_valid_lines(count), kind, int(where * count))
    path = ws.root / "input.jsonl"
    path.write_bytes(("\r\n" if crlf else "\n").join(lines).encode() + (b"\r\n" if crlf else b"\n"))
    result = cli("submit", str(path))
    assert result.exit_code == 2, (kind, result.stderr)
    assert f"{path}:{bad}:" in result.stderr, (kind, result.stderr)
    assert "Traceback" not in result.stderr
    assert cli("status", "--json").json() == []


@EXAMPLES
@given(junk=st.binary(min_size=0, max_size=300))
def test_binary_junk_is_refused_without_traceback(
    ws: Workspace, cli, monkeypatch, junk: bytes
) -> None:
    _no_config(ws, monkeypatch)
    path = ws.root / "junk.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + junk if junk[:1] == b"{" else junk)
    result = cli("submit", str(path))
    assert result.exit_code == 2, result.stderr
    assert str(path) in result.stderr
    assert "Traceback" not in result.stderr


def test_a_byte_order_mark_is_named(ws: Workspace, cli, monkeypatch) -> None:
    _no_config(ws, monkeypatch)
    path = ws.root / "bom.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "\n".join(_valid_lines(2)).encode() + b"\n")
    result = cli("submit", str(path))
    assert result.exit_code == 2
    assert f"{path}:1: starts with a UTF-8 byte order mark" in result.stderr


def test_a_huge_line_is_named(ws: Workspace, cli, monkeypatch) -> None:
    _no_config(ws, monkeypatch)
    path = ws.root / "huge.jsonl"
    lines = _valid_lines(3)
    request = json.loads(lines[1])
    request["body"]["messages"][0]["content"] = "x" * 5000
    lines[1] = json.dumps(request)
    path.write_text("\n".join(lines) + "\n")
    result = cli("submit", str(path), "--max-bytes", "2000")
    assert result.exit_code == 2
    assert f"{path}:2: line of" in result.stderr


# --- configs ----------------------------------------------------------------------------------

JOB_KEYS = {
    "enabled": "a boolean",
    "timeout": "a duration",
    "grace": "a duration",
    "schedule": "a string",
    "timezone": "a string",
    "concurrency": "one of",
    "scopes": "a list",
    "env": "a table",
    "tags": "a list",
    "retries": "a table",
    "priority": "an integer",
    "jitter": "a duration",
    "catchup": "one of",
    "max_catchup": "an integer",
    "after": "a list",
    "ping_url": "a string",
    "description": "a string",
}
WRONG_VALUES = st.sampled_from(['"?"', "-3", "true", "[1, 2]", "{ a = 1 }", "1.5", '"1x"'])


@EXAMPLES
@given(key=st.sampled_from(sorted(JOB_KEYS)), value=WRONG_VALUES)
def test_a_wrong_value_for_any_job_key_is_named(ws: Workspace, cli, key: str, value: str) -> None:
    ws.write_config(f'[jobs.j]\nkind = "command"\ncommand = "true"\n{key} = {value}\n')
    result = cli("config", "check")
    if result.exit_code == 0:
        return  # the value happened to be valid for this key (e.g. "?" as a description)
    assert result.exit_code == 2
    assert f"{ws.config}: jobs.j.{key}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


SECTION_KEYS = {
    "openai": [
        "base_url",
        "api_key_env",
        "organization",
        "project",
        "timeout",
        "max_retries",
        "poll_interval",
    ],
    "batches": [
        "max_requests",
        "max_bytes",
        "max_request_attempts",
        "completion_window",
        "on_expired",
        "batch_discount",
    ],
    "daemon": ["max_workers", "lease", "grace", "poll_interval", "http", "metrics_textfile"],
}


@EXAMPLES
@given(
    section=st.sampled_from(sorted(SECTION_KEYS)),
    index=st.integers(min_value=0, max_value=6),
    value=WRONG_VALUES,
)
def test_a_wrong_value_for_any_setting_is_named(
    ws: Workspace, cli, section: str, index: int, value: str
) -> None:
    key = SECTION_KEYS[section][index % len(SECTION_KEYS[section])]
    ws.write_config(f"[{section}]\n{key} = {value}\n")
    result = cli("config", "check")
    if result.exit_code == 0:
        return
    assert result.exit_code == 2
    assert f"{ws.config}: {section}.{key}" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@EXAMPLES
@given(junk=st.text(max_size=200))
def test_any_text_as_config_is_accepted_or_refused_cleanly(ws: Workspace, cli, junk: str) -> None:
    ws.write_config(junk)
    result = cli("config", "check")
    assert result.exit_code in (0, 2)
    assert "Traceback" not in result.stderr
    if result.exit_code == 2:
        assert str(ws.config) in result.stderr


def test_config_check_never_changes_the_database(ws: Workspace, cli) -> None:
    ws.write_config('[jobs.j]\nkind = "command"\n')
    cli("config", "check")
    assert not Path(ws.db).exists()
