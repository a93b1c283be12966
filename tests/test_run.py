"""`batchctl run`: command and python jobs, outcomes, exit codes, retries, scopes."""

from __future__ import annotations

from tests.conftest import Workspace
from tests.waiting import scaled

PROCESSORS = """
from batchctl import ProcessResult

def ok(ctx):
    for i in range(4):
        ctx.progress(i + 1, 4)
    ctx.log("info", "did the work", items=4, scope=ctx.scope)
    return ProcessResult(items_processed=4, total_tokens=120, total_cost=0.25)

def half(ctx):
    return ProcessResult(items_processed=2, items_failed=2, errors=["item 3: bad", "item 4: bad"])

def none_ok(ctx):
    return ProcessResult(items_failed=3, errors=["all bad"])

def boom(ctx):
    raise ValueError("the input table is empty")

def returns_nothing(ctx):
    return None

def returns_wrong(ctx):
    return {"items": 3}

class Counter:
    def process(self, ctx):
        return ProcessResult(items_processed=int(ctx.options["n"]))

def fail_first(ctx):
    if ctx.attempt < 3:
        raise ConnectionError(f"attempt {ctx.attempt} failed")
    return ProcessResult(items_processed=1)

def show_env(ctx):
    ctx.log("info", "env", value=ctx.env.get("COLOUR"), run_id=ctx.run_id, job=ctx.job)
    return ProcessResult(items_processed=1)
"""


def _python_job(ws: Workspace, function: str, extra: str = "") -> None:
    ws.write_module("procs", PROCESSORS)
    ws.write_config(f'[jobs.j]\nkind = "python"\nprocessor = "procs:{function}"\n{extra}')


def test_completed_command_exits_zero_and_records_the_run(ws: Workspace, cli) -> None:
    ws.write_config('[jobs.hello]\nkind = "command"\ncommand = "echo hi"\n')
    result = cli("run", "hello", "--json")
    assert result.exit_code == 0
    (run,) = result.json()
    assert run["status"] == "completed"
    assert run["job"] == "hello"
    assert run["scope"] is None
    assert run["attempts"] == 1
    assert ws.sql("SELECT status FROM runs") == [("completed",)]


def test_command_output_lines_go_to_the_run_log(ws: Workspace, cli) -> None:
    ws.write_config(
        '[jobs.hello]\nkind = "command"\ncommand = "echo one; echo two >&2; echo three"\n'
    )
    run_id = cli("run", "hello", "--json").json()[0]["id"]
    log = cli("logs", str(run_id))
    assert log.exit_code == 0
    lines = log.stdout.splitlines()
    assert any("stdout" in line and line.endswith("one") for line in lines)
    assert any("stderr" in line and line.endswith("two") for line in lines)
    entries = [e for e in map(_json_line, cli("logs", str(run_id), "--json").stdout.splitlines())]
    stdout = [e["message"] for e in entries if e["stream"] == "stdout"]
    assert stdout == ["one", "three"]


def _json_line(line: str) -> dict:
    import json

    return json.loads(line)


def test_failing_command_exits_one_with_exit_code_recorded(ws: Workspace, cli) -> None:
    ws.write_config('[jobs.bad]\nkind = "command"\ncommand = "exit 7"\n')
    result = cli("run", "bad", "--json")
    assert result.exit_code == 1
    run = result.json()[0]
    assert run["status"] == "failed"
    assert run["error"] == "exit code 7"
    detail = cli("status", str(run["id"]), "--json").json()
    assert detail["attempt_history"][0]["exit_code"] == 7


def test_command_gets_cwd_env_and_run_identity(ws: Workspace, cli) -> None:
    (ws.root / "sub").mkdir()
    ws.write_config(
        '[jobs.e]\nkind = "command"\ncwd = "sub"\nenv = { COLOUR = "teal" }\n'
        'command = "echo $(basename $PWD) $COLOUR $BATCHCTL_JOB $BATCHCTL_RUN_ID $BATCHCTL_ATTEMPT"\n'
    )
    run_id = cli("run", "e", "--json").json()[0]["id"]
    messages = [
        _json_line(x)["message"] for x in cli("logs", str(run_id), "--json").stdout.splitlines()
    ]
    assert messages == [f"sub teal e {run_id} 1"]


