"""Streaming validation and splitting of JSONL batch input.

Each file is read line by line (memory grows with the number of requests — one custom_id each —
never with the file's size), in binary and in bounded chunks: a line longer than a part may hold
is never held whole. Only regular files are read (and ``-``, standard input), so a FIFO or a
device cannot hang or flood a submission. Lines are strict JSON (no ``NaN``, no duplicate keys)
in strict UTF-8. Every problem is collected with its file and line number; when there is none,
each request has been assigned to a part: one model per part, each part within the request and
byte limits of one batch.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import sys
from array import array
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, Protocol

import jiter

from batchctl.errors import quoted
from batchctl.providers.quirks import OPENAI_ENDPOINTS

SUPPORTED_ENDPOINTS = OPENAI_ENDPOINTS  # OpenAI's; a vendor's profile may name others
MAX_REQUESTS = 50_000
MAX_BYTES = 200 * 1000 * 1000  # the API's "200 MB", counted in decimal megabytes to be safe
PROBLEMS_SHOWN = 20
STDIN = Path("-")  # the name that reads standard input
STDIN_NAME = Path("<stdin>")  # how standard input is named in problems
_BOM = b"\xef\xbb\xbf"
_CHUNK = 1 << 20  # a line is read at most this much at a time
_FILE_KINDS = {
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device",
    stat.S_IFDIR: "a directory",
    stat.S_IFSOCK: "a socket",
}


@dataclass
class Problem:
    path: Path
    line: int | None  # None: the problem is with the file (or option) as a whole
    message: str

    def __str__(self) -> str:
        where = str(self.path) if self.line is None else f"{self.path}:{self.line}"
        return f"{where}: {self.message}"


class PartSink(Protocol):
    """Receives each valid request line, already assigned to its part."""

    def add(self, part: int, line: bytes, custom_id: str, ordinal: int) -> None: ...


@dataclass(frozen=True)
class LineRules:
    """What a provider accepts on a line where it differs from OpenAI (its profile's quirks:
    ``batchctl.batches.vendors.line_rules``)."""

    endpoints: tuple[str, ...] = SUPPORTED_ENDPOINTS
    one_model: bool = False  # Azure: every line names the same deployment
    mixed_endpoints: bool = False  # Groq: a file may mix endpoints
    max_custom_id: int | None = None  # Doubleword: 64


OPENAI_LINES = LineRules()


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
    rules: LineRules = OPENAI_LINES,
    api: str = "openai",
) -> Plan:
    """Validate ``paths`` in one pass and plan the parts; feed valid lines to ``sink``.

    Lines go to the sink as they are read, so the caller must discard what it received when the
    returned plan has problems. ``bound_output`` adds up each part's output limits (a dry run's
    estimate), which a submission does not need. ``api`` is the shape of the lines: "openai"
    (the Batch API's ``{custom_id, method, url, body}``) or "anthropic" (Message Batches'
    ``{custom_id, params}``, see ``anthropic_input``).
    """
    scanner: _Scanner
    if api == "anthropic":
        from batchctl.batches.anthropic_input import AnthropicScanner

        scanner = AnthropicScanner(endpoint, max_requests, max_bytes, sink, bound_output)
    else:
        scanner = _Scanner(endpoint, max_requests, max_bytes, sink, bound_output, rules)
    try:
        for path in paths:
            scanner.scan_file(path)
    except _SinkFailed as failed:
        raise failed.error from failed.error.__cause__  # the writer's, not the input's, error
    return scanner.finish()


class _SinkFailed(Exception):
    """Carries an OSError of the sink past the handlers of read errors."""

    def __init__(self, error: OSError) -> None:
        super().__init__(error)
        self.error = error


class _Scanner:
    BATCH_BYTES = MAX_BYTES  # the most one batch may hold: no longer line is ever held

    def __init__(
        self,
        endpoint: str | None,
        max_requests: int,
        max_bytes: int,
        sink: PartSink | None,
        bound_output: bool = False,
        rules: LineRules = OPENAI_LINES,
    ) -> None:
        self.plan = Plan(endpoint=endpoint)
        self.rules = rules
        # Decided once, not on every line: OpenAI's own lines need no more than they had.
        self.vendor_rules = rules.one_model or rules.max_custom_id is not None
        self.first_model: tuple[str, Path, int] | None = None  # for rules.one_model
        self.max_requests = max_requests
        self.max_bytes = max_bytes
        # The longest line ever held: what a part may hold, and never more than a batch file.
        self.limit = min(max_bytes, self.BATCH_BYTES)
        self.sink = sink
        self.bound_output = bound_output
        self.seen = _Seen()
        self.files: list[Path] = []
        self.opened: dict[tuple[int, int], Path] = {}  # (device, inode) -> the name it came by
        self.open_part: dict[str, PartPlan] = {}  # the part now being filled, per model
        self.digest = hashlib.sha256()
        if endpoint is not None and endpoint not in rules.endpoints:
            self.plan.endpoint = None
            self.problem(Path("--endpoint"), None, _unsupported(endpoint, rules.endpoints))

    def problem(self, path: Path, line: int | None, message: str) -> None:
        self.plan.problem_count += 1
        if len(self.plan.problems) < PROBLEMS_SHOWN:
            self.plan.problems.append(Problem(path, line, message))

    def scan_file(self, path: Path) -> None:
        shown = STDIN_NAME if path == STDIN else path
        handle = self.open(path, shown)
        if handle is None:
            return
        requests_before = self.plan.requests
        problems_before = self.plan.problem_count
        self.files.append(shown)
        try:
            # Standard input may never end (``< /dev/zero``): a line is followed no further than
            # a batch file may be long. A regular file ends, so its lines are followed to the end.
            self.read_lines(shown, handle, follow=self.BATCH_BYTES + 1 if path == STDIN else None)
        finally:
            if path != STDIN:
                handle.close()
        if self.plan.requests == requests_before and self.plan.problem_count == problems_before:
            self.problem(shown, None, "no requests: the file is empty")

    def open(self, path: Path, shown: Path) -> IO[bytes] | None:
        """``path`` open for reading, or None with the problem recorded."""
        if path == STDIN:
            if shown in self.files:
                self.problem(shown, None, "standard input (-) is given more than once")
                return None
            if sys.stdin is None or sys.stdin.isatty():
                self.problem(shown, None, "standard input is a terminal; pipe the requests in")
                return None
            return sys.stdin.buffer
        try:
            handle = open_regular(path)
        except NotRegularFile as exc:
            self.problem(path, None, f"cannot read {exc}: give a regular file (or - for stdin)")
            return None
        except OSError as exc:
            self.problem(path, None, f"cannot read: {exc.strerror or exc}")
            return None
        # The same file twice (by two names, or one) would repeat every custom_id in it.
        found = os.fstat(handle.fileno())
        identity = (found.st_dev, found.st_ino)
        first = self.opened.get(identity)
        if first is not None:
            handle.close()
            again = "is given more than once" + ("" if first == path else f" (also as {first})")
            self.problem(path, None, again)
            return None
        self.opened[identity] = path
        return handle

    def read_lines(self, path: Path, handle: IO[bytes], *, follow: int | None) -> None:
        readline = handle.readline
        number = 0
        try:
            while raw := readline(_CHUNK):
                number += 1
                if len(raw) == _CHUNK and not raw.endswith(b"\n"):
                    line, length, ended = _read_long_line(handle, raw, self.limit, follow)
                    if line is None:
                        self.too_long(path, number, length, ended)
                        if not ended:
                            return
                        continue
                    raw = line
                self.digest.update(raw)
                if number == 1 and raw.startswith(_BOM):
                    self.problem(
                        path, 1, "starts with a UTF-8 byte order mark; save the file without it"
                    )
                    continue
                self.scan_line(path, number, raw)
        except OSError as exc:
            self.problem(path, number or None, f"cannot read: {exc.strerror or exc}")

    def too_long(self, path: Path, number: int, length: int, ended: bool) -> None:
        """Records a line that was not held: ``ended`` False when its end was never found."""
        limit = self.limit
        if ended:
            self.problem(
                path, number, f"line of {length:,} bytes exceeds the batch limit of {limit:,}"
            )
            return
        self.problem(
            path,
            number,
            f"line with no end in its first {self.BATCH_BYTES:,} bytes exceeds the batch limit of"
            f" {limit:,}; the rest of the input was not read",
        )

    def scan_line(self, path: Path, number: int, raw: bytes) -> None:
        # Nearly every line is parsed as it was read: its line ending is JSON whitespace, and
        # what jiter accepts with it, it accepts without. A line it refuses, or one that may be
        # too long (with the "\n" a part gives it), is looked at again without its line ending
        # (``_line_value``), to name the problem.
        try:
            request = _strict_loads(raw) if len(raw) < self.max_bytes else _INVALID
        except ValueError:
            request = _INVALID
        if request is _INVALID:
            request = self._line_value(path, number, raw)
            if request is _INVALID:
                return
        # Nearly every line is a valid request to the endpoint already seen: checked here in a
        # few lookups; anything else goes through ``check_request``, which names each problem.
        model = _plain_model(request, self.plan.endpoint)
        if model is None:
            model = self.check_request(path, number, request)
            if model is None:
                return
        assert isinstance(request, dict)
        custom_id: str = request["custom_id"]
        if self.vendor_rules and not self.vendor_rules_hold(path, number, custom_id, model):
            return
        if custom_id in self.seen:
            self.duplicate(path, number, custom_id)
            return
        self.seen.accept(custom_id, len(self.files) - 1, number)
        # Parts get lines ended by one "\n": the line as read when it is one (no copy).
        plain = raw[-1:] == b"\n" and raw[-2:-1] != b"\r"  # readline: no "\n" before the last
        part = self.assign(raw if plain else raw.rstrip(b"\r\n") + b"\n", model, custom_id)
        if not self.bound_output:
            return
        bound = output_bound(str(request["url"]), request["body"])
        if bound is None:
            part.unbounded_requests += 1
        else:
            part.max_output_tokens += bound

    def _line_value(self, path: Path, number: int, raw: bytes) -> object:
        """The JSON value of a line that ``scan_line`` could not take as it was read, or
        ``_INVALID`` (problem recorded): empty, too long, or not strict JSON (jiter has refused
        it, or it was not asked: the reference decides)."""
        line = raw.rstrip(b"\r\n")
        if not line or line.isspace():
            if raw.endswith(b"\n") or line:
                self.problem(path, number, "empty line")
            return _INVALID
        if len(line) + 1 > self.max_bytes:
            self.problem(
                path,
                number,
                f"line of {len(line):,} bytes exceeds the batch limit of {self.max_bytes:,}",
            )
            return _INVALID
        return self.reference_value(path, number, line)

    def vendor_rules_hold(self, path: Path, number: int, custom_id: str, model: str) -> bool:
        """Whether the line keeps the provider's own rules (problems recorded)."""
        limit = self.rules.max_custom_id
        if limit is not None and len(custom_id) > limit:
            self.problem(
                path, number, f"custom_id: {len(custom_id)} characters; the provider takes {limit}"
            )
            return False
        if not self.rules.one_model:
            return True
        if self.first_model is None:
            self.first_model = (model, path, number)
        elif model != self.first_model[0]:
            first, first_path, first_line = self.first_model
            where = f"line {first_line}" if first_path == path else f"{first_path}:{first_line}"
            self.problem(
                path,
                number,
                f"body.model: {spelled(model)} differs from {spelled(first)} ({where}); every"
                " line must"
                " name the same deployment",
            )
            return False
        return True

    def duplicate(self, path: Path, number: int, custom_id: str) -> None:
        """Records that ``custom_id``, seen before, is given again at ``path:number``."""
        if len(self.plan.problems) >= PROBLEMS_SHOWN:
            self.problem(path, number, "duplicate custom_id")  # counted, not shown: not looked up
            return
        file, first_line = self.seen.first(custom_id)
        first_path = self.files[file]
        where = f"line {first_line}" if first_path == path else f"{first_path}:{first_line}"
        self.problem(path, number, f"duplicate custom_id {spelled(custom_id)} (first at {where})")

    def parse(self, path: Path, number: int, line: bytes) -> object:
        """The line's JSON value, or ``_INVALID`` (problem recorded): strict UTF-8, strict JSON."""
        try:
            return _strict_loads(line)
        except ValueError:  # refused by the fast parser: the standard library's names why
            return self.reference_value(path, number, line)

    def reference_value(self, path: Path, number: int, line: bytes) -> object:
        """``parse`` by the standard library alone, which words each problem."""
        try:
            text = line.decode("utf-8")
        except UnicodeDecodeError as exc:
            where = f"byte 0x{line[exc.start]:02x} at column {exc.start + 1}"
            self.problem(path, number, f"not valid UTF-8 ({where})")
            return _INVALID
        try:
            return _decode(text)
        except RecursionError:
            self.problem(path, number, "invalid JSON: nested too deeply")
        except ValueError as exc:  # JSONDecodeError, or what _strict_* refused
            self.problem(path, number, f"invalid JSON: {exc}")
        return _INVALID

    def check_request(self, path: Path, number: int, request: object) -> str | None:
        """The request's model when the request is valid, else None (problems recorded)."""
        if not isinstance(request, dict):
            self.problem(path, number, f"expected a JSON object, got {json_type(request)}")
            return None
        problems_before = self.plan.problem_count
        custom_id = request.get("custom_id")
        if not isinstance(custom_id, str) or not custom_id.strip():
            self.problem(path, number, "custom_id: missing, blank or not a string")
        elif not custom_id.isascii() and (surrogate := _lone_surrogate(custom_id)):
            self.problem(path, number, f"custom_id: {surrogate}")
        if "method" not in request:
            self.problem(path, number, 'method: missing (expected "POST")')
        elif request["method"] != "POST":
            self.problem(path, number, f'method: expected "POST", got {spelled(request["method"])}')
        url = request.get("url")
        if "url" not in request:
            self.problem(path, number, f"url: missing (one of {', '.join(self.rules.endpoints)})")
        elif url not in self.rules.endpoints:
            self.problem(path, number, "url: " + _unsupported(url, self.rules.endpoints))
        elif self.plan.endpoint is None:
            self.plan.endpoint = url
        elif url != self.plan.endpoint and not self.rules.mixed_endpoints:
            self.problem(
                path,
                number,
                f"url: {spelled(url)} differs from the batch's endpoint"
                f" {spelled(self.plan.endpoint)}",
            )
        body = request.get("body")
        if isinstance(body, dict):
            self.check_body(path, number, body, url)
        else:
            self.problem(path, number, "body: missing or not an object")
        if self.plan.problem_count != problems_before:
            return None
        assert isinstance(body, dict)
        model: str = body["model"]
        return model

    def check_body(self, path: Path, number: int, body: dict[str, object], url: object) -> None:
        model = body.get("model")
        if not isinstance(model, str) or not model.strip():
            self.problem(path, number, "body.model: missing, blank or not a string")
        elif not model.isascii() and (surrogate := _lone_surrogate(model)):
            self.problem(path, number, f"body.model: {surrogate}")
        stream = body.get("stream")
        if stream is True:
            self.problem(path, number, "body.stream: streaming is not allowed in a batch")
        elif stream is not False and stream is not None:  # null is the API's default: false
            self.problem(
                path, number, f"body.stream: expected false or absent, got {spelled(stream)}"
            )
        refused = _refused_limit(body, url) if isinstance(url, str) else None
        if refused is not None:
            got = spelled(body[refused])
            self.problem(path, number, f"body.{refused}: expected a positive integer, got {got}")

    def assign(self, line: bytes, model: str, custom_id: str, size: int | None = None) -> PartPlan:
        """Put ``line`` in the open part of ``model`` (a new one when it would not fit there);
        ``size`` is what it takes of a batch's bytes when that is not its length."""
        if size is None:
            size = len(line)
        plan = self.plan
        part = self.open_part.get(model)
        if part is None or part.requests >= self.max_requests or part.bytes + size > self.max_bytes:
            part = PartPlan(number=len(plan.parts) + 1, model=model)
            plan.parts.append(part)
            self.open_part[model] = part
        part.requests += 1
        part.bytes += size
        part.estimated_input_tokens += estimate_tokens(size)
        if self.sink is not None:
            try:
                self.sink.add(part.number, line, custom_id, plan.requests)
            except OSError as exc:
                raise _SinkFailed(exc) from exc
        plan.requests += 1
        plan.bytes += size
        return part

    def finish(self) -> Plan:
        self.plan.sha256 = self.digest.hexdigest()
        if self.plan.problems:
            self.plan.parts = []
        return self.plan


