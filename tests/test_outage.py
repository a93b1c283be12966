"""An API outage: the daemon keeps running, logs it once per interval, and recovers by itself."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from batchctl.emulator import Emulator, EmulatorSettings, Fault
from tests.conftest import Workspace, run_exe
from tests.waiting import scaled, wait_for

# The issue asks for a minute of outage; BATCHCTL_OUTAGE_SECONDS shortens it for a quick run.
OUTAGE_S = float(os.environ.get("BATCHCTL_OUTAGE_SECONDS", "60"))
INTERVAL_S = 2.0


def _requests(path: Path, count: int, salt: str) -> None:
    with path.open("w") as handle:
        for i in range(count):
            message = {"role": "user", "content": f"{salt} question {i}"}
            body = {"model": "gpt-4o-mini", "messages": [message]}
            line = {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions"}
            handle.write(json.dumps({**line, "body": body}) + "\n")


def _submit_three(ws: Workspace, batchctl_exe: str, env: dict[str, str]) -> None:
    """Three submissions in flight, so that each refresh pass makes several API requests."""
    for name in ("a", "b", "c"):
        _requests(ws.root / f"{name}.jsonl", 30, salt=name)
        submitted = run_exe(
            batchctl_exe, "submit", f"{name}.jsonl", "--max-requests", "10", env=env
        )
        assert submitted.returncode == 0, submitted.stderr


def _all_completed(batchctl_exe: str, env: dict[str, str]) -> bool:
    status = run_exe(batchctl_exe, "status", "--json", "--no-refresh", env=env)
    runs = json.loads(status.stdout)
    return len(runs) == 3 and all(run["status"] == "completed" for run in runs)


@pytest.mark.slow
@pytest.mark.timeout(scaled(OUTAGE_S + 150))
def test_the_daemon_rides_out_an_api_outage_and_recovers(ws: Workspace, batchctl_exe: str) -> None:
    with Emulator(EmulatorSettings(processing_rate=2.0)) as emu:
        env = {**ws.env(), "OPENAI_BASE_URL": emu.base_url, "OPENAI_API_KEY": "test-key"}
        ws.write_config(
            f"[openai]\npoll_interval = {INTERVAL_S}\nmax_retries = 1\n"
            f"[daemon]\npoll_interval = {INTERVAL_S}\n"
            '[jobs.idle]\nkind = "command"\ncommand = "true"\nschedule = "@yearly"\n'
        )
        _submit_three(ws, batchctl_exe, env)
        log = ws.root / "daemon.log"
        with log.open("wb") as err:
            daemon = subprocess.Popen([batchctl_exe, "daemon"], env=env, stderr=err)
        try:
            emu.set_faults([Fault(kind="503", path="/v1/*")])
            down_since = len(emu.requests)
            time.sleep(OUTAGE_S)  # the outage itself (the scenario), not a wait for an event
            assert daemon.poll() is None, log.read_text()  # still running
            during = len(emu.requests) - down_since
            emu.clear_faults()
            wait_for(lambda: _all_completed(batchctl_exe, env), lambda: log.read_text(), timeout=90)
            daemon.send_signal(signal.SIGTERM)
            assert daemon.wait(timeout=scaled(30)) == 0
        finally:
            if daemon.poll() is None:
                daemon.kill()
        text = log.read_text()
        outage_lines = [line for line in text.splitlines() if "could not refresh" in line]
        intervals = OUTAGE_S / INTERVAL_S
        # once per interval (give or take the passes around its start and end), not per request
        assert 2 <= len(outage_lines) <= intervals + 3, text
        assert during >= 4 * len(outage_lines), (during, len(outage_lines))
        assert "could not refresh 3 of 3 submission(s)" in text
        assert "the API answers again" in text
        assert "Traceback" not in text
