"""What every benchmark module shares: the ``Row`` it reports, timing helpers, temp workspaces.

A benchmark module exposes ``measures(quick: bool) -> list[Row]``. It never asserts: a figure
that misses its target is reported with ``ok = False``, and a benchmark that cannot run at all
is reported as a row with ``error`` set.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

Unit = Literal["ms", "runs/s", "us", "MB"]
#: "max": the batchctl figure must not exceed the limit; "min": it must reach it.
#: "ratio_max": batchctl's cost over the baseline's cost must not exceed the limit.
TargetKind = Literal["max", "min", "ratio_max"]

HIGHER_IS_BETTER: frozenset[str] = frozenset({"runs/s"})


@dataclass(frozen=True)
class Target:
    kind: TargetKind
    limit: float

    def describe(self, unit: str) -> str:
        if self.kind == "ratio_max":
            return f"ratio <= {self.limit:g}"
        sign = "<=" if self.kind == "max" else ">="
        return f"{sign} {self.limit:g} {unit}"


@dataclass
class Row:
    """One measure: batchctl's median figure beside its baseline's median figure.

    ``ratio`` is always batchctl's *cost* over the baseline's cost, so ``> 1`` means batchctl
    is slower: for times it is value / baseline, for rates (runs/s) baseline / value.
    """

    measure: str
    value: float | None
    unit: Unit
    baseline: float | None = None
    baseline_label: str = ""
    target: Target | None = None
    samples: int = 0
    note: str = ""
    error: str = ""
    module: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float | None:
        if self.value is None or self.baseline is None or not self.value or not self.baseline:
            return None
        if self.unit in HIGHER_IS_BETTER:
            return self.baseline / self.value
        return self.value / self.baseline

    @property
    def ok(self) -> bool | None:
        if self.error:
            return False
        if self.target is None or self.value is None:
            return None
        if self.target.kind == "ratio_max":
            return None if self.ratio is None else self.ratio <= self.target.limit
        if self.target.kind == "max":
            return self.value <= self.target.limit
        return self.value >= self.target.limit

    def to_json(self) -> dict[str, Any]:
        return {
            "measure": self.measure,
            "module": self.module,
            "batchctl": self.value,
            "baseline": self.baseline,
            "baseline_label": self.baseline_label or None,
            "unit": self.unit,
            "ratio": None if self.ratio is None else round(self.ratio, 3),
            "target": None if self.target is None else self.target.describe(self.unit),
            "ok": self.ok,
            "samples": self.samples,
            "note": self.note or None,
            "error": self.error or None,
            **self.extra,
        }


def failed_row(measure: str, unit: Unit, error: str, target: Target | None = None) -> Row:
    """The row for a measure that could not be taken (the table shows the error)."""
    return Row(measure, None, unit, target=target, error=error)


# --- the installed console script ----------------------------------------------------------------


def console_script() -> Path:
    """The installed ``batchctl`` script next to the running interpreter (not ``python -m``)."""
    return Path(sys.executable).parent / "batchctl"


def script_interpreter(script: Path) -> str:
    """The interpreter named by the script's ``#!`` line, so baselines start the same Python."""
    try:
        with script.open("rb") as handle:
            first = handle.readline().decode(errors="replace").strip()
    except OSError:
        return sys.executable
    if first.startswith("#!"):
        parts = first[2:].split()
        if parts and Path(parts[0]).name != "env" and Path(parts[0]).exists():
            return parts[0]
    return sys.executable


# --- temporary workspaces ------------------------------------------------------------------------

NOOP_MODULE = "bench_noop"
NOOP_SOURCE = '''"""A processor that does nothing, successfully (batchctl's benchmarks)."""

from batchctl.processing import ProcessResult


def process(ctx):
    return ProcessResult(items_processed=1)


def fail(ctx):
    raise RuntimeError("this benchmark job always fails")


def partial(ctx):
    ctx.log("warning", "one item was empty", item=2)
    return ProcessResult(items_processed=2, items_failed=1, errors=["item 2 is empty"])
'''

CONFIG_TEXT = f"""# Written by batchctl's benchmarks.
[jobs.noop]
kind = "python"
description = "does nothing"
processor = "{NOOP_MODULE}:process"

[jobs.fail]
kind = "python"
processor = "{NOOP_MODULE}:fail"

[jobs.partial]
kind = "python"
processor = "{NOOP_MODULE}:partial"
scopes = ["a", "b"]
"""


@dataclass(frozen=True)
class Workspace:
    """A temp directory with a config (the no-op jobs), its processor module and a database."""

    root: Path
    config: Path
    db: Path

    def env(self, db: Path | None = None) -> dict[str, str]:
        """The environment for a batchctl subprocess that uses this workspace."""
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("PYTHONPROFILEIMPORTTIME", "PYTHONDEVMODE", "PYTHONTRACEMALLOC"))
        }
        env.update(
            BATCHCTL_CONFIG=str(self.config),
            BATCHCTL_DB=str(db or self.db),
            NO_COLOR="1",
            COLUMNS="120",
        )
        return env


@contextmanager
def workspace(name: str = "bench") -> Iterator[Workspace]:
    """A fresh ``Workspace``, removed afterwards whatever happens."""
    root = Path(tempfile.mkdtemp(prefix=f"batchctl-{name}-"))
    try:
        (root / f"{NOOP_MODULE}.py").write_text(NOOP_SOURCE, encoding="utf-8")
        config = root / "batchctl.toml"
        config.write_text(CONFIG_TEXT, encoding="utf-8")
        yield Workspace(root=root, config=config, db=root / "batchctl.db")
    finally:
        shutil.rmtree(root, ignore_errors=True)


# --- timing --------------------------------------------------------------------------------------


class CommandFailed(Exception):
    """A benchmarked command did not exit 0 when checked before timing."""


def check_command(argv: Sequence[str], env: Mapping[str, str]) -> str:
    """Run ``argv`` once (also the warm-up that writes .pyc files); return its stdout.

    Raises CommandFailed when it exits non-zero, so a broken command is never timed.
    """
    done = subprocess.run(
        list(argv), env=dict(env), capture_output=True, text=True, timeout=120, check=False
    )
    if done.returncode != 0:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise CommandFailed(f"exit {done.returncode}: {' | '.join(tail) or 'no output'}")
    return done.stdout


def time_command_once(argv: Sequence[str], env: Mapping[str, str]) -> float:
    """Wall-clock seconds of one run, output discarded."""
    start = time.perf_counter()
    subprocess.run(
        list(argv),
        env=dict(env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=False,
    )
    return time.perf_counter() - start


def time_commands(
    commands: Mapping[str, Sequence[str]], env: Mapping[str, str], repeats: int
) -> dict[str, list[float]]:
    """Seconds per run of each command, ``repeats`` times, interleaved round-robin.

    Interleaving spreads machine noise (another process, CPU frequency) evenly over a measure
    and its baseline instead of loading it onto whichever ran during the disturbance. Callers
    check (and so warm up) each command first with ``check_command``.
    """
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeats):
        for name, argv in commands.items():
            times[name].append(time_command_once(argv, env))
    return times


def median(samples: Sequence[float]) -> float:
    return statistics.median(samples)


def median_of(repeats: int, action: Callable[[], float]) -> tuple[float, list[float]]:
    """Call ``action`` (which returns one figure) ``repeats`` times; the median and all figures."""
    figures = [action() for _ in range(repeats)]
    return statistics.median(figures), figures