def _plain_model(request: object, endpoint: str | None) -> str | None:
    """The model of a request that ``_Scanner.check_request`` would accept without a word, sent
    to ``endpoint`` (the batch's, once known) with an ASCII custom_id and model; else None, and
    ``check_request`` looks at it again to name what is wrong (or to accept what is unusual)."""
    if endpoint is None or type(request) is not dict:
        return None
    custom_id = request.get("custom_id")
    body = request.get("body")
    if (
        type(custom_id) is not str
        or type(body) is not dict
        or request.get("url") != endpoint
        or request.get("method") != "POST"
        or not custom_id.isascii()
        or not custom_id.strip()
    ):
        return None
    model = body.get("model")
    if type(model) is not str or not model.isascii() or not model.strip():
        return None
    stream = body.get("stream")
    if stream is not None and stream is not False:
        return None
    if _refused_limit(body, endpoint) is not None:  # named by check_body
        return None
    return model


def _refused_limit(body: dict[str, Any], url: str) -> str | None:
    """The first of the endpoint's output limits in ``body`` that the API refuses: set (not
    null) but not a positive integer."""
    for name in _OUTPUT_LIMITS.get(url, ()):
        limit = body.get(name)
        if limit is not None and (type(limit) is not int or limit < 1):
            return name
    return None


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


