"""``serve()`` in its own process: ready callback, control API, clean stop on SIGTERM."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request

import openai

from tests.waiting import scaled


def test_serve_runs_until_sigterm() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "batchctl.emulator", "--port", "0", "--manual-clock"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        base_url = line.strip().split("OPENAI_BASE_URL=")[1]
        with openai.OpenAI(base_url=base_url, api_key="k") as sdk:
            assert sdk.batches.list().data == []
        root = base_url.removesuffix("/v1")
        with urllib.request.urlopen(f"{root}/_emulator/state", timeout=5) as response:
            assert json.loads(response.read())["batches"]["total"] == 0
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=scaled(10)) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
