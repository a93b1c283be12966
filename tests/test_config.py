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
            'jobs.a.kind: expected one of command, python, batch, openai, got "shell"',
        ),
        (
            '[jobs.a]\ncommand = "x"\n',
            "jobs.a.kind: required (one of command, python, batch, openai)",
        ),
        ('[jobs.a]\nkind = "command"\n', "jobs.a.command: required for a job of kind 'command'"),
        (
            '[jobs.a]\nkind = "command"\ncommand = "x"\nenabled = "yes"\n',
            "jobs.a.enabled: expected a boolean, got a string",
        ),
        (
            '[jobs.a]\nkind = "command"\ncommand = "x"\ntimeout = "soon"\n',
            'jobs.a.timeout: expected a duration like "30s", "5m", "2h" or "1d", got "soon"',
        ),
        (
            '[jobs.a]\nkind = "command"\ncommand = "x"\ntimeout = -5\n',
            "jobs.a.timeout: expected a duration of zero or more, got -5",
        ),
        (
            '[jobs.a]\nkind = "command"\ncommand = "x"\nschedule = "x * * * *"\n',
            "jobs.a.schedule: invalid cron expression 'x * * * *'",
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
            'jobs.a.timezone: unknown time zone "Mars/Olympus"',
        ),
        (
            '[jobs.a]\nkind = "command"\ncommand = "x"\nconcurrency = "queue"\n',
            'jobs.a.concurrency: expected one of forbid, allow, replace, got "queue"',
        ),
        (
            '[jobs.a]\nkind = "command"\ncommand = "x"\nscopes = ["x", "x"]\n',
            "jobs.a.scopes: must not repeat a value",
        ),
        (
            '[jobs.a]\nkind = "command"\ncommand = "x"\nretries = { max_attempts = 0 }\n',
            "jobs.a.retries.max_attempts: must be from 1 to 1,000, got 0",
        ),
        (
            '[jobs.a]\nkind = "command"\ncommand = "x"\nretries = { tries = 3 }\n',
            "jobs.a.retries.tries: unknown key",
        ),
        (
            '[jobs.a]\nkind = "command"\ncommand = "x"\nretries = { on = ["crash"] }\n',
            'jobs.a.retries.on: unknown value(s) ["crash"]',
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
            'jobs."bad name": job names may hold only letters',
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


@pytest.mark.parametrize("made", ["nothing", "a file"])
def test_a_cwd_that_is_not_a_directory_here_is_reported(ws: Workspace, cli, made: str) -> None:
    where = ws.root / "work"
    if made == "a file":
        where.write_text("")
    ws.write_config(f'[jobs.a]\nkind = "command"\ncommand = "true"\ncwd = "{where}"\n')

    result = cli("config", "check")

    assert result.exit_code == 2
    reason = "is not a directory" if made == "a file" else "no such directory"
    assert f"jobs.a.cwd: {where}: {reason}" in result.stderr


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


# --- every value has a range: what passes `config check` does not fail a run later ---------------

JOB = '[jobs.a]\nkind = "command"\ncommand = "x"\n'
BATCH_JOB = '[jobs.a]\nkind = "openai"\ninput = "in.jsonl"\n'


def check_fails_with(ws: Workspace, cli, body: str, message: str) -> None:
    """``config check`` of ``body`` exits 2, and ``message`` is one of its one-line errors."""
    ws.write_config(body)
    result = cli("config", "check")
    assert result.exit_code == 2, result.stdout
    assert f"error: {ws.config}: {message}" in result.stderr.splitlines()
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            JOB + "retries = { max_attempts = 1e21 }\n",
            "jobs.a.retries.max_attempts: expected an integer, got a number (1e+21)",
            id="float-for-int",
        ),
        pytest.param(
            JOB + "retries = { max_attempts = 1000000000000000000000 }\n",
            "jobs.a.retries.max_attempts: must be from 1 to 1,000, got 1000000000000000000000",
            id="max_attempts-beyond-64-bits",
        ),
        pytest.param(
            JOB + "retries = { max_attempts = 1001 }\n",
            "jobs.a.retries.max_attempts: must be from 1 to 1,000, got 1001",
            id="max_attempts",
        ),
        pytest.param(
            JOB + "priority = 1e20\n",
            "jobs.a.priority: expected an integer, got a number (1e+20)",
            id="priority-float",
        ),
        pytest.param(
            JOB + "priority = 100000000000000000000\n",
            "jobs.a.priority: must be from -1,000,000 to 1,000,000, got 100000000000000000000",
            id="priority",
        ),
        pytest.param(
            JOB + "priority = -1000001\n",
            "jobs.a.priority: must be from -1,000,000 to 1,000,000, got -1000001",
            id="priority-negative",
        ),
        pytest.param(
            JOB + "max_catchup = 10001\n",
            "jobs.a.max_catchup: must be from 1 to 10,000, got 10001",
            id="max_catchup",
        ),
        pytest.param(
            "[batches]\nmax_requests = 10000001\n",
            "batches.max_requests: must be from 1 to 10,000,000, got 10,000,001",
            id="max_requests-above-any-provider",
        ),
        pytest.param(
            "[providers.openai]\nmax_bytes = 0\n",
            "providers.openai.max_bytes: must be from 1 to 1,000,000,000,000, got 0",
            id="provider-max_bytes-zero",
        ),
        pytest.param(
            "[batches]\nmax_request_attempts = 0\n",
            "batches.max_request_attempts: must be from 1 to 1,000, got 0",
            id="max_request_attempts",
        ),
        pytest.param(
            "[openai]\nmax_retries = -1\n",
            "openai.max_retries: must be from 0 to 100, got -1",
            id="max_retries",
        ),
        pytest.param(
            "[daemon]\nmax_workers = 0\n",
            "daemon.max_workers: must be from 1 to 1,000, got 0",
            id="max_workers",
        ),
    ],
)
def test_integers_out_of_range_are_refused(ws: Workspace, cli, body: str, message: str) -> None:
    check_fails_with(ws, cli, body, message)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(JOB + "timeout = nan\n", "jobs.a.timeout: expected a duration, got nan"),
        pytest.param(JOB + 'timeout = "nan"\n', 'jobs.a.timeout: expected a duration, got "nan"'),
        pytest.param(
            JOB + "timeout = inf\n",
            "jobs.a.timeout: expected a duration of at most 3650d, got inf",
        ),
        pytest.param(
            JOB + 'grace = "inf"\n',
            'jobs.a.grace: expected a duration of at most 3650d, got "inf"',
        ),
        pytest.param(
            JOB + "jitter = 1e300\n",
            "jobs.a.jitter: expected a duration of at most 3650d, got 1e+300",
        ),
        pytest.param(
            JOB + 'retries = { backoff = "-inf" }\n',
            'jobs.a.retries.backoff: expected a duration of zero or more, got "-inf"',
        ),
        pytest.param(
            '[openai]\ntimeout = "0s"\n', 'openai.timeout: must be more than 0 seconds, got "0s"'
        ),
        pytest.param(
            "[openai]\npoll_interval = 0\n",
            "openai.poll_interval: must be more than 0 seconds, got 0",
        ),
        pytest.param("[daemon]\nlease = nan\n", "daemon.lease: expected a duration, got nan"),
    ],
)
def test_durations_must_be_finite_and_in_range(ws: Workspace, cli, body: str, message: str) -> None:
    check_fails_with(ws, cli, body, message)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            JOB + 'env = { "A=B" = "x" }\n',
            "jobs.a.env: \"A=B\": not a valid environment variable name (empty, or holds '=' or NUL)",
            id="equals",
        ),
        pytest.param(
            JOB + 'env = { "" = "x" }\n',
            "jobs.a.env: \"\": not a valid environment variable name (empty, or holds '=' or NUL)",
            id="empty",
        ),
        pytest.param(
            '[openai]\napi_key_env = "MY=KEY"\n',
            "openai.api_key_env: not a valid environment variable name (empty, or holds '=' or NUL)",
            id="api_key_env",
        ),
    ],
)
def test_environment_variable_names_are_checked(
    ws: Workspace, cli, body: str, message: str
) -> None:
    check_fails_with(ws, cli, body, message)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(JOB + 'env = { A = "x\\u0000y" }\n', "jobs.a.env.A: must not hold", id="env"),
        pytest.param(JOB + 'scopes = ["a\\u0000"]\n', "jobs.a.scopes: must not hold", id="scope"),
        pytest.param(
            '[jobs.a]\nkind = "command"\ncommand = ["x", "\\u0000"]\n',
            "jobs.a.command: must not hold",
            id="argument",
        ),
    ],
)
def test_a_nul_character_is_refused(ws: Workspace, cli, body: str, message: str) -> None:
    check_fails_with(ws, cli, body, f"{message} a NUL character (\\u0000)")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            "[batches]\nbatch_discount = 2\n",
            "batches.batch_discount: must be 1 or less, got 2",
            id="discount-2",
        ),
        pytest.param(
            "[batches]\nbatch_discount = -0.5\n",
            "batches.batch_discount: must be 0 or more, got -0.5",
            id="discount-negative",
        ),
        pytest.param(
            "[batches]\nbatch_discount = nan\n",
            "batches.batch_discount: expected a finite number, got nan",
            id="discount-nan",
        ),
        pytest.param(
            '[prices]\n"gpt-4.1" = { input = -0.1 }\n',
            'prices."gpt-4.1".input: must be 0 or more, got -0.1',
            id="negative-input-price",
        ),
        pytest.param(
            "[prices]\nm = { input = 1, output = -2 }\n",
            "prices.m.output: must be 0 or more, got -2",
            id="negative-output-price",
        ),
        pytest.param(
            "[prices]\nm = { input = inf }\n",
            "prices.m.input: expected a finite number, got inf",
            id="infinite-price",
        ),
    ],
)
def test_prices_and_the_batch_discount_are_checked(
    ws: Workspace, cli, body: str, message: str
) -> None:
    check_fails_with(ws, cli, body, message)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            '[openai]\norganization = "org-1\\nX-Other: 1"\n',
            'openai.organization: must hold only printable characters, got "org-1\\nX-Other: 1"',
            id="header",
        ),
        pytest.param(
            '[openai]\nbase_url = "localhost:8089"\n',
            'openai.base_url: expected an http:// or https:// URL, got "localhost:8089"',
            id="url-without-scheme",
        ),
        pytest.param(
            '[openai]\nbase_url = "http://api example/v1"\n',
            'openai.base_url: expected an http:// or https:// URL, got "http://api example/v1"',
            id="url-with-a-space",
        ),
        pytest.param(
            JOB + 'scopes = ["eu", "\\u001b[2J"]\n',
            'jobs.a.scopes: must hold only printable characters, got "\\u001B[2J"',
            id="scope",
        ),
    ],
)
def test_text_sent_in_headers_urls_and_names_must_be_printable(
    ws: Workspace, cli, body: str, message: str
) -> None:
    check_fails_with(ws, cli, body, message)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            '[openai]\nfile_purpose = ""\n',
            'openai.file_purpose: must not be blank (the purpose uploads are sent with, e.g. "batch")',
            id="empty",
        ),
        pytest.param(
            '[providers.together]\nfile_purpose = "  "\n',
            "providers.together.file_purpose: must not be blank"
            ' (the purpose uploads are sent with, e.g. "batch")',
            id="spaces",
        ),
    ],
)
def test_a_blank_file_purpose_is_refused(ws: Workspace, cli, body: str, message: str) -> None:
    check_fails_with(ws, cli, body, message)


