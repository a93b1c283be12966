"""Streaming validation and splitting of JSONL batch input.

Each file is read line by line (memory grows with the number of requests — one custom_id each —
never with the file's size). Every problem is collected with its file and line number; when there
is none, each request has been assigned to a part: one model per part, each part within the
request and byte limits of one batch.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

SUPPORTED_ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1000 * 1000  # the API's "200 MB", counted in decimal megabytes to be safe
PROBLEMS_SHOWN = 20
_BOM = b"\xef\xbb\xbf"


@dataclass
class Problem:
    path: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


class PartSink(Protocol):
    """Receives each valid request line, already assigned to its part."""

    def add(self, part: int, line: bytes, custom_id: str, ordinal: int) -> None: ...


@dataclass
class PartPlan:
    number: int
    model: str
    requests: int = 0
    bytes: int = 0
    estimated_input_tokens: int = 0
    max_output_tokens: int = 0  # the sum of the bounds of the requests that have one
    unbounded_requests: int = 0  # requests that set no output limit


@dataclass
class Plan:
    """What a submission will send: its endpoint, parts, totals and a content hash."""

    endpoint: str | None
    parts: list[PartPlan] = field(default_factory=list)
    requests: int = 0
    bytes: int = 0
    sha256: str = ""
    problems: list[Problem] = field(default_factory=list)
    problem_count: int = 0

    @property
    def models(self) -> list[str]:
        return sorted({p.model for p in self.parts})


def scan(
    paths: Iterable[Path],
    *,
    endpoint: str | None = None,
    max_requests: int = MAX_REQUESTS,
    max_bytes: int = MAX_BYTES,
    sink: PartSink | None = None,
    bound_output: bool = False,
) -> Plan:
    """Validate ``paths`` in one pass and plan the parts; feed valid lines to ``sink``.

    Lines go to the sink as they are read, so the caller must discard what it received when the
    returned plan has problems. ``bound_output`` adds up each part's output limits (a dry run's
    estimate), which a submission does not need.
    """
    scanner = _Scanner(endpoint, max_requests, max_bytes, sink, bound_output)
    for path in paths:
        scanner.scan_file(path)
    return scanner.finish()


class _Scanner:
    def __init__(
        self,
        endpoint: str | None,
        max_requests: int,
        max_bytes: int,
        sink: PartSink | None,
        bound_output: bool = False,
    ) -> None:
        self.plan = Plan(endpoint=endpoint)
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        self.sink = sink
        self.bound_output = bound_output
        # custom_id -> where it was first seen, packed as (file index << 32 | line) so that the
        # memory per request is one dict entry and an int, not a tuple.
        self.seen: dict[str, int] = {}
        self.files: list[Path] = []
        self.open_part: dict[str, PartPlan] = {}  # the part now being filled, per model
        self.digest = hashlib.sha256()
        if endpoint is not None and endpoint not in SUPPORTED_ENDPOINTS:
            self.plan.endpoint = None
            self.problem(Path("--endpoint"), 0, _unsupported(endpoint))

    def problem(self, path: Path, line: int, message: str) -> None:
        self.plan.problem_count += 1
        if len(self.plan.problems) < PROBLEMS_SHOWN:
            self.plan.problems.append(Problem(path, line, message))

    def scan_file(self, path: Path) -> None:
        try:
            handle = path.open("rb")
        except OSError as exc:
            self.problem(path, 0, f"cannot read: {exc.strerror or exc}")
            return
        requests_before = self.plan.requests
        problems_before = self.plan.problem_count
        self.files.append(path)
        with handle:
            for number, raw in enumerate(handle, start=1):
                self.digest.update(raw)
                if number == 1 and raw.startswith(_BOM):
                    self.problem(
                        path, 1, "starts with a UTF-8 byte order mark; save the file without it"
                    )
                    continue
                self.scan_line(path, number, raw)
        if self.plan.requests == requests_before and self.plan.problem_count == problems_before:
            self.problem(path, 0, "no requests: the file is empty")

    def scan_line(self, path: Path, number: int, raw: bytes) -> None:
        line = raw.rstrip(b"\r\n")
        if not line or line.isspace():
            if raw.endswith(b"\n") or line:
                self.problem(path, number, "empty line")
            return
        if len(line) + 1 > self.max_bytes:
            self.problem(
                path,
                number,
                f"line of {len(line):,} bytes exceeds the batch limit of {self.max_bytes:,}",
            )
            return
        try:
            request = json.loads(line)
        except UnicodeDecodeError:
            self.problem(path, number, "not valid UTF-8")
            return
        except ValueError as exc:
            self.problem(path, number, f"invalid JSON: {exc}")
            return
        model = self.check_request(path, number, request)
        if model is None:
            return
        custom_id = request["custom_id"]
        first = self.seen.get(custom_id)
        if first is not None:
            first_path, first_line = self.files[first >> 32], first & 0xFFFFFFFF
            where = f"line {first_line}" if first_path == path else f"{first_path}:{first_line}"
            self.problem(path, number, f"duplicate custom_id {custom_id!r} (first at {where})")
            return
        self.seen[custom_id] = (len(self.files) - 1) << 32 | number
        # Parts get "\n"-terminated lines: the raw line when it already is one (no copy).
        plain = raw.endswith(b"\n") and len(raw) == len(line) + 1
        part = self.assign(raw if plain else line + b"\n", model, custom_id)
        if not self.bound_output:
            return
        bound = output_bound(str(request["url"]), request["body"])
        if bound is None:
            part.unbounded_requests += 1
        else:
            part.max_output_tokens += bound

    def check_request(self, path: Path, number: int, request: object) -> str | None:
        """The request's model when the request is valid, else None (problems recorded)."""
        if not isinstance(request, dict):
            self.problem(path, number, f"expected a JSON object, got {type(request).__name__}")
            return None
        problems_before = self.plan.problem_count
        custom_id = request.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id:
            self.problem(path, number, "custom_id: missing or not a non-empty string")
        if request.get("method") != "POST":
            self.problem(path, number, f'method: expected "POST", got {request.get("method")!r}')
        url = request.get("url")
        if url not in SUPPORTED_ENDPOINTS:
            self.problem(path, number, "url: " + _unsupported(url))
        elif self.plan.endpoint is None:
            self.plan.endpoint = url
        elif url != self.plan.endpoint:
            self.problem(
                path,
                number,
                f"url: {url!r} differs from the batch's endpoint {self.plan.endpoint!r}",
            )
        body = request.get("body")
        model = body.get("model") if isinstance(body, dict) else None
        if not isinstance(body, dict):
            self.problem(path, number, "body: missing or not an object")
        elif not isinstance(model, str) or not model:
            self.problem(path, number, "body.model: missing or not a non-empty string")
        elif body.get("stream") is True:
            self.problem(path, number, "body.stream: streaming is not allowed in a batch")
        if self.plan.problem_count != problems_before:
            return None
        assert isinstance(model, str)
        return model

    def assign(self, line: bytes, model: str, custom_id: str) -> PartPlan:
        part = self.open_part.get(model)
        if (
            part is None
            or part.requests >= self.max_requests
            or part.bytes + len(line) > self.max_bytes
        ):
            part = PartPlan(number=len(self.plan.parts) + 1, model=model)
            self.plan.parts.append(part)
            self.open_part[model] = part
        part.requests += 1
        part.bytes += len(line)
        part.estimated_input_tokens += estimate_tokens(len(line))
        if self.sink is not None:
            self.sink.add(part.number, line, custom_id, self.plan.requests)
        self.plan.requests += 1
        self.plan.bytes += len(line)
        return part

    def finish(self) -> Plan:
        self.plan.sha256 = self.digest.hexdigest()
        if self.plan.problems:
            self.plan.parts = []
        return self.plan


