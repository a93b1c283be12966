"""Aligned plain-text tables, the way ``ps`` and ``kubectl get`` print them.

Lists are printed with this instead of Rich's Table: Rich's import and layout cost about 50 ms,
a third of a ``batchctl status`` call, and a borderless table is easier to grep and to read in
cron mail. Colour is used only on a terminal, never with NO_COLOR or --no-color.
"""

# No ``from __future__ import annotations``: it would make the NamedTuples below compile their
# field annotations at every start-up.
import os
import sys
from collections.abc import Sequence
from typing import NamedTuple, TextIO

_SGR = {
    "bold": "1",
    "dim": "2",
    "red": "31",
    "green": "32",
    "yellow": "33",
    "blue": "34",
    "magenta": "35",
    "cyan": "36",
}


class Styled(NamedTuple):
    """A cell's text with a style name (``"green"``, ``"bold red"``)."""

    text: str
    style: str


Cell = str | Styled


class Column(NamedTuple):
    header: str
    right: bool = False


def use_colour(stream: TextIO, no_color: bool) -> bool:
    if no_color or os.environ.get("NO_COLOR"):
        return False
    if os.environ.get("FORCE_COLOR"):
        return True
    return stream.isatty() and os.environ.get("TERM") != "dumb"


def paint(text: str, style: str, colour: bool) -> str:
    if not colour:  # the common case when piped, and once a line in `logs`
        return text
    codes = ";".join(_SGR[s] for s in style.split() if s in _SGR)
    return f"\x1b[{codes}m{text}\x1b[0m" if codes else text


def render(
    columns: Sequence[Column],
    rows: Sequence[Sequence[Cell]],
    *,
    colour: bool,
    title: str | None = None,
) -> str:
    texts = [[c.text if isinstance(c, Styled) else c for c in row] for row in rows]
    widths = [len(col.header) for col in columns]
    for row in texts:
        for i, text in enumerate(row):
            widths[i] = max(widths[i], len(text))
    lines = [] if title is None else [paint(title, "bold", colour)]
    header = [_pad(col.header, widths[i], col.right) for i, col in enumerate(columns)]
    lines.append(paint("  ".join(header).rstrip(), "bold", colour))
    for row, cells in zip(texts, rows, strict=True):
        parts = []
        for i, (text, cell) in enumerate(zip(row, cells, strict=True)):
            padded = _pad(text, widths[i], columns[i].right)
            parts.append(paint(padded, cell.style, colour) if isinstance(cell, Styled) else padded)
        lines.append("  ".join(parts).rstrip())
    return "\n".join(lines)


def _pad(text: str, width: int, right: bool) -> str:
    return text.rjust(width) if right else text.ljust(width)


def write(text: str, stream: TextIO | None = None) -> None:
    out = stream or sys.stdout
    out.write(text + "\n")