def test_command_given_as_argument_list_runs_without_a_shell(ws: Workspace, cli) -> None:
    ws.write_config('[jobs.e]\nkind = "command"\ncommand = ["echo", "$HOME", "a b"]\n')
    run_id = cli("run", "e", "--json").json()[0]["id"]
    messages = [
        _json_line(x)["message"] for x in cli("logs", str(run_id), "--json").stdout.splitlines()
    ]
    assert messages == ["$HOME a b"]


def test_command_that_cannot_start_fails_with_the_reason(ws: Workspace, cli) -> None:
    ws.write_config('[jobs.e]\nkind = "command"\ncommand = ["/no/such/program"]\n')
    result = cli("run", "e", "--json")
    assert result.exit_code == 1
    assert "cannot start command" in result.json()[0]["error"]


def test_command_whose_cwd_is_missing_is_refused_before_anything_runs(ws: Workspace, cli) -> None:
    ws.write_config('[jobs.e]\nkind = "command"\ncommand = "true"\ncwd = "/no/such/dir"\n')

    result = cli("run", "e", "--json")

    assert result.exit_code == 2
    assert "jobs.e.cwd: /no/such/dir: no such directory" in result.stderr
    assert not ws.db.exists()  # refused before the database was opened


def test_command_whose_cwd_is_gone_when_it_starts_fails_naming_the_cwd_as_a_path(
    ws: Workspace, cli
) -> None:
    gone = ws.root / "gone"
    gone.mkdir()
    ws.write_config(
        f'[jobs.a]\nkind = "command"\ncommand = "rmdir {gone}"\n'
        f'[jobs.e]\nkind = "command"\ncommand = "true"\ncwd = "{gone}"\nafter = ["a"]\n'
    )

    cli("run", "a")

    (error,) = ws.sql("SELECT error FROM runs WHERE job = 'e'")[0]
    assert error == f"cannot start command: cwd {gone}: No such file or directory"


_CHAIN = (
    '[jobs.a]\nkind = "command"\ncommand = "echo a"\n'
    '[jobs.b]\nkind = "command"\ncommand = "exit 3"\nafter = ["a"]\n'
    '[jobs.c]\nkind = "command"\ncommand = "echo c"\nafter = ["a"]\n'
)


def test_run_exits_for_the_worst_run_its_after_chain_started(ws: Workspace, cli) -> None:
    ws.write_config(_CHAIN)

    result = cli("run", "a")

    assert result.exit_code == 1  # b failed after a completed
    assert "3 run(s): 2 completed, 1 failed" in result.stdout


def test_run_json_lists_the_runs_its_after_chain_started_in_order(ws: Workspace, cli) -> None:
    ws.write_config(_CHAIN)

    listed = cli("run", "a", "--json").json()

    assert [(r["job"], r["trigger"], r["status"]) for r in listed] == [
        ("a", "manual", "completed"),
        ("b", "after", "failed"),
        ("c", "after", "completed"),
    ]


def test_command_whose_program_is_missing_fails_naming_the_program(ws: Workspace, cli) -> None:
    ws.write_config('[jobs.e]\nkind = "command"\ncommand = ["/no/such/program"]\n')

    result = cli("run", "e", "--json")

    error = result.json()[0]["error"]
    assert error == "cannot start command: /no/such/program: No such file or directory"


def test_command_timeout_fails_the_run(ws: Workspace, cli) -> None:
    ws.write_config(
        '[jobs.slow]\nkind = "command"\ncommand = "sleep 20"\ntimeout = "0.5s"\ngrace = "1s"\n'
    )
    result = cli("run", "slow", "--json")
    assert result.exit_code == 1
    run = result.json()[0]
    assert run["status"] == "failed"
    assert run["error"] == "timed out"
    assert run["duration"] < 5


