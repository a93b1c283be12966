"""Bad input, generated: broken JSONL never uploads and always names the file and line; broken
configs always name the key. Property-based (hypothesis)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from batchctl.cli import app
from tests.conftest import Workspace, run_exe
from tests.waiting import scaled

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
    elif kind == "stream as a string":
        request["body"]["stream"] = "true"
    elif kind == "blank model":
        request["body"]["model"] = " "
    elif kind == "NaN":
        lines[index] = lines[index][:-1] + ', "temperature": NaN}'
    elif kind == "custom_id twice":
        lines[index] = lines[index][:-1] + f', "custom_id": "{request["custom_id"]}-2"}}'
    elif kind == "lone surrogate in custom_id":
        lines[index] = lines[index].replace('"custom_id": "', '"custom_id": "\\udfff', 1)
    if kind in (
        "get method",
        "no custom_id",
        "numeric custom_id",
        "other url",
        "no model",
        "streaming",
        "stream as a string",
        "blank model",
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
    "stream as a string",
    "blank model",
    "NaN",
    "custom_id twice",
    "lone surrogate in custom_id",
]


@pytest.mark.slow
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


@pytest.mark.slow
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


def test_an_unreachable_postgresql_server_is_one_error_line_with_exit_2(
    ws: Workspace, cli, monkeypatch
) -> None:
    _no_config(ws, monkeypatch)
    # Port 1 on this host: nothing listens there, so the connection is refused at once.
    result = cli("--db", "postgresql://u:secret-pw@127.0.0.1:1/x", "status")

    assert result.exit_code == 2, result.stderr
    [error, hint] = result.stderr.strip().splitlines()
    assert error.startswith("error: cannot connect to database postgresql://u@127.0.0.1:1/x: ")
    assert hint.startswith("hint: ")
    assert "secret-pw" not in result.stderr


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


# --- input that is not a plain file, cannot be read or never ends ----------------------------------


def _exe_env(ws: Workspace) -> dict[str, str]:
    """The environment of ``_no_config`` for a real process."""
    env = {**ws.env(), "OPENAI_BASE_URL": UNREACHABLE, "OPENAI_API_KEY": "test"}
    del env["BATCHCTL_CONFIG"]
    return env


def _assert_nothing_recorded(ws: Workspace) -> None:
    assert not Path(ws.db).exists() or ws.sql("SELECT count(*) FROM runs") == [(0,)]
    assert not [p for p in ws.root.iterdir() if p.name.endswith("-files")]


@pytest.mark.parametrize(
    ("make", "kind"),
    [
        pytest.param(lambda root: os.mkfifo(root / "in.jsonl"), "a FIFO (named pipe)", id="fifo"),
        pytest.param(
            lambda root: (root / "in.jsonl").symlink_to("/dev/zero"),
            "a character device",
            id="dev-zero",
        ),
    ],
)
def test_a_special_file_is_refused_at_once(
    ws: Workspace, batchctl_exe: str, make: Callable[[Path], object], kind: str
) -> None:
    """A FIFO would block the open until a writer comes; /dev/zero would never end."""
    make(ws.root)
    path = ws.root / "in.jsonl"

    done = run_exe(batchctl_exe, "submit", str(path), env=_exe_env(ws), timeout=60)

    assert done.returncode == 2, done.stderr
    assert f"error: {path}: cannot read {kind}: give a regular file" in done.stderr
    assert "Traceback" not in done.stderr
    _assert_nothing_recorded(ws)


@pytest.mark.skipif(not Path("/proc/self/mem").exists(), reason="needs Linux /proc")
def test_a_file_that_fails_to_read_is_named(ws: Workspace, cli, monkeypatch) -> None:
    _no_config(ws, monkeypatch)

    result = cli("submit", "/proc/self/mem")  # a regular file whose first read fails (EIO)

    assert result.exit_code == 2
    assert "error: /proc/self/mem: cannot read: Input/output error" in result.stderr
    assert "internal error" not in result.stderr


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_a_file_without_read_permission_is_named(ws: Workspace, cli, monkeypatch) -> None:
    _no_config(ws, monkeypatch)
    path = ws.root / "in.jsonl"
    path.write_text("\n".join(_valid_lines(2)) + "\n")
    path.chmod(0)

    result = cli("submit", str(path))

    assert result.exit_code == 2
    assert f"error: {path}: cannot read: Permission denied" in result.stderr


def test_requests_are_read_from_standard_input(ws: Workspace, batchctl_exe: str) -> None:
    """Through a pipe, which cannot seek: a line longer than one read is put together."""
    lines = _valid_lines(3)
    lines[1] = lines[1].replace("question 1", "x" * 3_000_000)
    data = ("\n".join(lines) + "\n").encode()

    done = subprocess.run(
        [batchctl_exe, "submit", "-", "--dry-run", "--json"],
        input=data,
        env=_exe_env(ws),
        capture_output=True,
        timeout=scaled(60),
    )

    assert done.returncode == 0, done.stderr
    plan = json.loads(done.stdout)
    assert (plan["requests"], plan["bytes"]) == (3, len(data))


@pytest.mark.parametrize("source", ["file", "pipe"])
def test_lines_after_a_line_too_long_are_still_checked(
    ws: Workspace, batchctl_exe: str, source: str
) -> None:
    lines = _valid_lines(3)
    lines[0] = lines[0].replace("question 0", "x" * 3_000_000)
    lines[2] = lines[2][:-1]  # not JSON
    data = ("\n".join(lines) + "\n").encode()
    (ws.root / "in.jsonl").write_bytes(data)
    name, argument = ("in.jsonl", "in.jsonl") if source == "file" else ("<stdin>", "-")

    done = subprocess.run(
        [batchctl_exe, "submit", argument, "--max-bytes", "1000000"],
        input=data.decode() if source == "pipe" else None,
        env=_exe_env(ws),
        cwd=ws.root,
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )

    assert done.returncode == 2, done.stderr
    assert (
        f"error: {name}:1: line of {len(lines[0]):,} bytes exceeds the batch limit" in done.stderr
    )
    assert f"error: {name}:3: invalid JSON" in done.stderr
    assert "2 problem(s)" in done.stderr


@pytest.mark.slow
@pytest.mark.parametrize("source", ["file", "pipe"])
def test_standard_input_that_never_ends_a_line_stops_at_the_batch_file_limit(
    ws: Workspace, batchctl_exe: str, source: str
) -> None:
    with open("/dev/zero", "rb") as zero:
        feeder = None
        stdin: object = zero
        if source == "pipe":
            feeder = subprocess.Popen(["cat"], stdin=zero, stdout=subprocess.PIPE)
            stdin = feeder.stdout
        try:
            done = subprocess.run(
                [batchctl_exe, "submit", "-"],
                stdin=stdin,
                env=_exe_env(ws),
                capture_output=True,
                text=True,
                timeout=scaled(120),
            )
        finally:
            if feeder is not None:
                feeder.kill()
                feeder.wait()

    assert done.returncode == 2, done.stderr
    assert "error: <stdin>:1: line with no end in its first 200,000,000 bytes" in done.stderr
    _assert_nothing_recorded(ws)


def test_standard_input_given_twice_is_refused(ws: Workspace, monkeypatch) -> None:
    _no_config(ws, monkeypatch)

    result = CliRunner().invoke(
        app, ["submit", "-", "-"], catch_exceptions=False, input="\n".join(_valid_lines(2))
    )

    assert result.exit_code == 2
    assert "error: <stdin>: standard input (-) is given more than once" in result.stderr


@pytest.mark.parametrize("second", ["in.jsonl", "link.jsonl"])
def test_one_file_given_twice_is_refused_as_such(ws: Workspace, monkeypatch, second: str) -> None:
    _no_config(ws, monkeypatch)
    monkeypatch.chdir(ws.root)
    Path("in.jsonl").write_text("\n".join(_valid_lines(2)) + "\n")
    Path("link.jsonl").symlink_to("in.jsonl")

    result = CliRunner().invoke(app, ["submit", "in.jsonl", second], catch_exceptions=False)

    assert result.exit_code == 2
    also = "" if second == "in.jsonl" else " (also as in.jsonl)"
    assert f"error: {second}: is given more than once{also}\n" in result.stderr
    assert "duplicate custom_id" not in result.stderr
    _assert_nothing_recorded(ws)


def test_a_terminal_as_standard_input_is_refused(ws: Workspace, batchctl_exe: str) -> None:
    controller, terminal = os.openpty()
    try:
        done = subprocess.run(
            [batchctl_exe, "submit", "-"],
            stdin=terminal,
            env=_exe_env(ws),
            capture_output=True,
            text=True,
            timeout=scaled(60),
        )
    finally:
        os.close(terminal)
        os.close(controller)

    assert done.returncode == 2
    assert "error: <stdin>: standard input is a terminal; pipe the requests in" in done.stderr


_PEAK_RSS = """
import resource, subprocess, sys
done = subprocess.run(sys.argv[1:], capture_output=True, text=True)
sys.stderr.write(done.stderr)
print(done.returncode, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


@pytest.mark.slow
def test_a_300_mb_line_is_refused_without_being_held(ws: Workspace, batchctl_exe: str) -> None:
    """The peak RSS of batchctl is measured by a small parent of its own: a child's ru_maxrss
    starts at its parent's high-water mark (Linux), which for pytest is far above batchctl's."""
    path = ws.root / "in.jsonl"
    with path.open("wb") as out:
        out.write(b'{"custom_id": "big", "text": "')
        for _ in range(300):
            out.write(b"x" * 1_000_000)
        out.write(b'"}\n' + "\n".join(_valid_lines(1)).encode() + b"\n")

    done = subprocess.run(
        [sys.executable, "-c", _PEAK_RSS, batchctl_exe, "submit", str(path)],
        env=_exe_env(ws),
        capture_output=True,
        text=True,
        timeout=scaled(300),
    )

    code, peak_kib = map(int, done.stdout.split())
    assert code == 2, done.stderr
    assert f"error: {path}:1: line of 300,000,032 bytes exceeds the batch limit" in done.stderr
    assert peak_kib < 150 * 1024, f"peak RSS {peak_kib / 1024:.0f} MiB"


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


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
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
