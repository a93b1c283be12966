"""Shell completions: the committed scripts are what the app generates, and they complete
job names and run ids."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Workspace
from tests.waiting import scaled

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = {"bash": "batchctl.bash", "zsh": "_batchctl", "fish": "batchctl.fish"}


def _complete(exe: str, env: dict[str, str], words: str) -> list[str]:
    env = {
        **env,
        "_BATCHCTL_COMPLETE": "complete_bash",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split(" ")) - 1),
    }
    result = subprocess.run([exe], env=env, capture_output=True, text=True, timeout=scaled(30))
    return result.stdout.split()


@pytest.mark.parametrize("shell", sorted(SCRIPTS))
def test_committed_completion_script_is_up_to_date(shell: str, batchctl_exe: str) -> None:
    env = {**os.environ, "_BATCHCTL_COMPLETE": f"source_{shell}"}
    generated = subprocess.run([batchctl_exe], env=env, capture_output=True, text=True).stdout
    committed = (ROOT / "completions" / SCRIPTS[shell]).read_text()
    assert generated == committed, (
        f"completions/{SCRIPTS[shell]} is out of date: regenerate it with "
        f"_BATCHCTL_COMPLETE=source_{shell} batchctl > completions/{SCRIPTS[shell]}"
    )


def test_commands_complete(ws: Workspace, batchctl_exe: str) -> None:
    assert {"status", "submit", "schedule"} <= set(_complete(batchctl_exe, ws.env(), "batchctl s"))


def test_job_names_complete(ws: Workspace, batchctl_exe: str) -> None:
    ws.write_config(
        '[jobs.nightly]\nkind = "command"\ncommand = "true"\n'
        '[jobs.hourly]\nkind = "command"\ncommand = "true"\n'
    )
    assert _complete(batchctl_exe, ws.env(), "batchctl run ") == ["nightly", "hourly"]
    assert _complete(batchctl_exe, ws.env(), "batchctl run ni") == ["nightly"]


def test_run_ids_complete(ws: Workspace, cli, batchctl_exe: str) -> None:
    ws.write_config('[jobs.j]\nkind = "command"\ncommand = "true"\n')
    cli("run", "j")
    cli("run", "j")
    assert _complete(batchctl_exe, ws.env(), "batchctl logs ") == ["2", "1"]


def test_job_names_complete_from_the_config_given_with_dash_dash_config(
    ws: Workspace, batchctl_exe: str, tmp_path: Path
) -> None:
    ws.write_config('[jobs.nightly]\nkind = "command"\ncommand = "true"\n')
    other = tmp_path / "other.toml"
    other.write_text('[jobs.weekly]\nkind = "command"\ncommand = "true"\n')
    for option in ("--config", "-c"):
        words = f"batchctl {option} {other} run "
        assert _complete(batchctl_exe, ws.env(), words) == ["weekly"]
    assert _complete(batchctl_exe, ws.env(), f"batchctl --config={other} run w") == ["weekly"]


def test_provider_names_complete_from_the_config_given_with_dash_dash_config(
    ws: Workspace, batchctl_exe: str, tmp_path: Path
) -> None:
    other = tmp_path / "other.toml"
    other.write_text('[providers.local]\napi = "openai"\nbase_url = "http://127.0.0.1:1/v1"\n')
    words = f"batchctl -c {other} submit in.jsonl --provider l"
    assert _complete(batchctl_exe, ws.env(), words) == ["local"]


def test_run_ids_complete_from_the_database_given_with_dash_dash_db(
    ws: Workspace, cli, batchctl_exe: str, tmp_path: Path
) -> None:
    ws.write_config('[jobs.j]\nkind = "command"\ncommand = "true"\n')
    other = tmp_path / "other.db"
    for _ in range(3):
        cli("--db", str(other), "run", "j")
    assert _complete(batchctl_exe, ws.env(), f"batchctl --db {other} logs ") == ["3", "2", "1"]


@pytest.mark.parametrize(
    ("words", "expected"),
    [
        ("batchctl results 1 --format ", ["jsonl", "csv"]),
        ("batchctl results 1 --order ", ["input", "completion"]),
        ("batchctl logs 1 --level w", ["warning"]),
        ("batchctl status --status c", ["completed", "cancelled"]),
        ("batchctl submit in.jsonl --on-expired ", ["keep", "resubmit"]),
    ],
)
def test_options_with_fixed_choices_complete_them(
    ws: Workspace, batchctl_exe: str, words: str, expected: list[str]
) -> None:
    assert _complete(batchctl_exe, ws.env(), words) == expected