# --- batch metadata: one rule for the config and `submit --metadata` -----------------------------


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        pytest.param(
            'batchctl_part = "x"',
            'jobs.a.metadata: "batchctl_part": keys starting with batchctl_ are reserved',
            id="reserved-part-key",
        ),
        pytest.param(
            'batchctl_mine = "x"',
            'jobs.a.metadata: "batchctl_mine": keys starting with batchctl_ are reserved',
            id="reserved-prefix",
        ),
        pytest.param(
            ", ".join(f'k{i} = "v"' for i in range(15)),
            "jobs.a.metadata: at most 14 pairs, got 15 "
            "(the API allows 16 and batchctl puts 2 of its own on every batch)",
            id="too-many-pairs",
        ),
        pytest.param(
            f'{"k" * 65} = "v"',
            f'jobs.a.metadata: "{"k" * 64}"...: keys are at most 64 characters, got 65',
            id="key-too-long",
        ),
        pytest.param(
            f'k = "{"v" * 513}"',
            'jobs.a.metadata: "k": values are at most 512 characters, got 513',
            id="value-too-long",
        ),
        pytest.param('"" = "v"', "jobs.a.metadata: a key must not be empty", id="empty-key"),
    ],
)
def test_job_metadata_is_held_to_the_api_limits_and_reserved_keys(
    ws: Workspace, cli, metadata: str, message: str
) -> None:
    check_fails_with(ws, cli, BATCH_JOB + f"metadata = {{ {metadata} }}\n", message)


