"""The CLI as a whole: version, help, errors without tracebacks, no openai at start-up."""

from __future__ import annotations

import itertools
import subprocess
import sys

import pytest

from batchctl import __version__
from tests.conftest import Workspace, run_exe, run_into_a_closed_pipe
from tests.waiting import scaled


def test_version(cli) -> None:
    result = cli("--version")
    assert (result.exit_code, result.stdout.strip()) == (0, f"batchctl {__version__}")


def test_python_dash_m_runs_the_cli() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "batchctl", "--version"], capture_output=True, text=True
    )
    assert result.stdout.strip() == f"batchctl {__version__}"


def test_help_lists_the_commands(cli) -> None:
    out = cli("--help").stdout
    for command in ("run", "status", "logs", "jobs", "cancel", "retry", "config"):
        assert command in out


def test_unknown_option_is_exit_two(cli) -> None:
    assert cli("status", "--bogus").exit_code == 2


def test_user_errors_print_one_error_line_and_no_traceback(ws: Workspace, batchctl_exe) -> None:
    result = run_exe(batchctl_exe, "status", "12345", env=ws.env())
    assert result.returncode == 2
    assert result.stderr.startswith("error: no run with id 12345")
    assert "Traceback" not in result.stderr


def test_verbose_shows_the_traceback(ws: Workspace, batchctl_exe) -> None:
    result = run_exe(batchctl_exe, "--verbose", "status", "12345", env=ws.env())
    assert result.returncode == 2
    assert "Traceback" in result.stderr


def test_json_errors_keep_stdout_empty(ws: Workspace, cli) -> None:
    result = cli("status", "777", "--json")
    assert (result.exit_code, result.stdout) == (2, "")


def test_no_color_output_has_no_escape_codes(ws: Workspace, batchctl_exe) -> None:
    ws.write_config('[jobs.j]\nkind = "command"\ncommand = "exit 1"\n')
    env = {**ws.env(), "NO_COLOR": "1", "FORCE_COLOR": ""}
    result = run_exe(batchctl_exe, "run", "j", env=env)
    assert "\x1b[" not in result.stdout + result.stderr


@pytest.mark.slow
def test_commands_that_need_no_network_do_not_import_openai(ws: Workspace) -> None:
    ws.write_config('[jobs.j]\nkind = "command"\ncommand = "true"\n')
    probe = (
        "import sys, runpy\n"
        "sys.argv = ['batchctl'] + sys.argv[1:]\n"
        "try:\n    runpy.run_module('batchctl', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "assert 'openai' not in sys.modules, 'openai was imported'\n"
        "print('clean')\n"
    )
    for args in (
        ["--help"],
        ["--version"],
        ["status"],
        ["logs", "1"],
        ["jobs"],
        ["run", "j"],
        ["config", "check"],
        ["status", "--json"],
    ):
        result = subprocess.run(
            [sys.executable, "-c", probe, *args], capture_output=True, text=True, env=ws.env()
        )
        assert result.stdout.strip().endswith("clean"), (args, result.stderr)


