"""Load and validate the TOML config into typed values; every problem names the file and key.

Validation is strict and up front: unknown keys, wrong types, values out of range, bad
durations, cron expressions and time zones, and (``check_host``) processors that cannot be
imported and working directories that do not exist on this host are all reported together, one
line each, before anything runs: a config that loads does not fail a run later. User text in a
message (a job name, a value) is shown in TOML spelling, escaped, so that every problem stays on
one line.
"""

from __future__ import annotations

import difflib
import math
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from batchctl.batches.metadata import metadata_problems
from batchctl.batches.pricing import Price
from batchctl.durations import parse_duration
from batchctl.errors import ConfigError, quoted
from batchctl.kinds import BATCH_KINDS, KIND_MODULES
from batchctl.providers.profiles import API_SHAPES, DEFAULT_PROVIDER, PROFILES, ProviderSettings
from batchctl.providers.quirks import QUIRKS, endpoints, unknown_quirks
from batchctl.schedule import CATCHUP_POLICIES

ANTHROPIC_ENDPOINTS = ("/v1/messages",)  # Message Batches (batches/anthropic_input.py)

JOB_KINDS = tuple(KIND_MODULES)  # registered in kinds.py
ON_EXPIRED = ("keep", "resubmit")
CONCURRENCY_POLICIES = ("forbid", "allow", "replace")
RETRY_CAUSES = ("error", "timeout", "partial")
DEFAULT_TIMEOUT_S = 3600.0
DEFAULT_GRACE_S = 10.0
_JOB_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # fullmatch: "$" allows a newline
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")  # a TOML key that needs no quotes (fullmatch)
# The ranges of integer settings: sensible, and well inside the database's integer columns.
MAX_ATTEMPTS = 1000  # retries.max_attempts, [batches] max_request_attempts
MAX_PRIORITY = 1_000_000  # priority is from -MAX_PRIORITY to MAX_PRIORITY
MAX_CATCHUP = 10_000  # max_catchup (the scheduler considers at most this many ticks)
MAX_HTTP_RETRIES = 100  # [providers.NAME] max_retries
MAX_WORKERS = 1000  # [daemon] max_workers
MAX_BATCH_REQUESTS = 10_000_000  # no provider takes more per batch; each provider's own limit
MAX_BATCH_BYTES = 10**12  # applies at submit (ProviderSettings.max_requests / max_bytes)
# Durations in the config: beyond any sensible wait, and with their sums (timeout + grace + lease)
# far below what datetime arithmetic and threading waits (about 292 years) overflow at.
MAX_DURATION_S = 3650 * 86400.0
MAX_CONFIG_BYTES = 10_000_000  # a config file larger than this is not a config file
_BOMS = {b"\xef\xbb\xbf": "UTF-8", b"\xff\xfe": "UTF-16", b"\xfe\xff": "UTF-16"}

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
    # kind = "batch" (or its old name "openai")
    provider: str = DEFAULT_PROVIDER  # a built-in provider or a [providers.NAME] table
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
class BatchSettings:
    """Defaults for batch submissions (``[batches]``). ``max_requests``/``max_bytes`` None: the
    provider's own limits per batch; a value above them is lowered to them."""

    max_requests: int | None = None
    max_bytes: int | None = None
    max_request_attempts: int = 3
    completion_window: str = "24h"
    on_expired: str = "keep"
    batch_discount: float = 0.5

    def limits(self, provider: ProviderSettings) -> tuple[int, int]:
        """Requests and bytes per batch for ``provider``: ours, never above its own."""
        return (
            min(self.max_requests or provider.max_requests, provider.max_requests),
            min(self.max_bytes or provider.max_bytes, provider.max_bytes),
        )


@dataclass(frozen=True)
class DaemonSettings:
    """How ``batchctl daemon`` runs (``[daemon]``)."""

    max_workers: int = 4
    lease: float = 30.0
    grace: float = 30.0
    poll_interval: float | None = None  # default: the default provider's poll_interval
    http: str | None = None
    metrics_textfile: Path | None = None


