"""Load and validate the TOML config into typed values; every problem names the file and key.

Validation is strict and up front: unknown keys, wrong types, bad durations, cron expressions and
time zones, and processors that cannot be imported are all reported together, one line each,
before anything runs.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from batchctl.batches.pricing import Price
from batchctl.durations import parse_duration
from batchctl.errors import ConfigError
from batchctl.schedule import CATCHUP_POLICIES

JOB_KINDS = ("command", "python", "openai")
ON_EXPIRED = ("keep", "resubmit")
CONCURRENCY_POLICIES = ("forbid", "allow", "replace")
RETRY_CAUSES = ("error", "timeout", "partial")
DEFAULT_TIMEOUT_S = 3600.0
DEFAULT_GRACE_S = 10.0
_JOB_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How often a run is attempted and how long to wait between attempts."""

    max_attempts: int = 1
    backoff: float = 1.0
    max_backoff: float = 300.0
    on: frozenset[str] = frozenset({"error", "timeout"})

    def delay(self, attempt: int, rand: float) -> float:
        """Seconds before attempt ``attempt + 1``: exponential, capped, with "equal jitter"
        (half fixed, half random, ``rand`` in [0, 1)) so that retries of many runs spread out."""
        base: float = min(self.max_backoff, self.backoff * 2.0 ** (attempt - 1))
        return base / 2 + base / 2 * rand


@dataclass(frozen=True)
class JobConfig:
    name: str
    kind: str
    enabled: bool = True
    description: str = ""
    tags: tuple[str, ...] = ()
    schedule: str | None = None
    timezone: str | None = None
    timeout: float | None = DEFAULT_TIMEOUT_S
    grace: float = DEFAULT_GRACE_S
    retries: RetryPolicy = RetryPolicy()
    concurrency: str = "forbid"
    scopes: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    command: str | tuple[str, ...] | None = None
    processor: str | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    # kind = "openai"
    input: str | None = None  # a file or a glob, relative to the config file's directory
    input_command: str | None = None  # or a command whose stdout is the JSONL
    endpoint: str | None = None
    completion_window: str = "24h"
    metadata: Mapping[str, str] = field(default_factory=dict)
    on_expired: str = "keep"
    on_complete: str | None = None
    output_dir: Path | None = None
    # scheduling (batchctl daemon)
    jitter: float = 0.0
    catchup: str = "latest"
    max_catchup: int = 100
    starting_deadline: float | None = None
    priority: int = 0
    after: tuple[str, ...] = ()
    ping_url: str | None = None

    def run_scopes(self) -> tuple[str | None, ...]:
        """The scopes one ``batchctl run JOB`` covers: each listed scope, or the job's one run."""
        return self.scopes or (None,)


@dataclass(frozen=True)
class OpenAIConfig:
    base_url: str | None = None
    api_key_env: str = "OPENAI_API_KEY"
    organization: str | None = None
    project: str | None = None
    timeout: float = 600.0
    max_retries: int = 5
    poll_interval: float = 30.0


@dataclass(frozen=True)
class BatchSettings:
    """Defaults for OpenAI batch submissions (``[batches]``)."""

    max_requests: int = 50_000
    max_bytes: int = 200_000_000
    max_request_attempts: int = 3
    completion_window: str = "24h"
    on_expired: str = "keep"
    batch_discount: float = 0.5


@dataclass(frozen=True)
class DaemonSettings:
    """How ``batchctl daemon`` runs (``[daemon]``)."""

    max_workers: int = 4
    lease: float = 30.0
    grace: float = 30.0
    poll_interval: float | None = None  # default: [openai] poll_interval
    http: str | None = None
    metrics_textfile: Path | None = None


