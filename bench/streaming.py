"""Long histories: ``status --json`` over 1,000,000 runs and ``logs`` of 1,000,000 lines.

Both commands stream (issue #10, item 11): output starts at once and memory stays bounded
however long the history. Each is run as the installed console script with its stdout read
from a pipe, and three figures are taken from the same run: the time to the first byte of
output, the time to the last, and the peak RSS (``VmHWM`` of the child in ``/proc``, sampled
at every read of its output; ``ru_maxrss`` would carry this process's high-water mark across
fork + exec).

The databases are made directly with ``executemany`` over generated rows (a few seconds per
million), in a schema that batchctl's store created: runs of three jobs and four final
statuses with their figures, one run a second; and one run with N log lines of mixed levels
and streams, some with fields.

Baseline: a bare Python script that reads the same rows with ``sqlite3`` and writes each as
it comes (``json.dumps`` of the row as a dict for the runs, one formatted line per log row),
measured the same way: the floor of reading the rows and printing them from Python.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench.common import (
    CommandFailed,
    Row,
    Target,
    check_command,
    console_script,
    failed_row,
    median,
    script_interpreter,
    workspace,
)

MEMORY_TARGET = Target("max", 150)
FIRST_BYTE_TARGET = Target("max", 1000)

RUNS_BASELINE = """
import json, sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
cursor = conn.execute("SELECT * FROM runs ORDER BY id DESC")
names = [d[0] for d in cursor.description]
write = sys.stdout.write
for row in cursor:
    write(json.dumps(dict(zip(names, row))) + "\\n")
"""

LOGS_BASELINE = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
write = sys.stdout.write
for at, level, stream, message, fields in conn.execute(
    "SELECT at, level, stream, message, fields FROM run_logs WHERE run_id = 1 ORDER BY id"
):
    write(f"{at[11:23]} {level.upper():<7} {stream:<9} {message} {fields or ''}\\n")
"""


def measures(quick: bool) -> list[Row]:
    count = 100_000 if quick else 1_000_000
    repeats = 1 if quick else 3
    script = console_script()
    if not script.exists():
        error = f"no console script at {script} (pip install -e . in this interpreter's venv)"
        return [failed_row("streaming: batchctl", "ms", error)]
    python = script_interpreter(script)
    rows: list[Row] = []
    with workspace("streaming") as ws:
        runs_db, logs_db = ws.root / "runs.db", ws.root / "logs.db"
        built = time.perf_counter()
        build_runs(runs_db, count)
        build_logs(logs_db, count)
        built = time.perf_counter() - built
        label = f"{count:,}"
        rows += _measure(
            f"status --json, {label} runs",
            [str(script), "status", "--json", "--no-refresh"],
            [python, "-c", RUNS_BASELINE, str(runs_db)],
            ws.env(runs_db),
            repeats,
            "python: sqlite3 rows, json.dumps each",
        )
        rows += _measure(
            f"logs, {label} lines",
            [str(script), "logs", "1"],
            [python, "-c", LOGS_BASELINE, str(logs_db)],
            ws.env(logs_db),
            repeats,
            "python: sqlite3 rows, a line each",
        )
    rows[0].note = f"both databases built in {built:.1f} s; " + rows[0].note
    return rows


def _measure(
    what: str,
    command: Sequence[str],
    baseline: Sequence[str],
    env: Mapping[str, str],
    repeats: int,
    baseline_label: str,
) -> list[Row]:
    try:
        check_command([*command[:1], "--version"], env)
    except CommandFailed as exc:
        return [failed_row(f"streaming: {what}", "ms", str(exc))]
    ours: list[tuple[float, float, float, int, float]] = []
    base: list[tuple[float, float, float, int, float]] = []
    for _ in range(repeats):  # interleaved: the two share the disk and the CPU
        ours.append(stream(command, env))
        base.append(stream(baseline, env))
    failed = [r for r in ours if r[3] == 0]
    if failed:
        return [failed_row(f"streaming: {what}", "ms", "no output")]

    def figure(samples: list[tuple[float, float, float, int, float]], index: int) -> float:
        return median([s[index] for s in samples])

    size = f"{figure(ours, 3) / 1e6:,.0f} MB of output"
    return [
        Row(
            f"streaming: {what}: first byte",
            figure(ours, 0) * 1000,
            "ms",
            baseline=figure(base, 0) * 1000,
            baseline_label=baseline_label,
            target=FIRST_BYTE_TARGET,
            samples=repeats,
            note=size,
        ),
        Row(
            f"streaming: {what}: total",
            figure(ours, 1) * 1000,
            "ms",
            baseline=figure(base, 1) * 1000,
            baseline_label=baseline_label,
            samples=repeats,
        ),
        Row(
            f"streaming: {what}: CPU",
            figure(ours, 4) * 1000,
            "ms",
            baseline=figure(base, 4) * 1000,
            baseline_label=baseline_label,
            samples=repeats,
            note="user + system time of the process",
        ),
        Row(
            f"streaming: {what}: peak RSS",
            figure(ours, 2),
            "MB",
            baseline=figure(base, 2),
            baseline_label=baseline_label,
            target=MEMORY_TARGET,
            samples=repeats,
        ),
    ]


