"""The enqueued-token limit end to end: parts refused for it wait for quota, then are sent again.

batchctl talks to the project's OpenAI API emulator through the real ``openai`` SDK over HTTP.
The emulator's ``enqueued_token_limit`` fails a batch after validation with
``token_limit_exceeded`` when the model's batches not yet ended already hold too many tokens
(``token_limit_fail_fast``: a 400 at create instead, as Azure's fail-fast regions do). The
invariant checked everywhere: each part ends with exactly one batch that was not refused.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

from batchctl.emulator import Emulator
from tests.batches.conftest import API_CONFIG
from tests.batches.jsonl import read_jsonl
from tests.batches.test_crash_safety import sigkill
from tests.conftest import run_exe
from tests.waiting import timeout_arg, wait_for

LIMIT_CODE = "token_limit_exceeded"


def write_requests(path: Path, count: int) -> list[str]:
    """A JSONL input of ``count`` chat requests; returns their custom_ids in input order."""
    ids = [f"req-{i:03d}" for i in range(count)]
    with path.open("w") as out:
        for custom_id in ids:
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": custom_id}]}
            line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions"}
            out.write(json.dumps({**line, "body": body}) + "\n")
    return ids


def one_part_fits(path: Path) -> int:
    """An enqueued-token limit that one part of two requests fits under, two parts do not."""
    first_two = sum(len(line) for line in path.read_bytes().splitlines(keepends=True)[:2])
    return first_two // 4 + 5


def refused(batch: dict[str, Any]) -> bool:
    errors = (batch.get("errors") or {}).get("data") or []
    return batch["status"] == "failed" and any(e.get("code") == LIMIT_CODE for e in errors)


def accepted_by_part(emu: Emulator) -> dict[str, int]:
    """How many batches of each part (its metadata key without the try) were not refused."""
    counts: dict[str, int] = {}
    for batch in emu.batches.values():
        if not refused(batch):
            part = batch["metadata"]["batchctl_part"].split(":q")[0]
            counts[part] = counts.get(part, 0) + 1
    return counts


def held_parts(ws: Any) -> list[tuple[Any, ...]]:
    return ws.query("SELECT number FROM parts WHERE held_until IS NOT NULL AND batch_id IS NULL")


def test_a_part_over_the_limit_waits_then_is_sent_and_the_run_completes(
    ws: Any, cli: Any, start_api: Callable[..., Emulator]
) -> None:
    ids = write_requests(ws.root / "in.jsonl", 4)
    # The first part runs for a second or two: the second is created while it is enqueued.
    emu = start_api(enqueued_token_limit=one_part_fits(ws.root / "in.jsonl"), processing_rate=1.0)

    done = cli("submit", "in.jsonl", "--max-requests", "2", "--wait", "--json")

    assert done.exit_code == 0, done.stderr
    assert done.json()["status"] == "completed"
    assert done.json()["requests"] == {"succeeded": 4}
    assert [line["custom_id"] for line in read_jsonl(Path(done.json()["output"]))] == ids
    assert any(refused(b) for b in emu.batches.values())
    assert sorted(accepted_by_part(emu).values()) == [1, 1]


def test_status_shows_a_part_waiting_for_quota(
    ws: Any, cli: Any, start_api: Callable[..., Emulator]
) -> None:
    write_requests(ws.root / "in.jsonl", 4)
    start_api(enqueued_token_limit=one_part_fits(ws.root / "in.jsonl"), processing_rate=0.05)
    submitted = cli("submit", "in.jsonl", "--max-requests", "2", "--json")
    assert submitted.exit_code == 0, submitted.stderr
    run_id = str(submitted.json()["id"])

    def waiting() -> dict[str, Any] | None:
        shown = cli("status", run_id, "--json")
        assert shown.exit_code == 0, shown.stderr
        return next((p for p in shown.json()["parts"] if p["status"] == "waiting_for_quota"), None)

    part = wait_for(waiting, "a part waiting for quota")
    assert part["batch_id"] is None
    assert (
        LIMIT_CODE in part["waiting_for_quota"]["reason"]
        or "Enqueued token limit" in (part["waiting_for_quota"]["reason"])
    )
    assert part["waiting_for_quota"]["tries"] == 1
    table = cli("status", run_id)
    assert table.exit_code == 0, table.stderr
    assert f"part {part['number']}: waiting for quota since" in table.stdout
    assert "next try" in table.stdout


def test_a_create_refused_with_a_400_waits_then_is_sent(
    ws: Any, cli: Any, start_api: Callable[..., Emulator]
) -> None:
    write_requests(ws.root / "in.jsonl", 4)
    emu = start_api(
        enqueued_token_limit=one_part_fits(ws.root / "in.jsonl"),
        token_limit_fail_fast=True,
        processing_rate=1.0,
    )

    done = cli("submit", "in.jsonl", "--max-requests", "2", "--wait", "--json")

    assert done.exit_code == 0, done.stderr
    assert done.json()["status"] == "completed"
    creates = [r for r in emu.requests if (r.method, r.path) == ("POST", "/v1/batches")]
    assert 400 in [r.status for r in creates]
    assert not any(refused(b) for b in emu.batches.values())
    assert sorted(accepted_by_part(emu).values()) == [1, 1]


def test_kill_9_while_a_part_waits_for_quota_then_wait_completes_with_one_batch_a_part(
    ws: Any,
    start_api: Callable[..., Emulator],
    spawn: Callable[..., subprocess.Popen[str]],
    batchctl_exe: str,
) -> None:
    write_requests(ws.root / "in.jsonl", 6)
    emu = start_api(
        config=API_CONFIG,
        enqueued_token_limit=one_part_fits(ws.root / "in.jsonl"),
        processing_rate=0.5,
    )
    proc = spawn("submit", "in.jsonl", "--max-requests", "2", "--wait")
    wait_for(lambda: held_parts(ws), "a part waiting for quota", timeout=30)
    sigkill(proc)
    (run,) = ws.sql("SELECT run_id FROM submissions")

    done = run_exe(
        batchctl_exe, "wait", str(run[0]), "--json", "--timeout", timeout_arg(60), env=ws.env()
    )

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["status"] == "completed"
    assert sorted(accepted_by_part(emu).values()) == [1, 1, 1]
    assert held_parts(ws) == []


def test_a_configured_limit_holds_parts_before_sending_them(
    ws: Any, cli: Any, start_api: Callable[..., Emulator]
) -> None:
    write_requests(ws.root / "in.jsonl", 4)
    limit = one_part_fits(ws.root / "in.jsonl")
    emu = start_api(config=API_CONFIG + f"enqueued_token_limit = {limit}\n", processing_rate=1.0)

    done = cli("submit", "in.jsonl", "--max-requests", "2", "--wait", "--json")

    assert done.exit_code == 0, done.stderr
    assert done.json()["status"] == "completed"
    assert [b["status"] for b in emu.batches.values()] == ["completed", "completed"]
    logged = ws.sql("SELECT message FROM run_logs WHERE message LIKE '%waiting for quota%'")
    assert logged and "configured enqueued_token_limit" in logged[0][0]
