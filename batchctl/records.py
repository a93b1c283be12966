"""The typed values that pass between the core and the store: runs, attempts, logs, transitions.

Rows from SQL become these records in the store, in one place; the core and the CLI never see
raw rows. Times are timezone-aware UTC datetimes.

They are ``NamedTuple``s rather than dataclasses: as typed and as immutable, and the classes cost
a tenth as much to create, which matters because every command (``status`` included) imports
this module at start-up.
"""

# No ``from __future__ import annotations`` here: NamedTuple would then turn every field's
# annotation into a ForwardRef and compile it, which costs ~15 ms at every start-up.
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple

# --- status vocabularies: defined once, their values the strings the store keeps ---------------


class RunStatus(StrEnum):
    """A run's status; an attempt's status is one of these too."""

    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    PARTIAL = "partial"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"
    ABANDONED = "abandoned"

    @property
    def terminal(self) -> bool:
        return self not in ACTIVE_RUN_STATUSES


# A run not yet ended: what cancel, abandon and the concurrency policies look for (a tuple, as
# the store's ``only_if`` takes a sequence).
ACTIVE_RUN_STATUSES = (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.RETRYING)
ACTIVE_STATUSES: tuple[str, ...] = tuple(sorted(s.value for s in ACTIVE_RUN_STATUSES))


class PartStatus(StrEnum):
    """A part's status: planned and uploaded locally, then the remote batch's (OpenAI's names,
    onto which a provider maps its own)."""

    PLANNED = "planned"
    UPLOADED = "uploaded"
    VALIDATING = "validating"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    CANCELLING = "cancelling"
    COMPLETED = "completed"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        return self in TERMINAL_PART_STATUSES


# A remote batch that has ended, and one still going on at the provider.
TERMINAL_PART_STATUSES = frozenset(
    {PartStatus.COMPLETED, PartStatus.FAILED, PartStatus.EXPIRED, PartStatus.CANCELLED}
)
ACTIVE_PART_STATUSES = frozenset(
    {PartStatus.VALIDATING, PartStatus.IN_PROGRESS, PartStatus.FINALIZING, PartStatus.CANCELLING}
)


class RequestOutcome(StrEnum):
    """What became of one request of a batch submission."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    EXPIRED = "expired"
    CANCELLED = "cancelled"
    MISSING = "missing"


class TickStatus(StrEnum):
    """A scheduled time of a job: waiting to fire, fired, or closed without a run."""

    PENDING = "pending"
    FIRED = "fired"
    SKIPPED = "skipped"
    MISSED = "missed"


class LogLevel(StrEnum):
    DEBUG = "debug"
    INFO = "info"
    WARNING = "warning"
    ERROR = "error"

    @property
    def rank(self) -> int:
        return _LEVEL_RANK[self]

    @classmethod
    def parse(cls, value: str) -> "LogLevel":
        text = value.strip().lower()
        return cls("warning" if text == "warn" else text)


_LEVEL_RANK = {LogLevel.DEBUG: 10, LogLevel.INFO: 20, LogLevel.WARNING: 30, LogLevel.ERROR: 40}


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_iso(moment: datetime | None) -> str | None:
    """The one text form of a time, in the database and in --json: ISO 8601, UTC, microseconds."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="microseconds")


def from_iso(text: str | None) -> datetime | None:
    if text is None:
        return None
    return datetime.fromisoformat(text)


class Owner(NamedTuple):
    """The process that holds a run or a lock."""

    host: str
    pid: int


class Run(NamedTuple):
    id: int
    job: str
    scope: str | None
    status: RunStatus
    trigger: str
    attempts: int
    max_attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    items_processed: int
    items_failed: int
    total_tokens: int
    total_cost: float
    progress_done: int | None
    progress_total: int | None
    error: str | None
    reason: str | None
    owner: Owner | None
    lease_until: datetime | None
    cancel_requested: bool
    retry_of: int | None
    scheduled_for: datetime | None
    # Models with tokens but no price: total_cost then counts only the priced ones.
    unpriced_models: tuple[str, ...] = ()

    @property
    def duration(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or utcnow()
        return (end - self.started_at).total_seconds()

    def to_json(self) -> dict[str, Any]:
        """The stable ``--json`` shape of a run (documented in the README)."""
        return {
            "id": self.id,
            "job": self.job,
            "scope": self.scope,
            "status": self.status.value,
            "trigger": self.trigger,
            "attempts": self.attempts,
            "max_attempts": self.max_attempts,
            "created_at": to_iso(self.created_at),
            "started_at": to_iso(self.started_at),
            "finished_at": to_iso(self.finished_at),
            "duration": None if self.duration is None else round(self.duration, 6),
            "items_processed": self.items_processed,
            "items_failed": self.items_failed,
            "total_tokens": self.total_tokens,
            "total_cost": None if self.unpriced_models else self.total_cost,
            "unpriced_models": list(self.unpriced_models),
            "progress": {"done": self.progress_done, "total": self.progress_total},
            "error": self.error,
            "reason": self.reason,
            "retry_of": self.retry_of,
            "scheduled_for": to_iso(self.scheduled_for),
        }


class Attempt(NamedTuple):
    run_id: int
    number: int
    status: RunStatus
    started_at: datetime
    finished_at: datetime | None
    error: str | None
    exit_code: int | None

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "status": self.status.value,
            "started_at": to_iso(self.started_at),
            "finished_at": to_iso(self.finished_at),
            "error": self.error,
            "exit_code": self.exit_code,
        }


