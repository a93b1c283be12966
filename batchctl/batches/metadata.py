"""The metadata put on every remote batch: the API's limits and the keys batchctl keeps for itself.

A job's ``metadata`` table and ``submit --metadata`` are checked by the same rule, so a key that
batchctl needs to find a batch after a crash can never be overwritten, and the API never refuses
a create that batchctl has already recorded as sent.
"""

from __future__ import annotations

from collections.abc import Mapping

from batchctl.errors import quoted

RESERVED_PREFIX = "batchctl_"
PART_KEY = "batchctl_part"  # names a part, so that a batch whose create reply was lost is found
RUN_KEY = "batchctl_run"
OWN_KEYS = (PART_KEY, RUN_KEY)  # put on every batch beside the user's pairs
MAX_PAIRS = 16  # the API's limits (Batch object, ``metadata``)
MAX_KEY_CHARS = 64
MAX_VALUE_CHARS = 512
MAX_USER_PAIRS = MAX_PAIRS - len(OWN_KEYS)


def metadata_problems(metadata: Mapping[str, str]) -> list[str]:
    """Why ``metadata`` cannot be put on a batch beside batchctl's own keys, one message per
    problem; empty when it can. Keys in the messages are quoted with escapes, never raw."""
    problems: list[str] = []
    if len(metadata) > MAX_USER_PAIRS:
        problems.append(
            f"at most {MAX_USER_PAIRS} pairs, got {len(metadata)} (the API allows {MAX_PAIRS} "
            f"and batchctl puts {len(OWN_KEYS)} of its own on every batch)"
        )
    for key, value in metadata.items():
        shown = quoted(key, MAX_KEY_CHARS)
        if not key:
            problems.append("a key must not be empty")
        elif key.startswith(RESERVED_PREFIX):
            problems.append(f"{shown}: keys starting with {RESERVED_PREFIX} are reserved")
        elif len(key) > MAX_KEY_CHARS:
            problems.append(f"{shown}: keys are at most {MAX_KEY_CHARS} characters, got {len(key)}")
        if len(value) > MAX_VALUE_CHARS:
            problems.append(
                f"{shown}: values are at most {MAX_VALUE_CHARS} characters, got {len(value)}"
            )
    return problems