@dataclass(frozen=True)
class Config:
    path: Path | None
    jobs: Mapping[str, JobConfig] = field(default_factory=dict)
    # The [providers.NAME] tables (and [openai]), each merged over its built-in profile.
    providers: Mapping[str, ProviderSettings] = field(default_factory=dict)
    batches: BatchSettings = BatchSettings()
    prices: Mapping[str, Price] = field(default_factory=dict)
    daemon: DaemonSettings = DaemonSettings()

    @property
    def base_dir(self) -> Path:
        return self.path.parent if self.path else Path.cwd()

    @property
    def openai(self) -> ProviderSettings:
        """The default provider's settings (``openai``): what runs without ``--provider``."""
        return self.provider(DEFAULT_PROVIDER)

    def key_variables(self) -> tuple[str, ...]:
        """The environment variables that hold a provider's key (masked in what jobs print)."""
        names = {p.api_key_env for p in (*PROFILES.values(), *self.providers.values())}
        return tuple(sorted(names))

    def keys_needed(self) -> dict[str, list[JobConfig]]:
        """The environment variables holding the API keys the batch jobs need, each with the
        jobs that need it (what a crontab or unit that runs the daemon has to provide)."""
        needed: dict[str, list[JobConfig]] = {}
        for job in self.jobs.values():
            if job.kind in BATCH_KINDS:
                needed.setdefault(self.provider(job.provider).api_key_env, []).append(job)
        return needed

    def provider(self, name: str) -> ProviderSettings:
        """A provider's settings: its table, else its built-in profile."""
        from batchctl.errors import UsageError

        found = self.providers.get(name) or PROFILES.get(name)
        if found is None:
            known = ", ".join(sorted({*PROFILES, *self.providers}))
            raise UsageError(
                f"no provider named {name!r}",
                hint=f"use one of {known}, or add a [providers.{name}] table with api = ...",
            )
        return found

    def job(self, name: str) -> JobConfig:
        from batchctl.errors import NotFoundError

        if name not in self.jobs:
            known = ", ".join(sorted(self.jobs)) or "none"
            where = f" in {self.path}" if self.path else ""
            raise NotFoundError(f"no job named {name!r}{where}", hint=f"configured jobs: {known}")
        return self.jobs[name]


EMPTY = Config(path=None)


def load_config(path: Path, *, check_host: bool = True) -> Config:
    """Read and validate ``path``; raise ConfigError listing every problem found."""
    where = _one_line(str(path))
    try:
        with path.open("rb") as handle:
            data = handle.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        raise ConfigError(f"config file {where} does not exist") from None
    except OSError as exc:
        raise ConfigError(_one_line(f"cannot read config file {where}: {exc}")) from None
    if len(data) > MAX_CONFIG_BYTES:
        raise ConfigError(f"{where}: larger than {MAX_CONFIG_BYTES:,} bytes; is it a config file?")
    for bom, encoding in _BOMS.items():
        if data.startswith(bom):
            raise ConfigError(
                f"{where}: starts with a byte-order mark ({encoding}); save it as UTF-8 without BOM"
            )
    try:
        raw = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{where}: line {line}: not UTF-8 text; save it as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(_one_line(f"{where}: invalid TOML: {exc}")) from None
    return parse_config(raw, path, check_host=check_host)


def parse_config(raw: dict[str, Any], path: Path | None, *, check_host: bool = True) -> Config:
    section = _Section(raw, "", _Problems(path))
    _check_nul(raw, "", section.problems)
    base_dir = path.parent if path else Path.cwd()
    jobs_raw = section.table("jobs")
    jobs: dict[str, JobConfig] = {}
    for name, value in jobs_raw.items():
        job = _parse_job(name, value, section.problems, base_dir)
        if job is not None:
            jobs[name] = job
    providers = _parse_providers(section)
    batches = _parse_batches(_Section(section.table("batches"), "batches", section.problems))
    prices = _parse_prices(section.table("prices"), section.problems)
    daemon = _parse_daemon(_Section(section.table("daemon"), "daemon", section.problems), base_dir)
    _check_chains(jobs, section.problems)
    _check_job_providers(jobs, providers, section.problems)
    section.finish()
    if check_host:
        _check_processors(jobs, base_dir, section.problems)
        _check_directories(jobs, section.problems)
    section.problems.raise_if_any()
    return Config(
        path=path,
        jobs=jobs,
        providers=providers,
        batches=batches,
        prices=prices,
        daemon=daemon,
    )


