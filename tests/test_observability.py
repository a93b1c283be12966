"""`batchctl metrics`, `health` and `prune`, and the monitoring HTTP server."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from batchctl.records import Owner, PartPlanRow, RequestRow, RunStatus, Submission, to_iso, utcnow
from batchctl.store import open_store
from tests.conftest import Workspace

PROCESSORS = """
from batchctl import ProcessResult

def tokens(ctx):
    ctx.log("info", "used the API", calls=2)
    return ProcessResult(items_processed=3, total_tokens=120, total_cost=0.25)
"""

CONFIG = """
[jobs.ok]
kind = "command"
command = "echo one; echo two"

[jobs.bad]
kind = "command"
command = "echo failing; exit 3"

[jobs.py]
kind = "python"
processor = "procs:tokens"
"""

SCHEDULED = """
[jobs.hourly]
kind = "command"
command = "true"
schedule = "0 * * * *"
timezone = "UTC"
"""

SAMPLE = re.compile(
    r'^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>(?:[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\]|\\.)*",?)*)\})?'
    r" (?P<value>[-+]?(?:\d+(?:\.\d*)?(?:[eE][-+]?\d+)?|Inf|NaN))$"
)
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    """Check the exposition format line by line; the samples by (name, labels)."""
    assert text.endswith("\n")
    helped: set[str] = set()
    typed: dict[str, str] = {}
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for line in text.splitlines():
        if line.startswith("# HELP "):
            name = line.split()[2]
            assert name.startswith("batchctl_"), line
            helped.add(name)
            continue
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            assert kind in ("counter", "gauge", "summary", "histogram", "untyped"), line
            assert name in helped, f"TYPE before HELP: {line}"
            typed[name] = kind
            continue
        match = SAMPLE.match(line)
        assert match, f"not a sample line: {line!r}"
        name = match["name"]
        family = re.sub(r"_(sum|count)$", "", name) if name not in typed else name
        assert family in typed, f"sample without TYPE: {line}"
        labels = frozenset(LABEL.findall(match["labels"] or ""))
        key = (name, labels)
        assert key not in samples, f"duplicate sample: {line}"
        samples[key] = float(match["value"])
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def _make_runs(ws: Workspace, cli: Any) -> None:
    ws.write_module("procs", PROCESSORS)
    ws.write_config(CONFIG)
    assert cli("run", "ok").exit_code == 0
    assert cli("run", "ok").exit_code == 0
    assert cli("run", "bad").exit_code == 1
    assert cli("run", "py").exit_code == 0


# --- metrics --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_metrics_are_valid_exposition_with_the_runs_counted(ws: Workspace, cli: Any) -> None:
    _make_runs(ws, cli)
    store = open_store(str(ws.db))
    try:
        now = utcnow()
        store.record_ticks(
            "py",
            None,
            pending=[now - timedelta(minutes=1)],
            closed=[
                (now - timedelta(hours=3), "missed", "catchup=latest"),
                (now - timedelta(hours=2), "missed", "catchup=latest"),
                (now - timedelta(hours=1), "skipped", "paused"),
            ],
            cursor=now - timedelta(minutes=1),
            priority=0,
            now=now,
        )
        store.pause("bad", now, "broken")
    finally:
        store.close()

    result = cli("metrics")
    assert result.exit_code == 0, result.stderr
    samples = parse_metrics(result.stdout)

    assert value(samples, "batchctl_runs_total", batchctl_job="ok", status="completed") == 2
    assert value(samples, "batchctl_runs_total", batchctl_job="bad", status="failed") == 1
    assert value(samples, "batchctl_runs_total", batchctl_job="py", status="completed") == 1
    runs_total = sum(v for (n, _), v in samples.items() if n == "batchctl_runs_total")
    assert runs_total == ws.sql("SELECT count(*) FROM runs")[0][0] == 4
    assert value(samples, "batchctl_run_duration_seconds_count", batchctl_job="ok") == 2
    assert (value(samples, "batchctl_run_duration_seconds_sum", batchctl_job="ok") or 0) >= 0
    assert value(samples, "batchctl_tokens_total", batchctl_job="py") == 120
    assert value(samples, "batchctl_cost_dollars_total", batchctl_job="py") == 0.25
    finished = ws.sql("SELECT max(finished_at) FROM runs WHERE job = 'ok'")[0][0]
    last = value(samples, "batchctl_last_success_timestamp_seconds", batchctl_job="ok")
    assert last == pytest.approx(datetime.fromisoformat(finished).timestamp(), abs=1e-3)
    assert value(samples, "batchctl_last_success_timestamp_seconds", batchctl_job="bad") is None
    assert value(samples, "batchctl_ticks_pending", batchctl_job="py") == 1
    assert value(samples, "batchctl_ticks_total", batchctl_job="py", status="missed") == 2
    assert value(samples, "batchctl_ticks_total", batchctl_job="py", status="skipped") == 1
    assert value(samples, "batchctl_job_paused", batchctl_job="bad") == 1
    assert value(samples, "batchctl_job_paused", batchctl_job="ok") == 0
    assert value(samples, "batchctl_submissions_in_flight", provider="openai") == 0
    assert value(samples, "batchctl_daemon_up") == 0
    assert value(samples, "batchctl_healthy") == 1  # no scheduled job: no daemon needed
    assert "# TYPE batchctl_runs_total counter" in result.stdout
    assert "# TYPE batchctl_run_duration_seconds summary" in result.stdout

    as_json = cli("metrics", "--json").json()
    assert {
        "name": "batchctl_runs_total",
        "labels": {"batchctl_job": "ok", "status": "completed"},
        "value": 2,
    } in as_json


def test_metrics_escape_label_values(ws: Workspace, cli: Any) -> None:
    odd = 'a"b\\c\nd'
    ws.write_config(CONFIG)
    open_store(str(ws.db)).close()
    ws.sql(
        "INSERT INTO runs (job, status, trigger, created_at) VALUES (?, 'failed', 'manual', ?)",
        odd,
        to_iso(utcnow()),
    )
    text = cli("metrics").stdout
    assert 'batchctl_runs_total{batchctl_job="a\\"b\\\\c\\nd",status="failed"} 1.0' in text
    parse_metrics(text)
    sample = {"name": "batchctl_runs_total", "labels": {"batchctl_job": odd, "status": "failed"}}
    assert {**sample, "value": 1} in cli("metrics", "--json").json()


def test_metrics_never_use_the_labels_prometheus_sets(ws: Workspace, cli: Any) -> None:
    _make_runs(ws, cli)
    store = open_store(str(ws.db))
    try:
        now = utcnow()
        store.record_ticks(
            "py",
            None,
            pending=[now],
            closed=[(now - timedelta(hours=1), "missed", "catchup=latest")],
            cursor=now,
            priority=0,
            now=now,
        )
    finally:
        store.close()
    samples = parse_metrics(cli("metrics").stdout)
    labels = {name for (_, pairs) in samples for name, _ in pairs}
    assert labels == {"batchctl_job", "status", "provider"}
    as_json = cli("metrics", "--json").json()
    assert {name for sample in as_json for name in sample["labels"]} == labels


def test_metrics_textfile_is_written_atomically(ws: Workspace, cli: Any) -> None:
    _make_runs(ws, cli)
    folder = ws.root / "textfiles"
    folder.mkdir()
    target = folder / "batchctl.prom"
    target.write_text("old content\n")
    old_inode = target.stat().st_ino

    result = cli("metrics", "--textfile", str(target))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert target.read_text() == cli("metrics").stdout
    assert target.stat().st_ino != old_inode  # a new file renamed over the old one
    assert sorted(p.name for p in folder.iterdir()) == ["batchctl.prom"]
    assert target.stat().st_mode & 0o777 == 0o644


def test_metrics_textfile_on_a_fifo_is_streamed_to_and_never_replaced(
    ws: Workspace, cli: Any
) -> None:
    import stat
    import threading

    ws.write_config("")
    fifo = ws.root / "metrics.fifo"
    os.mkfifo(fifo)
    received: list[str] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()), daemon=True)
    reader.start()

    result = cli("metrics", "--textfile", str(fifo))
    reader.join(timeout=30)

    assert result.exit_code == 0, result.stderr
    assert stat.S_ISFIFO(fifo.stat().st_mode)  # a device or a pipe is written to, not replaced
    assert received == [cli("metrics").stdout]
    assert sorted(p.name for p in ws.root.iterdir() if p.name.startswith(".metrics")) == []


def test_metrics_textfile_naming_a_directory_is_refused_naming_it(ws: Workspace, cli: Any) -> None:
    ws.write_config("")
    folder = ws.root / "textfiles"
    folder.mkdir()

    result = cli("metrics", "--textfile", str(folder))

    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {folder} is a directory")
    assert list(folder.iterdir()) == []
    assert [p.name for p in ws.root.iterdir() if p.name.endswith(".part")] == []


def test_metrics_textfile_leaves_no_temporary_file_on_failure(
    ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> None:
    from batchctl import metrics, outputs
    from batchctl.config import EMPTY
    from batchctl.errors import UsageError

    target = ws.root / "out" / "batchctl.prom"
    target.parent.mkdir()
    target.write_text("previous\n")

    def fail(src: str, dst: str) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(outputs.os, "replace", fail)
    store = open_store(str(ws.db))
    try:
        with pytest.raises(UsageError, match=f"cannot write {target}: disk full"):
            metrics.write_textfile(store, EMPTY, target, now=utcnow())
    finally:
        store.close()
    assert sorted(p.name for p in target.parent.iterdir()) == ["batchctl.prom"]
    assert target.read_text() == "previous\n"


# --- health ---------------------------------------------------------------------------------------


def _daemon(ws: Workspace, *, beat_age: float, lock: bool = True, instance: str = "d1") -> None:
    """A daemon record as a running daemon leaves it, its heartbeat ``beat_age`` seconds old."""
    from batchctl.owners import this_process

    store = open_store(str(ws.db))
    try:
        now = utcnow()
        beat = now - timedelta(seconds=beat_age)
        owner = this_process()  # alive: health checks the pid on this host
        store.register_daemon(instance, owner, "daemon", beat - timedelta(minutes=5))
        store.daemon_heartbeat(instance, beat, passed=True)
        if lock:
            assert (
                store.take_daemon_lock(instance, owner, beat + timedelta(seconds=30), beat) is None
            )
    finally:
        store.close()


def _set_cursor(ws: Workspace, job: str, moment: datetime) -> None:
    store = open_store(str(ws.db))
    try:
        store.set_cursor(job, None, moment)
    finally:
        store.close()


def test_health_without_scheduled_jobs_or_daemon_is_healthy(ws: Workspace, cli: Any) -> None:
    ws.write_config(CONFIG)
    result = cli("health", "--json")
    assert result.exit_code == 0, result.stdout
    report = result.json()
    assert report["healthy"] is True
    assert report["problems"] == []
    assert report["daemon"] is None
    assert report["scheduler"] is None
    assert report["scheduled_jobs"] == []
    assert set(report) >= {
        "checked_at",
        "lease",
        "lock",
        "last_pass_at",
        "in_flight",
        "pending_ticks",
        "overdue",
        "daemons",
        "warnings",
    }
    human = cli("health")
    assert human.exit_code == 0
    assert "healthy" in human.stdout


def test_health_with_scheduled_jobs_and_no_daemon_is_unhealthy(ws: Workspace, cli: Any) -> None:
    ws.write_config(SCHEDULED)
    result = cli("health", "--json")
    assert result.exit_code == 1
    report = result.json()
    assert report["healthy"] is False
    assert report["scheduled_jobs"] == ["hourly"]
    assert any("no daemon is running" in p for p in report["problems"])
    human = cli("health")
    assert human.exit_code == 1
    assert "unhealthy" in human.stdout
    assert "no daemon is running" in human.stdout


def test_health_fresh_heartbeat_is_healthy(ws: Workspace, cli: Any) -> None:
    ws.write_config(SCHEDULED)
    _daemon(ws, beat_age=2)
    _set_cursor(ws, "hourly", utcnow())
    result = cli("health", "--json")
    assert result.exit_code == 0, result.stdout
    report = result.json()
    assert report["scheduler"] == "daemon"
    daemon = report["daemon"]
    assert daemon["instance"] == "d1"
    assert daemon["state"] == "running"
    assert daemon["holds_lock"] is True
    assert daemon["pid"] == os.getpid()
    assert daemon["heartbeat_age"] < 30
    assert report["lock"]["instance"] == "d1"
    assert report["last_pass_at"] == daemon["last_pass_at"]
    assert [d["instance"] for d in report["daemons"]] == ["d1"]
    assert report["overdue"] == []

    samples = parse_metrics(cli("metrics").stdout)
    assert value(samples, "batchctl_daemon_up") == 1
    assert value(samples, "batchctl_healthy") == 1
    assert (value(samples, "batchctl_daemon_heartbeat_age_seconds") or 99) < 30


def test_health_stale_heartbeat_is_unhealthy(ws: Workspace, cli: Any) -> None:
    ws.write_config(SCHEDULED)
    _daemon(ws, beat_age=600)  # lease 30 s: stale after 60 s
    _set_cursor(ws, "hourly", utcnow())
    result = cli("health", "--json")
    assert result.exit_code == 1
    report = result.json()
    assert report["daemon"]["state"] == "stale"
    assert report["scheduler"] is None
    assert any("has not beaten for 10m00s" in p for p in report["problems"]), report["problems"]


def test_health_live_daemon_without_the_lock_is_unhealthy(ws: Workspace, cli: Any) -> None:
    ws.write_config(SCHEDULED)
    _daemon(ws, beat_age=1, lock=False)
    _set_cursor(ws, "hourly", utcnow())
    report = cli("health", "--json")
    assert report.exit_code == 1
    assert report.json()["daemon"]["holds_lock"] is False
    assert any("does not hold the daemon lock" in p for p in report.json()["problems"])


def test_health_once_rounds_count_as_a_scheduler(ws: Workspace, cli: Any) -> None:
    from batchctl.owners import this_process

    ws.write_config(SCHEDULED)
    store = open_store(str(ws.db))
    try:
        now = utcnow()
        store.register_daemon("round", this_process(), "once", now - timedelta(seconds=40))
        store.daemon_heartbeat("round", now - timedelta(seconds=39), passed=True)
        store.daemon_stopped("round", now - timedelta(seconds=39))
        store.set_cursor("hourly", None, now)
    finally:
        store.close()
    result = cli("health", "--json")
    assert result.exit_code == 0, result.stdout
    assert result.json()["scheduler"] == "once"


def test_health_finds_a_job_whose_tick_did_not_come(ws: Workspace, cli: Any) -> None:
    ws.write_config(SCHEDULED)
    _daemon(ws, beat_age=1)
    # The scheduler last considered this job three hours ago: two hourly ticks are due.
    _set_cursor(ws, "hourly", utcnow() - timedelta(hours=3))
    result = cli("health", "--json")
    assert result.exit_code == 1
    (overdue,) = result.json()["overdue"]
    assert overdue["job"] == "hourly"
    assert overdue["run_id"] is None
    assert "no tick recorded" in overdue["reason"]
    assert any(p.startswith("hourly overdue:") for p in result.json()["problems"])
    samples = parse_metrics(cli("metrics").stdout)
    assert value(samples, "batchctl_jobs_overdue") == 1
    assert value(samples, "batchctl_healthy") == 0

    # A paused job is never overdue.
    store = open_store(str(ws.db))
    try:
        store.pause("hourly", utcnow(), None)
    finally:
        store.close()
    assert cli("health", "--json").json()["overdue"] == []


def test_health_finds_a_run_past_its_timeout(ws: Workspace, cli: Any) -> None:
    ws.write_config('[jobs.slow]\nkind = "command"\ncommand = "sleep 1000"\ntimeout = "1m"\n')
    store = open_store(str(ws.db))
    try:
        started = utcnow() - timedelta(hours=1)
        run_id = store.create_run(
            job="slow",
            scope=None,
            trigger="manual",
            status=RunStatus.QUEUED,
            max_attempts=1,
            now=started,
        )
        owner = Owner("elsewhere", 1)
        assert store.start_attempt(run_id, 1, owner, utcnow() + timedelta(minutes=5), started)
    finally:
        store.close()
    result = cli("health", "--json")
    assert result.exit_code == 1
    report = result.json()
    (overdue,) = report["overdue"]
    assert overdue["job"] == "slow"
    assert overdue["run_id"] == run_id
    assert "past its timeout" in overdue["reason"]
    assert [r["id"] for r in report["in_flight"]["runs"]] == [run_id]


# --- the HTTP server ------------------------------------------------------------------------------


def _request(url: str, method: str = "GET", **headers: str) -> tuple[int, Any, str]:
    """Status, headers and body of one request."""
    request = urllib.request.Request(url, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.headers, exc.read().decode()


def _get(url: str) -> tuple[int, str, str]:
    status, headers, body = _request(url)
    return status, headers["Content-Type"], body


def test_http_server_serves_metrics_and_healthz(ws: Workspace, cli: Any) -> None:
    from batchctl.config import load_config
    from batchctl.http import MonitorServer

    _make_runs(ws, cli)
    server = MonitorServer("127.0.0.1:0", str(ws.db), lambda: load_config(ws.config)).start()
    try:
        host, port = server.address
        assert host == "127.0.0.1"
        assert port > 0
        status, content_type, body = _get(f"{server.url}/metrics")
        assert status == 200
        assert content_type.startswith("text/plain; version=0.0.4")
        samples = parse_metrics(body)
        assert value(samples, "batchctl_runs_total", batchctl_job="ok", status="completed") == 2

        status, content_type, body = _get(f"{server.url}/healthz")
        assert status == 200
        assert content_type == "application/json"
        assert json.loads(body)["healthy"] is True

        ws.write_config(CONFIG + SCHEDULED)  # now a scheduled job needs a daemon: none runs
        status, _, body = _get(f"{server.url}/healthz")
        assert status == 503
        assert json.loads(body)["healthy"] is False

        status, _, _ = _get(f"{server.url}/other")
        assert status == 404
    finally:
        server.stop()


def test_http_metrics_are_openmetrics_when_the_scraper_asks(ws: Workspace, cli: Any) -> None:
    from batchctl.config import load_config
    from batchctl.http import MonitorServer

    _make_runs(ws, cli)
    # What Prometheus sends when its scrape config allows OpenMetrics.
    accept = (
        "application/openmetrics-text;version=1.0.0;q=0.5,"
        "application/openmetrics-text;version=0.0.1;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
    )
    with MonitorServer("127.0.0.1:0", str(ws.db), lambda: load_config(ws.config)) as server:
        status, headers, body = _request(f"{server.url}/metrics", Accept=accept)
    assert status == 200
    assert headers["Content-Type"].startswith("application/openmetrics-text;")
    assert body.endswith("# EOF\n")
    lines = body.splitlines()
    assert "# TYPE batchctl_runs counter" in lines  # a counter's family name has no _total
    assert 'batchctl_runs_total{batchctl_job="ok",status="completed"} 2.0' in lines


def test_http_head_answers_the_headers_of_a_get_without_a_body(ws: Workspace, cli: Any) -> None:
    from batchctl.config import load_config
    from batchctl.http import MonitorServer

    _make_runs(ws, cli)
    with MonitorServer("127.0.0.1:0", str(ws.db), lambda: load_config(ws.config)) as server:
        for path in ("/metrics", "/healthz", "/other"):
            got_status, got_headers, got_body = _request(server.url + path)
            status, headers, body = _request(server.url + path, method="HEAD")
            assert (status, body) == (got_status, ""), path
            assert headers["Content-Type"] == got_headers["Content-Type"], path
            assert int(headers["Content-Length"]) == len(got_body.encode()) > 0, path


@pytest.mark.slow
def test_only_the_metrics_paths_import_prometheus_client(ws: Workspace) -> None:
    ws.write_config(CONFIG)
    probe = (
        "import sys, runpy\n"
        "sys.argv = ['batchctl'] + sys.argv[1:]\n"
        "try:\n    runpy.run_module('batchctl', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('imported' if 'prometheus_client' in sys.modules else 'clean')\n"
    )
    for args, expected in (
        (["status"], "clean"),
        (["status", "--json"], "clean"),
        (["health"], "clean"),
        (["jobs"], "clean"),
        (["run", "ok"], "clean"),
        (["metrics"], "imported"),
    ):
        result = subprocess.run(
            [sys.executable, "-c", probe, *args], capture_output=True, text=True, env=ws.env()
        )
        assert result.stdout.strip().endswith(expected), (args, result.stderr)


def test_start_http_server_returns_its_stop(ws: Workspace) -> None:
    from batchctl.config import EMPTY
    from batchctl.http import start_http_server

    ws.write_config("")
    import socket

    with socket.socket() as probe:  # a free loopback port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    stop = start_http_server(f"127.0.0.1:{port}", str(ws.db), lambda: EMPTY)
    try:
        status, _, body = _get(f"http://127.0.0.1:{port}/healthz")
        assert status == 200
        assert json.loads(body)["healthy"] is True
    finally:
        stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2)


# --- prune ----------------------------------------------------------------------------------------

OLD = "2020-01-01T00:00:00.000000+00:00"


def _backdate(ws: Workspace, run_id: int, stamp: str = OLD) -> None:
    ws.sql(
        "UPDATE runs SET created_at = ?, started_at = ?, finished_at = ? WHERE id = ?",
        stamp,
        stamp,
        stamp,
        run_id,
    )


def _submission(ws: Workspace, *, merged: bool) -> tuple[int, Path]:
    """A finished batch submission with its files in the database's files directory."""
    from batchctl.batches.files import files_root, new_token, part_path

    token = new_token()
    directory = files_root(str(ws.db)) / token
    directory.mkdir(parents=True)
    part_path(directory, 1).write_text('{"custom_id": "a"}\n')
    (directory / "part-001.output.jsonl").write_text('{"custom_id": "a", "response": {}}\n')
    (directory / "results.jsonl").write_text('{"custom_id": "a"}\n')
    store = open_store(str(ws.db))
    try:
        now = utcnow()
        run_id = store.record_submission(
            job="submit",
            scope=None,
            trigger="submit",
            now=now,
            submission=Submission(
                run_id=0,
                provider="openai",
                endpoint="/v1/chat/completions",
                completion_window="24h",
                metadata={},
                input_sha256=token,
                inputs=["requests.jsonl"],
                directory=str(directory),
                token=token,
                requests=1,
                bytes=19,
                on_expired="keep",
                max_request_attempts=3,
                merged_at=None,
                results_path=None,
            ),
            parts=[
                PartPlanRow(1, 1, "gpt-4o-mini", 1, 19, str(part_path(directory, 1)), "p.jsonl")
            ],
            requests=[RequestRow("a", 0, 1, 0, 19)],
        )
        store.finish_submission_run(
            run_id,
            RunStatus.COMPLETED,
            items_processed=1,
            items_failed=0,
            total_tokens=10,
            total_cost=0.001,
            error=None,
            now=now,
        )
        if merged:
            store.mark_merged(
                run_id, str(directory / "results.jsonl"), store.request_totals(run_id), now
            )
    finally:
        store.close()
    _backdate(ws, run_id)
    return run_id, directory


