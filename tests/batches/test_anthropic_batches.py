"""Anthropic Message Batches through the real CLI: submit, wait, status, cancel, results, adopt,
and a create whose reply is lost (found and proved, never created twice).

batchctl talks to the project's emulator through the real ``anthropic`` SDK over HTTP
($ANTHROPIC_BASE_URL); faults are the emulator's own.
"""

from __future__ import annotations

import json
import subprocess
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from batchctl.batches.derived_ids import parse_derived
from batchctl.emulator import Emulator, EmulatorSettings, Fault
from tests.batches.jsonl import read_jsonl, request, write_jsonl
from tests.waiting import scaled, timeout_arg, wait_for

MODEL = "claude-haiku-4-5"
CONFIG = """\
[providers.anthropic]
poll_interval = 0.05
max_retries = 8
"""
CREATE = "/v1/messages/batches"


@pytest.fixture
def anthropic_api(ws: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Emulator]]:
    """``anthropic_api(**settings)`` starts an emulator and points batchctl's Anthropic provider
    at it ($ANTHROPIC_BASE_URL, $ANTHROPIC_API_KEY)."""
    started: list[Emulator] = []

    def start(**settings: Any) -> Emulator:
        emu = Emulator(EmulatorSettings(**settings))
        started.append(emu)
        monkeypatch.setenv("ANTHROPIC_BASE_URL", emu.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
        ws.write_config(CONFIG)
        return emu

    yield start
    for emu in started:
        emu.stop()


def write_requests(path: Path, count: int, salt: str = "") -> list[str]:
    """Anthropic batch lines whose ids Anthropic itself would refuse (``/`` and ``.``, long):
    batchctl sends derived ids and shows only these."""
    ids = [f"docs/{salt}chapter-{i:03d}.section.{'x' * 60}" for i in range(count)]
    with path.open("w") as out:
        for custom_id in ids:
            params = {
                "model": MODEL,
                "max_tokens": 64,
                "messages": [{"role": "user", "content": f"summarise {custom_id}"}],
            }
            out.write(json.dumps({"custom_id": custom_id, "params": params}) + "\n")
    return ids


def effective_creates(emu: Emulator) -> list[Any]:
    return [r for r in emu.requests if (r.method, r.path) == ("POST", CREATE) and r.succeeded]


def markers(emu: Emulator, batch_id: str) -> set[str | None]:
    """The part markers that a batch's results carry (read from the emulator over HTTP)."""
    url = f"{emu.url}/v1/messages/batches/{batch_id}/results"
    headers = {"x-api-key": "test-key", "anthropic-version": "2023-06-01"}
    request = urllib.request.Request(url, headers=headers)
    with urllib.request.urlopen(request, timeout=scaled(10)) as response:
        lines = [json.loads(line) for line in response.read().splitlines() if line.strip()]
    found: set[str | None] = set()
    for line in lines:
        parsed = parse_derived(line["custom_id"])
        found.add(None if parsed is None else parsed[0])
    return found


def assert_each_part_created_once(ws: Any, emu: Emulator, run_id: int) -> None:
    """One effective create per part; each part records the batch whose results carry its
    marker, and no two batches carry one marker."""
    rows = ws.sql("SELECT number, batch_id FROM parts WHERE run_id = ? ORDER BY number", run_id)
    (token,) = ws.sql("SELECT token FROM submissions WHERE run_id = ?", run_id)[0]
    remote = emu.message_batches
    assert len(effective_creates(emu)) == len(remote) == len(rows)
    assert sorted(remote) == sorted(batch for _, batch in rows)
    for number, batch_id in rows:
        assert markers(emu, batch_id) == {f"{token}-p{number}"}


def test_anthropic_submission_runs_end_to_end_through_the_cli(
    ws: Any, cli: Any, anthropic_api: Callable[..., Emulator]
) -> None:
    emu = anthropic_api()
    ids = write_requests(ws.root / "in.jsonl", 7)

    done = cli(
        "submit", "in.jsonl", "--provider", "anthropic", "--max-requests", "3", "--wait", "--json"
    )

    assert done.exit_code == 0, done.stderr
    run_id = done.json()["id"]
    assert done.json()["status"] == "completed"
    assert_each_part_created_once(ws, emu, run_id)
    lines = read_jsonl(Path(done.json()["output"]))
    assert [line["custom_id"] for line in lines] == ids  # the user's ids, in input order
    shown = cli("status", str(run_id), "--json")
    assert shown.exit_code == 0, shown.stderr
    assert shown.json()["provider"] == "anthropic"
    written = ws.root / "out.jsonl"
    results = cli("results", str(run_id), "-o", str(written), "--json")
    assert results.exit_code == 0, results.stderr
    assert [line["custom_id"] for line in read_jsonl(written)] == ids


def test_status_remote_lists_anthropic_batches_with_their_runs(
    ws: Any, cli: Any, anthropic_api: Callable[..., Emulator]
) -> None:
    anthropic_api()
    write_requests(ws.root / "in.jsonl", 4)
    done = cli(
        "submit", "in.jsonl", "--provider", "anthropic", "--max-requests", "2", "--wait", "--json"
    )
    assert done.exit_code == 0, done.stderr

    listed = cli("status", "--remote", "--provider", "anthropic", "--json")

    assert listed.exit_code == 0, listed.stderr
    batches = listed.json()
    assert len(batches) == 2
    assert {b["run_id"] for b in batches} == {done.json()["id"]}
    assert {b["status"] for b in batches} == {"completed"}
    assert all(b["request_counts"] == {"total": 2, "completed": 2, "failed": 0} for b in batches)


def test_a_lost_create_reply_is_found_and_proved_never_created_again(
    ws: Any, cli: Any, anthropic_api: Callable[..., Emulator]
) -> None:
    # Every part has the same request count: only the store's records (and then the ids in
    # the results) tell the lost part's batch from its siblings'.
    emu = anthropic_api()
    emu.set_faults([Fault(kind="lost_reply", method="POST", path=CREATE, count=1)])
    ids = write_requests(ws.root / "in.jsonl", 6)

    done = cli(
        "submit", "in.jsonl", "--provider", "anthropic", "--max-requests", "2", "--wait", "--json"
    )

    assert done.exit_code == 0, done.stderr
    lost = [r for r in emu.requests if r.fault == "lost_reply"]
    assert [(r.path, r.status, r.handled_status) for r in lost] == [(CREATE, "dropped", 200)]
    run_id = done.json()["id"]
    assert_each_part_created_once(ws, emu, run_id)
    assert done.json()["status"] == "completed"
    lines = read_jsonl(Path(done.json()["output"]))
    assert [line["custom_id"] for line in lines] == ids
    story = cli("logs", str(run_id))
    assert "adopted batch" in story.stdout and "proved its own by its results" in story.stdout


def test_cancel_stops_an_anthropic_submission_and_wait_settles_it(
    ws: Any, cli: Any, anthropic_api: Callable[..., Emulator]
) -> None:
    anthropic_api(processing_rate=0.5)  # slow enough to be cancelled mid-way
    ids = write_requests(ws.root / "in.jsonl", 6)
    sent = cli("submit", "in.jsonl", "--provider", "anthropic", "--max-requests", "3", "--json")
    assert sent.exit_code == 0, sent.stderr
    run_id = sent.json()["id"]

    cancelled = cli("cancel", str(run_id), "--json", "--timeout", str(scaled(30)))
    waited = cli("wait", str(run_id), "--json", "--timeout", timeout_arg(60))

    assert cancelled.exit_code in (0, 5), cancelled.stderr
    assert waited.json()["status"] == "cancelled", waited.stderr
    lines = read_jsonl(Path(waited.json()["output"]))
    assert [line["custom_id"] for line in lines] == ids


def test_adopt_refuses_an_anthropic_batch_and_says_why(
    ws: Any, cli: Any, anthropic_api: Callable[..., Emulator]
) -> None:
    emu = anthropic_api()
    write_requests(ws.root / "in.jsonl", 2)
    done = cli("submit", "in.jsonl", "--provider", "anthropic", "--wait", "--json")
    assert done.exit_code == 0, done.stderr
    batch_id = next(iter(emu.message_batches))
    wait_for(lambda: bool(emu.message_batches), "a batch")

    refused = cli("adopt", batch_id, "--provider", "anthropic")

    assert refused.exit_code == 2, refused.stderr
    assert "keep no input file" in refused.stderr


def test_the_daemon_drives_anthropic_and_openai_submissions_side_by_side(
    ws: Any,
    cli: Any,
    anthropic_api: Callable[..., Emulator],
    batchctl_exe: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    emu = anthropic_api()  # one emulator serves both APIs
    monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    ws.write_config(CONFIG + "[daemon]\npoll_interval = 0.05\n")
    anthropic_ids = write_requests(ws.root / "claude.jsonl", 4)
    openai_ids = [f"gpt-{i}" for i in range(4)]
    write_jsonl(ws.root / "gpt.jsonl", [request(i) for i in openai_ids])
    sent = [
        cli("submit", "claude.jsonl", "--provider", "anthropic", "--json"),
        cli("submit", "gpt.jsonl", "--json"),
    ]
    assert all(s.exit_code == 0 for s in sent), [s.stderr for s in sent]
    run_ids = [s.json()["id"] for s in sent]

    def settled() -> bool:
        passed = subprocess.run(
            [batchctl_exe, "daemon", "--once"],
            env=ws.env(),
            capture_output=True,
            text=True,
            timeout=scaled(60),
        )
        assert passed.returncode == 0, passed.stderr
        shown = [cli("status", str(r), "--json", "--no-refresh").json() for r in run_ids]
        return all(s["status"] == "completed" for s in shown)

    wait_for(settled, "the daemon to settle both submissions", timeout=120)
    for run_id, ids, provider in zip(
        run_ids, [anthropic_ids, openai_ids], ["anthropic", "openai"], strict=True
    ):
        shown = cli("status", str(run_id), "--json", "--no-refresh").json()
        assert shown["provider"] == provider
        written = ws.root / f"out-{run_id}.jsonl"
        assert cli("results", str(run_id), "-o", str(written)).exit_code == 0
        assert [line["custom_id"] for line in read_jsonl(written)] == ids