def _first_line_then_close(exe: str, *args: str, env: dict[str, str]) -> tuple[str, int, str]:
    """Run ``batchctl ARGS | head -1``: read one line of stdout, close the pipe, and return that
    line, the exit code and stderr."""
    # As from a user's shell: with PYTHONUNBUFFERED (set by some runners) a write cut short by
    # the closed pipe is not retried, so there would be no broken pipe to see.
    env = {k: v for k, v in env.items() if k != "PYTHONUNBUFFERED"}
    proc = subprocess.Popen(
        [exe, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stderr is not None
    first = proc.stdout.readline()
    proc.stdout.close()
    stderr = proc.stderr.read()
    return first, proc.wait(timeout=scaled(60)), stderr


def _many_runs(ws: Workspace, count: int) -> None:
    from batchctl.records import to_iso, utcnow
    from batchctl.store import open_store

    store = open_store(str(ws.db))
    try:
        stamp = to_iso(utcnow())
        store.conn.execute("BEGIN")
        store.conn.executemany(
            "INSERT INTO runs (job, status, trigger, created_at, started_at, finished_at)"
            " VALUES (?, 'completed', 'manual', ?, ?, ?)",
            [(f"job{i}", stamp, stamp, stamp) for i in range(count)],
        )
        store.conn.execute("COMMIT")
    finally:
        store.close()


def test_status_piped_into_head_ends_quietly(ws: Workspace, batchctl_exe) -> None:
    _many_runs(ws, 3000)  # far more output than a pipe's buffer holds

    first, code, stderr = _first_line_then_close(
        batchctl_exe, "status", "--limit", "3000", env=ws.env()
    )

    assert first.split()[0] == "ID"
    assert (code, stderr) == (141, "")


def test_logs_piped_into_head_ends_quietly(ws: Workspace, batchctl_exe) -> None:
    ws.write_config('[jobs.chatty]\nkind = "command"\ncommand = "seq 1 30000"\n')
    assert run_exe(batchctl_exe, "-q", "run", "chatty", env=ws.env()).returncode == 0

    first, code, stderr = _first_line_then_close(batchctl_exe, "logs", "1", env=ws.env())

    assert first.rstrip().endswith(" 1")
    assert (code, stderr) == (141, "")


@pytest.mark.parametrize(
    "args", [["--help"], ["submit", "--help"], []], ids=["root", "submit", "bare"]
)
def test_help_into_a_closed_pipe_ends_quietly_with_the_broken_pipe_code(
    ws: Workspace, batchctl_exe: str, args: list[str]
) -> None:
    assert run_into_a_closed_pipe(batchctl_exe, *args, env=ws.env()) == (141, "")


def test_emulator_on_a_busy_port_is_one_error_line_exit_two(
    ws: Workspace, batchctl_exe: str
) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]

        result = run_exe(batchctl_exe, "emulator", "--port", str(port), env=ws.env())

    assert result.returncode == 2
    assert result.stderr.startswith(f"error: --port {port}: cannot listen on 127.0.0.1:{port}: ")
    assert "internal error" not in result.stderr
    assert len(result.stderr.splitlines()) == 2  # the error and its hint


def test_a_path_that_is_not_what_batchctl_needs_is_one_error_line_exit_two(
    ws: Workspace, batchctl_exe: str
) -> None:
    import json

    from batchctl.emulator import Emulator

    line = {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions"}
    line["body"] = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    (ws.root / "in.jsonl").write_text(json.dumps(line) + "\n")
    ws.write_config("")
    blocker = ws.db.with_name(ws.db.stem + "-files")  # where submissions keep their files
    blocker.write_text("")

    with Emulator() as api:
        env = {**ws.env(), "OPENAI_BASE_URL": api.base_url, "OPENAI_API_KEY": "test-key"}
        result = run_exe(batchctl_exe, "submit", "in.jsonl", env=env)

    assert result.returncode == 2
    assert result.stderr.startswith(f"error: {blocker}/")
    assert result.stderr.endswith(": Not a directory\n")
    assert len(result.stderr.splitlines()) == 1


def _command_paths() -> list[list[str]]:
    """Every command and subcommand, as the words that name it."""
    import typer
    from typer.core import TyperGroup

    from batchctl.cli import app

    root = typer.main.get_command(app)
    assert isinstance(root, TyperGroup)
    paths: list[list[str]] = [[]]
    ctx = typer.Context(root)
    for name in root.list_commands(ctx):
        command = root.get_command(ctx, name)
        paths.append([name])
        if isinstance(command, TyperGroup):
            paths += [[name, sub] for sub in command.list_commands(ctx)]
    return paths


def _lines_broken_early(text: str) -> list[str]:
    """Lines of a help text that end before the width while the sentence goes on below: the
    next line's first word would have fitted (so the text kept its source's line breaks)."""
    broken = []
    lines = text.splitlines()
    for line, below in itertools.pairwise(lines):
        boxed = line.rstrip().endswith("│")
        text_end = len(line.rstrip().rstrip("│").rstrip())
        going_on = below.rstrip().rstrip("│").strip(" │")
        indent = len(below) - len(below.lstrip(" │"))
        if not line.strip(" │╭╰─") or not going_on or not going_on[0].islower():
            continue
        if boxed and indent <= 2:
            continue  # a new row of a table, not the rest of a sentence
        if text_end + 1 + len(going_on.split()[0]) <= (77 if boxed else 79):
            broken.append(line.strip(" │"))
    return broken


@pytest.mark.slow
def test_every_help_text_reads_whole_at_80_columns(cli, monkeypatch) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    for words in _command_paths():
        result = cli(*words, "--help")
        assert result.exit_code == 0, words
        assert max(len(line) for line in result.stdout.splitlines()) <= 80, words
        assert "``" not in result.stdout, words
        assert _lines_broken_early(result.stdout) == [], words
