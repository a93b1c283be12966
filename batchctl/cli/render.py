"""Rendering for humans and machines, and the one way errors are printed.

Tables and messages are plain text (see ``table``), coloured on a terminal; Rich is used for the
live progress display of long work only, and imported only then. ``--json`` output is JSON on
stdout and nothing else.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from batchctl.cli import session
from batchctl.cli.table import Cell, Column, Styled, paint, render, use_colour

__all__ = ["Cell", "Column", "Styled", "paint"]

if TYPE_CHECKING:
    from rich.console import Console

    from batchctl.batches.failures import FailureSplit
    from batchctl.records import Run

STATUS_STYLES = {
    "completed": "green",
    "succeeded": "green",
    "partial": "yellow",
    "failed": "red",
    "abandoned": "red",
    "expired": "red",
    "missing": "red",
    "cancelled": "magenta",
    "cancelling": "magenta",
    "skipped": "dim",
    "running": "cyan",
    "retrying": "cyan",
    "in_progress": "cyan",
    "validating": "cyan",
    "finalizing": "cyan",
    "queued": "blue",
    "planned": "blue",
    "waiting_for_quota": "yellow",
}
STATUS_MARKS = {
    "completed": "✓",
    "partial": "◐",
    "failed": "✗",
    "abandoned": "✗",
    "cancelled": "⊘",
    "skipped": "-",
}


def colour(stderr: bool = False) -> bool:
    return use_colour(sys.stderr if stderr else sys.stdout, session.current.no_color)


def out(text: str = "") -> None:
    sys.stdout.write(text + "\n")


def print_table(
    columns: Sequence[Column], rows: Sequence[Sequence[Cell]], *, title: str | None = None
) -> None:
    out(render(columns, rows, colour=colour(), title=title))


def print_json(data: Any) -> None:
    """Machine output: JSON on stdout and nothing else."""
    import json

    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
    sys.stdout.flush()


def print_json_array(items: Iterable[Any]) -> None:
    """A JSON array streamed element by element, byte for byte what ``print_json(list(items))``
    prints: output starts at once and memory stays bounded however many items there are."""
    write = sys.stdout.write
    first = True
    for item in items:
        write(("[\n  " if first else ",\n  ") + indented_json(item, 1))
        first = False
    write("[]\n" if first else "\n]\n")
    sys.stdout.flush()


def indented_json(value: Any, depth: int = 0) -> str:
    """``json.dumps(value, indent=2, default=str)`` as written ``depth`` levels deep.

    The standard library encodes with ``indent`` in pure Python, generically; this writes the
    common scalars directly (strings with its C escaper): ``status --json`` takes a third less
    CPU. Anything else goes to ``json.dumps`` itself.
    """
    kind = type(value)
    scalar = _SCALARS.get(kind)
    if scalar is not None:
        return scalar(value)
    if value and kind is dict and all(type(k) is str for k in value):
        pad = "\n" + "  " * (depth + 1)
        fields = []
        for k, v in value.items():
            key = _KEYS.get(k) or _key(k)
            scalar = _SCALARS.get(type(v))
            fields.append(pad + key + (scalar(v) if scalar else indented_json(v, depth + 1)))
        return "{" + ",".join(fields) + "\n" + "  " * depth + "}"
    if value and (kind is list or kind is tuple):
        pad = "\n" + "  " * (depth + 1)
        items = [pad + indented_json(v, depth + 1) for v in value]
        return "[" + ",".join(items) + "\n" + "  " * depth + "]"
    import json

    # A JSON text has no raw newline inside a string: each one is a break of the layout.
    return json.dumps(value, indent=2, default=str).replace("\n", "\n" + "  " * depth)


def _key(name: str) -> str:
    encoded = _SCALARS[str](name) + ": "
    if len(_KEYS) < 1000:  # the field names of the --json shapes, not the keys of user data
        _KEYS[name] = encoded
    return encoded


_KEYS: dict[str, str] = {}


def _float(value: float) -> str:
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return float.__repr__(value)


def _string(value: str) -> str:
    from json.encoder import encode_basestring_ascii

    _SCALARS[str] = encode_basestring_ascii
    return encode_basestring_ascii(value)


_SCALARS: dict[type, Callable[[Any], str]] = {
    str: _string,  # replaced by the json module's escaper on first use (imported lazily)
    int: int.__repr__,
    float: _float,
    bool: lambda value: "true" if value else "false",
    type(None): lambda value: "null",
}


def print_json_line(data: Any) -> None:
    """One JSON object on a line; the caller flushes (once a batch of lines, not every line)."""
    import json

    sys.stdout.write(json.dumps(data, default=str) + "\n")


def error(message: str, hint: str | None = None) -> None:
    tint = colour(stderr=True)
    sys.stderr.write(f"{paint('error:', 'bold red', tint)} {message}\n")
    if hint:
        sys.stderr.write(paint(f"hint: {hint}", "dim", tint) + "\n")
    sys.stderr.flush()


def note(message: str) -> None:
    """A human message on stderr, suppressed by --quiet."""
    if not session.current.quiet:
        sys.stderr.write(message + "\n")
        sys.stderr.flush()


def styled_status(status: str, *, stderr: bool = False) -> str:
    return paint(status, STATUS_STYLES.get(status, ""), colour(stderr))


def status_cell(status: str) -> Styled:
    return Styled(status, STATUS_STYLES.get(status, ""))


def local_time(moment: datetime | None, *, short: bool = False) -> str:
    if moment is None:
        return "-"
    return moment.astimezone().strftime("%m-%d %H:%M:%S" if short else "%Y-%m-%d %H:%M:%S")


def money(amount: float) -> str:
    if 0 < amount < 0.00005:
        return "< $0.0001"  # a real cost, too small for four decimals: not shown as $0
    return f"${amount:,.4f}"


def cost(amount: float, unpriced: Sequence[str]) -> str:
    """A cost that may leave out models without a price: never shown as a plain $0."""
    if not unpriced:
        return money(amount)
    if amount <= 0:
        return "unpriced"
    shown = money(amount)
    return "> $0" if shown.startswith("<") else f"≥ {shown}"


def nothing_priced(synchronous: float, unpriced: Sequence[str]) -> bool:
    """Whether a cost has no priced model in it at all: shown as one "unpriced", rather than
    as a batch price, a synchronous price and a saving that are each "unpriced"."""
    return bool(unpriced) and synchronous <= 0


def run_cost(run: Run) -> str:
    """A run's cost as a table shows it: "-" while it is in flight with nothing priced yet (a
    submission is priced when it settles), never a $0 that is only not known yet; "-" too for
    a run that counted no token (a command, a processor), for which a cost does not apply."""
    if run.total_cost or run.unpriced_models:
        return cost(run.total_cost, run.unpriced_models)
    return money(0.0) if run.status.terminal and run.total_tokens else "-"


RUN_COLUMNS = (
    Column("ID", right=True),
    Column("JOB"),
    Column("SCOPE"),
    Column("STATUS"),
    Column("STARTED"),
    Column("DURATION", right=True),
    Column("OK/FAIL", right=True),
    Column("TOKENS", right=True),
    Column("COST", right=True),
)


def request_counts(counts: dict[str, int], failures: FailureSplit) -> str:
    """A submission's requests by outcome, its failures split: ``3 failed (2 retryable, 1
    invalid), 7 succeeded`` (token totals in ``counts`` are left out)."""
    return ", ".join(
        f"{count:,} {styled_status(outcome)}"
        + (f" ({failures.describe()})" if outcome == "failed" else "")
        for outcome, count in sorted(counts.items())
        if not outcome.endswith("_tokens")
    )


def print_runs(runs: Iterable[Run]) -> None:
    from batchctl.durations import format_duration

    rows: list[list[Cell]] = [
        [
            str(run.id),
            run.job,
            run.scope or "-",
            status_cell(run.status.value),
            local_time(run.started_at or run.created_at, short=True),
            format_duration(run.duration),
            f"{run.items_processed}/{run.items_failed}",
            f"{run.total_tokens:,}",
            run_cost(run),
        ]
        for run in runs
    ]
    print_table(RUN_COLUMNS, rows)


def rich_console(*, stderr: bool = False) -> Console:
    """A Rich console for live progress displays; honours --no-color and NO_COLOR. When its
    reader goes away (``| head``) it falls silent and the work goes on to its end (Rich's own
    console would exit mid-run, leaving the run's job behind)."""
    from rich.console import Console

    class _Console(Console):
        def on_broken_pipe(self) -> None:
            self.quiet = True
            silence(self.file)

    return _Console(
        stderr=stderr, no_color=session.current.no_color or None, highlight=False, emoji=False
    )


def silence(stream: Any) -> None:
    """Point ``stream``'s file descriptor at /dev/null (its reader has gone), so that what is
    still buffered, or written later, cannot fail again."""
    import os

    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (a test's capture)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)
