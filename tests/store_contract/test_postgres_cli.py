"""The CLI end to end on a PostgreSQL database: run, status, logs, and a batch submission
against the OpenAI API emulator. Skipped (saying why) without a test server."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import pytest

from batchctl.emulator import Emulator
from tests.conftest import Workspace
from tests.databases import PG_ENV
from tests.waiting import wait_for


def test_run_status_and_logs_on_postgres(ws: Workspace, cli: Any, pg_url: str) -> None:
    ws.write_config(
        '[jobs.hello]\nkind = "command"\ncommand = "echo hello from the shared store"\n'
    )
    result = cli("--db", pg_url, "run", "hello", "--json")
    assert result.exit_code == 0, result.stderr
    (run,) = result.json()
    assert run["status"] == "completed" and run["job"] == "hello"

    listed = cli("--db", pg_url, "status", "--json")
    assert listed.exit_code == 0, listed.stderr
    assert [(r["id"], r["status"]) for r in listed.json()] == [(run["id"], "completed")]

    shown = cli("--db", pg_url, "status", str(run["id"]), "--json")
    assert shown.exit_code == 0, shown.stderr
    assert shown.json()["id"] == run["id"]

    logs = cli("--db", pg_url, "logs", str(run["id"]))
    assert logs.exit_code == 0, logs.stderr
    assert "hello from the shared store" in logs.stdout  # not the password: masked
    assert not ws.db.exists()  # nothing went to the SQLite default


def test_a_url_with_a_wrong_password_is_a_clear_error(ws: Workspace, cli: Any, pg_url: str) -> None:
    ws.write_config('[jobs.hello]\nkind = "command"\ncommand = "true"\n')
    scheme, rest = pg_url.split("://", 1)
    bad = f"{scheme}://nobody-here:wrong@{rest.rpartition('@')[2]}"
    result = cli("--db", bad, "status")
    assert result.exit_code == 2
    assert "cannot connect to database" in result.stderr
    assert "wrong" not in result.stderr  # the password is never shown


@pytest.mark.slow  # the SDK over HTTP against the emulator
def test_a_submission_completes_on_postgres(
    ws: Workspace, cli: Any, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Emulator() as emulator:
        monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        ws.write_config(
            '[openai]\npoll_interval = 0.05\n\n[prices."gpt-4o-mini"]\ninput = 0.15\noutput = 0.60\n'
        )
        rows = [
            {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": f"hi {i}"}],
                },
            }
            for i in range(5)
        ]
        (ws.root / "in.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        result = cli("--db", pg_url, "submit", "in.jsonl", "--wait", "--json")
        assert result.exit_code == 0, result.stderr
        summary = result.json()
        assert summary["status"] == "completed"
        assert summary["requests"] == {"succeeded": 5}
        listed = cli("--db", pg_url, "status", "--json")
        assert [r["status"] for r in listed.json()] == ["completed"]
        out = ws.root / "results.jsonl"
        got = cli("--db", pg_url, "results", str(summary["id"]), "-o", str(out))
        assert got.exit_code == 0, got.stderr
        assert [json.loads(line)["custom_id"] for line in out.read_text().splitlines()] == [
            f"r{i}" for i in range(5)
        ]


@pytest.mark.slow  # the SDK over HTTP against the emulator
def test_status_refreshes_submissions_with_a_url_that_holds_a_password(
    ws: Workspace, cli: Any, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The refresh opens the store again in worker threads: from the URL with its password,
    # not from the password-free form that messages show.
    if urlsplit(pg_url).password is None:
        pytest.skip(f"${PG_ENV} names no password, so there is none to lose")
    with Emulator() as emulator:
        monkeypatch.setenv("OPENAI_BASE_URL", emulator.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        ws.write_config("[openai]\npoll_interval = 0.05\n")
        row = {
            "custom_id": "r0",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]},
        }
        (ws.root / "in.jsonl").write_text(json.dumps(row) + "\n")
        submitted = cli("--db", pg_url, "submit", "in.jsonl", "--json")
        assert submitted.exit_code == 0, submitted.stderr
        run_id = submitted.json()["id"]
        wait_for(
            lambda: [b["status"] for b in emulator.batches.values()] == ["completed"],
            lambda: f"the batch to complete: {emulator.batches}",
            timeout=20,
        )

        listed = cli("--db", pg_url, "status", "--json")
        assert listed.exit_code == 0, listed.stderr
        assert "could not refresh" not in listed.stderr, listed.stderr
        assert [(r["id"], r["status"]) for r in listed.json()] == [(run_id, "completed")]