def test_job_metadata_within_the_limits_is_accepted(ws: Workspace, cli) -> None:
    pairs = ", ".join(f'k{i} = "{"v" * 512}"' for i in range(13)) + f', {"k" * 64} = "v"'
    ws.write_config(BATCH_JOB + f"metadata = {{ {pairs} }}\n")
    result = cli("config", "check")
    assert result.exit_code == 0, result.stderr


def test_submit_metadata_is_held_to_the_same_rule(ws: Workspace, cli) -> None:
    ws.write_config(GOOD)
    (ws.root / "in.jsonl").write_text("")
    result = cli("submit", "in.jsonl", "--metadata", "batchctl_part=x")
    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == (
        'error: --metadata: "batchctl_part": keys starting with batchctl_ are reserved'
    )


# --- messages: one line each, user text escaped, values in TOML spelling -------------------------


def test_a_job_name_with_a_newline_and_an_escape_sequence_is_shown_escaped(
    ws: Workspace, cli
) -> None:
    ws.write_config('[jobs."a\\nb\\u001b[2J"]\nkind = "command"\ncommand = "x"\n')
    result = cli("config", "check")
    assert result.exit_code == 2
    assert result.stderr == (
        f'error: {ws.config}: jobs."a\\nb\\u001B[2J": job names may hold only letters, '
        "digits, '.', '_' and '-'\n"
    )