def test_python_processor_completes_with_figures_and_progress(ws: Workspace, cli) -> None:
    _python_job(ws, "ok")
    result = cli("run", "j", "--json")
    assert result.exit_code == 0
    run = result.json()[0]
    assert (run["status"], run["items_processed"], run["items_failed"]) == ("completed", 4, 0)
    assert (run["total_tokens"], run["total_cost"]) == (120, 0.25)
    assert run["progress"] == {"done": 4, "total": 4}
    entry = next(_json_line(x) for x in cli("logs", str(run["id"]), "--json").stdout.splitlines())
    assert entry["message"] == "did the work"
    assert entry["fields"] == {"items": 4, "scope": None}
    assert entry["stream"] == "processor"


def test_some_items_failing_is_partial_with_exit_three(ws: Workspace, cli) -> None:
    _python_job(ws, "half")
    result = cli("run", "j", "--json")
    assert result.exit_code == 3
    run = result.json()[0]
    assert run["status"] == "partial"
    detail = cli("status", str(run["id"]), "--json").json()
    reported = [e["message"] for e in detail["errors"] if e["source"] == "result"]
    assert reported == ["item 3: bad", "item 4: bad"]


def test_every_item_failing_is_failed(ws: Workspace, cli) -> None:
    _python_job(ws, "none_ok")
    result = cli("run", "j", "--json")
    assert result.exit_code == 1
    assert result.json()[0]["error"] == "all 3 items failed"


def test_processor_exception_fails_the_run_with_its_traceback_logged(ws: Workspace, cli) -> None:
    _python_job(ws, "boom")
    result = cli("run", "j", "--json")
    assert result.exit_code == 1
    run = result.json()[0]
    assert run["error"] == "ValueError: the input table is empty"
    log = cli("logs", str(run["id"]), "--level", "error").stdout
    assert "Traceback" in log
    assert "procs.py" in log


def test_processor_returning_none_counts_as_completed(ws: Workspace, cli) -> None:
    _python_job(ws, "returns_nothing")
    assert cli("run", "j").exit_code == 0


def test_processor_returning_something_else_fails_clearly(ws: Workspace, cli) -> None:
    _python_job(ws, "returns_wrong")
    result = cli("run", "j", "--json")
    assert result.exit_code == 1
    assert result.json()[0]["error"] == "processor returned dict, expected ProcessResult or None"


def test_processor_class_gets_options(ws: Workspace, cli) -> None:
    _python_job(ws, "Counter", "options = { n = 9 }\n")
    assert cli("run", "j", "--json").json()[0]["items_processed"] == 9


def test_processor_sees_job_env(ws: Workspace, cli) -> None:
    _python_job(ws, "show_env", 'env = { COLOUR = "plum" }\n')
    run = cli("run", "j", "--json").json()[0]
    entry = _json_line(cli("logs", str(run["id"]), "--json").stdout.splitlines()[0])
    assert entry["fields"] == {"value": "plum", "run_id": run["id"], "job": "j"}


def test_processor_registered_as_entry_point_runs(ws: Workspace, cli) -> None:
    ws.write_config('[jobs.e]\nkind = "python"\nprocessor = "example-noop"\n')
    assert cli("run", "e", "--json").json()[0]["status"] == "completed"


def test_unknown_entry_point_is_a_config_error(ws: Workspace, cli) -> None:
    ws.write_config('[jobs.e]\nkind = "python"\nprocessor = "no-such-entry"\n')
    result = cli("run", "e")
    assert result.exit_code == 2
    assert "jobs.e.processor: 'no-such-entry' is neither" in result.stderr