# --- sections --------------------------------------------------------------------------------


def _parse_job(name: str, value: Any, problems: _Problems, base_dir: Path) -> JobConfig | None:
    key = _dotted("jobs", name)
    if not _JOB_NAME.fullmatch(name):
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
        timeout=_none_if_zero(s.convert("timeout", _duration, DEFAULT_TIMEOUT_S)),
        grace=s.convert("grace", _duration, DEFAULT_GRACE_S),
        retries=_parse_retries(s.subsection("retries")),
        concurrency=s.choice("concurrency", CONCURRENCY_POLICIES) or "forbid",
        scopes=tuple(s.string_list("scopes", unique=True)),
        env=_environment(s),
        cwd=s.convert("cwd", lambda v: base_dir / _string(v)),
        command=s.convert("command", _command) if kind == "command" else None,
        jitter=s.convert("jitter", _duration, 0.0),
        catchup=s.choice("catchup", CATCHUP_POLICIES) or "latest",
        max_catchup=s.integer("max_catchup", 100, 1, MAX_CATCHUP),
        starting_deadline=s.convert("starting_deadline", _duration),
        priority=s.integer("priority", 0, -MAX_PRIORITY, MAX_PRIORITY),
        after=tuple(s.string_list("after", unique=True)),
        ping_url=s.convert("ping_url", _url),
        processor=s.get("processor", str, None) if kind == "python" else None,
        options=s.table("options") if kind == "python" else {},
    )
    if kind == "command" and job.command is None and "command" not in s.seen:
        problems.add(f"{key}.command", "required for a job of kind 'command'")
    if kind == "python" and job.processor is None and "processor" not in s.seen:
        problems.add(f"{key}.processor", "required for a job of kind 'python' (\"module:attr\")")
    if kind in BATCH_KINDS:
        job = _batch_job(job, s, base_dir)
    s.finish()
    return job