def test_a_job_name_ending_in_a_newline_is_refused(ws: Workspace, cli) -> None:
    check_fails_with(
        ws,
        cli,
        '[jobs."a\\n"]\nkind = "command"\ncommand = "x"\n',
        "jobs.\"a\\n\": job names may hold only letters, digits, '.', '_' and '-'",
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        pytest.param(
            JOB + '"col\\u001b[31mour" = 1\n',
            'jobs.a."col\\u001B[31mour": unknown key',
            id="unknown-key",
        ),
        pytest.param(
            JOB + 'concurrency = "a\\nb"\n',
            'jobs.a.concurrency: expected one of forbid, allow, replace, got "a\\nb"',
            id="value",
        ),
        pytest.param(
            JOB + "after = ['x\"y']\n",
            'jobs.a.after: no job named "x\\"y"',
            id="job-named-in-after",
        ),
    ],
)
def test_user_text_in_a_message_is_escaped(ws: Workspace, cli, body: str, message: str) -> None:
    check_fails_with(ws, cli, body, message)


def test_a_processor_error_with_a_newline_stays_on_one_line(ws: Workspace, cli) -> None:
    ws.write_module("multi_line", "raise RuntimeError('first\\nsecond')\n")
    ws.write_config('[jobs.a]\nkind = "python"\nprocessor = "multi_line:process"\n')
    result = cli("config", "check")
    assert result.exit_code == 2
    assert result.stderr.count("\n") == 1
    assert "RuntimeError: first\\nsecond" in result.stderr


@pytest.mark.parametrize(
    ("value", "shown"),
    [("true", "true"), ("false", "false"), ("1.5", "1.5"), ('"later"', '"later"')],
)
def test_values_in_messages_are_spelled_as_in_toml(
    ws: Workspace, cli, value: str, shown: str
) -> None:
    check_fails_with(
        ws,
        cli,
        JOB + f"catchup = {value}\n",
        f"jobs.a.catchup: expected one of none, latest, all, got {shown}",
    )


@pytest.mark.parametrize(
    ("bom", "encoding"),
    [(b"\xef\xbb\xbf", "UTF-8"), (b"\xff\xfe", "UTF-16")],
)
def test_a_byte_order_mark_is_named(ws: Workspace, cli, bom: bytes, encoding: str) -> None:
    text = GOOD.encode("utf-16-le") if encoding == "UTF-16" else GOOD.encode()
    ws.config.write_bytes(bom + text)
    result = cli("config", "check")
    assert result.exit_code == 2
    assert result.stderr == (
        f"error: {ws.config}: starts with a byte-order mark ({encoding}); "
        "save it as UTF-8 without BOM\n"
    )