def test_retries_until_success_record_each_attempt(ws: Workspace, cli) -> None:
    _python_job(ws, "fail_first", 'retries = { max_attempts = 3, backoff = "50ms" }\n')
    result = cli("run", "j", "--json")
    assert result.exit_code == 0
    run = result.json()[0]
    assert (run["status"], run["attempts"], run["max_attempts"]) == ("completed", 3, 3)
    detail = cli("status", str(run["id"]), "--json").json()
    history = detail["attempt_history"]
    assert [a["status"] for a in history] == ["failed", "failed", "completed"]
    assert history[0]["error"] == "ConnectionError: attempt 1 failed"
    statuses = [t["to"] for t in detail["transitions"]]
    assert statuses == [
        "queued",
        "running",
        "retrying",
        "running",
        "retrying",
        "running",
        "completed",
    ]


def test_retry_backoff_grows_between_attempts(ws: Workspace, cli) -> None:
    from datetime import datetime

    _python_job(ws, "fail_first", 'retries = { max_attempts = 3, backoff = "200ms" }\n')
    run = cli("run", "j", "--json").json()[0]
    history = cli("status", str(run["id"]), "--json").json()["attempt_history"]
    starts = [datetime.fromisoformat(a["started_at"]) for a in history]
    ends = [datetime.fromisoformat(a["finished_at"]) for a in history]
    first_wait = (starts[1] - ends[0]).total_seconds()
    second_wait = (starts[2] - ends[1]).total_seconds()
    # Equal jitter: the n-th wait lies in [backoff * 2^(n-1) / 2, backoff * 2^(n-1)].
    assert 0.1 <= first_wait < 0.2 + 0.15
    assert 0.2 <= second_wait < 0.4 + 0.15


def test_exhausted_retries_stay_failed_and_are_listed_by_status_failed(ws: Workspace, cli) -> None:
    _python_job(ws, "boom", 'retries = { max_attempts = 2, backoff = "10ms" }\n')
    run = cli("run", "j", "--json").json()[0]
    assert (run["status"], run["attempts"]) == ("failed", 2)
    listed = cli("status", "--failed", "--json").json()
    assert [r["id"] for r in listed] == [run["id"]]


def test_failures_not_named_in_retry_on_are_not_retried(ws: Workspace, cli) -> None:
    _python_job(ws, "half", 'retries = { max_attempts = 3, backoff = "10ms" }\n')
    assert cli("run", "j", "--json").json()[0]["attempts"] == 1
    _python_job(ws, "half", 'retries = { max_attempts = 2, backoff = "10ms", on = ["partial"] }\n')
    assert cli("run", "j", "--json").json()[0]["attempts"] == 2


def test_disabled_job_is_recorded_skipped_with_exit_four(ws: Workspace, cli) -> None:
    ws.write_config('[jobs.off]\nkind = "command"\ncommand = "touch ran"\nenabled = false\n')
    result = cli("run", "off", "--json")
    assert result.exit_code == 4
    run = result.json()[0]
    assert (run["status"], run["reason"]) == ("skipped", "job is disabled")
    assert not (ws.root / "ran").exists()


def test_run_covers_every_scope_of_the_job(ws: Workspace, cli) -> None:
    _python_job(ws, "ok", 'scopes = ["firm-a", "firm-b"]\n')
    runs = cli("run", "j", "--json").json()
    assert [r["scope"] for r in runs] == ["firm-a", "firm-b"]


def test_scope_option_runs_one_scope(ws: Workspace, cli) -> None:
    _python_job(ws, "ok", 'scopes = ["firm-a", "firm-b"]\n')
    runs = cli("run", "j", "--scope", "firm-b", "--json").json()
    assert [r["scope"] for r in runs] == ["firm-b"]


def test_unknown_scope_is_a_usage_error(ws: Workspace, cli) -> None:
    _python_job(ws, "ok", 'scopes = ["firm-a"]\n')
    result = cli("run", "j", "--scope", "firm-z")
    assert result.exit_code == 2
    assert "error: job 'j' has no scope 'firm-z'" in result.stderr