def _in_flight_run(ws: Workspace) -> int:
    store = open_store(str(ws.db))
    try:
        run_id = store.create_run(
            job="ok",
            scope=None,
            trigger="manual",
            status=RunStatus.QUEUED,
            max_attempts=1,
            now=utcnow(),
        )
        store.start_attempt(
            run_id, 1, Owner("elsewhere", 1), utcnow() + timedelta(minutes=1), utcnow()
        )
    finally:
        store.close()
    ws.sql("UPDATE runs SET created_at = ?, started_at = ? WHERE id = ?", OLD, OLD, run_id)
    return run_id


def _history(ws: Workspace, cli: Any) -> dict[str, Any]:
    """Old and recent finished runs, an old run still in flight, two old submissions (one not
    merged), old closed ticks and a pending one."""
    _make_runs(ws, cli)
    old_ids = [
        row[0] for row in ws.sql("SELECT id FROM runs WHERE job IN ('ok', 'bad') ORDER BY id")
    ]
    for run_id in old_ids:
        _backdate(ws, run_id)
    recent = ws.sql("SELECT id FROM runs WHERE job = 'py'")[0][0]
    merged, merged_dir = _submission(ws, merged=True)
    unmerged, unmerged_dir = _submission(ws, merged=False)
    running = _in_flight_run(ws)
    store = open_store(str(ws.db))
    try:
        now = utcnow()
        old = datetime.fromisoformat(OLD)
        store.record_ticks(
            "ok",
            None,
            pending=[old + timedelta(hours=2)],
            closed=[(old, "fired", ""), (old + timedelta(hours=1), "missed", "catchup=latest")],
            cursor=old + timedelta(hours=2),
            priority=0,
            now=now,
        )
        store.record_ticks(
            "py",
            None,
            pending=[],
            closed=[(now, "skipped", "paused")],
            cursor=now,
            priority=0,
            now=now,
        )
        store.register_daemon("gone", Owner("h", 1), "once", old)
        store.daemon_stopped("gone", old)
    finally:
        store.close()
    ws.sql("UPDATE ticks SET run_id = ? WHERE status = 'fired'", old_ids[0])
    return {
        "old": old_ids,
        "recent": recent,
        "merged": (merged, merged_dir),
        "unmerged": (unmerged, unmerged_dir),
        "running": running,
    }