def _unsupported(value: object, endpoints: tuple[str, ...] = SUPPORTED_ENDPOINTS) -> str:
    return f"{spelled(value)} is not a supported batch endpoint (one of {', '.join(endpoints)})"


def spelled(value: object, limit: int = 100) -> str:
    """``value`` as JSON spells it, for a message: null, true, 3, "text", [false]; on one line,
    with nothing that can drive a terminal, and cut after ``limit`` characters."""
    if isinstance(value, str):
        return quoted(value, limit)
    try:
        text = json.dumps(value, ensure_ascii=True, allow_nan=False)
    except (TypeError, ValueError):  # not from JSON: say what it is
        text = type(value).__name__
    return text if len(text) <= limit else text[:limit] + "..."


def json_type(value: object) -> str:
    """What kind of JSON value ``value`` is, for "expected ..., got ..." messages."""
    if value is None or isinstance(value, bool):
        return spelled(value)
    if isinstance(value, str):
        return "a string"
    if isinstance(value, int | float):
        return "a number"
    return "an array" if isinstance(value, list) else "an object"


class NotRegularFile(Exception):
    """A path names a FIFO, a device, a directory or a socket: ``str()`` says which."""


def open_regular(path: Path) -> IO[bytes]:
    """``path`` open for binary reading if it is a regular file; else ``NotRegularFile``.

    Checked before opening (opening a FIFO for reading blocks until a writer comes; a device
    may never end) and again on the open descriptor, in case the path changed in between.
    """
    kind = _FILE_KINDS.get(stat.S_IFMT(os.stat(path).st_mode))
    if kind is not None:
        raise NotRegularFile(kind)
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags)  # O_NONBLOCK: a FIFO swapped in since the stat cannot block
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise NotRegularFile(_FILE_KINDS.get(stat.S_IFMT(mode), "what is not a regular file"))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _read_long_line(
    handle: IO[bytes], first: bytes, limit: int, follow: int | None
) -> tuple[bytes | None, int, bool]:
    """The rest of a line whose first chunk is ``first``: ``(line, length, True)``.

    A line longer than ``limit`` bytes (its end of line not counted) is not kept: it is read to
    its end and ``(None, length, True)`` returned; or, past ``follow`` bytes without an end,
    ``(None, length so far, False)``, and the rest of the input is not to be read. A file that
    can seek is measured first and read again only when the line fits, so it never holds more
    than a chunk of a line that is too long.
    """
    if handle.seekable():
        start = handle.tell()
        length, ended = _skip_line(handle.readline, len(first), follow)
        if length > limit or not ended:
            return None, length, ended
        end = handle.tell()
        handle.seek(start)
        line = first + handle.read(end - start)
        return line, len(line), True
    held = bytearray(first)
    while len(held) <= limit + 1:  # + 1: a "\r" before the "\n" is not counted either
        chunk = handle.readline(_CHUNK)
        held += chunk
        if not chunk or chunk.endswith(b"\n"):
            return bytes(held), len(held), True
    length = len(held)
    del held
    return (None, *_skip_line(handle.readline, length, follow))