def test_run_all_runs_every_enabled_job(ws: Workspace, cli) -> None:
    ws.write_module("procs", PROCESSORS)
    ws.write_config(
        """
        [jobs.a]
        kind = "command"
        command = "true"
        [jobs.b]
        kind = "python"
        processor = "procs:ok"
        scopes = ["x", "y"]
        [jobs.c]
        kind = "command"
        command = "true"
        enabled = false
        """
    )
    runs = cli("run", "--all", "--json").json()
    assert [(r["job"], r["scope"]) for r in runs] == [("a", None), ("b", "x"), ("b", "y")]


def test_run_all_with_scope_runs_that_scope_of_each_job_that_has_it(ws: Workspace, cli) -> None:
    ws.write_module("procs", PROCESSORS)
    ws.write_config(
        """
        [jobs.a]
        kind = "command"
        command = "true"
        [jobs.b]
        kind = "python"
        processor = "procs:ok"
        scopes = ["x", "y"]
        """
    )
    runs = cli("run", "--all", "--scope", "y", "--json").json()
    assert [(r["job"], r["scope"]) for r in runs] == [("b", "y")]


def test_mixed_outcomes_exit_with_the_worst(ws: Workspace, cli) -> None:
    ws.write_module("procs", PROCESSORS)
    ws.write_config(
        """
        [jobs.a]
        kind = "python"
        processor = "procs:half"
        [jobs.b]
        kind = "command"
        command = "exit 1"
        """
    )
    assert cli("run", "--all").exit_code == 1


def test_unknown_job_is_a_usage_error_listing_the_jobs(ws: Workspace, cli) -> None:
    ws.write_config('[jobs.hello]\nkind = "command"\ncommand = "true"\n')
    result = cli("run", "nope")
    assert result.exit_code == 2
    assert "error: no job named 'nope'" in result.stderr
    assert "configured jobs: hello" in result.stderr


def test_run_needs_a_job_or_all(ws: Workspace, cli) -> None:
    ws.write_config('[jobs.hello]\nkind = "command"\ncommand = "true"\n')
    assert cli("run").exit_code == 2
    assert cli("run", "hello", "--all").exit_code == 2


def test_retry_runs_a_failed_run_again_as_a_new_linked_run(ws: Workspace, cli) -> None:
    flag = ws.root / "fixed"
    ws.write_config(f'[jobs.j]\nkind = "command"\ncommand = "test -e {flag}"\n')
    first = cli("run", "j", "--json").json()[0]
    assert first["status"] == "failed"
    flag.touch()
    result = cli("retry", str(first["id"]), "--json")
    assert result.exit_code == 0
    second = result.json()[0]
    assert (second["status"], second["retry_of"], second["trigger"]) == (
        "completed",
        first["id"],
        "retry",
    )


def test_retry_of_a_completed_run_is_refused(ws: Workspace, cli) -> None:
    ws.write_config('[jobs.j]\nkind = "command"\ncommand = "true"\n')
    run_id = cli("run", "j", "--json").json()[0]["id"]
    result = cli("retry", str(run_id))
    assert result.exit_code == 2
    assert f"error: run {run_id} completed; there is nothing to retry" in result.stderr


def test_retry_of_a_local_run_refuses_the_batch_only_flags(ws: Workspace, cli) -> None:
    ws.write_config('[jobs.j]\nkind = "command"\ncommand = "exit 1"\n')
    run_id = cli("run", "j", "--json").json()[0]["id"]

    result = cli("retry", str(run_id), "--failed")

    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: --failed: run {run_id} is a local run, not a batch")
    assert [row[0] for row in ws.sql("SELECT id FROM runs")] == [run_id]  # nothing was run


def test_retry_of_an_unknown_run_says_so_even_without_a_config(ws: Workspace, cli) -> None:
    assert not ws.config.exists()

    result = cli("retry", "9999")

    assert result.exit_code == 2
    assert result.stderr.startswith("error: no run with id 9999")