def _counts(ws: Workspace) -> dict[str, int]:
    tables = (
        "runs",
        "attempts",
        "transitions",
        "run_logs",
        "submissions",
        "parts",
        "requests",
        "ticks",
        "schedule_cursors",
        "daemons",
    )
    return {t: ws.sql(f"SELECT count(*) FROM {t}")[0][0] for t in tables}


def test_prune_deletes_old_finished_runs_logs_and_files(ws: Workspace, cli: Any) -> None:
    h = _history(ws, cli)
    old_logs = ws.sql(
        f"SELECT count(*) FROM run_logs WHERE run_id IN ({','.join(map(str, h['old']))})"
    )[0][0]
    assert old_logs >= 5
    merged_id, merged_dir = h["merged"]
    unmerged_id, unmerged_dir = h["unmerged"]
    cursors = ws.sql("SELECT * FROM schedule_cursors ORDER BY job")

    result = cli("prune", "--older-than", "30d", "--json")
    assert result.exit_code == 0, result.stderr
    report = result.json()
    assert report["dry_run"] is False
    assert report["runs"] == len(h["old"]) + 1  # the old command runs and the merged submission
    assert report["log_lines"] == old_logs
    assert report["submissions"] == 1
    assert report["files"] == 3
    assert report["file_bytes"] == sum(
        len(t)
        for t in (
            '{"custom_id": "a"}\n',
            '{"custom_id": "a", "response": {}}\n',
            '{"custom_id": "a"}\n',
        )
    )
    assert report["bytes_freed"] >= report["file_bytes"]
    assert report["ticks"] == 2  # the old fired and missed ticks; never the pending one
    assert report["daemons"] == 1
    assert report["kept_unmerged"] == 1
    assert report["kept_in_flight"] == 1

    remaining = {row[0] for row in ws.sql("SELECT id FROM runs")}
    assert remaining == {h["recent"], unmerged_id, h["running"]}
    for table in ("attempts", "transitions", "run_logs"):
        orphans = ws.sql(f"SELECT count(*) FROM {table} WHERE run_id NOT IN (SELECT id FROM runs)")
        assert orphans == [(0,)], table
    assert ws.sql("SELECT count(*) FROM run_logs WHERE run_id = ?", h["recent"])[0][0] >= 1
    assert ws.sql("SELECT count(*) FROM parts WHERE run_id = ?", merged_id) == [(0,)]
    assert ws.sql("SELECT count(*) FROM requests WHERE run_id = ?", merged_id) == [(0,)]
    assert not merged_dir.exists()
    assert unmerged_dir.exists()
    assert ws.sql("SELECT status FROM ticks ORDER BY scheduled_for") == [("pending",), ("skipped",)]
    assert ws.sql("SELECT * FROM schedule_cursors ORDER BY job") == cursors
    assert ws.sql("SELECT instance FROM daemons") == []

    human = cli("prune", "--older-than", "30d")
    assert human.exit_code == 0
    assert "deleted what ended before" in human.stdout
    assert "kept 1 ended submission(s) whose results are not merged" in human.stdout


