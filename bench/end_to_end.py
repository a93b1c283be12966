"""End to end: ``submit --wait`` then ``results -o``, beside a plain openai SDK script.

* ``end to end: CPU of 50,000 requests``: the user and system CPU of the commands (their
  ``resource.getrusage(RUSAGE_CHILDREN)`` deltas, so the emulator, a separate process still
  running, is not counted), for ``batchctl submit FILE --wait`` followed by
  ``batchctl results 1 -o out.jsonl`` on a fresh database each round. Baseline: a plain ~20-line
  script with the ``openai`` SDK doing the same job (upload the file, create a batch, poll every
  0.2 s until it ends, download the output, write it in input order by the index in each
  ``custom_id``), run as a subprocess. Target ratio <= 2 (issue #10). The input is a ~84 MB
  JSONL file of 50,000 chat-completion requests (one model, so one batch each side; ~1.7 KB a
  request, a slice of pseudo-random text with escapes). ``--quick``: 10,000 requests, ~17 MB.
* ``end to end: wall time``: the same runs, wall-clock (informational: both sides wait for the
  emulator's validation and finalizing delays, 0.2 s each).
* ``end to end: bytes kept beside the database``: ``du`` of ``<database name>-files/`` after
  ``results``, beside the input's size (informational; the README's "Where data lives" says
  what is kept and why).

batchctl's ``.pyc`` files are written first (``compileall``), as an install writes them, so that
neither side compiles its modules in the measured runs. The emulator (``python -m
batchctl.emulator``, a processing rate high enough to finish at once)
runs as a subprocess for the whole module; both sides poll it every 0.2 s. Rounds alternate
batchctl and the script; the figures are medians of 5 rounds (``--quick`` too).
"""

from __future__ import annotations

import contextlib
import os
import random
import resource
import selectors
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from bench.batches import _text_pool
from bench.common import Row, Target, Workspace, console_script, failed_row, median, workspace

FULL_REQUESTS = 50_000
QUICK_REQUESTS = 10_000
BYTES_PER_REQUEST = 1_680  # 50,000 requests ~ 84 MB, as in the issue
ROUNDS = 5  # the machine varies by ±15% from run to run: five rounds steady the medians
KEY_ENV = "BATCHCTL_BENCH_OPENAI_KEY"
CPU_TARGET = Target("ratio_max", 2.0)

SDK_SCRIPT = """
import json, sys, time, openai
source, out, base_url = sys.argv[1:4]
client = openai.OpenAI(base_url=base_url, api_key="sk-bench")
with open(source, "rb") as handle:
    uploaded = client.files.create(file=handle, purpose="batch")
batch = client.batches.create(
    input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
)
while batch.status not in ("completed", "failed", "expired", "cancelled"):
    time.sleep(0.2)
    batch = client.batches.retrieve(batch.id)
lines = client.files.content(batch.output_file_id).content.splitlines(keepends=True)
index = {}
for line in lines:
    index[int(json.loads(line)["custom_id"].rsplit("-", 1)[1])] = line
with open(out, "wb") as handle:
    handle.writelines(index[i] for i in sorted(index))
"""


def measures(quick: bool) -> list[Row]:
    requests = QUICK_REQUESTS if quick else FULL_REQUESTS
    label = f"{requests:,} requests"
    try:
        with workspace("e2e") as ws, _emulator(ws.root) as base_url:
            return _rows(ws, base_url, requests, label)
    except Exception as exc:
        return [failed_row(f"end to end: CPU of {label}", "ms", str(exc), CPU_TARGET)]