def test_human_output_ends_with_a_summary(ws: Workspace, cli) -> None:
    _python_job(ws, "half")
    result = cli("run", "j")
    assert "1 run(s): 1 partial" in result.stdout
    assert "2 of 4 items failed" in result.stdout


def test_quiet_run_prints_nothing_on_success(ws: Workspace, cli) -> None:
    ws.write_config('[jobs.j]\nkind = "command"\ncommand = "echo hi"\n')
    result = cli("--quiet", "run", "j")
    assert (result.exit_code, result.stdout) == (0, "")


class Terminal:
    """``batchctl ARGS`` on a pseudo-terminal, as a user sees it: Rich draws its live display."""

    def __init__(self, exe: str, *args: str, env: dict[str, str]) -> None:
        import os
        import pty
        import subprocess

        self.master, follower = pty.openpty()
        self.proc = subprocess.Popen(
            [exe, *args], env=env, stdin=follower, stdout=follower, stderr=follower
        )
        os.close(follower)
        self.seen = ""

    def screen(self) -> str:
        """Everything written so far (read without waiting)."""
        import os
        import select

        while select.select([self.master], [], [], 0)[0]:
            try:
                data = os.read(self.master, 65536)
            except OSError:  # the process has ended and closed the terminal
                break
            if not data:
                break
            self.seen += data.decode(errors="replace")
        return self.seen

    def finish(self) -> int:
        import os

        code = self.proc.wait(timeout=scaled(60))
        self.screen()
        os.close(self.master)
        return code


def _job_waiting_for_a_file(ws: Workspace, first_line: str) -> None:
    ws.write_config(
        f"""
        [jobs.slow]
        kind = "command"
        command = "echo '{first_line}'; while [ ! -e release ]; do sleep 0.05; done"
        scopes = ["firm-a"]
        """
    )


def test_progress_bar_of_a_scoped_run_names_its_scope(ws: Workspace, batchctl_exe) -> None:
    from tests.waiting import wait_for

    _job_waiting_for_a_file(ws, "working")
    terminal = Terminal(batchctl_exe, "run", "slow", env=ws.env())
    try:
        wait_for(lambda: "run 1 slow[firm-a] ━" in terminal.screen(), terminal.screen, 30)
    finally:
        (ws.root / "release").touch()
        assert terminal.finish() == 0


def test_progress_bar_shows_a_log_line_as_written(ws: Workspace, batchctl_exe) -> None:
    from tests.waiting import wait_for

    _job_waiting_for_a_file(ws, "[/b] is not markup")
    terminal = Terminal(batchctl_exe, "run", "slow", env=ws.env())
    try:
        wait_for(lambda: "[/b] is not markup" in terminal.screen(), terminal.screen, 30)
    finally:
        (ws.root / "release").touch()
        assert terminal.finish() == 0


def test_a_run_whose_reader_goes_away_goes_on_to_its_end_quietly(
    ws: Workspace, batchctl_exe
) -> None:
    import subprocess

    ws.write_config(
        '[jobs.j]\nkind = "command"\n'
        'command = "echo first; while [ ! -e release ]; do sleep 0.05; done; seq 1 2000"\n'
    )
    env = {k: v for k, v in ws.env().items() if k != "PYTHONUNBUFFERED"}  # as from a shell
    runner = subprocess.Popen(
        [batchctl_exe, "--verbose", "run", "j"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert runner.stdout is not None and runner.stderr is not None

    assert "first" in runner.stdout.readline()
    runner.stdout.close()  # `| head -1`
    (ws.root / "release").touch()  # only now the job writes on
    stderr = runner.stderr.read()

    assert (runner.wait(timeout=scaled(60)), stderr) == (0, "")
    assert ws.sql("SELECT status FROM runs") == [("completed",)]