def estimate_tokens(line_bytes: int) -> int:
    """A rough count of a request's input tokens: about four bytes of JSON per token.

    batchctl has no tokenizer (it would add a heavy dependency); the estimate is meant for the
    order of magnitude of a --dry-run cost, and is labelled as an estimate wherever shown.
    """
    return max(1, line_bytes // 4)


# Where each endpoint's body bounds its output tokens, in order of precedence.
_OUTPUT_LIMITS = {
    "/v1/chat/completions": ("max_completion_tokens", "max_tokens"),
    "/v1/responses": ("max_output_tokens",),
    "/v1/completions": ("max_tokens",),
}
_COMPLETIONS_DEFAULT_MAX_TOKENS = 16  # the legacy completions API's documented default


def output_bound(url: str, body: dict[str, Any]) -> int | None:
    """At most how many output tokens a request can be billed for; None when it sets no limit.

    Chat: ``max_completion_tokens`` (or the older ``max_tokens``) times ``n`` choices;
    responses: ``max_output_tokens``; completions: ``max_tokens`` (16 when absent) times ``n``.
    Embeddings and moderations have no output tokens; images and videos no limit to read.
    """
    if url in ("/v1/embeddings", "/v1/moderations"):
        return 0
    names = _OUTPUT_LIMITS.get(url)
    if names is None:
        return None
    limit = None
    for name in names:
        limit = _count(body.get(name))
        if limit is not None:
            break
    else:
        if url != "/v1/completions":
            return None
        limit = _COMPLETIONS_DEFAULT_MAX_TOKENS
    choices = body.get("n")
    if url == "/v1/responses" or choices is None:
        return limit
    return limit * (_count(choices) or 1)


def _count(value: object) -> int | None:
    return value if type(value) is int and value > 0 else None


def _unsupported(value: object) -> str:
    return f"{value!r} is not a supported batch endpoint (one of {', '.join(SUPPORTED_ENDPOINTS)})"
