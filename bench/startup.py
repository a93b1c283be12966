"""Start-up: ``batchctl --version`` and ``batchctl status`` (10,000 runs) beside bare Python.

Each command is checked once (exit 0, and the output it should print), which is also the
warm-up that leaves .pyc files behind; then all commands are timed round-robin and each
figure is the median wall-clock time of its repetitions.
"""

from __future__ import annotations

import json

from bench.common import (
    CommandFailed,
    Row,
    Target,
    check_command,
    console_script,
    failed_row,
    median,
    script_interpreter,
    time_commands,
    workspace,
)
from bench.history import build_history

HISTORY_RUNS = 10_000
RATIO_TARGET = Target("ratio_max", 1.5)
BASELINE = "import typer"


def measures(quick: bool) -> list[Row]:
    repeats = 7 if quick else 21
    script = console_script()
    if not script.exists():
        error = f"no console script at {script} (pip install -e . in this interpreter's venv)"
        return [failed_row("startup: batchctl", "ms", error)]
    python = script_interpreter(script)
    with workspace("startup") as ws:
        build_history(ws, ws.db, HISTORY_RUNS)
        env = ws.env()
        commands = {
            "pass": [python, "-c", "pass"],
            "typer": [python, "-c", "import typer"],
            "version": [str(script), "--version"],
            "status": [str(script), "status"],
            "status-json": [str(script), "status", "--json", "--limit", "20"],
        }
        notes: dict[str, str] = {}
        broken: dict[str, str] = {}
        for name, argv in commands.items():
            try:
                output = check_command(argv, env)
            except CommandFailed as exc:
                broken[name] = str(exc)
                continue
            notes[name] = _check_output(name, output)
        timed = {name: argv for name, argv in commands.items() if name not in broken}
        times = time_commands(timed, env, repeats)

    def ms(name: str) -> float | None:
        return median(times[name]) * 1000 if times.get(name) else None

    def row(measure: str, name: str, target: Target | None, with_baseline: bool = True) -> Row:
        if name in broken:
            return failed_row(measure, "ms", broken[name], target)
        return Row(
            measure,
            ms(name),
            "ms",
            baseline=ms("typer") if with_baseline else None,
            baseline_label=BASELINE if with_baseline else "",
            target=target,
            samples=repeats,
            note=notes.get(name, ""),
        )

    return [
        row("startup: python -c pass", "pass", None, with_baseline=False),
        row("startup: batchctl --version", "version", RATIO_TARGET),
        row(f"startup: batchctl status ({HISTORY_RUNS:,} runs)", "status", RATIO_TARGET),
        row(
            f"startup: batchctl status --json --limit 20 ({HISTORY_RUNS:,} runs)",
            "status-json",
            None,
        ),
    ]


def _check_output(name: str, output: str) -> str:
    """A note when a command exited 0 but did not print what it should have."""
    if name == "version" and not output.startswith("batchctl "):
        return f"unexpected --version output: {output[:60]!r}"
    if name == "status" and f"of {HISTORY_RUNS} runs" not in output:
        return "status did not report the 10,000-run history"
    if name == "status-json":
        try:
            rows = json.loads(output)
        except ValueError:
            return "status --json printed no JSON"
        if len(rows) != 20:
            return f"status --json --limit 20 printed {len(rows)} runs"
    return ""
