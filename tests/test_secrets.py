"""The API key never reaches the database, the logs, --json output or any file batchctl writes."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from batchctl.emulator import Emulator, EmulatorSettings
from tests.conftest import Workspace, run_exe

SECRET = f"sk-secret-{uuid.uuid4().hex}"


def _requests(path: Path, count: int) -> Path:
    with path.open("w") as handle:
        for i in range(count):
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"q{i}"}]}
            line = {
                "custom_id": f"r{i}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": body,
            }
            handle.write(json.dumps(line) + "\n")
    return path


def _everything_written(ws: Workspace) -> list[Path]:
    return [p for p in ws.root.rglob("*") if p.is_file()]


@pytest.mark.slow
def test_api_key_never_appears_in_outputs_database_or_files(
    ws: Workspace, batchctl_exe: str
) -> None:
    ws.write_config(
        "[openai]\npoll_interval = 0.05\n"
        '[jobs.local]\nkind = "command"\ncommand = "echo working"\n'
        '[jobs.batch]\nkind = "openai"\ninput = "requests.jsonl"\n'
    )
    _requests(ws.root / "requests.jsonl", 20)
    _requests(ws.root / "more.jsonl", 7)
    outputs: list[str] = []
    with Emulator() as emulator:
        env = {**ws.env(), "OPENAI_API_KEY": SECRET, "OPENAI_BASE_URL": emulator.base_url}
        commands = [
            ["run", "local", "--json"],
            ["run", "batch", "--wait", "--json"],
            ["submit", "more.jsonl", "--dry-run", "--json"],
            ["submit", "more.jsonl", "--json"],
            ["wait", "3", "--json"],
            ["results", "3", "-o", "answers.jsonl", "--errors", "errors.jsonl", "--json"],
            ["results", "3", "-o", "answers.csv", "--format", "csv"],
            ["status", "--json"],
            ["status", "3", "--json"],
            ["status", "--remote", "--json"],
            ["logs", "1", "--json"],
            ["jobs", "--json"],
            ["retry", "3", "--json"],
            ["--verbose", "status", "999"],
            ["daemon", "--once"],
            ["config", "check", "--json"],
        ]
        for args in commands:
            result = run_exe(batchctl_exe, *args, env=env)
            outputs += [result.stdout, result.stderr]
    with Emulator(EmulatorSettings(api_key="another-key")) as strict:
        env = {**ws.env(), "OPENAI_API_KEY": SECRET, "OPENAI_BASE_URL": strict.base_url}
        failed = run_exe(batchctl_exe, "--verbose", "submit", "more.jsonl", "--force", env=env)
        assert failed.returncode == 1  # a 401: the error is shown, the key is not
        outputs += [failed.stdout, failed.stderr]
    assert all(SECRET not in text for text in outputs)
    assert len((ws.root / "answers.jsonl").read_text().splitlines()) == 7  # the commands worked
    written = _everything_written(ws)
    assert any(p.suffix == ".db" for p in written)
    assert any("-files" in str(p) for p in written)
    for path in written:
        assert SECRET.encode() not in path.read_bytes(), path