def test_a_config_that_is_not_utf8_names_the_line(ws: Workspace, cli) -> None:
    ws.config.write_bytes(b'[jobs.a]\nkind = "command"\ncommand = "caf\xe9"\n')
    result = cli("config", "check")
    assert result.exit_code == 2
    assert result.stderr == f"error: {ws.config}: line 3: not UTF-8 text; save it as UTF-8\n"


@pytest.mark.parametrize(
    ("schedule", "message"),
    [
        ("0 25 * * *", "hour field: 25 is out of range 0-23"),
        ("61 * * * *", "minute field: 61 is out of range 0-59"),
        ("0 0 0 * *", "day-of-month field: 0 is out of range 1-31"),
        ("0 0 1-32 * *", "day-of-month field: 32 is out of range 1-31"),
        ("0 0 * 13 *", "month field: 13 is out of range 1-12"),
        ("0 0 * * 1,8", "day-of-week field: 8 is out of range 0-7"),
        ("0 0 * * * 60", "second field: 60 is out of range 0-59"),
    ],
)
def test_a_cron_field_out_of_range_is_named(
    ws: Workspace, cli, schedule: str, message: str
) -> None:
    check_fails_with(ws, cli, JOB + f'schedule = "{schedule}"\n', f"jobs.a.schedule: {message}")


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (JOB + "retires = 3\n", "jobs.a.retires: unknown key; did you mean retries?"),
        (
            JOB + "retries = { max_atempts = 3 }\n",
            "jobs.a.retries.max_atempts: unknown key; did you mean max_attempts?",
        ),
        ("[job.a]\n", "job: unknown key; did you mean jobs?"),
        (
            "[batches]\nmax_request = 5\n",
            "batches.max_request: unknown key; did you mean max_requests?",
        ),
        (JOB + "zzz = 1\n", "jobs.a.zzz: unknown key"),
    ],
)
def test_an_unknown_key_suggests_the_closest_known_one(
    ws: Workspace, cli, body: str, message: str
) -> None:
    check_fails_with(ws, cli, body, message)


@pytest.mark.parametrize("key", ["max_attempts", "backoff"])
def test_a_retry_key_written_in_the_jobs_own_table_names_the_retries_table(
    ws: Workspace, cli, key: str
) -> None:
    check_fails_with(
        ws,
        cli,
        JOB + f"{key} = 3\n",
        f"jobs.a.{key}: unknown key; it belongs in retries: retries = {{ {key} = ... }}",
    )


# --- a config that fails `config check` fails every command the same way, before anything runs ---


@pytest.mark.parametrize(
    "command",
    [
        pytest.param(("run", "a"), id="run"),
        pytest.param(("run", "--all"), id="run-all"),
        pytest.param(("submit", "in.jsonl", "--job", "b"), id="submit"),
        pytest.param(("daemon", "--once"), id="daemon"),
        pytest.param(("schedule", "list"), id="schedule-list"),
    ],
)
def test_every_command_refuses_a_config_that_fails_check(
    ws: Workspace, cli, command: tuple[str, ...]
) -> None:
    (ws.root / "in.jsonl").write_text("")
    ws.write_config(
        JOB
        + 'env = { "A=B" = "x" }\nschedule = "0 * * * *"\n'
        + '[jobs.b]\nkind = "openai"\ninput = "in.jsonl"\nmetadata = { batchctl_part = "x" }\n'
    )
    checked = cli("config", "check")
    assert checked.exit_code == 2

    result = cli(*command)

    assert result.exit_code == 2
    assert result.stderr == checked.stderr
    assert not ws.db.exists() or ws.sql("SELECT count(*) FROM runs") == [(0,)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ("status", "--since", "1e300"),
            '--since: expected a duration of at most 365000d, got "1e300"',
        ),
        (("status", "--since", "nan"), '--since: expected a duration, got "nan"'),
        (
            ("prune", "--older-than", "inf"),
            '--older-than: expected a duration of at most 365000d, got "inf"',
        ),
    ],
)
def test_a_duration_on_the_command_line_is_finite_and_bounded(
    ws: Workspace, cli, args: tuple[str, ...], message: str
) -> None:
    """The same rule as in the config, with room for "everything since" (a thousand years)."""
    ws.write_config(GOOD)
    result = cli(*args)
    assert result.exit_code == 2
    assert result.stderr == f"error: {message}\n"