class Transition(NamedTuple):
    run_id: int
    from_status: RunStatus | None
    to_status: RunStatus
    at: datetime
    reason: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "from": None if self.from_status is None else self.from_status.value,
            "to": self.to_status.value,
            "at": to_iso(self.at),
            "reason": self.reason,
        }


class LogEntry(NamedTuple):
    run_id: int
    attempt: int
    at: datetime
    level: LogLevel
    message: str
    stream: str = "engine"
    fields: dict[str, Any] = {}  # noqa: RUF012 (never mutated: a NamedTuple's shared default)
    id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "run_id": self.run_id,
            "attempt": self.attempt,
            "time": to_iso(self.at),
            "level": self.level.value,
            "stream": self.stream,
            "message": self.message,
            "fields": self.fields,
        }


class RunOutcome(NamedTuple):
    """How an attempt ended, as the engine records it on the run."""

    status: RunStatus
    items_processed: int = 0
    items_failed: int = 0
    total_tokens: int = 0
    total_cost: float = 0.0
    error: str | None = None
    exit_code: int | None = None
    errors: tuple[str, ...] = ()
    # Why the attempt did not complete, for the retry policy: error, timeout, partial, cancelled.
    cause: str | None = None


class RunFilter(NamedTuple):
    """Which runs ``status`` lists."""

    job: str | None = None
    status: tuple[str, ...] = ()
    since: datetime | None = None
    limit: int | None = None


class LockHolder(NamedTuple):
    """Who holds a (job, scope) lock, and until when their lease runs."""

    key: str
    run_id: int
    owner: Owner
    lease_until: datetime


# --- OpenAI batch submissions -----------------------------------------------------------------

REQUEST_OUTCOMES: tuple[RequestOutcome, ...] = tuple(RequestOutcome)


class ModelTokens(NamedTuple):
    """The tokens of a submission's requests to one model, summed: what a price applies to."""

    model: str
    input_tokens: int
    output_tokens: int
    cached_tokens: int = 0  # of input_tokens
    reasoning_tokens: int = 0  # of output_tokens
    cache_write_tokens: int = 0  # of input_tokens
    cache_write_1h_tokens: int = 0  # of cache_write_tokens


class RequestTotals(NamedTuple):
    """A submission's requests summed in one pass over them."""

    counts: dict[str, int]  # by outcome ("pending" for none yet), with the token totals
    tokens: list[ModelTokens]  # by model, in the models' order
    failures: list[tuple[str | None, int | None, int]]  # failed: (error_code, status_code, count)


class Submission(NamedTuple):
    """A run's batch submission: what was sent, where its files live, how it is driven."""

    run_id: int
    provider: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str]
    input_sha256: str
    inputs: list[str]
    directory: str
    token: str
    requests: int
    bytes: int
    on_expired: str
    max_request_attempts: int
    merged_at: datetime | None
    results_path: str | None


class Part(NamedTuple):
    """One remote batch of a submission (a retry or resubmission adds parts in later rounds)."""

    id: int
    run_id: int
    number: int
    round: int
    model: str
    requests: int
    bytes: int
    path: str
    filename: str
    status: str
    upload_started_at: datetime | None
    input_file_id: str | None
    create_started_at: datetime | None
    batch_id: str | None
    output_file_id: str | None
    error_file_id: str | None
    request_counts: dict[str, int]
    usage: dict[str, Any] | None
    errors: list[dict[str, Any]]
    remote_created_at: int | None
    expires_at: int | None
    downloaded_at: datetime | None
    remote_ended_at: int | None  # when the batch ended, on the API's clock (Unix seconds)
    # Held back for the provider's enqueued-token limit (batches/quota.py): since its first
    # refusal; from when a batch of its model that ends makes room for it (its latest refusal,
    # or when the refused batch was sent); when it is tried next; why; how many refusals.
    held_since: datetime | None = None
    held_at: datetime | None = None
    held_until: datetime | None = None
    hold_reason: str | None = None
    hold_tries: int = 0

    @property
    def waiting_for_quota(self) -> bool:
        """Held back until the model's enqueued tokens leave room for it (no batch now)."""
        return (
            self.held_until is not None
            and self.batch_id is None
            and self.status not in TERMINAL_PART_STATUSES
        )

    @property
    def shown_status(self) -> str:
        """The status shown to users: the remote batch's, or ``waiting_for_quota``."""
        return "waiting_for_quota" if self.waiting_for_quota else self.status

    def to_json(self) -> dict[str, Any]:
        return {
            "number": self.number,
            "round": self.round,
            "batch_id": self.batch_id,
            "status": self.shown_status,
            "waiting_for_quota": None
            if not self.waiting_for_quota
            else {
                "since": to_iso(self.held_since),
                "next_try": to_iso(self.held_until),
                "reason": self.hold_reason,
                "tries": self.hold_tries,
            },
            "model": self.model,
            "requests": self.requests,
            "bytes": self.bytes,
            "request_counts": self.request_counts,
            "input_file_id": self.input_file_id,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.remote_created_at,
            "expires_at": self.expires_at,
            "ended_at": self.remote_ended_at,
            "errors": self.errors,
        }