def test_prune_dry_run_changes_nothing(ws: Workspace, cli: Any) -> None:
    h = _history(ws, cli)
    before = _counts(ws)
    result = cli("prune", "--older-than", "30d", "--dry-run", "--json")
    assert result.exit_code == 0, result.stderr
    dry = result.json()
    assert dry["dry_run"] is True
    assert _counts(ws) == before
    assert h["merged"][1].exists()
    human = cli("prune", "--older-than", "30d", "--dry-run")
    assert human.exit_code == 0
    assert "would delete" in human.stdout
    assert _counts(ws) == before

    real = cli("prune", "--older-than", "30d", "--json").json()
    same = ("runs", "log_lines", "submissions", "files", "file_bytes", "ticks", "daemons")
    assert {k: dry[k] for k in same} == {k: real[k] for k in same}


def test_prune_older_than_zero_keeps_pending_ticks_cursors_and_runs_in_flight(
    ws: Workspace, cli: Any
) -> None:
    h = _history(ws, cli)
    cursors = ws.sql("SELECT * FROM schedule_cursors ORDER BY job")
    result = cli("prune", "--older-than", "0s", "--vacuum", "--json")
    assert result.exit_code == 0, result.stderr
    assert result.json()["vacuum"] is True
    remaining = {row[0] for row in ws.sql("SELECT id FROM runs")}
    assert remaining == {h["unmerged"][0], h["running"]}
    assert ws.sql("SELECT status FROM ticks") == [("pending",)]
    assert ws.sql("SELECT * FROM schedule_cursors ORDER BY job") == cursors