@dataclass(frozen=True)
class Config:
    path: Path | None
    jobs: Mapping[str, JobConfig] = field(default_factory=dict)
    openai: OpenAIConfig = OpenAIConfig()
    batches: BatchSettings = BatchSettings()
    prices: Mapping[str, Price] = field(default_factory=dict)
    daemon: DaemonSettings = DaemonSettings()

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    def job(self, name: str) -> JobConfig:
        from batchctl.errors import NotFoundError

        if name not in self.jobs:
            known = ", ".join(sorted(self.jobs)) or "none"
            where = f" in {self.path}" if self.path else ""
            raise NotFoundError(f"no job named {name!r}{where}", hint=f"configured jobs: {known}")
        return self.jobs[name]


EMPTY = Config(path=None)


def load_config(path: Path, *, check_processors: bool = True) -> Config:
    """Read and validate ``path``; raise ConfigError listing every problem found."""
    try:
        with path.open("rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: invalid TOML: {exc}") from None
    return parse_config(raw, path, check_processors=check_processors)


def parse_config(
    raw: dict[str, Any], path: Path | None, *, check_processors: bool = True
) -> Config:
    section = _Section(raw, "", _Problems(path))
    base_dir = path.parent if path else Path.cwd()
    jobs_raw = section.table("jobs")
    jobs: dict[str, JobConfig] = {}
    for name, value in jobs_raw.items():
        job = _parse_job(name, value, section.problems, base_dir)
        if job is not None:
            jobs[name] = job
    openai = _parse_openai(_Section(section.table("openai"), "openai", section.problems))
    batches = _parse_batches(_Section(section.table("batches"), "batches", section.problems))
    prices = _parse_prices(section.table("prices"), section.problems)
    daemon = _parse_daemon(_Section(section.table("daemon"), "daemon", section.problems), base_dir)
    _check_chains(jobs, section.problems)
    section.finish()
    if check_processors:
        _check_processors(jobs, base_dir, section.problems)
    section.problems.raise_if_any()
    return Config(
        path=path, jobs=jobs, openai=openai, batches=batches, prices=prices, daemon=daemon
    )


# --- sections --------------------------------------------------------------------------------


def _parse_job(name: str, value: Any, problems: _Problems, base_dir: Path) -> JobConfig | None:
    key = f"jobs.{name}"
    if not _JOB_NAME.match(name):
        problems.add(key, "job names may hold only letters, digits, '.', '_' and '-'")
        return None
    if not isinstance(value, dict):
        problems.add(key, f"expected a table ([{key}]), got {_type_name(value)}")
        return None
    s = _Section(value, key, problems)
    kind = s.choice("kind", JOB_KINDS, required=True)
    job = JobConfig(
        name=name,
        kind=kind or "command",
        enabled=s.get("enabled", bool, True),
        description=s.get("description", str, ""),
        tags=tuple(s.string_list("tags")),
        schedule=s.convert("schedule", _cron),
        timezone=s.convert("timezone", _timezone),
        timeout=_none_if_zero(s.convert("timeout", parse_duration, DEFAULT_TIMEOUT_S)),
        grace=s.convert("grace", parse_duration, DEFAULT_GRACE_S),
        retries=_parse_retries(s.subsection("retries")),
        concurrency=s.choice("concurrency", CONCURRENCY_POLICIES) or "forbid",
        scopes=tuple(s.string_list("scopes", unique=True)),
        env=s.string_table("env"),
        cwd=s.convert("cwd", lambda v: base_dir / _string(v)),
        command=s.convert("command", _command) if kind == "command" else None,
        jitter=s.convert("jitter", parse_duration, 0.0),
        catchup=s.choice("catchup", CATCHUP_POLICIES) or "latest",
        max_catchup=_at_least_one(s, "max_catchup", 100),
        starting_deadline=s.convert("starting_deadline", parse_duration),
        priority=s.get("priority", int, 0),
        after=tuple(s.string_list("after", unique=True)),
        ping_url=s.convert("ping_url", _url),
        processor=s.get("processor", str, None) if kind == "python" else None,
        options=s.table("options") if kind == "python" else {},
    )
    if kind == "command" and job.command is None and "command" not in s.seen:
        problems.add(f"{key}.command", "required for a job of kind 'command'")
    if kind == "python" and job.processor is None and "processor" not in s.seen:
        problems.add(f"{key}.processor", "required for a job of kind 'python' (\"module:attr\")")
    if kind == "openai":
        job = _openai_job(job, s, base_dir)
    s.finish()
    return job


