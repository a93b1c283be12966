"""The CLI as a whole: version, help, errors without tracebacks, no openai at start-up."""

from __future__ import annotations

import subprocess
import sys

from batchctl import __version__
from tests.conftest import Workspace, run_exe


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
