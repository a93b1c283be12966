"""Validation of a batch input file, and the plan of how its requests will run.

The input file is read once, line by line, when a batch leaves ``validating``. Each request
is executed (synthetically) right then and its output line is written to a results file on
disk; only a few small numbers per request stay in memory. The batch then reveals those
results over emulated time, in a shuffled order.
"""

from __future__ import annotations

import json
import os
from array import array
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from batchctl.emulator.responses import Outcome, digest, run_request, unit_fraction


@dataclass(frozen=True)
class LineError:
    """One entry of a failed batch's ``errors.data``."""

    code: str
    message: str
    line: int | None = None
    param: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The BatchError object."""
        return {"code": self.code, "line": self.line, "message": self.message, "param": self.param}


@dataclass
class Plan:
    """How a valid batch runs: requests in execution order, with their results on disk.

    Position ``p`` in execution order is input line ``order[p]``; its output line starts at
    byte ``offsets[order[p]]`` of ``results_path``. The ``cum_*`` arrays are prefix sums over
    execution order, so counts and usage after any number of finished requests are O(1).
    """

    results_path: Path
    total: int
    model: str | None
    order: array[int] = field(default_factory=lambda: array("I"))
    offsets: array[int] = field(default_factory=lambda: array("Q"))
    failed: bytearray = field(default_factory=bytearray)  # by execution position
    cum_failed: array[int] = field(default_factory=lambda: array("I", [0]))
    cum_input: array[int] = field(default_factory=lambda: array("Q", [0]))
    cum_output: array[int] = field(default_factory=lambda: array("Q", [0]))
    cum_cached: array[int] = field(default_factory=lambda: array("Q", [0]))
    cum_reasoning: array[int] = field(default_factory=lambda: array("Q", [0]))

    def counts(self, done: int) -> tuple[int, int]:
        """(completed, failed) after the first ``done`` requests finished."""
        failed = self.cum_failed[done]
        return done - failed, failed

    def usage(self, done: int) -> tuple[int, int, int, int]:
        """(input, output, cached input, reasoning tokens) after the first ``done`` requests
        finished."""
        return (
            self.cum_input[done],
            self.cum_output[done],
            self.cum_cached[done],
            self.cum_reasoning[done],
        )

    def lines_in_order(self) -> Iterator[bytes]:
        """The result lines (each ending in a newline), in execution order."""
        with open(self.results_path, "rb") as results:
            for position in range(self.total):
                results.seek(self.offsets[self.order[position]])
                yield results.readline()


class PlanBuilder:
    """Writes the result line of each request, in input order, and makes the Plan.

    The execution order is a shuffle that depends only on ``shuffle_seed`` and the custom_ids:
    requests are sorted by a hash of their custom_id.
    """

    def __init__(self, results_path: Path, shuffle_seed: int) -> None:
        self.results_path = results_path
        self._seed = str(shuffle_seed)
        self._out = open(results_path, "wb")  # noqa: SIM115  # closed by finish() or discard()
        self._keys: array[int] = array("Q")
        self._offsets: array[int] = array("Q")
        self._failed = bytearray()
        self._tokens = [array("I") for _ in range(4)]  # input, output, cached, reasoning

    def add(self, custom_id: str, line: dict[str, Any], outcome: Outcome) -> None:
        """Record one request's result line; a failed outcome counts no tokens."""
        self._offsets.append(self._out.tell())
        self._out.write(_encode(line).encode())
        self._out.write(b"\n")
        self._keys.append(int(unit_fraction(self._seed, "order", custom_id) * 2**63))
        self._failed.append(0 if outcome.ok else 1)
        counted = (
            outcome.input_tokens,
            outcome.output_tokens,
            outcome.cached_tokens,
            outcome.reasoning_tokens,
        )
        for tokens, value in zip(self._tokens, counted, strict=True):
            tokens.append(value if outcome.ok else 0)

    def discard(self) -> None:
        """Give up: close and delete the results file."""
        self._out.close()
        os.unlink(self.results_path)

    def finish(self, model: str | None) -> Plan:
        """The Plan of the requests added so far."""
        self._out.close()
        total = len(self._offsets)
        plan = Plan(self.results_path, total, model, offsets=self._offsets)
        order = sorted(range(total), key=self._keys.__getitem__)
        plan.order = array("I", order)
        sums = (plan.cum_input, plan.cum_output, plan.cum_cached, plan.cum_reasoning)
        for index in order:
            plan.failed.append(self._failed[index])
            plan.cum_failed.append(plan.cum_failed[-1] + self._failed[index])
            for cum, tokens in zip(sums, self._tokens, strict=True):
                cum.append(cum[-1] + tokens[index])
        return plan


@dataclass
class Validation:
    """The result of reading an input file: a plan, or the errors that failed the batch."""

    plan: Plan | None
    errors: list[LineError]