def _openai_job(job: JobConfig, s: _Section, base_dir: Path) -> JobConfig:
    from dataclasses import replace

    from batchctl.batches.validation import SUPPORTED_ENDPOINTS

    source = s.convert("input", _input_source)
    if source is None and "input" not in s.seen:
        s.problems.add(f"{s.prefix}.input", 'required: a file or glob, or { command = "..." }')
    return replace(
        job,
        input=source if isinstance(source, str) else None,
        input_command=source["command"] if isinstance(source, dict) else None,
        endpoint=s.choice("endpoint", SUPPORTED_ENDPOINTS),
        completion_window=s.choice("completion_window", ("24h",)) or "24h",
        metadata=s.string_table("metadata"),
        on_expired=s.choice("on_expired", ON_EXPIRED) or "keep",
        on_complete=s.get("on_complete", str, None),
        output_dir=s.convert("output_dir", lambda v: base_dir / _string(v)),
    )


def _input_source(value: Any) -> str | dict[str, str]:
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, dict) and set(value) == {"command"} and isinstance(value["command"], str):
        return {"command": value["command"]}
    raise ValueError('expected a file or glob ("requests/*.jsonl") or { command = "..." }')


def _parse_retries(s: _Section | None) -> RetryPolicy:
    if s is None:
        return RetryPolicy()
    default = RetryPolicy()
    max_attempts = s.get("max_attempts", int, default.max_attempts)
    if max_attempts < 1:
        s.problems.add(f"{s.prefix}.max_attempts", f"must be 1 or more, got {max_attempts}")
    causes = s.string_list("on", allowed=RETRY_CAUSES)
    policy = RetryPolicy(
        max_attempts=max(1, max_attempts),
        backoff=s.convert("backoff", parse_duration, default.backoff),
        max_backoff=s.convert("max_backoff", parse_duration, default.max_backoff),
        on=frozenset(causes) if "on" in s.seen else default.on,
    )
    s.finish()
    return policy


def _parse_openai(s: _Section) -> OpenAIConfig:
    default = OpenAIConfig()
    config = OpenAIConfig(
        base_url=s.get("base_url", str, None),
        api_key_env=s.get("api_key_env", str, default.api_key_env),
        organization=s.get("organization", str, None),
        project=s.get("project", str, None),
        timeout=s.convert("timeout", parse_duration, default.timeout),
        max_retries=s.get("max_retries", int, default.max_retries),
        poll_interval=s.convert("poll_interval", parse_duration, default.poll_interval),
    )
    s.finish()
    return config


def _at_least_one(s: _Section, name: str, default: int) -> int:
    value: int = s.get(name, int, default)
    if value < 1:
        s.problems.add(f"{s.prefix}.{name}", f"must be 1 or more, got {value}")
        return default
    return value


def _url(value: Any) -> str:
    text = _string(value)
    if not text.startswith(("http://", "https://")):
        raise ValueError(f"expected an http:// or https:// URL, got {text!r}")
    return text.rstrip("/")


def _address(value: Any) -> str:
    text = _string(value)
    _host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f'expected "HOST:PORT" such as "127.0.0.1:9187", got {text!r}')
    return text