def stream(argv: Sequence[str], env: Mapping[str, str]) -> tuple[float, float, float, int, float]:
    """Run ``argv`` reading its stdout: seconds to the first byte and to the end, peak RSS in
    MB, bytes of output (0 when it did not exit 0), CPU seconds (user + system)."""
    # As from a user's shell: stdout to a pipe block-buffered, not a write(2) per line.
    env = {k: v for k, v in env.items() if k != "PYTHONUNBUFFERED"}
    began = time.perf_counter()
    first = 0.0
    size = 0
    peak = 0.0
    with subprocess.Popen(
        list(argv), env=dict(env), stdout=subprocess.PIPE, stderr=subprocess.DEVNULL
    ) as child:
        assert child.stdout is not None
        fd = child.stdout.fileno()
        while chunk := os.read(fd, 1 << 16):
            if not size:
                first = time.perf_counter() - began
            size += len(chunk)
            peak = max(peak, _peak_rss(child.pid))
        total = time.perf_counter() - began
        peak = max(peak, _peak_rss(child.pid))
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
    cpu = usage.ru_utime + usage.ru_stime
    return first, total, peak, size if child.returncode == 0 else 0, cpu


def _peak_rss(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


# --- the databases -------------------------------------------------------------------------------


def _stamp(moment: datetime) -> str:
    return moment.isoformat(timespec="microseconds")


def _schema(path: Path) -> sqlite3.Connection:
    from batchctl.store import open_store

    open_store(str(path)).close()  # the schema, exactly as batchctl creates and migrates it
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = OFF")
    return conn


def build_runs(path: Path, count: int) -> None:
    """``count`` ended runs, one a second up to a minute ago."""
    jobs = ("noop", "fail", "partial")
    statuses = ("completed", "completed", "completed", "failed", "partial", "cancelled")
    start = datetime.now(UTC) - timedelta(seconds=count + 60)

    def rows() -> Iterator[tuple[Any, ...]]:
        for i in range(count):
            created = start + timedelta(seconds=i)
            status = statuses[i % len(statuses)]
            error = "exit status 1" if status == "failed" else None
            yield (
                jobs[i % 3],
                "a" if i % 3 == 2 else "",
                status,
                "schedule" if i % 2 else "manual",
                _stamp(created),
                _stamp(created + timedelta(milliseconds=5)),
                _stamp(created + timedelta(milliseconds=200 + i % 700)),
                i % 50,
                i % 7,
                i % 5000,
                (i % 5000) * 0.000002,
                error,
            )

    conn = _schema(path)
    try:
        conn.execute("BEGIN")
        conn.executemany(
            "INSERT INTO runs (job, scope, status, trigger, attempts, max_attempts, created_at,"
            " started_at, finished_at, items_processed, items_failed, total_tokens, total_cost,"
            " error) VALUES (?, ?, ?, ?, 1, 3, ?, ?, ?, ?, ?, ?, ?, ?)",
            rows(),
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def build_logs(path: Path, count: int) -> None:
    """One completed run with ``count`` log lines, one a millisecond."""
    start = datetime.now(UTC) - timedelta(milliseconds=count + 60_000)
    levels = ("info", "info", "info", "debug", "warning", "error")
    streams = ("stdout", "stdout", "stderr", "engine")

    def rows() -> Iterator[tuple[Any, ...]]:
        for i in range(count):
            fields = json.dumps({"line": i}) if i % 10 == 0 else None
            yield (
                _stamp(start + timedelta(milliseconds=i)),
                levels[i % len(levels)],
                streams[i % len(streams)],
                f"processed item {i} of the batch with a message of ordinary length",
                fields,
            )

    conn = _schema(path)
    try:
        stamp = _stamp(start)
        end = _stamp(start + timedelta(milliseconds=count))
        conn.execute("BEGIN")
        conn.execute(
            "INSERT INTO runs (id, job, status, trigger, attempts, max_attempts, created_at,"
            " started_at, finished_at) VALUES (1, 'noop', 'completed', 'manual', 1, 1, ?, ?, ?)",
            (stamp, stamp, end),
        )
        conn.executemany(
            "INSERT INTO run_logs (run_id, attempt, at, level, stream, message, fields)"
            " VALUES (1, 1, ?, ?, ?, ?, ?)",
            rows(),
        )
        conn.execute("COMMIT")
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()