def _skip_line(
    readline: Callable[[int], bytes], length: int, follow: int | None
) -> tuple[int, bool]:
    """Reads on to the end of a line of which ``length`` bytes were read, without holding it.

    Returns the line's length without its newline and True; or the length so far and False when
    the line goes on past ``follow`` bytes.
    """
    while follow is None or length <= follow:
        chunk = readline(_CHUNK)
        if chunk.endswith(b"\n"):
            return length + len(chunk) - 1, True
        if not chunk:
            return length, True
        length += len(chunk)
    return length, False


class _Seen(set[str]):
    """The custom_ids accepted so far (the set: ``in`` finds a duplicate), and where each was,
    to name the first of a duplicate. Memory grows with the requests (by about 60 bytes each
    beside the id, shared with the caller), so it is kept small: in the order seen, a list of
    the ids and an array of their places, (file index << 32 | line) — not a dict of ``int``s,
    12 bytes more a request. The place of a repeated id is looked up by a walk of the list,
    done only for a problem that is shown (at most ``PROBLEMS_SHOWN``)."""

    def __init__(self) -> None:
        super().__init__()
        self.order: list[str] = []
        self.places = array("q")

    def accept(self, custom_id: str, file: int, line: int) -> None:
        self.add(custom_id)
        self.order.append(custom_id)
        self.places.append(file << 32 | line)

    def first(self, custom_id: str) -> tuple[int, int]:
        """(file index, line) where ``custom_id`` was first accepted."""
        place = self.places[self.order.index(custom_id)]
        return place >> 32, place & 0xFFFFFFFF


