"""The ids sent to an API that accepts ``custom_id`` only as ``^[a-zA-Z0-9_-]{1,64}$``.

A part's requests are sent as ``{marker}_{index}``: the marker names the submission (the first
ten characters of its token) and the part, the index is the request's line in the part's file.
So a result line names its request without the user's id, and a batch's results say which
part made it (``batchctl.batches.inline`` proves a batch found after a lost create reply so).

Minimal version (helper branch ``anth``); the branch ``anthlines`` owns this module.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

SENT_ID = re.compile(r"^b([0-9a-f]{1,10})p([0-9]+)_([0-9]+)$")


def part_marker(token: str, part_number: int) -> str:
    """The marker of a part: its submission's token (ten characters) and its number."""
    return f"b{token[:10]}p{part_number}"


def derived_id(marker: str, index: int) -> str:
    """The id sent for the request on line ``index`` (from 0) of the part's file."""
    return f"{marker}_{index}"


def parse_derived(sent_id: str) -> tuple[str, int] | None:
    """The marker and index a sent id was derived from; None for an id not derived so."""
    match = SENT_ID.match(sent_id)
    if match is None:
        return None
    return f"b{match.group(1)}p{match.group(2)}", int(match.group(3))


def inline_requests(path: Path, marker: str) -> list[dict[str, Any]]:
    """The ``requests`` of a create call for a part's file: each line's ``params`` under its
    derived id."""
    requests: list[dict[str, Any]] = []
    with path.open("rb") as handle:
        for raw in handle:
            if raw.isspace():
                continue
            line = json.loads(raw)
            requests.append(
                {"custom_id": derived_id(marker, len(requests)), "params": line["params"]}
            )
    return requests