def _parse_daemon(s: _Section, base_dir: Path) -> DaemonSettings:
    default = DaemonSettings()
    settings = DaemonSettings(
        max_workers=_at_least_one(s, "max_workers", default.max_workers),
        lease=s.convert("lease", parse_duration, default.lease),
        grace=s.convert("grace", parse_duration, default.grace),
        poll_interval=s.convert("poll_interval", parse_duration),
        http=s.convert("http", _address),
        metrics_textfile=s.convert("metrics_textfile", lambda v: base_dir / _string(v)),
    )
    if settings.lease < 3:
        s.problems.add("daemon.lease", f"must be at least 3 seconds, got {settings.lease:g}")
    s.finish()
    return settings


def _check_chains(jobs: Mapping[str, JobConfig], problems: _Problems) -> None:
    for job in jobs.values():
        for upstream in job.after:
            if upstream not in jobs:
                problems.add(f"jobs.{job.name}.after", f"no job named {upstream!r}")
    for job in jobs.values():  # a chain must not lead back to itself
        seen: set[str] = set()
        todo = list(job.after)
        while todo:
            name = todo.pop()
            if name == job.name:
                problems.add(f"jobs.{job.name}.after", "the chain of 'after' jobs is a cycle")
                break
            if name in seen or name not in jobs:
                continue
            seen.add(name)
            todo.extend(jobs[name].after)


def _parse_batches(s: _Section) -> BatchSettings:
    default = BatchSettings()

    def positive(name: str, value: int) -> int:
        if value < 1:
            s.problems.add(f"batches.{name}", f"must be 1 or more, got {value}")
            return getattr(default, name)  # type: ignore[no-any-return]
        return value

    settings = BatchSettings(
        max_requests=positive("max_requests", s.get("max_requests", int, default.max_requests)),
        max_bytes=positive("max_bytes", s.get("max_bytes", int, default.max_bytes)),
        max_request_attempts=positive(
            "max_request_attempts", s.get("max_request_attempts", int, default.max_request_attempts)
        ),
        completion_window=s.choice("completion_window", ("24h",)) or "24h",
        on_expired=s.choice("on_expired", ON_EXPIRED) or default.on_expired,
        batch_discount=s.get("batch_discount", float, default.batch_discount),
    )
    s.finish()
    return settings


def _parse_prices(raw: Mapping[str, Any], problems: _Problems) -> dict[str, Price]:
    prices: dict[str, Price] = {}
    for model, value in raw.items():
        key = f"prices.{model}"
        if not isinstance(value, dict):
            problems.add(key, "expected a table like { input = 0.15, output = 0.60 }")
            continue
        s = _Section(value, key, problems)
        cached = s.get("cached_input", float, None)
        price = Price(
            input=float(s.get("input", float, 0.0)),
            output=float(s.get("output", float, 0.0)),
            cached_input=None if cached is None else float(cached),
        )
        if "input" not in s.seen:
            problems.add(f"{key}.input", "required (US dollars per million input tokens)")
        s.finish()
        prices[model] = price
    return prices


def _check_processors(jobs: Mapping[str, JobConfig], base_dir: Path, problems: _Problems) -> None:
    from batchctl.jobs.python import ProcessorImportError, resolve_processor

    for job in jobs.values():
        if job.kind != "python" or job.processor is None:
            continue
        try:
            resolve_processor(job.processor, base_dir)
        except ProcessorImportError as exc:
            problems.add(f"jobs.{job.name}.processor", str(exc))


# --- value converters: each raises ValueError with a message for the user ----------------------


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_type_name(value)}")
    return value


def _none_if_zero(seconds: float | None) -> float | None:
    return seconds or None


def _command(value: Any) -> str | tuple[str, ...]:
    if isinstance(value, str):
        if not value.strip():
            raise ValueError("must not be empty")
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise ValueError("expected a shell command string or a non-empty list of arguments")


def _cron(value: Any) -> str:
    from batchctl.schedule import cron_problem

    text = _string(value).strip()
    problem = cron_problem(text)
    if problem:
        raise ValueError(problem)
    return text


def _timezone(value: Any) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    name = _string(value)
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"unknown time zone {name!r} (expected an IANA name like 'Europe/Berlin')"
        ) from None
    return name