def _batch_job(job: JobConfig, s: _Section, base_dir: Path) -> JobConfig:
    from dataclasses import replace

    source = s.convert("input", _input_source)
    if source is None and "input" not in s.seen:
        s.problems.add(f"{s.prefix}.input", 'required: a file or glob, or { command = "..." }')
    return replace(
        job,
        input=source if isinstance(source, str) else None,
        input_command=source["command"] if isinstance(source, dict) else None,
        provider=s.convert("provider", _provider_name, DEFAULT_PROVIDER),
        endpoint=s.convert("endpoint", _string),  # checked against its provider's endpoints
        completion_window=s.convert("completion_window", _string, "24h"),
        metadata=_metadata(s),
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


def _metadata(s: _Section) -> dict[str, str]:
    metadata = s.string_table("metadata")
    for problem in metadata_problems(metadata):
        s.problems.add(f"{s.prefix}.metadata", problem)
    return metadata


def _environment(s: _Section) -> dict[str, str]:
    env = s.string_table("env")
    for name in env:
        try:
            _variable_name(name)
        except ValueError as exc:
            s.problems.add(f"{s.prefix}.env", f"{_toml(name)}: {exc}")
    return env


# Keys of a job's sub-tables that are easily written one level up (``max_attempts = 3`` in the
# job's own table): named with the table they belong in rather than a look-alike key.
_NESTED_KEYS = {"max_attempts": "retries", "backoff": "retries", "max_backoff": "retries"}


def _parse_retries(s: _Section | None) -> RetryPolicy:
    if s is None:
        return RetryPolicy()
    default = RetryPolicy()
    max_attempts = s.integer("max_attempts", default.max_attempts, 1, MAX_ATTEMPTS)
    causes = s.string_list("on", allowed=RETRY_CAUSES)
    policy = RetryPolicy(
        max_attempts=max_attempts,
        backoff=s.convert("backoff", _duration, default.backoff),
        max_backoff=s.convert("max_backoff", _duration, default.max_backoff),
        on=frozenset(causes) if "on" in s.seen else default.on,
    )
    s.finish()
    return policy


def _parse_providers(root: _Section) -> dict[str, ProviderSettings]:
    """``[providers.NAME]`` tables over the built-in profiles, and ``[openai]`` (the table of
    ``openai`` before there were others; naming both is refused)."""
    problems = root.problems
    tables = root.table("providers")
    providers: dict[str, ProviderSettings] = {}
    if "openai" in root.raw:
        if "openai" in tables:
            problems.add("openai", "also given as [providers.openai]; keep one of them")
        else:
            tables = {"openai": root.raw["openai"], **tables}
            root.seen.add("openai")
    for name, value in tables.items():
        key = "openai" if value is root.raw.get("openai") else _dotted("providers", name)
        if not _JOB_NAME.fullmatch(name):
            problems.add(key, "provider names may hold only letters, digits, '.', '_' and '-'")
            continue
        if not isinstance(value, dict):
            problems.add(key, f"expected a table ([{key}]), got {_type_name(value)}")
            continue
        settings = _parse_provider(name, _Section(value, key, problems))
        if settings is not None:
            providers[name] = settings
    return providers


def _parse_provider(name: str, s: _Section) -> ProviderSettings | None:
    from dataclasses import replace

    base = PROFILES.get(name)
    api = s.choice("api", API_SHAPES, required=base is None)
    if base is None:
        if api is None:
            s.finish()
            return None
        # A provider of the user's own: the shape's defaults, and a base URL it must give.
        base = replace(
            PROFILES[api], name=name, base_url=None, requires_base_url=True, published_prices=None
        )
    elif api is not None and api != base.api:
        s.problems.add(f"{s.prefix}.api", f"{name} speaks {base.api!r}; it cannot be changed")
    given: dict[str, Any] = {
        "base_url": s.convert("base_url", _base_url),
        "base_url_env": s.convert("base_url_env", _variable_name),
        "api_key_env": s.convert("api_key_env", _variable_name),
        "api_version": s.convert("api_version", _header_value),
        "organization": s.convert("organization", _header_value),
        "project": s.convert("project", _header_value),
        "timeout": s.convert("timeout", _positive_duration),
        "max_retries": s.convert("max_retries", _bounded(0, MAX_HTTP_RETRIES)),
        "poll_interval": s.convert("poll_interval", _positive_duration),
        "max_requests": s.convert("max_requests", _bounded(1, MAX_BATCH_REQUESTS)),
        "max_bytes": s.convert("max_bytes", _bounded(1, MAX_BATCH_BYTES)),
        "windows": s.convert("windows", _windows),
        "file_purpose": s.convert("file_purpose", _file_purpose),
        "enqueued_token_limit": s.convert("enqueued_token_limit", _bounded(1, 2**62)),
        "quirks": s.convert("quirks", _quirks),
    }
    s.finish()
    return replace(base, **{k: v for k, v in given.items() if v is not None})


def _check_job_providers(
    jobs: Mapping[str, JobConfig], providers: Mapping[str, ProviderSettings], problems: _Problems
) -> None:
    """Each batch job names a provider that exists and a window that provider accepts."""
    for job in jobs.values():
        if job.kind not in BATCH_KINDS:
            continue
        key = _dotted("jobs", job.name)
        settings = providers.get(job.provider) or PROFILES.get(job.provider)
        if settings is None:
            known = ", ".join(sorted({*PROFILES, *providers}))
            problems.add(f"{key}.provider", f"no provider named {_toml(job.provider)} ({known})")
            continue
        if job.completion_window not in settings.windows:
            problems.add(
                f"{key}.completion_window",
                f"{job.provider} accepts {', '.join(settings.windows)};"
                f" got {_toml(job.completion_window)}",
            )
        accepted = accepted_endpoints(settings)
        if job.endpoint is not None and job.endpoint not in accepted:
            problems.add(
                f"{key}.endpoint",
                f"expected one of {', '.join(accepted)}, got {_toml(job.endpoint)}",
            )


def accepted_endpoints(settings: ProviderSettings) -> tuple[str, ...]:
    """The batch endpoints a provider takes, as request lines write them."""
    return ANTHROPIC_ENDPOINTS if settings.api == "anthropic" else endpoints(settings.quirks)


def _provider_name(value: Any) -> str:
    text = _string(value)
    if not _JOB_NAME.fullmatch(text):
        raise ValueError(f'expected a provider name such as "anthropic", got {_toml(text)}')
    return text


def _quirks(value: Any) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ValueError('expected a list of quirk names such as ["custom-id-64"]')
    unknown = unknown_quirks(value)
    if unknown:
        raise ValueError(f"unknown quirk {_toml(unknown[0])} (known: {', '.join(QUIRKS)})")
    return frozenset(value)


def _windows(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise ValueError('expected a list of windows such as ["24h"]')
    for window in value:
        _positive_duration(window)
    return tuple(value)


def _bounded(low: int, high: int) -> Callable[[Any], int]:
    def check(value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"expected an integer, got {_type_name(value)}")
        if not low <= value <= high:
            raise ValueError(f"must be from {low:,} to {high:,}, got {value:,}")
        return value

    return check


def _url(value: Any) -> str:
    return _base_url(value).rstrip("/")


def _base_url(value: Any) -> str:
    text = _string(value)
    host = text.partition("//")[2].strip("/")
    if not text.startswith(("http://", "https://")) or not host or not _is_visible(text):
        raise ValueError(f"expected an http:// or https:// URL, got {_toml(text)}")
    return text


def _header_value(value: Any) -> str:
    """A value sent in an HTTP header: printable, so that it cannot end the header early."""
    text = _string(value)
    if not text.isprintable():
        raise ValueError(f"must hold only printable characters, got {_toml(text)}")
    return text


def _file_purpose(value: Any) -> str:
    """The ``purpose`` form field of an upload: a blank one is refused by every provider."""
    text = _header_value(value)
    if not text.strip():
        raise ValueError('must not be blank (the purpose uploads are sent with, e.g. "batch")')
    return text


def _is_visible(text: str) -> bool:
    return text.isprintable() and not any(c.isspace() for c in text)


def _address(value: Any) -> str:
    text = _string(value)
    _host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f'expected "HOST:PORT" such as "127.0.0.1:9187", got {_toml(text)}')
    return text


def _parse_daemon(s: _Section, base_dir: Path) -> DaemonSettings:
    default = DaemonSettings()
    settings = DaemonSettings(
        max_workers=s.integer("max_workers", default.max_workers, 1, MAX_WORKERS),
        lease=s.convert("lease", _duration, default.lease),
        grace=s.convert("grace", _duration, default.grace),
        poll_interval=s.convert("poll_interval", _duration),
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
                problems.add(
                    f"{_dotted('jobs', job.name)}.after", f"no job named {_toml(upstream)}"
                )
    for job in jobs.values():  # a chain must not lead back to itself
        seen: set[str] = set()
        todo = list(job.after)
        while todo:
            name = todo.pop()
            if name == job.name:
                problems.add(
                    f"{_dotted('jobs', job.name)}.after", "the chain of 'after' jobs is a cycle"
                )
                break
            if name in seen or name not in jobs:
                continue
            seen.add(name)
            todo.extend(jobs[name].after)


def _parse_batches(s: _Section) -> BatchSettings:
    default = BatchSettings()
    settings = BatchSettings(
        max_requests=s.convert("max_requests", _bounded(1, MAX_BATCH_REQUESTS)),
        max_bytes=s.convert("max_bytes", _bounded(1, MAX_BATCH_BYTES)),
        max_request_attempts=s.integer(
            "max_request_attempts", default.max_request_attempts, 1, MAX_ATTEMPTS
        ),
        completion_window=s.convert("completion_window", _string, "24h"),
        on_expired=s.choice("on_expired", ON_EXPIRED) or default.on_expired,
        # the batch price as a fraction of the synchronous one: 1 is no discount
        batch_discount=s.number("batch_discount", default.batch_discount, 0.0, 1.0),
    )
    s.finish()
    return settings


def _parse_prices(raw: Mapping[str, Any], problems: _Problems) -> dict[str, Price]:
    prices: dict[str, Price] = {}
    for model, value in raw.items():
        key = _dotted("prices", model)
        if not isinstance(value, dict):
            problems.add(key, "expected a table like { input = 0.15, output = 0.60 }")
            continue
        s = _Section(value, key, problems)
        price = Price(
            input=s.number("input", 0.0, 0.0, math.inf),
            output=s.number("output", 0.0, 0.0, math.inf),
            cached_input=(
                s.number("cached_input", 0.0, 0.0, math.inf) if "cached_input" in value else None
            ),
        )
        if "input" not in s.seen:
            problems.add(f"{key}.input", "required (US dollars per million input tokens)")
        s.finish()
        prices[model] = price
    return prices


def _check_processors(jobs: Mapping[str, JobConfig], base_dir: Path, problems: _Problems) -> None:
    from batchctl.processing import ProcessorImportError, resolve_processor

    for job in jobs.values():
        if job.processor is None:  # only a job of kind python names one
            continue
        try:
            resolve_processor(job.processor, base_dir)
        except ProcessorImportError as exc:
            problems.add(f"{_dotted('jobs', job.name)}.processor", str(exc))


def _check_directories(jobs: Mapping[str, JobConfig], problems: _Problems) -> None:
    """A job's ``cwd`` must be a directory here: else each of its runs fails at start."""
    for job in jobs.values():
        if job.cwd is not None and not job.cwd.is_dir():
            reason = "is not a directory" if job.cwd.exists() else "no such directory"
            problems.add(f"{_dotted('jobs', job.name)}.cwd", f"{_one_line(str(job.cwd))}: {reason}")


# --- value converters: each raises ValueError with a message for the user ----------------------


def _string(value: Any) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_type_name(value)}")
    return value


def _variable_name(value: Any) -> str:
    """The name of an environment variable: what ``os.environ`` and ``exec`` accept."""
    name = _string(value)
    if not name or "=" in name or "\0" in name:
        raise ValueError("not a valid environment variable name (empty, or holds '=' or NUL)")
    return name


def _duration(value: Any) -> float:
    return parse_duration(value, at_most=MAX_DURATION_S)


def _positive_duration(value: Any) -> float:
    seconds = _duration(value)
    if seconds <= 0:
        raise ValueError(f"must be more than 0 seconds, got {_toml(value)}")
    return seconds


def _check_nul(table: Mapping[str, Any], prefix: str, problems: _Problems) -> None:
    """A NUL character anywhere (TOML allows ``\\u0000``) would fail later, in an environment,
    a path, an argument or a PostgreSQL text column: refuse it here, naming the key."""
    for name, value in table.items():
        key = _dotted(prefix, name)
        if "\0" in name:
            problems.add(key, "a key must not hold a NUL character (\\u0000)")
        elif isinstance(value, dict):
            _check_nul(value, key, problems)
        elif _holds_nul(value):
            problems.add(key, "must not hold a NUL character (\\u0000)")


def _holds_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\0" in value
    if isinstance(value, list):
        return any(_holds_nul(v) for v in value)
    if isinstance(value, dict):
        return any("\0" in k or _holds_nul(v) for k, v in value.items())
    return False


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
            f'unknown time zone {_toml(name)} (expected an IANA name like "Europe/Berlin")'
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


def _toml(value: Any) -> str:
    """``value`` as TOML spells it, for a message: true, 3, 0.5, inf, "text", ["a", "b"]."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return quoted(value)
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, int | float):
        text = repr(value)
        return text if len(text) <= 40 else text[:20] + "..."
    if isinstance(value, list):
        return (
            "[" + ", ".join(_toml(v) for v in value[:10]) + (", ...]" if len(value) > 10 else "]")
        )
    if isinstance(value, dict):
        pairs = [f"{_dotted('', k)} = {_toml(v)}" for k, v in list(value.items())[:10]]
        return "{ " + ", ".join(pairs) + (", ... }" if len(value) > 10 else " }")
    return str(value.isoformat()) if hasattr(value, "isoformat") else _one_line(repr(value))


def _dotted(prefix: str, name: str) -> str:
    """The TOML path of key ``name`` in the table at ``prefix``, quoted where TOML needs it."""
    part = name if _BARE_KEY.fullmatch(name) else quoted(name)
    return f"{prefix}.{part}" if prefix else part


def _one_line(text: str) -> str:
    """``text`` with any character that could break the line or drive the terminal escaped (the
    last guard: user text is quoted where it is put into a message)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else quoted(c)[1:-1] for c in text)