class _NotStrictJSON(ValueError):
    """What ``json`` accepts by default but the JSON standard (and the API) does not."""


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    value = dict(pairs)
    if len(value) == len(pairs):
        return value
    seen: set[str] = set()
    for key, _ in pairs:
        if key in seen:
            raise _NotStrictJSON(f"duplicate key {spelled(key)} in one object")
        seen.add(key)
    raise AssertionError("unreachable: dict() dropped a key that is not repeated")


def _no_constant(name: str) -> Any:
    raise _NotStrictJSON(f"{name} is not a JSON number")


_decoder = json.JSONDecoder(object_pairs_hook=_unique_keys, parse_constant=_no_constant)
# The decoder's C scanner (an attribute that typeshed does not declare).
_scan_once: Callable[[str, int], tuple[object, int]] = vars(_decoder)["scan_once"]


def _strict_loads(line: bytes) -> object:
    """The JSON value of a line of strict UTF-8 and strict JSON, by jiter (pydantic's Rust
    parser, which the openai and anthropic SDKs depend on): it reads the bytes in one pass,
    about 40% faster than decoding them and running ``_decode``. ``ValueError`` for anything it
    refuses; the caller then asks ``_decode`` (the reference, which names each problem as
    before), so a line is accepted or refused exactly as ``_decode`` would: jiter refuses no
    less than it (duplicate keys, ``NaN``, invalid UTF-8 all included), and where it refuses
    more — a lone surrogate escape, nesting deeper than 200 — ``_decode`` decides."""
    return jiter.from_json(line, allow_inf_nan=False, catch_duplicate_keys=True)


def _decode(text: str) -> object:
    """``text``'s JSON value, as ``_decoder.decode`` gives it, without that method's two regular
    expression passes when no whitespace surrounds the value (nearly every line)."""
    try:
        value, end = _scan_once(text, 0)
    except StopIteration:
        return _decoder.decode(text)  # leading whitespace, or no JSON value: decode says which
    if end != len(text):
        return _decoder.decode(text)  # trailing whitespace, or extra data: decode says which
    return value


_INVALID = object()


def _lone_surrogate(text: str) -> str | None:
    """A problem when ``text`` holds a lone UTF-16 surrogate (from a ``\\ud800`` escape)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        code = ord(text[exc.start])
        return f"holds a lone surrogate \\u{code:04x}, which is not valid Unicode"
    return None