class PartPlanRow(NamedTuple):
    """A part to record before anything is uploaded."""

    number: int
    round: int
    model: str
    requests: int
    bytes: int
    path: str
    filename: str


class RequestRow(NamedTuple):
    """A request to record: where its line is in its part's local file."""

    custom_id: str
    ordinal: int
    part_number: int
    line_offset: int
    line_length: int


#: A request to record as a plain tuple, in ``RequestRow``'s order of fields: what a part
#: writer gives for each request (50,000 a batch) without building a ``RequestRow``.
RequestFields = tuple[str, int, int, int, int]


class RequestResult(NamedTuple):
    """One request's outcome, as read from a part's output or error file."""

    custom_id: str
    outcome: str
    status_code: int | None
    error_code: str | None
    error_message: str | None
    input_tokens: int
    output_tokens: int
    kind: str  # "output" or "error": which downloaded file holds the line
    offset: int
    length: int
    cached_tokens: int = 0  # of input_tokens, read from the prompt cache
    reasoning_tokens: int = 0  # of output_tokens, spent reasoning
    cache_write_tokens: int = 0  # of input_tokens, written to the prompt cache
    cache_write_1h_tokens: int = 0  # of cache_write_tokens, kept for an hour (priced higher)
    # The request's ordinal when the line names it by a derived id (``derived_ids``) rather
    # than by the user's custom_id: the request is then found by its place in the input.
    ordinal: int | None = None


class RequestState(NamedTuple):
    """A recorded request: what came back for it and where, its order, where it was sent.

    Its first fields (to ``ordinal``) are all that a merge reads of a request whose line it
    copies as it is (``merge_rows`` gives only them for such a request)."""

    custom_id: str
    outcome: str | None
    result_part_id: int | None
    result_kind: str | None
    result_offset: int | None
    result_length: int | None
    ordinal: int
    part_id: int
    line_offset: int
    line_length: int
    attempts: int
    status_code: int | None
    error_code: str | None
    error_message: str | None
    input_tokens: int
    output_tokens: int


# --- schedules and the daemon -----------------------------------------------------------------

TICK_STATUSES: tuple[TickStatus, ...] = tuple(TickStatus)


class Tick(NamedTuple):
    """One scheduled time of a job (and scope): fired once, or recorded skipped or missed."""

    id: int
    job: str
    scope: str | None
    scheduled_for: datetime
    status: str
    reason: str | None
    run_id: int | None
    priority: int

    def to_json(self) -> dict[str, Any]:
        return {
            "job": self.job,
            "scope": self.scope,
            "scheduled_for": to_iso(self.scheduled_for),
            "status": self.status,
            "reason": self.reason,
            "run_id": self.run_id,
        }


class DaemonInfo(NamedTuple):
    instance: str
    host: str
    pid: int
    mode: str  # "daemon" or "once"
    started_at: datetime
    heartbeat_at: datetime
    last_pass_at: datetime | None
    stopped_at: datetime | None


# --- maintenance: metrics, health, prune -------------------------------------------------------


class RunStats(NamedTuple):
    """The runs of one job with one status, summed (one row of ``run_stats``)."""

    job: str
    status: str
    runs: int
    total_tokens: int
    total_cost: float
    duration_sum: float  # seconds, over the runs that started and finished
    duration_count: int
    last_finished_at: datetime | None
    unpriced_runs: int = 0  # runs whose cost leaves out a model without a price


class SchedulePosition(NamedTuple):
    """How far the scheduler got for one (job, scope): its cursor and its newest tick."""

    cursor: datetime
    last_tick_at: datetime | None


class PrunableRun(NamedTuple):
    """A run ``prune`` may delete: its log line count and its submission's file directory."""

    id: int
    log_lines: int
    directory: str | None  # a batch submission's directory of part files, downloads, results