def test_prune_rejects_a_bad_duration(ws: Workspace, cli: Any) -> None:
    result = cli("prune", "--older-than", "soon")
    assert result.exit_code == 2
    assert "--older-than" in result.stderr


def test_prune_never_deletes_a_directory_outside_the_files_root(ws: Workspace, cli: Any) -> None:
    ws.write_config(CONFIG)
    run_id, directory = _submission(ws, merged=True)
    elsewhere = ws.root / "mine"
    directory.rename(elsewhere)
    ws.sql("UPDATE submissions SET directory = ? WHERE run_id = ?", str(elsewhere), run_id)
    report = cli("prune", "--older-than", "1d", "--json").json()
    assert report["runs"] == 1
    assert report["skipped_directories"] == [str(elsewhere)]
    assert elsewhere.exists()


@pytest.mark.slow
def test_store_queries_stay_cheap_on_a_large_history(ws: Workspace) -> None:
    """10,000 runs: the metrics queries aggregate in SQL, prune deletes in chunks."""
    import time

    from batchctl.config import EMPTY
    from batchctl.metrics import render
    from batchctl.prune import prune

    store = open_store(str(ws.db))
    try:
        start = datetime.fromisoformat(OLD)
        rows = []
        for i in range(10_000):
            stamp = to_iso(start + timedelta(minutes=i))
            rows.append((f"job{i % 20}", "completed" if i % 3 else "failed", stamp, stamp, stamp))
        store.conn.execute("BEGIN")
        store.conn.executemany(
            "INSERT INTO runs (job, status, trigger, created_at, started_at, finished_at)"
            " VALUES (?, ?, 'manual', ?, ?, ?)",
            rows,
        )
        store.conn.execute("COMMIT")
        began = time.perf_counter()
        text = render(store, EMPTY, utcnow())
        assert time.perf_counter() - began < 1.0
        samples = parse_metrics(text)
        assert sum(v for (n, _), v in samples.items() if n == "batchctl_runs_total") == 10_000
        report = prune(store, 86400, utcnow(), dry_run=True)
        assert report.runs == 10_000
    finally:
        store.close()