def _type_name(value: Any) -> str:
    names = {
        bool: "a boolean",
        int: "an integer",
        float: "a number",
        str: "a string",
        list: "a list",
        dict: "a table",
    }
    return names.get(type(value), type(value).__name__)


# --- the reader that walks a table and records problems ---------------------------------------


class _Problems:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.lines: list[str] = []

    def add(self, key: str, message: str) -> None:
        where = f"{self.path}: " if self.path else ""
        self.lines.append(f"{where}{key}: {message}")

    def raise_if_any(self) -> None:
        if self.lines:
            count = len(self.lines)
            noun = "problem" if count == 1 else "problems"
            where = self.path or "config"
            raise ConfigError(f"{where}: {count} {noun}", self.lines)


class _Section:
    """One TOML table being read: every key taken is checked, and what is left is unknown."""

    def __init__(self, raw: Mapping[str, Any], prefix: str, problems: _Problems) -> None:
        self.raw = raw
        self.prefix = prefix
        self.problems = problems
        self.seen: set[str] = set()

    def _key(self, name: str) -> str:
        return f"{self.prefix}.{name}" if self.prefix else name

    def convert(self, name: str, converter: Callable[[Any], T], default: Any = None) -> Any:
        if name not in self.raw:
            return default
        self.seen.add(name)
        try:
            return converter(self.raw[name])
        except ValueError as exc:
            self.problems.add(self._key(name), str(exc))
            return default

    def get(self, name: str, kind: type[T], default: Any) -> Any:
        def check(value: Any) -> Any:
            ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
            if kind is float and isinstance(value, int) and not isinstance(value, bool):
                ok = True
            if not ok:
                raise ValueError(f"expected {_type_name(kind())}, got {_type_name(value)}")
            return value

        return self.convert(name, check, default)

    def choice(self, name: str, allowed: tuple[str, ...], *, required: bool = False) -> str | None:
        if required and name not in self.raw:
            self.problems.add(self._key(name), f"required (one of {', '.join(allowed)})")
            return None

        def check(value: Any) -> str:
            if value not in allowed:
                raise ValueError(f"expected one of {', '.join(allowed)}, got {value!r}")
            return str(value)

        chosen: str | None = self.convert(name, check)
        return chosen

    def string_list(
        self, name: str, *, unique: bool = False, allowed: tuple[str, ...] = ()
    ) -> list[str]:
        def check(value: Any) -> list[str]:
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ValueError(f"expected a list of non-empty strings, got {value!r}")
            if unique and len(set(value)) != len(value):
                raise ValueError(f"must not repeat a value: {value!r}")
            bad = [v for v in value if allowed and v not in allowed]
            if bad:
                raise ValueError(f"unknown value(s) {bad!r}; expected some of {', '.join(allowed)}")
            return list(value)

        return self.convert(name, check, []) or []

    def string_table(self, name: str) -> dict[str, str]:
        def check(value: Any) -> dict[str, str]:
            if not isinstance(value, dict):
                raise ValueError(f"expected a table of strings, got {_type_name(value)}")
            bad = [k for k, v in value.items() if not isinstance(v, str)]
            if bad:
                raise ValueError(f"values must be strings (not for {', '.join(bad)})")
            return dict(value)

        return self.convert(name, check, {}) or {}

    def table(self, name: str) -> dict[str, Any]:
        def check(value: Any) -> dict[str, Any]:
            if not isinstance(value, dict):
                raise ValueError(f"expected a table, got {_type_name(value)}")
            return value

        return self.convert(name, check, {}) or {}

    def subsection(self, name: str) -> _Section | None:
        if name not in self.raw:
            return None
        return _Section(self.table(name), self._key(name), self.problems)

    def finish(self) -> None:
        for name in self.raw:
            if name not in self.seen:
                self.problems.add(self._key(name), "unknown key")
