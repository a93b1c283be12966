"""Several ``batchctl daemon`` processes sharing one PostgreSQL database (issue #6), end to end.

Real processes, real time: the installed console script is started three times with
``--db <a fresh test database>`` (the same config file, as on three hosts that share it), and the
tests then read what the database says with psycopg. They check what the issue promises:

- each tick of a job firing every second fires exactly once across all the daemons, and the
  work is spread over more than one of them;
- ``health --json`` lists every daemon and reports healthy;
- a daemon killed (SIGKILL) in the middle of a run loses nothing: once the run's lease has run
  out on the database's clock another daemon records it ``abandoned`` and retries it;
- an OpenAI submission refreshed by three daemons is driven by one at a time: one upload and one
  batch per part, each result file downloaded once, the results merged once.

Skipped, saying why, without ``$BATCHCTL_TEST_PG`` or a reachable server (failed instead with
``$BATCHCTL_TEST_PG_REQUIRED=1``): see ``conftest.py``. ``$BATCHCTL_TEST_SEVERAL_SECONDS``
shortens the 20-second run of the first test for quick local runs.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import Workspace, run_exe
from tests.daemons import Daemon, daemon_launcher
from tests.waiting import scaled, wait_for

pytestmark = pytest.mark.slow


EVERY_SECOND = "* * * * * */1"  # 6 fields: seconds LAST
DURATION_S = float(os.environ.get("BATCHCTL_TEST_SEVERAL_SECONDS", "20"))
DAEMONS = 3
LEASE_S = 3.0


# --- helpers ---------------------------------------------------------------------------------------


def sql(url: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    """Read the test database directly (psycopg, ``%s`` placeholders)."""
    import psycopg

    with psycopg.connect(url, autocommit=True, connect_timeout=5) as conn:
        cursor = conn.execute(query, params)
        return cursor.fetchall() if cursor.description else []


RUN_COLUMNS = (
    "id",
    "job",
    "status",
    "trigger",
    "scheduled_for",
    "reason",
    "host",
    "pid",
    "retry_of",
    "lease_until",
)


def runs(url: str, job: str | None = None) -> list[dict[str, Any]]:
    where, params = (" WHERE job = %s", (job,)) if job else ("", ())
    rows = sql(url, f"SELECT {', '.join(RUN_COLUMNS)} FROM runs{where} ORDER BY id", *params)
    return [dict(zip(RUN_COLUMNS, row, strict=True)) for row in rows]


def daemon_section(**extra: str) -> str:
    keys = {"lease": f"{LEASE_S:g}s", "grace": "1s", **extra}
    return "[daemon]\n" + "".join(f'{k} = "{v}"\n' for k, v in keys.items()) + "\n"


@pytest.fixture
def start(ws: Workspace, batchctl_exe: str, pg_url: str) -> Iterator[Callable[..., Daemon]]:
    """Start ``batchctl --db <pg_url> daemon``; every one (and every job process that wrote its
    pid to ``pid-*``) is killed at teardown whatever happened."""
    with daemon_launcher(ws, batchctl_exe, "--db", pg_url) as launch:
        yield launch


def start_all(start: Callable[..., Daemon], env: dict[str, str] | None = None) -> list[Daemon]:
    daemons = [start(env=env) for _ in range(DAEMONS)]
    for daemon in daemons:
        daemon.wait_started()
    return daemons


def logs(daemons: list[Daemon]) -> str:
    return "\n".join(f"--- daemon pid {d.pid}:\n{d.text()[-3000:]}" for d in daemons)


# --- every tick once --------------------------------------------------------------------------------


def test_three_daemons_fire_each_tick_of_a_per_second_job_exactly_once(
    ws: Workspace, start: Callable[..., Daemon], pg_url: str
) -> None:
    ws.write_config(
        daemon_section() + "[jobs.tick]\n"
        'kind = "command"\n'
        'command = "echo tick"\n'
        f'schedule = "{EVERY_SECOND}"\n'
        'timezone = "UTC"\n'
    )
    daemons = start_all(start)
    began = datetime.now(UTC)
    time.sleep(DURATION_S)
    codes = [d.stop()[0] for d in daemons]
    ended = datetime.now(UTC)
    assert codes == [0] * DAEMONS, logs(daemons)

    fired = runs(pg_url, "tick")
    moments = [r["scheduled_for"] for r in fired]
    duplicated = {m: n for m, n in Counter(moments).items() if n > 1}
    assert not duplicated, f"ticks fired more than once: {duplicated}\n{logs(daemons)}"
    expected = (ended - began).total_seconds()
    assert abs(len(set(moments)) - DURATION_S) <= 2, (len(moments), expected, moments)
    assert all(m.microsecond == 0 for m in moments)
    assert {r["status"] for r in fired} == {"completed"}, [
        (r["id"], r["status"], r["reason"]) for r in fired if r["status"] != "completed"
    ]
    assert {r["trigger"] for r in fired} == {"schedule"}
    # Each tick row has the one run of its scheduled time, and none is left pending.
    ticks = sql(
        pg_url,
        "SELECT t.scheduled_for, t.status, r.scheduled_for FROM ticks t"
        " LEFT JOIN runs r ON r.id = t.run_id WHERE t.job = 'tick' ORDER BY t.scheduled_for",
    )
    assert [(t[1], t[0] == t[2]) for t in ticks] == [("fired", True)] * len(ticks), ticks
    assert sorted(t[0] for t in ticks) == sorted(moments)
    # The work was shared: runs were executed by more than one of the daemons.
    executors = Counter(r["pid"] for r in fired)
    assert set(executors) <= {d.pid for d in daemons}, executors
    assert len(executors) > 1, f"one daemon ran every tick: {executors}"
    # Every daemon registered itself and recorded its stop.
    registered = sql(pg_url, "SELECT pid, mode, stopped_at FROM daemons")
    assert sorted(row[0] for row in registered) == sorted(d.pid for d in daemons)
    assert all(row[1] == "daemon" and row[2] is not None for row in registered), registered
    assert sql(pg_url, "SELECT count(*) FROM daemon_lock") == [(0,)]  # no single-daemon lock
    assert sql(pg_url, "SELECT count(*) FROM locks") == [(0,)]


def test_health_lists_every_daemon_and_is_healthy(
    ws: Workspace, start: Callable[..., Daemon], pg_url: str, batchctl_exe: str
) -> None:
    ws.write_config(
        daemon_section() + "[jobs.tick]\n"
        'kind = "command"\n'
        'command = "true"\n'
        f'schedule = "{EVERY_SECOND}"\n'
        'timezone = "UTC"\n'
    )
    daemons = start_all(start)
    wait_for(lambda: runs(pg_url, "tick"), "a first run", timeout=5)
    checked = run_exe(batchctl_exe, "--db", pg_url, "health", "--json", env=ws.env(), timeout=30)
    assert checked.returncode == 0, checked.stderr + logs(daemons)
    report = json.loads(checked.stdout)
    assert report["healthy"] is True, report
    assert report["problems"] == [], report
    assert report["scheduler"] == "daemon"
    listed = {d["pid"]: d for d in report["daemons"]}
    assert set(listed) == {d.pid for d in daemons}, report["daemons"]
    assert {d["state"] for d in listed.values()} == {"running"}, report["daemons"]
    assert {d["mode"] for d in listed.values()} == {"daemon"}
    assert len({d["instance"] for d in listed.values()}) == DAEMONS
    assert report["lock"] is None  # a shared database has no single-daemon lock
    assert [d.stop()[0] for d in daemons] == [0] * DAEMONS, logs(daemons)
    # Stopped, they are still listed, as stopped; no scheduler is left for the scheduled job.
    after = json.loads(
        run_exe(batchctl_exe, "--db", pg_url, "health", "--json", env=ws.env(), timeout=30).stdout
    )
    assert {d["pid"]: d["state"] for d in after["daemons"]} == {d.pid: "stopped" for d in daemons}
    assert after["healthy"] is False


# --- a daemon killed mid-run --------------------------------------------------------------------------


def one_tick_at(due: datetime) -> str:
    """A 6-field schedule (seconds last) that fires once a day, at ``due`` (UTC)."""
    return f"{due.minute} {due.hour} * * * {due.second}"


def test_a_killed_daemons_run_is_abandoned_after_its_lease_and_retried_by_another(
    ws: Workspace, start: Callable[..., Daemon], pg_url: str, batchctl_exe: str
) -> None:
    # The first attempt sleeps 30 s; the retry finds the marker file and sleeps 2 s.
    command = (
        'echo $$ > "pid-$BATCHCTL_RUN_ID"; '
        "if [ -e started ]; then sleep 2; else touch started; sleep 30; fi"
    )
    due = datetime.now(UTC).replace(microsecond=0) + timedelta(seconds=scaled(8))
    ws.write_config(
        daemon_section() + "[jobs.long]\n"
        'kind = "command"\n'
        f"command = {json.dumps(command)}\n"
        f'schedule = "{one_tick_at(due)}"\n'
        'timezone = "UTC"\n'
        'retries = { max_attempts = 2, backoff = "0.1s" }\n'
    )
    daemons = start_all(start)
    assert datetime.now(UTC) < due, "the daemons took too long to start"
    [first] = wait_for(
        lambda: [r for r in runs(pg_url, "long") if r["status"] == "running"],
        "the long run to start",
        timeout=10,
    )
    wait_for(lambda: (ws.root / f"pid-{first['id']}").exists(), "the job's process to start")
    [victim] = [d for d in daemons if d.pid == first["pid"]]
    victim.process.kill()
    assert victim.process.wait(timeout=scaled(5)) == -signal.SIGKILL
    survivors = [d for d in daemons if d is not victim]

    def abandoned() -> dict[str, Any] | None:
        [run] = [r for r in runs(pg_url, "long") if r["id"] == first["id"]]
        return run if run["status"] == "abandoned" else None

    lost = wait_for(abandoned, f"the run to be abandoned\n{logs(daemons)}", timeout=12)
    assert str(victim.pid) in (lost["reason"] or ""), lost
    # Not before its lease ran out, by the database's clock (the transition's time is the
    # recovering daemon's clock: the same host's as the server's here).
    [(abandoned_at,)] = sql(
        pg_url,
        "SELECT at FROM transitions WHERE run_id = %s AND to_status = 'abandoned'",
        first["id"],
    )
    # lease_until is the database's clock, the transition's time the recording host's: allow
    # for the hosts' clock and the database's differing by a little
    skew = timedelta(seconds=1)
    assert abandoned_at >= lost["lease_until"] - skew, (abandoned_at, lost["lease_until"])
    # health: still healthy (two daemons work), the killed one listed as gone.
    checked = run_exe(batchctl_exe, "--db", pg_url, "health", "--json", env=ws.env(), timeout=30)
    report = json.loads(checked.stdout)
    states = {d["pid"]: d["state"] for d in report["daemons"]}
    assert states == {d.pid: "gone" if d is victim else "running" for d in daemons}, report
    assert (checked.returncode, report["healthy"]) == (0, True), report

    def retried() -> dict[str, Any] | None:
        again = [r for r in runs(pg_url, "long") if r["retry_of"] == first["id"]]
        return again[0] if again and again[0]["status"] == "completed" else None

    retry = wait_for(retried, f"the retry to complete\n{logs(daemons)}", timeout=12)
    assert retry["trigger"] == "retry"
    assert retry["pid"] in {d.pid for d in survivors}
    assert [d.stop()[0] for d in survivors] == [0, 0], logs(survivors)
    everything = runs(pg_url)
    assert [(r["id"], r["status"]) for r in everything] == [
        (first["id"], "abandoned"),
        (retry["id"], "completed"),
    ], everything
    assert sql(pg_url, "SELECT count(*) FROM locks") == [(0,)]


# --- an OpenAI submission refreshed by three daemons -----------------------------------------------


def test_a_submission_refreshed_by_three_daemons_is_driven_once(
    ws: Workspace, start: Callable[..., Daemon], pg_url: str, batchctl_exe: str, tmp_path: Path
) -> None:
    from batchctl.emulator import Emulator

    requests = 6
    with (ws.root / "in.jsonl").open("w") as out:
        for i in range(requests):
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"hi {i}"}]}
            line = {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions"}
            out.write(json.dumps({**line, "body": body}) + "\n")
    ws.write_config(
        "[openai]\npoll_interval = 0.2\n\n"
        + daemon_section(poll_interval="0.2s")
        + '[prices."gpt-4o-mini"]\ninput = 0.15\noutput = 0.60\n'
    )
    shared_files = tmp_path / "shared-files"
    shared_files.mkdir()
    with Emulator() as emu:
        env = {
            **ws.env(),
            "OPENAI_BASE_URL": emu.base_url,
            "OPENAI_API_KEY": "test-key",
            "BATCHCTL_FILES": str(shared_files),
        }
        submitted = run_exe(
            batchctl_exe,
            "--db",
            pg_url,
            "submit",
            "in.jsonl",
            "--max-requests",
            "2",
            "--json",
            env=env,
            timeout=30,
        )
        assert submitted.returncode == 0, submitted.stderr
        run_id = json.loads(submitted.stdout)["id"]
        daemons = start_all(start, env)

        def settled() -> str | None:
            [(status,)] = sql(pg_url, "SELECT status FROM runs WHERE id = %s", run_id)
            return status if status in ("completed", "partial", "failed") else None

        status = wait_for(settled, f"the submission to settle\n{logs(daemons)}", timeout=20)
        time.sleep(1.0)  # a few more refresh rounds: nothing more may happen
        assert [d.stop()[0] for d in daemons] == [0] * DAEMONS, logs(daemons)
        calls = [(r.method, r.path) for r in emu.requests if r.succeeded]
    assert status == "completed", logs(daemons)
    parts = sql(
        pg_url,
        "SELECT number, input_file_id, batch_id, output_file_id FROM parts WHERE run_id = %s"
        " ORDER BY number",
        run_id,
    )
    assert len(parts) == requests // 2
    assert all(p[1] and p[2] and p[3] for p in parts), parts
    # One upload and one remote batch per part; each result file downloaded once.
    uploads = [c for c in calls if c == ("POST", "/v1/files")]
    created = [c for c in calls if c == ("POST", "/v1/batches")]
    assert (len(uploads), len(created)) == (len(parts), len(parts)), calls
    assert len({p[1] for p in parts}) == len({p[2] for p in parts}) == len(parts)
    downloads = Counter(path for method, path in calls if path.endswith("/content"))
    assert downloads == Counter({f"/v1/files/{p[3]}/content": 1 for p in parts}), calls
    # Merged once: one transition to completed, the merged file has every request once.
    [(merged_at, results_path)] = sql(
        pg_url, "SELECT merged_at, results_path FROM submissions WHERE run_id = %s", run_id
    )
    assert merged_at is not None
    done = sql(
        pg_url,
        "SELECT to_status FROM transitions WHERE run_id = %s AND to_status = 'completed'",
        run_id,
    )
    assert len(done) == 1, done
    merged = [json.loads(line)["custom_id"] for line in Path(results_path).read_text().splitlines()]
    assert merged == [f"r{i}" for i in range(requests)]
    assert str(shared_files) in results_path


def test_a_daemon_that_takes_the_lease_just_after_another_merged_does_not_merge_again(
    ws: Workspace, cli: Any, pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interleaving of two daemons' refresh rounds, made deterministic in-process: daemon B
    reads the submission (not merged yet), then daemon A advances it to the end (merges, runs
    ``on_complete``, releases its lease), then B takes the lease and goes on."""
    from batchctl.batches.submission import Batches
    from batchctl.config import load_config
    from batchctl.emulator import Emulator
    from batchctl.providers import open_provider
    from batchctl.records import Owner
    from batchctl.store import open_store

    with (ws.root / "in.jsonl").open("w") as out:
        for i in range(2):
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"hi {i}"}]}
            line = {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions"}
            out.write(json.dumps({**line, "body": body}) + "\n")
    ws.write_config(
        "[openai]\npoll_interval = 0.1\n\n"
        "[jobs.nightly]\n"
        'kind = "openai"\n'
        'input = "in.jsonl"\n'
        'on_complete = "echo merged >> hooks.txt"\n'
    )
    monkeypatch.setenv("BATCHCTL_FILES", str(tmp_path / "files"))
    # Two daemons are two processes: each call gets its own in-process driving lock, so that
    # only the database (the lease, merged_at) stands between them, as between hosts.
    import threading

    import batchctl.batches.submission as submission_module

    monkeypatch.setattr(submission_module, "_driving", lambda run_id: threading.Lock())
    with Emulator() as emu:
        monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        submitted = cli("--db", pg_url, "submit", "in.jsonl", "--job", "nightly", "--json")
        assert submitted.exit_code == 0, submitted.stderr
        run_id = submitted.json()["id"]
        wait_for(
            lambda: all(b["status"] == "completed" for b in emu.batches.values()),
            "the emulator to finish the batch",
        )
        config = load_config(ws.config)
        provider = open_provider(config.openai)
        store_a, store_b = open_store(pg_url), open_store(pg_url)
        try:
            daemon_a = Batches(store_a, config, provider=provider)
            daemon_b = Batches(store_b, config, provider=provider)
            daemon_a.owner, daemon_b.owner = Owner("host-a", 1), Owner("host-b", 2)
            take = store_b.take_submission_lease

            def a_finishes_first(*args: Any, **kwargs: Any) -> Owner | None:
                assert daemon_a.advance(run_id) is True  # A merges and releases
                return take(*args, **kwargs)

            monkeypatch.setattr(store_b, "take_submission_lease", a_finishes_first)
            daemon_b.advance(run_id)
        finally:
            store_a.close()
            store_b.close()
            provider.close()
    assert (ws.root / "hooks.txt").read_text().splitlines() == ["merged"]
