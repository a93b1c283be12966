"""The ids batchctl sends in place of the user's ``custom_id`` (Anthropic's Message Batches).

Anthropic accepts a ``custom_id`` only as ``^[a-zA-Z0-9_-]{1,64}$``, and users' ids are often
longer or hold ``/`` and ``.``. So each request is sent under a derived id: its part's *marker*
(the submission's token and the part's number) and its *index*, its place in the input (the
``ordinal`` the requests table records with the user's id). A result line's id therefore names
its request exactly, whatever order the results come in, and proves which part sent it: a batch
found after a lost create reply is confirmed as the part's when its sent ids carry the part's
marker.

An Anthropic part file holds each request as it will be sent, with the request's index as its
``custom_id`` (see ``anthropic_input``); ``inline_requests`` gives the requests of a create call,
each under the derived id of the part that sends it — a part that re-sends requests of an
earlier round sends them under its own marker.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

SENT_ID = re.compile(r"[a-zA-Z0-9_-]{1,64}")  # what the API accepts (fullmatch)
MAX_SENT_ID = 64  # characters: the most a sent id can take in a create body
_TOKEN = re.compile(r"[0-9a-f]{16}")  # a submission's token (``files.new_token``)
_DERIVED = re.compile(r"([0-9a-f]{16}-p[1-9][0-9]{0,8})-r(0|[1-9][0-9]{0,11})")
_MAX_PART = 10**9 - 1  # nine digits, so that every derived id fits ``SENT_ID``
_MAX_INDEX = 10**12 - 1


def part_marker(token: str, part_number: int) -> str:
    """What every id a part sends carries: ``<token>-p<part number>``."""
    if not _TOKEN.fullmatch(token):
        raise ValueError(f"not a submission token: {token!r}")
    if not 1 <= part_number <= _MAX_PART:
        raise ValueError(f"part number out of range: {part_number}")
    return f"{token}-p{part_number}"


def derived_id(marker: str, index: int) -> str:
    """The id a request is sent under: its part's marker and its index in the input."""
    if not 0 <= index <= _MAX_INDEX:
        raise ValueError(f"request index out of range: {index}")
    return f"{marker}-r{index}"


def parse_derived(sent_id: str) -> tuple[str, int] | None:
    """``(marker, index)`` of an id that ``derived_id`` made; None for any other id."""
    found = _DERIVED.fullmatch(sent_id)
    if found is None:
        return None
    return found[1], int(found[2])


def inline_requests(path: Path, marker: str) -> Iterator[dict[str, Any]]:
    """The requests of a part's create call, read line by line from its part file: each line's
    ``params`` under the derived id of ``marker`` and the line's index.

    ``ValueError`` for a line that is not one batchctl wrote (a part file changed on disk).
    """
    with path.open("rb") as handle:
        for number, line in enumerate(handle, start=1):
            request = json.loads(line)
            index = request.get("custom_id") if isinstance(request, dict) else None
            if not isinstance(index, str) or not (index.isascii() and index.isdigit()):
                raise ValueError(f"{path}:{number}: not a request line batchctl wrote")
            yield {"custom_id": derived_id(marker, int(index)), "params": request["params"]}
