"""Run batchctl's benchmarks and print one table (or ``--json``): ``python bench/run.py``.

Each module named in ``MODULES`` exposes ``measures(quick: bool) -> list[Row]``. A benchmark
reports and never fails: the exit status is 0 whatever the figures say.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType

if __package__ in (None, ""):
    # Run as a script: import the ``bench`` package from the checkout, not this directory's
    # modules as top-level names (which could shadow the standard library).
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

from bench.common import Row, console_script, script_interpreter

#: The benchmark modules, in the order their rows are printed. Add a new one here.
MODULES: tuple[str, ...] = (
    "startup",
    "engine_runs",
    "batches",
    "daemon",
    "postgres",
    "streaming",
    "end_to_end",
)

COLUMNS = ("measure", "batchctl", "baseline", "ratio", "target", "ok")


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    selected = _select(args.only)
    if args.list:
        print("\n".join(MODULES))
        return 0
    progress = _progress(enabled=not args.json)
    rows: list[Row] = []
    started = time.perf_counter()
    for name in selected:
        progress(f"running {name}{' (quick)' if args.quick else ''} ...")
        rows.extend(_run_module(name, args.quick))
    elapsed = time.perf_counter() - started
    if args.json:
        print(json.dumps([row.to_json() for row in rows], indent=2))
    else:
        script = console_script()
        print(f"batchctl: {script}  python: {script_interpreter(script)}")
        print(f"medians of repeated runs{', --quick' if args.quick else ''}; {elapsed:.1f}s in all")
        print(format_table(rows))
        footnotes = format_footnotes(rows)
        if footnotes:
            print(footnotes)
    return 0


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python bench/run.py",
        description="batchctl's benchmarks: median figures beside their baselines, one table.",
    )
    parser.add_argument("--json", action="store_true", help="print the rows as JSON")
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (about 30 s)")
    parser.add_argument(
        "--only",
        action="append",
        metavar="NAME",
        help=f"run only these modules (repeatable or comma-separated): {', '.join(MODULES)}",
    )
    parser.add_argument("--list", action="store_true", help="list the benchmark modules")
    return parser


def _select(only: list[str] | None) -> list[str]:
    if not only:
        return list(MODULES)
    wanted = [name.strip() for item in only for name in item.split(",") if name.strip()]
    unknown = [name for name in wanted if name not in MODULES]
    if unknown:
        _parser().error(f"unknown benchmark {unknown[0]!r}; known: {', '.join(MODULES)}")
    return [name for name in MODULES if name in wanted]


def _progress(*, enabled: bool) -> Callable[[str], None]:
    def say(message: str) -> None:
        if enabled:
            print(message, file=sys.stderr, flush=True)

    return say


def _run_module(name: str, quick: bool) -> list[Row]:
    """The module's rows; a module that raises is reported as one failed row, not a crash."""
    try:
        module: ModuleType = importlib.import_module(f"bench.{name}")
        rows: list[Row] = module.measures(quick)
    except Exception as exc:
        detail = traceback.format_exception_only(exc)[-1].strip()
        return [Row(f"{name}: (module failed)", None, "ms", error=detail, module=name)]
    for row in rows:
        row.module = name
    return rows


# --- output --------------------------------------------------------------------------------------


def _figure(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "runs/s":
        return f"{value:,.0f} {unit}"
    return f"{value:,.1f} {unit}" if value >= 10 else f"{value:,.2f} {unit}"


def cells(row: Row) -> tuple[str, ...]:
    """The table cells of one row, in ``COLUMNS`` order."""
    baseline = _figure(row.baseline, row.unit)
    if row.baseline is not None and row.baseline_label:
        baseline += f" ({row.baseline_label})"
    ratio = "-" if row.ratio is None else f"{row.ratio:.2f}x"
    target = "-" if row.target is None else row.target.describe(row.unit)
    ok = {None: "-", True: "yes", False: "NO"}[row.ok]
    value = "error" if row.error else _figure(row.value, row.unit)
    if row.note and not row.error:
        value += " *"
    return (row.measure, value, baseline, ratio, target, ok)


def format_table(rows: Sequence[Row]) -> str:
    table = [COLUMNS, *(cells(row) for row in rows)]
    widths = [max(len(line[i]) for line in table) for i in range(len(COLUMNS))]
    right = {1, 3}  # figures align right; the baseline cell carries a label, so it aligns left

    def line(values: Sequence[str]) -> str:
        return "  ".join(
            v.rjust(w) if i in right else v.ljust(w)
            for i, (v, w) in enumerate(zip(values, widths, strict=True))
        ).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(COLUMNS), rule, *(line(values) for values in table[1:])])


def format_footnotes(rows: Sequence[Row]) -> str:
    notes = []
    for row in rows:
        if row.error:
            notes.append(f"error  {row.measure}: {row.error}")
        elif row.note:
            notes.append(f"*      {row.measure}: {row.note}")
    return "\n".join(notes)


if __name__ == "__main__":
    sys.exit(main())