def test_prune_keeps_a_tick_being_fired_and_the_tick_of_a_run_in_flight(
    ws: Workspace, cli: Any
) -> None:
    ws.write_config(CONFIG)
    old = datetime.fromisoformat(OLD)
    store = open_store(str(ws.db))
    try:
        now = utcnow()
        store.record_ticks("ok", None, pending=[old], closed=[], cursor=old, priority=0, now=now)
        (claimed,) = store.claim_ticks(1, now)  # fired just now: its run is not recorded yet
        store.record_ticks(
            "bad",
            None,
            pending=[],
            closed=[(old, "fired", "")],
            cursor=old,
            priority=0,
            now=now,
        )
        run_id = store.create_run(
            job="bad",
            scope=None,
            trigger="schedule",
            status=RunStatus.QUEUED,
            max_attempts=1,
            now=now,
            scheduled_for=old,
        )
    finally:
        store.close()
    # Long fired: only its run, still queued (same job and scheduled time), keeps the tick.
    ws.sql("UPDATE ticks SET created_at = ?, fired_at = ? WHERE job = 'bad'", OLD, OLD)
    report = cli("prune", "--older-than", "0s", "--json").json()
    assert report["ticks"] == 0
    assert ws.sql("SELECT job, status FROM ticks ORDER BY job") == [
        ("bad", "fired"),
        ("ok", "fired"),
    ]
    assert ws.sql("SELECT id FROM runs") == [(run_id,)]
    assert claimed.job == "ok"
