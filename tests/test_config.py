"""Config loading and validation: every problem is one line naming the file and key, exit 2."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import Workspace

GOOD = """
[jobs.hello]
kind = "command"
command = "echo hello"
"""


def test_config_check_accepts_a_valid_config(ws: Workspace, cli) -> None:
    ws.write_config(GOOD)
    result = cli("config", "check")
    assert result.exit_code == 0
    assert f"ok: {ws.config}: 1 job" in result.stdout


def test_config_check_json_lists_the_jobs(ws: Workspace, cli) -> None:
    ws.write_config(GOOD)
    result = cli("config", "check", "--json")
    assert result.json() == {"ok": True, "path": str(ws.config), "jobs": ["hello"]}


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            '[jobs.a]\nkind = "command"\ncommand = "x"\ncolour = "red"\n',
            "jobs.a.colour: unknown key",
        ),
        (
            '[jobs.a]\nkind = "shell"\ncommand = "x"\n',
            "jobs.a.kind: expected one of command, python, openai, got 'shell'",
        ),
        ('[jobs.a]\ncommand = "x"\n', "jobs.a.kind: required (one of command, python, openai)"),
        ('[jobs.a]\nkind = "command"\n', "jobs.a.command: required for a job of kind 'command'"),
        (
            '[jobs.a]\nkind = "command"\ncommand = "x"\nenabled = "yes"\n',
            "jobs.a.enabled: expected a boolean, got a string",
        ),
        (
            '[jobs.a]\nkind = "command"\ncommand = "x"\ntimeout = "soon"\n',
            'jobs.a.timeout: expected a duration like "30s", "5m", "2h" or "1d", got \'soon\'',
        ),
        (
            '[jobs.a]\nkind = "command"\ncommand = "x"\ntimeout = -5\n',
            "jobs.a.timeout: expected a duration of zero or more, got -5",
        ),
        (
            '[jobs.a]\nkind = "command"\ncommand = "x"\nschedule = "61 * * * *"\n',
            "jobs.a.schedule: invalid cron expression '61 * * * *'",
        ),
        (
            '[jobs.a]\nkind = "command"\ncommand = "x"\nschedule = "0 0 31 2 *"\n',
            "jobs.a.schedule: cron expression '0 0 31 2 *' can never fire",
        ),
        (
            '[jobs.a]\nkind = "command"\ncommand = "x"\nschedule = "*/90 * * * *"\n',
            "jobs.a.schedule: the minute step /90 is larger than the field (60 values)",
        ),
        (
            '[jobs.a]\nkind = "command"\ncommand = "x"\ntimezone = "Mars/Olympus"\n',
            "jobs.a.timezone: unknown time zone 'Mars/Olympus'",
        ),
        (
            '[jobs.a]\nkind = "command"\ncommand = "x"\nconcurrency = "queue"\n',
            "jobs.a.concurrency: expected one of forbid, allow, replace, got 'queue'",
        ),
        (
            '[jobs.a]\nkind = "command"\ncommand = "x"\nscopes = ["x", "x"]\n',
            "jobs.a.scopes: must not repeat a value",
        ),
        (
            '[jobs.a]\nkind = "command"\ncommand = "x"\nretries = { max_attempts = 0 }\n',
            "jobs.a.retries.max_attempts: must be 1 or more, got 0",
        ),
        (
            '[jobs.a]\nkind = "command"\ncommand = "x"\nretries = { tries = 3 }\n',
            "jobs.a.retries.tries: unknown key",
        ),
        (
            '[jobs.a]\nkind = "command"\ncommand = "x"\nretries = { on = ["crash"] }\n',
            "jobs.a.retries.on: unknown value(s) ['crash']",
        ),
        (
            '[jobs.a]\nkind = "command"\ncommand = "x"\nenv = { A = 1 }\n',
            "jobs.a.env: values must be strings (not for A)",
        ),
        (
            '[jobs.a]\nkind = "python"\nprocessor = "no_such_module:process"\n',
            "jobs.a.processor: cannot import 'no_such_module:process': No module named 'no_such_module'",
        ),
        (
            '[jobs."bad name"]\nkind = "command"\ncommand = "x"\n',
            "jobs.bad name: job names may hold only letters",
        ),
        ("[mystery]\nx = 1\n", "mystery: unknown key"),
        ('[openai]\npoll_interval = "often"\n', "openai.poll_interval: expected a duration"),
    ],
)
def test_bad_config_is_reported_with_file_and_key(
    ws: Workspace, cli, body: str, message: str
) -> None:
    ws.write_config(body)
    result = cli("config", "check")
    assert result.exit_code == 2
    assert f"error: {ws.config}: {message}" in result.stderr
    assert "Traceback" not in result.stderr


def test_every_problem_gets_its_own_line(ws: Workspace, cli) -> None:
    ws.write_config(
        """
        [jobs.a]
        kind = "command"
        command = "x"
        timeout = "soon"
        colour = "red"
        [jobs.b]
        kind = "python"
        """
    )
    result = cli("config", "check")
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 3
    assert any("jobs.a.timeout" in line for line in lines)
    assert any("jobs.a.colour: unknown key" in line for line in lines)
    assert any("jobs.b.processor: required" in line for line in lines)


def test_invalid_toml_names_the_file_and_line(ws: Workspace, cli) -> None:
    ws.write_config('[jobs.a]\nkind = "command\n')
    result = cli("config", "check")
    assert result.exit_code == 2
    assert f"error: {ws.config}: invalid TOML" in result.stderr
    assert "line 2" in result.stderr


def test_processor_whose_module_raises_on_import_is_reported(ws: Workspace, cli) -> None:
    ws.write_module("broken_proc", "raise RuntimeError('no database url')\n")
    ws.write_config('[jobs.a]\nkind = "python"\nprocessor = "broken_proc:process"\n')
    result = cli("config", "check")
    assert result.exit_code == 2
    assert (
        "jobs.a.processor: cannot import 'broken_proc:process': importing 'broken_proc' raised RuntimeError: no database url"
        in result.stderr
    )


def test_processor_missing_attribute_is_reported(ws: Workspace, cli) -> None:
    ws.write_module("thin_proc", "x = 1\n")
    ws.write_config('[jobs.a]\nkind = "python"\nprocessor = "thin_proc:process"\n')
    result = cli("config", "check")
    assert result.exit_code == 2
    assert "'thin_proc' has no 'process'" in result.stderr


def test_config_check_json_reports_problems(ws: Workspace, cli) -> None:
    ws.write_config('[jobs.a]\nkind = "command"\n')
    result = cli("config", "check", "--json")
    assert result.exit_code == 2
    data = result.json()
    assert data["ok"] is False
    assert data["errors"] == [f"{ws.config}: jobs.a.command: required for a job of kind 'command'"]


def test_missing_config_file_is_an_error_with_the_places_searched(
    ws: Workspace, cli, monkeypatch
) -> None:
    monkeypatch.delenv("BATCHCTL_CONFIG")
    ws.config.unlink(missing_ok=True)
    result = cli("config", "check")
    assert result.exit_code == 2
    assert "error: no config file found" in result.stderr
    assert "batchctl.toml (current directory)" in result.stderr


def test_config_named_by_env_that_does_not_exist_is_an_error(ws: Workspace, cli) -> None:
    result = cli("config", "check")
    assert result.exit_code == 2
    assert f"error: config file {ws.config} does not exist" in result.stderr


def test_config_option_wins_over_the_environment(ws: Workspace, cli, tmp_path: Path) -> None:
    ws.write_config(GOOD)
    other = tmp_path / "other.toml"
    other.write_text('[jobs.other]\nkind = "command"\ncommand = "true"\n')
    result = cli("--config", str(other), "config", "check", "--json")
    assert result.json()["jobs"] == ["other"]


def test_config_found_in_current_directory_then_xdg(
    ws: Workspace, cli, monkeypatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("BATCHCTL_CONFIG")
    xdg = tmp_path / "home/.config/batchctl/config.toml"
    xdg.parent.mkdir(parents=True)
    xdg.write_text('[jobs.from_xdg]\nkind = "command"\ncommand = "true"\n')
    assert cli("config", "check", "--json").json()["jobs"] == ["from_xdg"]
    ws.write_config('[jobs.from_cwd]\nkind = "command"\ncommand = "true"\n')
    assert cli("config", "check", "--json").json()["jobs"] == ["from_cwd"]


def test_durations_accept_numbers_and_units(ws: Workspace, cli) -> None:
    from batchctl.config import load_config

    ws.write_config(
        """
        [jobs.a]
        kind = "command"
        command = "true"
        timeout = "1h30m"
        grace = 2.5
        retries = { max_attempts = 3, backoff = "500ms", max_backoff = "2m" }
        [jobs.b]
        kind = "command"
        command = "true"
        timeout = 0
        """
    )
    config = load_config(ws.config)
    assert config.jobs["a"].timeout == 5400
    assert config.jobs["a"].grace == 2.5
    assert config.jobs["a"].retries.backoff == 0.5
    assert config.jobs["a"].retries.max_backoff == 120
    assert config.jobs["b"].timeout is None


def test_sample_config_is_valid(cli, monkeypatch) -> None:
    sample = Path(__file__).resolve().parent.parent / "sample-config.toml"
    monkeypatch.chdir(sample.parent)
    result = cli("--config", str(sample), "config", "check")
    assert result.exit_code == 0, result.stderr