def _rows(ws: Workspace, base_url: str, requests: int, label: str) -> list[Row]:
    _compile_batchctl()
    source = ws.root / "requests.jsonl"
    generate(source, requests)
    config = ws.root / "e2e.toml"
    config.write_text(
        f'[openai]\nbase_url = "{base_url}"\napi_key_env = "{KEY_ENV}"\npoll_interval = 0.2\n',
        encoding="utf-8",
    )
    script = ws.root / "sdk_script.py"
    script.write_text(SDK_SCRIPT, encoding="utf-8")
    ours_cpu: list[float] = []
    ours_wall: list[float] = []
    base_cpu: list[float] = []
    base_wall: list[float] = []
    kept: list[int] = []
    for round_ in range(ROUNDS):
        db = ws.root / f"round{round_}" / "batchctl.db"
        db.parent.mkdir()
        env = ws.env(db)
        env.update(BATCHCTL_CONFIG=str(config), **{KEY_ENV: "sk-bench"})
        out = db.parent / "out.jsonl"
        cpu, wall = _measure(
            [
                [str(console_script()), "--quiet", "submit", str(source), "--wait"],
                [str(console_script()), "--quiet", "results", "1", "-o", str(out)],
            ],
            env,
        )
        ours_cpu.append(cpu)
        ours_wall.append(wall)
        _check_output(out, requests)
        kept.append(_tree_bytes(db.with_name(db.stem + "-files")))
        sdk_out = db.parent / "sdk.jsonl"
        cpu, wall = _measure(
            [[sys.executable, str(script), str(source), str(sdk_out), base_url]], env
        )
        base_cpu.append(cpu)
        base_wall.append(wall)
        _check_output(sdk_out, requests)
    size = source.stat().st_size
    return [
        Row(
            f"end to end: CPU of {label}",
            median(ours_cpu) * 1000,
            "ms",
            baseline=median(base_cpu) * 1000,
            baseline_label="openai SDK script",
            target=CPU_TARGET,
            samples=ROUNDS,
            note="submit --wait + results -o, user+sys of the commands",
        ),
        Row(
            f"end to end: wall time of {label}",
            median(ours_wall) * 1000,
            "ms",
            baseline=median(base_wall) * 1000,
            baseline_label="openai SDK script",
            samples=ROUNDS,
        ),
        Row(
            "end to end: bytes kept beside the database",
            median(kept) / 1e6,
            "MB",
            baseline=size / 1e6,
            baseline_label="the input file",
            samples=ROUNDS,
            note=f"du of <db>-files after results; {median(kept) / 2**20:.1f} MiB",
        ),
    ]


def _compile_batchctl() -> None:
    """Write batchctl's ``.pyc`` files, as installing it does (the openai package of the SDK
    script has its own since it was installed): with ``$PYTHONDONTWRITEBYTECODE`` set, or a
    source tree never imported, each command would compile every module it imports."""
    import compileall

    import batchctl

    compileall.compile_dir(Path(batchctl.__file__).parent, quiet=1)


def _measure(commands: list[list[str]], env: dict[str, str]) -> tuple[float, float]:
    """CPU seconds (user + sys of the children) and wall seconds of commands run in turn."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    for argv in commands:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"{Path(argv[1]).name}: exit {done.returncode}: {' | '.join(tail)}")
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return cpu, wall


def _check_output(path: Path, requests: int) -> None:
    with path.open("rb") as handle:
        lines = sum(1 for _ in handle)
    if lines != requests:
        raise RuntimeError(f"{path.name} has {lines} lines, expected {requests}")


def _tree_bytes(root: Path) -> int:
    """Bytes of the files under ``root`` in allocated blocks, as ``du`` counts them."""
    total = 0
    for directory, _, names in os.walk(root):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.stat(os.path.join(directory, name)).st_blocks * 512
    return total


def generate(path: Path, requests: int, seed: int = 11) -> None:
    """``requests`` chat-completion requests of ~1.7 KB each, one model."""
    import json

    rng = random.Random(seed)
    text = _text_pool(rng)
    dumps: Callable[[str], str] = json.JSONEncoder(ensure_ascii=False).encode
    head = '{"custom_id": "request-%07d", "method": "POST", "url": "/v1/chat/completions", '
    content = BYTES_PER_REQUEST - 330
    span = len(text) - content - 1
    with path.open("wb") as out:
        chunk: list[str] = []
        for i in range(requests):
            start = (i * 7919) % span
            chunk.append(
                head % i + '"body": {"model": "gpt-4o-mini", "messages": [{"role": "system",'
                ' "content": "You are a careful assistant. Answer in one paragraph."},'
                ' {"role": "user", "content": ' + dumps(text[start : start + content]) + "}],"
                ' "max_tokens": 512, "temperature": 0.2}}\n'
            )
            if len(chunk) >= 1000:
                out.write("".join(chunk).encode())
                chunk = []
        out.write("".join(chunk).encode())


@contextlib.contextmanager
def _emulator(root: Path) -> Iterator[str]:
    """The emulator as a subprocess finishing batches at once; yields its base URL."""
    stderr_path = root / "emulator.stderr"
    argv = [sys.executable, "-m", "batchctl.emulator", "--port", "0"]
    with stderr_path.open("w", encoding="utf-8") as stderr:
        process = subprocess.Popen(
            [*argv, "--processing-rate", "1e9"], stdout=subprocess.PIPE, stderr=stderr, text=True
        )
    try:
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            ready = selector.select(timeout=30)
        line = process.stdout.readline() if ready else ""
        if "OPENAI_BASE_URL=" not in line:
            tail = stderr_path.read_text(encoding="utf-8").strip().splitlines()[-1:]
            raise RuntimeError(f"the emulator did not start: {tail or line or 'no output'}")
        yield line.strip().split("OPENAI_BASE_URL=", 1)[1]
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