_INVALID_JSON = "This line is not parseable as valid JSON."
_DUPLICATE = (
    "The custom_id for this request is a duplicate of another request. "
    "The custom_id parameter must be unique for each request in a batch."
)
_URL_MISMATCH = "The URL provided for this request does not match the batch endpoint ({endpoint})."
_MODEL_MISMATCH = (
    "The model for this request ({model}) does not match the model of the other requests "
    "in the batch ({first}). Each batch input file may only use one model."
)


def validate_and_run(
    input_path: Path,
    *,
    batch_id: str,
    endpoint: str,
    work_dir: Path,
    created: int,
    max_requests: int,
    max_errors: int,
    shuffle_seed: int,
    failure_rate: float,
) -> Validation:
    """Check every line of ``input_path`` and, if all are valid, run the requests.

    Results go to ``work_dir/results.jsonl`` in input order.
    """
    errors: list[LineError] = []
    error_count = 0

    def report(error: LineError) -> None:
        nonlocal error_count
        error_count += 1
        if len(errors) < max_errors:
            errors.append(error)

    seen: set[str] = set()
    first_model: str | None = None
    total = 0
    work_dir.mkdir(parents=True, exist_ok=True)
    builder = PlanBuilder(work_dir / "results.jsonl", shuffle_seed)
    try:
        with open(input_path, "rb") as src:
            for lineno, raw in enumerate(src, 1):
                total += 1
                if total > max_requests:
                    continue  # only counted, for too_many_tasks
                request = _parse_line(raw)
                if request is None:
                    report(LineError("invalid_json_line", _INVALID_JSON, lineno))
                    continue
                problem = _check_fields(request, endpoint)
                if problem is not None:
                    report(LineError(problem[0], problem[1], lineno, problem[2]))
                    continue
                custom_id: str = request["custom_id"]
                body: dict[str, Any] = request["body"]
                if custom_id in seen:
                    report(LineError("duplicate_custom_id", _DUPLICATE, lineno, "custom_id"))
                    continue
                seen.add(custom_id)
                model = body.get("model")
                if isinstance(model, str):
                    if first_model is None:
                        first_model = model
                    elif model != first_model:
                        message = _MODEL_MISMATCH.format(model=model, first=first_model)
                        report(LineError("model_mismatch", message, lineno, "body.model"))
                        continue
                if error_count:
                    continue  # the batch will fail: no point running the rest
                ids = digest(batch_id, custom_id, size=32)
                outcome = run_request(
                    endpoint,
                    body,
                    custom_id,
                    created=created,
                    failure_rate=failure_rate,
                    seed=shuffle_seed,
                    key=ids[32:],
                    body_chars=_body_chars(raw, custom_id, endpoint),
                )
                line = {
                    "id": f"batch_req_{ids[:32]}",
                    "custom_id": custom_id,
                    "response": {
                        "status_code": outcome.status_code,
                        "request_id": f"req_{ids[32:]}",
                        "body": outcome.body,
                    },
                    "error": None,
                }
                builder.add(custom_id, line, outcome)
    except BaseException:
        builder.discard()
        raise
    if total == 0:
        report(LineError("empty_file", "The batch input file is empty."))
    if total > max_requests:
        report(
            LineError(
                "too_many_tasks",
                f"The batch input file has {total} requests; "
                f"a batch can have at most {max_requests}.",
            )
        )
    if error_count:
        builder.discard()
        return Validation(None, errors)
    return Validation(builder.finish(first_model), [])


_encode = json.JSONEncoder(separators=(",", ":"), check_circular=False).encode
# The envelope of a line around its body: {"custom_id": "", "method": "POST", "url": "",
# "body": }. Subtracting it estimates the body's size without encoding the body again.
_ENVELOPE_CHARS = 52


def _body_chars(raw: bytes, custom_id: str, endpoint: str) -> int:
    return max(2, len(raw.strip()) - len(custom_id) - len(endpoint) - _ENVELOPE_CHARS)


def _parse_line(raw: bytes) -> dict[str, Any] | None:
    try:
        value = json.loads(raw)
    except (ValueError, RecursionError):  # RecursionError: nested deeper than Python parses
        return None
    return value if isinstance(value, dict) else None


def _check_fields(request: dict[str, Any], endpoint: str) -> tuple[str, str, str] | None:
    """(code, message, param) of the first problem with the request's fields, if any."""
    for name in ("custom_id", "method", "url", "body"):
        if name not in request or request[name] is None:
            return (
                "missing_required_parameter",
                f"Missing required parameter: '{name}'.",
                name,
            )
    if not isinstance(request["custom_id"], str) or not request["custom_id"]:
        return ("invalid_custom_id", "custom_id must be a non-empty string.", "custom_id")
    if request["method"] != "POST":
        return ("invalid_method", "Only the POST method is supported.", "method")
    if request["url"] != endpoint:
        return ("url_mismatch", _URL_MISMATCH.format(endpoint=endpoint), "url")
    if not isinstance(request["body"], dict):
        return ("invalid_body", "body must be a JSON object.", "body")
    return None