# --- the reader that walks a table and records problems ---------------------------------------


class _Problems:
    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.lines: list[str] = []

    def add(self, key: str, message: str) -> None:
        where = f"{self.path}: " if self.path else ""
        self.lines.append(_one_line(f"{where}{key}: {message}"))

    def raise_if_any(self) -> None:
        if self.lines:
            count = len(self.lines)
            noun = "problem" if count == 1 else "problems"
            where = _one_line(str(self.path or "config"))
            raise ConfigError(f"{where}: {count} {noun}", self.lines)


class _Section:
    """One TOML table being read: every key taken is checked, and what is left is unknown."""

    def __init__(self, raw: Mapping[str, Any], prefix: str, problems: _Problems) -> None:
        self.raw = raw
        self.prefix = prefix
        self.problems = problems
        self.seen: set[str] = set()
        self.asked: set[str] = set()  # every key looked for, to suggest one for a misspelling

    def _key(self, name: str) -> str:
        return _dotted(self.prefix, name)

    def convert(self, name: str, converter: Callable[[Any], T], default: Any = None) -> Any:
        self.asked.add(name)
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

    def integer(self, name: str, default: int, low: int, high: int) -> int:
        """An integer from ``low`` to ``high``; a number written with a fraction or an exponent
        (``1e21``) is refused, not rounded."""

        def check(value: Any) -> int:
            if isinstance(value, bool) or not isinstance(value, int):
                raise ValueError(f"expected an integer, got {_type_name(value)} ({_toml(value)})")
            if not low <= value <= high:
                raise ValueError(f"must be from {low:,} to {high:,}, got {_toml(value)}")
            return value

        found: int = self.convert(name, check, default)
        return found

    def number(self, name: str, default: float, low: float, high: float) -> float:
        """A finite number (integer or float) from ``low`` to ``high``."""

        def check(value: Any) -> float:
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ValueError(f"expected a number, got {_type_name(value)}")
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"expected a finite number, got {_toml(value)}")
            if value < low:
                raise ValueError(f"must be {low:g} or more, got {_toml(value)}")
            if value > high:
                raise ValueError(f"must be {high:g} or less, got {_toml(value)}")
            return float(value)

        found: float = self.convert(name, check, default)
        return found

    def choice(self, name: str, allowed: tuple[str, ...], *, required: bool = False) -> str | None:
        self.asked.add(name)
        if required and name not in self.raw:
            self.problems.add(self._key(name), f"required (one of {', '.join(allowed)})")
            return None

        def check(value: Any) -> str:
            if value not in allowed:
                raise ValueError(f"expected one of {', '.join(allowed)}, got {_toml(value)}")
            return str(value)

        chosen: str | None = self.convert(name, check)
        return chosen

    def string_list(
        self, name: str, *, unique: bool = False, allowed: tuple[str, ...] = ()
    ) -> list[str]:
        def check(value: Any) -> list[str]:
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ValueError(f"expected a list of non-empty strings, got {_toml(value)}")
            hidden = [v for v in value if not v.isprintable()]
            if hidden:  # names shown in tables and logs must not drive the terminal
                raise ValueError(f"must hold only printable characters, got {_toml(hidden[0])}")
            repeated = [v for i, v in enumerate(value) if v in value[:i]]
            if unique and repeated:
                raise ValueError(f"must not repeat a value: {_toml(repeated[0])}")
            bad = [v for v in value if allowed and v not in allowed]
            if bad:
                raise ValueError(
                    f"unknown value(s) {_toml(bad)}; expected some of {', '.join(allowed)}"
                )
            return list(value)

        return self.convert(name, check, []) or []

    def string_table(self, name: str) -> dict[str, str]:
        def check(value: Any) -> dict[str, str]:
            if not isinstance(value, dict):
                raise ValueError(f"expected a table of strings, got {_type_name(value)}")
            bad = [_dotted("", k) for k, v in value.items() if not isinstance(v, str)]
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
        self.asked.add(name)
        if name not in self.raw:
            return None
        return _Section(self.table(name), self._key(name), self.problems)

    def finish(self) -> None:
        for name in self.raw:
            if name not in self.seen:
                nested = _NESTED_KEYS.get(name)
                close = difflib.get_close_matches(name, sorted(self.asked), n=1)
                if nested is not None and nested in self.asked:
                    hint = f"; it belongs in {nested}: {nested} = {{ {name} = ... }}"
                else:
                    hint = f"; did you mean {close[0]}?" if close else ""
                self.problems.add(self._key(name), f"unknown key{hint}")
