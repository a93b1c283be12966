"""Submissions: record, send, refresh, download, resubmit and settle — crash-safe at every line.

The rule everywhere: write the intent to the store before a call that spends or creates
something remote, write the answer the moment it arrives, and before repeating a call whose
answer may have been lost, look for what it created. ``advance`` does everything that can be done
for a submission now and is safe to call again at any time, from any process: ``submit --wait``,
``wait``, ``status`` and the daemon all drive submissions through it, one process at a time per
submission (a lease in the store).
"""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple

from batchctl.batches import files as local
from batchctl.batches import inline, quota
from batchctl.batches.anthropic_input import is_message_batches
from batchctl.batches.failures import FailureSplit, resendable, split
from batchctl.batches.listing import listed, to_refresh
from batchctl.batches.metadata import PART_KEY, RUN_KEY
from batchctl.batches.polling import Backoff, parts_state
from batchctl.batches.pricing import Cost, cost_basis, cost_of
from batchctl.batches.results import (
    RESENDABLE,
    MergedChanged,
    MergedWriter,
    copy_merged,
    merged_copy_source,
    read_results,
)
from batchctl.batches.validation import Plan, scan
from batchctl.batches.vendors import line_rules
from batchctl.config import Config
from batchctl.errors import (
    BatchctlError,
    ExitCode,
    NotFoundError,
    StoreWriteError,
    UsageError,
)
from batchctl.locations import make_private_dirs
from batchctl.outputs import open_output, written_whole
from batchctl.owners import is_dead, this_process
from batchctl.providers import Providers
from batchctl.providers.base import retry_notices
from batchctl.providers.profiles import DEFAULT_PROVIDER
from batchctl.records import (
    TERMINAL_PART_STATUSES,
    LogEntry,
    LogLevel,
    ModelTokens,
    Owner,
    Part,
    PartPlanRow,
    RequestState,
    Run,
    RunStatus,
    Submission,
    utcnow,
)

if TYPE_CHECKING:
    from batchctl.providers.base import Provider, RemoteBatch
    from batchctl.store.base import Store

LEASE_S = 120.0
LEASE_POLL_S = 0.2  # how often a retry looks whether the submission's lease is free
INTENT_SETTLE_S = 10.0  # how long a dead process's last upload or create may take to land
FIND_SLACK_S = 600  # look back this far (seconds) for what a lost call may have created
TERMINAL = TERMINAL_PART_STATUSES
LOG_STREAM = "batch"  # the stream of a submission's story in its run's log
_END_LEVEL = {"failed": LogLevel.ERROR, "expired": LogLevel.WARNING, "cancelled": LogLevel.WARNING}
_SETTLE = {  # what a request without a result line becomes when its part ends
    "completed": ("missing", "missing", "the batch finished without a result for this request"),
    "expired": ("expired", "batch_expired", "the completion window ended before it ran"),
    "cancelled": ("cancelled", "batch_cancelled", "the batch was cancelled before it ran"),
    "failed": ("failed", "batch_failed", "the batch failed validation"),
}


class InputError(UsageError):
    """The input files have problems; nothing was recorded or uploaded."""

    def __init__(self, plan: Plan) -> None:
        shown = [str(p) for p in plan.problems]
        more = plan.problem_count - len(shown)
        if more > 0:
            shown.append(f"... and {more} more problem(s)")
        super().__init__(
            f"{plan.problem_count} problem(s) in the input; nothing was submitted",
            hint="fix the lines named above and submit again",
        )
        self.problems = shown


@dataclass(frozen=True)
class SubmitOptions:
    endpoint: str | None = None
    completion_window: str = "24h"
    metadata: dict[str, str] | None = None
    max_requests: int = 50_000
    max_bytes: int = 200_000_000
    provider: str = DEFAULT_PROVIDER
    on_expired: str = "keep"
    force: bool = False


class ResultSummary(NamedTuple):
    run: Run
    path: Path
    errors_path: Path | None
    counts: dict[str, int]
    input_tokens: int
    output_tokens: int
    cost_batch: float  # of the priced models only, when some are unpriced
    cost_synchronous: float
    unpriced_models: tuple[str, ...]
    cached_tokens: int = 0  # of input_tokens
    reasoning_tokens: int = 0  # of output_tokens
    cache_write_tokens: int = 0  # of input_tokens
    failures: FailureSplit = FailureSplit()  # the failed requests, retryable or invalid

    @property
    def exit_code(self) -> ExitCode:
        if self.run.status is RunStatus.FAILED:
            return ExitCode.FAILED
        total = sum(v for k, v in self.counts.items() if k not in ("input_tokens", "output_tokens"))
        return ExitCode.OK if self.counts.get("succeeded", 0) == total else ExitCode.PARTIAL

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.run.id,
            "status": self.run.status.value,
            "output": str(self.path),
            "errors_output": None if self.errors_path is None else str(self.errors_path),
            "requests": {k: v for k, v in self.counts.items() if not k.endswith("_tokens")},
            "failures": self.failures.to_json(),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cached_tokens": self.cached_tokens,
            "reasoning_tokens": self.reasoning_tokens,
            "cache_write_tokens": self.cache_write_tokens,
            "cost": self._money(self.cost_batch),
            "synchronous_cost": self._money(self.cost_synchronous),
            "saving": self._money(self.cost_synchronous - self.cost_batch),
            "unpriced_models": list(self.unpriced_models),
        }

    def _money(self, amount: float) -> float | None:
        """A sum in dollars for --json (to a billionth: a small batch costs millionths);
        null when some model's tokens have no price."""
        return None if self.unpriced_models else round(amount, 9)


ProgressCallback = Callable[[Run, list[Part]], None]


class Batches:
    """Submissions of one store, each driven against its own provider (``Submission.provider``,
    opened on first network use). ``provider`` (tests) serves every submission;
    ``provider_factory`` opens one by name (the daemon's, shared by its workers)."""

    def __init__(
        self,
        store: Store,
        config: Config,
        *,
        provider: Provider | None = None,
        provider_factory: Callable[[str], Provider] | None = None,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.config = config
        self._provider = provider
        self._providers = Providers(config.provider) if provider_factory is None else None
        self._provider_factory = provider_factory
        self.clock = clock
        self.sleep = sleep
        self.owner = this_process()
        self._created: list[str] = []  # batches created by the current drive (for errors)
        # Downloads whose checksum this object wrote or checked, with their file's stamp then:
        # the merge right after a download need not read it all again to check it.
        self._checked: dict[Path, tuple[int, int, int, int] | None] = {}

    def provider_for(self, name: str) -> Provider:
        """The provider named ``name`` (a submission's), opened on first use."""
        if self._provider is not None:
            return self._provider
        if self._provider_factory is not None:
            return self._provider_factory(name)
        assert self._providers is not None
        return self._providers.get(name)

    def close(self) -> None:
        if self._providers is not None:
            self._providers.close()

    def _preflight(self, name: str) -> None:
        """Check what can be checked before anything is recorded (the key, the URL)."""
        settings = self.config.provider(name)  # an unknown name is refused here
        if self._provider is None and self._provider_factory is None:
            from batchctl.providers import check_settings

            check_settings(settings)

    # --- submit ---------------------------------------------------------------------------------
    def plan(self, paths: Sequence[Path], options: SubmitOptions) -> Plan:
        """Validate and split without writing anything (``submit --dry-run``)."""
        plan = scan(
            paths,
            endpoint=options.endpoint,
            max_requests=options.max_requests,
            max_bytes=options.max_bytes,
            bound_output=True,
            rules=line_rules(self.config.provider(options.provider).quirks),
            api=self.config.provider(options.provider).api,
        )
        if plan.problems:
            raise InputError(plan)
        return plan

    def submit(
        self,
        paths: Sequence[Path],
        options: SubmitOptions,
        *,
        job: str = "submit",
        scope: str | None = None,
        trigger: str = "submit",
        scheduled_for: datetime | None = None,
    ) -> int:
        """Validate, record everything, then send every part. Returns the run id.

        What can be checked is checked before anything is recorded (the API key and URL, the
        input). Nothing touches the network until the submission, its parts and every request
        are recorded; a crash after that is picked up by the next ``advance`` that may send
        (``wait``, the daemon). An error that stops it before any batch was created records the
        run ``failed``: nothing was spent, and the same input may be submitted again.
        """
        self._preflight(options.provider)
        token = local.new_token()
        directory = local.files_root(self.store.location) / token
        writer = local.PartWriter(directory)
        try:
            plan = scan(
                paths,
                endpoint=options.endpoint,
                max_requests=options.max_requests,
                max_bytes=options.max_bytes,
                sink=writer,
                rules=line_rules(self.config.provider(options.provider).quirks),
                api=self.config.provider(options.provider).api,
            )
        except BaseException:
            writer.discard()
            raise
        if plan.problems:
            writer.discard()
            raise InputError(plan)
        writer.close()
        existing = self.store.submission_for_input(plan.sha256)
        if existing is not None and not options.force:
            writer.discard()
            raise DuplicateInput(existing)
        assert plan.endpoint is not None
        submission = Submission(
            run_id=0,
            provider=options.provider,
            endpoint=plan.endpoint,
            completion_window=options.completion_window,
            metadata=dict(options.metadata or {}),
            input_sha256=plan.sha256,
            inputs=[str(p) for p in paths],
            directory=str(directory),
            token=token,
            requests=plan.requests,
            bytes=plan.bytes,
            on_expired=options.on_expired,
            max_request_attempts=self.config.batches.max_request_attempts,
            merged_at=None,
            results_path=None,
        )
        parts = [
            PartPlanRow(
                p.number,
                1,
                p.model,
                p.requests,
                p.bytes,
                str(local.part_path(directory, p.number)),
                local.part_filename(token, p.number),
            )
            for p in plan.parts
        ]
        try:
            run_id = self.store.record_submission(
                job=job,
                scope=scope,
                trigger=trigger,
                now=self.clock(),
                submission=submission,
                parts=parts,
                requests=writer.requests(),
                scheduled_for=scheduled_for,
            )
        except BaseException:
            writer.discard()  # rolled back: nothing refers to the part files (kill -9: prune)
            raise
        self._log(
            run_id,
            f"validated {plan.requests:,} request(s), {plan.bytes:,} bytes, from "
            f"{_names(submission.inputs)}: {len(parts)} part(s) to send",
            endpoint=plan.endpoint,
            sha256=plan.sha256,
        )
        self.advance(run_id, fail_unsent=True)
        return run_id

    def adopt(self, batch_id: str, provider_name: str = DEFAULT_PROVIDER) -> int:
        """Track a batch that batchctl did not create, as a new submission. Returns its run id.

        Its input file is downloaded to learn its requests, so results merge in input order.
        """
        provider = self.provider_for(provider_name)
        if not provider.uploads:
            raise UsageError(
                f"cannot adopt {batch_id}: {provider_name}'s batches keep no input file,"
                " so batchctl cannot learn their requests to merge results in input order",
                hint="read its results with the provider's own tools; batchctl adopts only"
                " batches made from an uploaded file",
            )
        tracked = self.store.runs_for_batches([batch_id])
        if batch_id in tracked:
            raise UsageError(f"batch {batch_id} is already tracked as run {tracked[batch_id]}")
        batch = self._remote_batch(provider, batch_id)
        token = local.new_token()
        directory = local.files_root(self.store.location) / token
        make_private_dirs(directory)
        downloaded = directory / "input.jsonl"
        provider.download(batch.input_file_id, downloaded)
        writer = local.PartWriter(directory)
        plan = scan(
            [downloaded],
            endpoint=batch.endpoint,
            max_requests=10**9,
            max_bytes=10**12,
            sink=writer,
            rules=line_rules(self.config.provider(provider_name).quirks),
        )
        downloaded.unlink()
        if plan.problems or len(plan.parts) != 1:
            writer.discard()
            if plan.problems:
                raise InputError(plan)
            raise UsageError(f"batch {batch_id}'s input uses several models; cannot adopt it")
        writer.close()
        part = plan.parts[0]
        submission = Submission(
            run_id=0,
            provider=provider_name,
            endpoint=batch.endpoint,
            completion_window="24h",
            metadata=dict(batch.metadata),
            input_sha256=plan.sha256,
            inputs=[f"{batch.input_file_id} (adopted {batch_id})"],
            directory=str(directory),
            token=token,
            requests=plan.requests,
            bytes=plan.bytes,
            on_expired="keep",
            max_request_attempts=self.config.batches.max_request_attempts,
            merged_at=None,
            results_path=None,
        )
        row = PartPlanRow(
            1,
            1,
            part.model,
            part.requests,
            part.bytes,
            str(local.part_path(directory, 1)),
            local.part_filename(token, 1),
        )
        run_id = self.store.record_submission(
            job="adopt",
            scope=None,
            trigger="adopt",
            now=self.clock(),
            submission=submission,
            parts=[row],
            requests=writer.requests(),
        )
        (recorded,) = self.store.parts(run_id)
        self.store.update_part(recorded.id, input_file_id=batch.input_file_id)
        self._record_remote(recorded, batch)
        self._log(
            run_id,
            f"adopted batch {batch_id} ({batch.status}): {plan.requests:,} request(s)",
            part=1,
            batch=batch_id,
        )
        self.advance(run_id)
        return run_id

    # --- drive ----------------------------------------------------------------------------------
    def advance(
        self,
        run_id: int,
        *,
        refresh: bool = True,
        send: bool = True,
        fail_unsent: bool = False,
        known: Mapping[str, RemoteBatch] | None = None,
    ) -> bool:
        """Do all that can be done for the submission now; True when it is settled.

        ``send=False`` (``status``, ``results``) never uploads nor creates: parts that have a
        batch are refreshed and downloaded, and the submission settles only when nothing is
        left to send. ``fail_unsent`` (``submit``): an error before any batch was created
        records the run ``failed`` with its reason, so that no later command spends for it.
        ``known``: the batches as the list pages just showed them, by id (``batches.refresh``
        lists once for many submissions); a part not among them is fetched on its own. Without
        it, a submission with many parts in flight lists the pages itself (``listing``).
        """
        submission = self._submission(run_id)
        if submission.merged_at is not None:
            return True
        driving = _driving(run_id)
        if not driving.acquire(blocking=False):
            return False  # another thread of this process is driving it (the lease names us)
        try:
            if self._take_lease(run_id) is not None:
                return False  # another process is driving it right now
            try:
                return self._drive(
                    run_id, refresh=refresh, send=send, fail_unsent=fail_unsent, known=known
                )
            finally:
                with suppress(StoreWriteError):  # else it runs out, or its dead holder is seen
                    self.store.release_submission_lease(run_id, self.owner)
        finally:
            driving.release()

    def _drive(
        self,
        run_id: int,
        *,
        refresh: bool,
        send: bool,
        fail_unsent: bool,
        known: Mapping[str, RemoteBatch] | None = None,
    ) -> bool:
        """``advance`` under the lease, saying what an error that stops it leaves."""
        try:
            return self._advance_leased(run_id, refresh=refresh, send=send, known=known)
        except (BatchctlError, OSError) as exc:
            stopped = self._stopped(run_id, exc, fail_unsent=fail_unsent)
            if stopped is exc:
                raise
            raise stopped from exc
        except KeyboardInterrupt as exc:  # Ctrl-C (or a second signal) while sending
            if not fail_unsent:
                raise
            raise self._interrupted(run_id) from exc

    def _interrupted(self, run_id: int) -> BatchctlError:
        """``submit`` interrupted while it sent the parts, still under the lease: a run that
        created no batch is recorded ``cancelled`` (nothing to follow, nothing spent, and its
        input is no duplicate); else what was sent goes on, and the error says how to send the
        rest or cancel it."""
        reason = "interrupted before anything was sent"
        recorded = False
        with suppress(StoreWriteError):
            recorded = self.store.fail_unsent_submission(
                run_id, reason, self.clock(), RunStatus.CANCELLED
            )
        error: BatchctlError
        if recorded:
            error = BatchctlError(
                f"{reason} (run {run_id} recorded cancelled)",
                hint="nothing was spent; submit the input again to send it",
            )
        else:
            fallback = BatchctlError(f"interrupted; run {run_id} goes on", hint=follow_up(run_id))
            partly = self._partly_sent(run_id, fallback, "interrupted")
            error = partly if isinstance(partly, BatchctlError) else fallback
        with suppress(Exception):  # never hide the interruption behind a log failure
            self._log(run_id, error.message, LogLevel.WARNING)
        error.exit_code = ExitCode.CANCELLED
        return error

    def _take_lease(self, run_id: int) -> Owner | None:
        """Become the process driving the submission; else return who is."""
        now = self.clock()
        until = now + timedelta(seconds=LEASE_S)
        holder = self.store.take_submission_lease(run_id, self.owner, until, now)
        if holder is not None and is_dead(holder):
            # Its driver died (kill -9): take over now rather than wait for the lease to run out.
            self.store.release_submission_lease(run_id, holder)
            holder = self.store.take_submission_lease(run_id, self.owner, until, now)
        return holder

    def _advance_leased(
        self,
        run_id: int,
        *,
        refresh: bool,
        send: bool,
        known: Mapping[str, RemoteBatch] | None = None,
    ) -> bool:
        self._created = []
        # Read again under the lease: another process may have settled it meanwhile.
        submission = self._submission(run_id)
        if submission.merged_at is not None:
            return True
        parts = self.store.parts(run_id)
        self._refuse_if_never_sent(run_id, parts)
        with (
            self._logging_errors(run_id),
            retry_notices(lambda text: self._log(run_id, text, LogLevel.WARNING)),
        ):
            if refresh:
                parts = self._refresh(submission, parts, known)
            for part in parts:
                with self._logging_errors(run_id, f"part {part.number}: "):
                    self._advance_part(submission, part, send=send)
            if send:
                self._resubmit_expired(submission)
            elif self._awaits_resubmit(submission):
                return False  # what expired is sent again by a command that sends
            return self._settle(submission)

    def _refuse_if_never_sent(self, run_id: int, parts: list[Part]) -> None:
        """A run that ended before any batch was created is never sent later."""
        run = self._run(run_id)
        if run.status.terminal and not any(_create_attempted(p) for p in parts):
            raise UsageError(
                f"run {run_id} {run.status.value} before anything was sent"
                + (f": {run.error}" if run.error else ""),
                hint="nothing was spent for it; submit the input again",
            )

    def _stopped(self, run_id: int, error: BaseException, *, fail_unsent: bool) -> BaseException:
        """The error to raise for a drive that ``error`` stopped, after recording what it can:
        a run that created no batch is recorded failed (when ``fail_unsent``); a database that
        cannot be written after batches were created is said so, with how to recover."""
        if isinstance(error, StoreWriteError):
            return self._unrecorded(run_id, error)
        if not fail_unsent:
            return error
        reason = error.message if isinstance(error, BatchctlError) else str(error)
        recorded = False
        with suppress(StoreWriteError):
            recorded = self.store.fail_unsent_submission(run_id, reason, self.clock())
        if not recorded:
            return self._partly_sent(run_id, error, reason)
        cause = error.hint if isinstance(error, BatchctlError) else None
        if getattr(error, "transient", False):
            cause = None  # its "picked up when run again" is not so: the run has ended
        return _like(
            error,
            f"{reason} (run {run_id} recorded failed; nothing was sent)",
            f"{cause}; then submit the input again" if cause else "submit the input again",
        )

    def _partly_sent(self, run_id: int, error: BaseException, reason: str) -> BaseException:
        """Some batch may exist: the run stays in flight, and the error says what follows."""
        try:
            parts = self.store.parts(run_id)
        except (BatchctlError, OSError):
            return error
        sent = sum(1 for p in parts if _create_attempted(p))
        return _like(
            error,
            f"{reason} (run {run_id}: {sent} of {len(parts)} part(s) sent; the rest are not)",
            f"batchctl wait {run_id} sends the rest, batchctl cancel {run_id} stops it",
        )

    def _unrecorded(self, run_id: int, error: StoreWriteError) -> BatchctlError:
        recorded: set[str] = set()
        with suppress(BatchctlError, OSError):
            recorded = {p.batch_id for p in self.store.parts(run_id) if p.batch_id}
        unrecorded = [b for b in self._created if b not in recorded]
        if unrecorded:
            return SubmissionUnrecorded(
                run_id, len(recorded) + len(unrecorded), len(unrecorded), error.message
            )
        hint = f"free space, then: batchctl wait {run_id}"
        if not recorded:
            return BatchctlError(
                f"run {run_id}: {error.message}; no batch was created (recorded, not sent)",
                hint=f"{hint} sends it, or batchctl cancel {run_id} drops it",
            )
        return BatchctlError(
            f"run {run_id}: {error.message}; its {len(recorded)} batch(es) go on remotely",
            hint=hint,
        )

    def _awaits_resubmit(self, submission: Submission) -> bool:
        if submission.on_expired != "resubmit":
            return False
        waiting = self.store.requests_to_resend(
            submission.run_id, ("expired",), submission.max_request_attempts
        )
        return bool(waiting)

    @contextlib.contextmanager
    def _logging_errors(self, run_id: int, prefix: str = "") -> Iterator[None]:
        """Record an error that stops driving the submission in its log, then let it go on."""
        try:
            yield
        except (BatchctlError, OSError) as exc:
            if not getattr(exc, "batchctl_logged", False):
                exc.batchctl_logged = True  # type: ignore[union-attr]
                message = exc.message if isinstance(exc, BatchctlError) else str(exc)
                with contextlib.suppress(Exception):  # never hide the error behind a log failure
                    self._log(run_id, f"{prefix}{message}", LogLevel.ERROR)
            raise

    def _log(
        self, run_id: int, message: str, level: LogLevel = LogLevel.INFO, **fields: Any
    ) -> None:
        """Add a line to the submission's story (stream ``batch`` of its run's log), as the
        step it tells of has just been recorded."""
        self.store.append_logs([self._log_entry(run_id, message, level, **fields)])

    def _log_entry(
        self, run_id: int, message: str, level: LogLevel = LogLevel.INFO, **fields: Any
    ) -> LogEntry:
        run = self.store.get_run(run_id)
        attempt = run.attempts if run is not None else 1
        return LogEntry(run_id, attempt, self.clock(), level, message, LOG_STREAM, fields)

    def _advance_part(self, submission: Submission, part: Part, *, send: bool) -> None:
        if part.batch_id is None and part.status not in TERMINAL:
            if not send:
                return
            part = self._send(submission, part)
        if part.status in TERMINAL and part.downloaded_at is None:
            self._download(submission, part)

    def _send(self, submission: Submission, part: Part) -> Part:
        if not self.provider_for(submission.provider).uploads:
            return self._send_inline(submission, part)
        if self._settling(
            part.upload_started_at if part.input_file_id is None else part.create_started_at
        ):
            return part  # a crashed process's call may still be landing: look again shortly
        if part.create_started_at is None:  # held for the enqueued-token limit, or may go
            held = self._holds(submission).before_send(part)
            if held is not None:
                return held
        provider = self.provider_for(submission.provider)
        if part.input_file_id is None:
            part = self._upload(provider, part)
        key = quota.part_key(f"{self.store.instance_id()}:{submission.token}:{part.number}", part)
        found: RemoteBatch | None = None
        input_file_id = part.input_file_id or ""
        how = "found batch (created before a lost reply)"
        if part.create_started_at is not None:  # a create may have happened: never repeat it
            found = provider.find_batch(PART_KEY, key, input_file_id=input_file_id)
        if found is None:
            self.store.update_part(part.id, create_started_at=self.clock())
            metadata = {PART_KEY: key, RUN_KEY: str(part.run_id), **submission.metadata}
            try:
                found = provider.create_batch(
                    input_file_id=input_file_id,
                    endpoint=submission.endpoint,
                    completion_window=submission.completion_window,
                    metadata=metadata,
                )
            except BatchctlError as exc:  # Azure's "fail fast": refused at create, nothing made
                refused = quota.refused_create(exc)
                if refused is None:
                    raise
                return self._holds(submission).refused_at_create(part, refused)
            how = "created batch"
        self._created.append(found.id)
        recorded = self._record_remote(part, found)
        self._log(
            part.run_id,
            f"part {part.number}: {how} {found.id} ({found.status})",
            part=part.number,
            batch=found.id,
        )
        return recorded

    def _holds(self, submission: Submission) -> quota.Holds:
        """The enqueued-token holds of the submission's parts, as of now."""
        limit = self._token_limit(submission)
        return quota.Holds(self.store, submission, self.clock(), self._log_entry, limit)

    def _token_limit(self, submission: Submission) -> int | None:
        """The enqueued-token limit the submission's provider settings give, if any."""
        return self.config.provider(submission.provider).enqueued_token_limit

    def _send_inline(self, submission: Submission, part: Part) -> Part:
        """Send a part whose requests go inline in the create call (no upload); a create whose
        reply was lost is found, never repeated (``batches.inline``)."""
        from batchctl.providers.base import CreateUnanswered

        try:
            sent = self._inline(self.provider_for(submission.provider)).send(submission, part)
        except CreateUnanswered as exc:
            self._log(
                part.run_id,
                f"part {part.number}: {exc.message}; looking for it in {INTENT_SETTLE_S:.0f}s",
                LogLevel.WARNING,
                part=part.number,
            )
            return part
        if sent is None:
            return part  # a lost create settling, or its candidates not yet told apart
        batch, how = sent
        self._created.append(batch.id)
        recorded = self._record_remote(part, batch)
        self._log(
            part.run_id,
            f"part {part.number}: {how} {batch.id} ({batch.status})",
            part=part.number,
            batch=batch.id,
        )
        return recorded

    def _inline(self, provider: Provider) -> inline.InlineSender:
        def log(part: Part, message: str, level: LogLevel) -> None:
            self._log(part.run_id, message, level, part=part.number)

        return inline.InlineSender(
            self.store,
            provider,  # type: ignore[arg-type]  # uploads is False: an InlineProvider
            clock=self.clock,
            log=log,
            settle_s=INTENT_SETTLE_S,
        )

    def _settling(self, intent: datetime | None) -> bool:
        """True while a call recorded at ``intent`` by another process may still take effect.

        A process killed mid-call may have sent a request that the server has not finished
        handling; looking for its result at once could miss it and send it twice.
        """
        if intent is None:
            return False
        return (self.clock() - intent).total_seconds() < INTENT_SETTLE_S

    def _upload(self, provider: Provider, part: Part) -> Part:
        path = Path(part.path)
        found = None
        if part.upload_started_at is not None:  # an upload may have happened: adopt it
            elapsed = (self.clock() - part.upload_started_at).total_seconds()
            found = provider.find_file(
                part.filename, path.stat().st_size, within=max(0.0, elapsed) + FIND_SLACK_S
            )
        how = "found (uploaded before a lost reply)"
        if found is None:
            self.store.update_part(part.id, upload_started_at=self.clock())
            found = provider.upload(path, part.filename)
            how = "uploaded"
        self.store.update_part(part.id, input_file_id=found.id, status="uploaded")
        self._log(
            part.run_id,
            f"part {part.number}: {how} {part.filename} ({found.bytes:,} bytes, "
            f"{part.requests:,} request(s), {part.model}) as {found.id}",
            part=part.number,
            file=found.id,
        )
        return part._replace(input_file_id=found.id, status="uploaded")

    def _refresh(
        self, submission: Submission, parts: list[Part], known: Mapping[str, RemoteBatch] | None
    ) -> list[Part]:
        """Ask the API about every part in flight — from ``known`` or the list pages, else one
        GET each — and record what changed, all of it in one transaction (nothing when nothing
        changed). What was learnt before a GET that fails is still recorded."""
        if not to_refresh(parts):
            return parts
        run_id = submission.run_id
        provider = self.provider_for(submission.provider)
        if known is None:
            known = listed(provider, parts)
        changes: list[tuple[int, dict[str, Any]]] = []
        logs: list[LogEntry] = []
        refreshed: list[Part] = []
        try:
            for part in parts:
                if part.batch_id is None or part.status in TERMINAL:
                    refreshed.append(part)
                    continue
                with self._logging_errors(run_id, f"part {part.number}: "):
                    batch = known.get(part.batch_id) or provider.get_batch(part.batch_id)
                refreshed.append(self._compare_remote(part, batch, changes, logs))
        finally:
            self.store.update_parts(changes, logs)
        return refreshed

    def _record_remote(self, part: Part, batch: RemoteBatch) -> Part:
        changes: list[tuple[int, dict[str, Any]]] = []
        logs: list[LogEntry] = []
        recorded = self._compare_remote(part, batch, changes, logs)
        self.store.update_parts(changes, logs)
        return recorded

    def _compare_remote(
        self,
        part: Part,
        batch: RemoteBatch,
        changes: list[tuple[int, dict[str, Any]]],
        logs: list[LogEntry],
    ) -> Part:
        """The part as the API reports it; what to write for it added to ``changes`` (and a
        line to ``logs`` if its status moved)."""
        refused = quota.refused_batch(batch)
        if refused is not None:  # nothing was spent: held, to be created again (quota.py)
            submission = self._submission(part.run_id)
            return self._holds(submission).refused_batch(part, batch, refused, changes, logs)
        fields = {**remote_columns(batch), **quota.released(part)}
        # A poll that finds the batch as it was writes nothing: refreshing a thousand parts of
        # which a few moved costs a few writes (``refreshed_at`` is when it last changed).
        if not _records(part, fields):
            changes.append((part.id, {"refreshed_at": self.clock(), **fields}))
        if part.batch_id is not None and part.status != batch.status:
            logs.append(self._status_entry(part, batch))
        return part._replace(
            batch_id=batch.id,
            status=batch.status,
            output_file_id=batch.output_file_id,
            error_file_id=batch.error_file_id,
            request_counts=fields["request_counts"],
            errors=fields["errors"],
            **quota.released(part),
        )

    def _status_entry(self, part: Part, batch: RemoteBatch) -> LogEntry:
        """A part's remote status changed: say so, with its counts, or why it failed."""
        counts = batch.request_counts
        text = f"part {part.number}: {batch.id} {part.status} -> {batch.status}"
        if batch.status == "failed" and batch.errors:
            text += ": " + "; ".join(_batch_error(e) for e in batch.errors[:3])
            if len(batch.errors) > 3:
                text += f"; ... {len(batch.errors) - 3} more"
        elif counts.total:
            text += (
                f" ({counts.completed + counts.failed:,} of {counts.total:,} request(s) done,"
                f" {counts.failed:,} failed)"
            )
        level = _END_LEVEL.get(batch.status, LogLevel.INFO)
        return self._log_entry(part.run_id, text, level, part=part.number, batch=batch.id)

    def _download(self, submission: Submission, part: Part) -> None:
        provider = self.provider_for(submission.provider)
        for kind, file_id in (("output", part.output_file_id), ("error", part.error_file_id)):
            if file_id is None:
                continue
            destination = self._fetch(submission, part.number, kind, file_id)
            if not provider.uploads and not self._inline(provider).proved(
                submission, part, destination
            ):
                self._checked.pop(destination, None)
                return  # adopted after a lost reply, and someone else's: the part is sent again
            results = read_results(destination, kind)
            count = self.store.record_results(part.id, results, self.clock())
            self._log(
                part.run_id,
                f"part {part.number}: downloaded the {kind} file {file_id} ({count:,} result(s))",
                part=part.number,
                file=file_id,
            )
        outcome, code, message = _SETTLE[part.status]
        if part.status == "failed" and part.errors:
            first = part.errors[0]
            code, message = str(first.get("code") or code), str(first.get("message") or message)
        unanswered = self.store.settle_pending(part.id, outcome, code, message)
        self.store.update_part(part.id, downloaded_at=self.clock())
        if unanswered:
            self._log(
                part.run_id,
                f"part {part.number}: {unanswered:,} request(s) without a result: {outcome}"
                f" ({message})",
                LogLevel.WARNING,
                part=part.number,
            )

    def _fetch(self, submission: Submission, number: int, kind: str, file_id: str) -> Path:
        """The downloaded file, fetched once: whole (renamed into place) and checksummed."""
        destination = local.download_path(Path(submission.directory), number, kind)
        stamp = self._checked.get(destination)
        if stamp is not None and stamp == local.file_stamp(destination):
            return destination  # checked (or fetched) by this process, and not written since
        if not local.checksum_ok(destination):
            self.provider_for(submission.provider).download(file_id, destination)
            local.write_checksum(destination)
        self._checked[destination] = local.file_stamp(destination)
        return destination

    def _verify_downloads(self, submission: Submission, parts: dict[int, Part]) -> None:
        """Fetch again any download whose content no longer matches its checksum."""
        for part in parts.values():
            if part.downloaded_at is None:
                continue
            for kind, file_id in (("output", part.output_file_id), ("error", part.error_file_id)):
                if file_id is not None:
                    self._fetch(submission, part.number, kind, file_id)

    def _resubmit_expired(self, submission: Submission) -> None:
        if submission.on_expired != "resubmit":
            return
        parts = self.store.parts(submission.run_id)
        if any(p.status not in TERMINAL or p.downloaded_at is None for p in parts):
            return  # resubmit once every part has ended, so each request is sent once a round
        self._resend(submission, ("expired",))

    def _settle(self, submission: Submission) -> bool:
        parts = self.store.parts(submission.run_id)
        if any(p.status not in TERMINAL or p.downloaded_at is None for p in parts):
            return False
        run_id = submission.run_id
        path = Path(submission.directory) / "results.jsonl"
        # Its checksum, so that ``results`` can copy it rather than merge again.
        local.write_checksum(path, self._merge(submission, path))
        self._log(run_id, f"merged {submission.requests:,} result(s) in input order into {path}")
        totals = self.store.request_totals(run_id)
        summary = totals.counts
        cost = self._cost(submission, totals.tokens)
        succeeded = summary.get("succeeded", 0)
        failed = submission.requests - succeeded
        run = self.store.get_run(run_id)
        if run is not None and run.cancel_requested:
            status = RunStatus.CANCELLED
        elif failed == 0:
            status = RunStatus.COMPLETED
        else:
            status = RunStatus.PARTIAL if succeeded else RunStatus.FAILED
        error = None
        if failed:
            error = (
                f"{failed} of {submission.requests} requests did not succeed"
                f" ({_breakdown(summary)})"
            )
        now = self.clock()
        finished = self.store.finish_submission_run(
            run_id,
            status,
            items_processed=succeeded,
            items_failed=failed,
            total_tokens=summary["input_tokens"] + summary["output_tokens"],
            total_cost=cost.batch,
            unpriced_models=cost.unpriced_models,
            error=error,
            now=now,
            finished_at=work_ended(None if run is None else run.started_at, parts, now),
        )
        if finished:
            level = LogLevel.WARNING if failed else LogLevel.INFO
            self._log(
                run_id,
                f"run {status.value}: {succeeded:,} of {submission.requests:,} request(s)"
                " succeeded" + (f" ({_breakdown(summary)})" if failed else ""),
                LogLevel.ERROR if status is RunStatus.FAILED else level,
            )
        elif self._submission(run_id).merged_at is not None:
            return True  # settled by another process: its results and on_complete stand
        # else its last driver recorded the run's end and died (kill -9) before recording the
        # merge: what it left undone — the merge just made again, the delivery — is done here.
        self.store.mark_merged(run_id, str(path), totals, self.clock())
        self._drop_unneeded_inputs(submission)
        if run is not None:
            from batchctl.batches.delivery import after_settle

            after_settle(self.store, self.config, run_id, run.job, path)
        return True

    def _drop_unneeded_inputs(self, submission: Submission) -> None:
        """Delete the part files that no retry can read again: every request they hold has
        succeeded or used up its attempts. Only after the merge is recorded; a crash before
        leaves files that ``prune`` removes with the run."""
        resendable = self.store.requests_to_resend(
            submission.run_id, RESENDABLE, submission.max_request_attempts
        )
        keep = {r.part_id for r in resendable}
        local.remove_part_files(
            Path(p.path) for p in self.store.parts(submission.run_id) if p.id not in keep
        )

    # --- wait, cancel, retry --------------------------------------------------------------------
    def wait(
        self,
        run_id: int,
        *,
        timeout: float | None = None,
        on_progress: ProgressCallback | None = None,
        stop: threading.Event | None = None,
    ) -> Run:
        """Drive the submission until it is settled (or ``timeout`` seconds pass, or ``stop`` is
        set: ``WaitInterrupted``; the batches go on remotely).

        It looks again after a second, then less and less often up to ``poll_interval``, and
        often again whenever a part's status changes (``polling.Backoff``).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        provider_name = self._submission(run_id).provider
        backoff = Backoff(self.config.provider(provider_name).poll_interval)
        while True:
            if stop is not None and stop.is_set():
                raise WaitInterrupted(run_id)
            settled = self.advance(run_id)
            run = self._run(run_id)
            parts = self.store.parts(run_id)
            if on_progress is not None:
                on_progress(run, parts)
            if settled:
                return run
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(run_id)
            pause = backoff.pause(parts_state(parts))
            if deadline is not None:
                pause = max(0.0, min(pause, deadline - time.monotonic()))
            if stop is not None:
                stop.wait(pause)
            else:
                self.sleep(pause)

    def cancel(self, run_id: int) -> list[Part]:
        """Cancel every part that has not ended; parts never sent end at once."""
        submission = self._submission(run_id)
        self.store.request_cancel(run_id)
        self._log(run_id, "cancel requested", LogLevel.WARNING)
        for part in self.store.parts(run_id):
            if part.status in TERMINAL:
                continue
            if part.batch_id is None:
                self.store.update_part(part.id, status="cancelled")
                self._log(run_id, f"part {part.number}: cancelled before it was sent")
            elif part.status != "cancelling":
                provider = self.provider_for(submission.provider)
                if not provider.uploads and inline.unconfirmed(part):
                    self._log(
                        run_id,
                        f"part {part.number}: batch {part.batch_id} is not cancelled: it was"
                        " found after a lost create reply and its results have not yet proved"
                        " it this part's",
                        LogLevel.WARNING,
                    )
                    continue
                self._record_remote(part, provider.cancel_batch(part.batch_id))
        return self.store.parts(run_id)

    def retry(self, run_id: int, outcomes: Sequence[str], *, include_invalid: bool = False) -> int:
        """Send the requests with these outcomes again, in new parts of the same submission:
        those that can succeed on a second try (``failures.resendable``), and with
        ``include_invalid`` the failures that cannot as well.

        Concurrent retries of one submission are serialized by its lease: the next one sees
        the parts the first recorded still in flight, and is refused.
        """
        self._submission(run_id)
        with self._holding(run_id):  # and sent under it: no other retry slips in between
            count = self._record_retry(run_id, outcomes, include_invalid)
            self._drive(run_id, refresh=True, send=True, fail_unsent=False)
        return count

    @contextmanager
    def _holding(self, run_id: int) -> Iterator[None]:
        """Hold the submission's lease (waiting up to ``LEASE_S`` for its holder) for a change
        that must not interleave with another process's."""
        driving = _driving(run_id)
        driving.acquire()
        try:
            deadline = time.monotonic() + LEASE_S
            while (holder := self._take_lease(run_id)) is not None:
                if time.monotonic() >= deadline:
                    raise UsageError(
                        f"run {run_id} is being driven by process {holder.pid} on {holder.host}",
                        hint="try again when it is done",
                    )
                self.sleep(LEASE_POLL_S)
            try:
                yield
            finally:
                with suppress(StoreWriteError):
                    self.store.release_submission_lease(run_id, self.owner)
        finally:
            driving.release()

    def _record_retry(self, run_id: int, outcomes: Sequence[str], include_invalid: bool) -> int:
        submission = self._submission(run_id)
        parts = self.store.parts(run_id)
        self._refuse_if_never_sent(run_id, parts)
        if any(p.status not in TERMINAL for p in parts):
            raise UsageError(
                f"run {run_id} still has batches in flight",
                hint=f"wait for them: batchctl wait {run_id}",
            )
        left = self.store.requests_to_resend(run_id, outcomes, submission.max_request_attempts)
        waiting = _worth_resending(left, include_invalid)
        if not waiting and left:
            raise UsageError(
                f"run {run_id}: nothing to re-send: its {len(left):,} failed request(s) left are"
                " invalid and would fail again unchanged; re-send them anyway with"
                " --include-invalid",
                hint=f"see their errors: batchctl results {run_id} --errors errors.jsonl",
            )
        if not waiting:
            raise UsageError(
                f"run {run_id} has no {'/'.join(outcomes)} requests left to retry",
                hint=f"each request is sent at most {submission.max_request_attempts} times "
                "([batches] max_request_attempts)",
            )
        # Reopen first: a crash after it leaves a submission that the next advance settles
        # again; recording the new parts first would leave them unsent behind a merged one.
        self.store.reopen_submission(run_id, self.clock(), f"retrying {len(waiting)} request(s)")
        return self._resend(submission, outcomes, include_invalid)

    def _resend(
        self, submission: Submission, outcomes: Sequence[str], include_invalid: bool = False
    ) -> int:
        left = self.store.requests_to_resend(
            submission.run_id, outcomes, submission.max_request_attempts
        )
        requests = _worth_resending(left, include_invalid)
        if not requests:
            return 0
        parts = {p.id: p for p in self.store.parts(submission.run_id)}
        number = max(p.number for p in parts.values())
        next_round = max(p.round for p in parts.values()) + 1
        by_model: dict[str, list[RequestState]] = {}
        for request in requests:
            by_model.setdefault(parts[request.part_id].model, []).append(request)
        directory = Path(submission.directory)
        limit, _ = self.config.batches.limits(self.config.provider(submission.provider))
        handles: dict[str, IO[bytes]] = {}
        try:
            for model, group in by_model.items():
                for chunk in _chunks(group, limit):
                    number += 1
                    self._write_resend_part(
                        submission, directory, number, next_round, model, chunk, parts, handles
                    )
        finally:
            for handle in handles.values():
                handle.close()
        first = max(p.number for p in parts.values()) + 1
        invalid = len(left) - len(requests)
        self._log(
            submission.run_id,
            f"re-sending {len(requests):,} {'/'.join(outcomes)} request(s) as part(s)"
            f" {first}..{number} (round {next_round})"
            + (f"; {invalid:,} invalid failure(s) left alone" if invalid else ""),
            LogLevel.WARNING,
        )
        return len(requests)

    def _write_resend_part(
        self,
        submission: Submission,
        directory: Path,
        number: int,
        round_: int,
        model: str,
        requests: list[RequestState],
        parts: dict[int, Part],
        handles: dict[str, IO[bytes]],
    ) -> None:
        path = local.part_path(directory, number)
        moved: list[tuple[str, int, int]] = []
        offset = 0
        with path.open("wb") as out:
            for request in requests:
                line = local.read_line(
                    Path(parts[request.part_id].path),
                    request.line_offset,
                    request.line_length,
                    handles,
                )
                out.write(line)
                moved.append((request.custom_id, offset, len(line)))
                offset += len(line)
        row = PartPlanRow(
            number,
            round_,
            model,
            len(requests),
            offset,
            str(path),
            local.part_filename(submission.token, number),
        )
        self.store.record_resend_part(submission.run_id, row, moved)

    # --- results --------------------------------------------------------------------------------
    def write_results(
        self,
        run_id: int,
        path: Path,
        *,
        errors_path: Path | None = None,
        fmt: str = "jsonl",
        order: str = "input",
    ) -> ResultSummary:
        """Write one result line per request (input order by default) to ``path`` and
        ``errors_path``: regular files whole or not at all, ``-`` or a device as a stream (see
        ``batchctl.outputs``)."""
        submission = self._submission(run_id)
        merged = merged_copy_source(submission, fmt=fmt, order=order, errors_path=errors_path)
        if merged is not None:
            with suppress(MergedChanged):  # changed since it was written: merged again below
                return self._copy_merged(run_id, merged, path)
        self._merge(submission, path, errors_path=errors_path, fmt=fmt, order=order)
        return self.summary(run_id, path, errors_path)

    def _merge(
        self,
        submission: Submission,
        path: Path,
        *,
        errors_path: Path | None = None,
        fmt: str = "jsonl",
        order: str = "input",
    ) -> str:
        """Merge the downloads into ``path`` (and ``errors_path``); the SHA-256 of what was
        written to ``path``."""
        parts = {p.id: p for p in self.store.parts(submission.run_id)}
        self._verify_downloads(submission, parts)
        directory = Path(submission.directory)
        digest = hashlib.sha256()
        with ExitStack() as outputs:
            out = outputs.enter_context(open_output(path))
            errors_out = (
                None if errors_path is None else outputs.enter_context(open_output(errors_path))
            )
            writer = MergedWriter(
                out,
                fmt,
                errors_out,
                digest=digest,
                derived_ids=is_message_batches(submission.endpoint),
            )
            run_id = submission.run_id
            copies = fmt == "jsonl" and not writer.derived_ids  # succeeded lines as they are
            writer.write_all(
                self.store.merge_rows(run_id)
                if order == "input" and copies
                else self.store.requests_in_order(run_id, order=order),
                lambda part_id, kind: local.download_path(directory, parts[part_id].number, kind),
            )
        return digest.hexdigest()

    def _copy_merged(self, run_id: int, merged: Path, path: Path) -> ResultSummary:
        """Write the merged file of a settled submission to ``path`` as it is (a copy, whole
        or not at all), rather than merge the downloads again; ``MergedChanged`` when it is
        no longer what was merged (nothing written to ``path`` then)."""
        if local.same_file(merged, path):  # ``results`` without -o: it is already there
            if not local.checksum_ok(merged):
                raise MergedChanged(str(merged))
            return self.summary(run_id, path)
        # A file is written whole or not at all: checked as it is copied, and discarded when
        # it differs. A stream cannot take back what it wrote: checked before.
        whole = written_whole(path)
        if not whole and not local.checksum_ok(merged):
            raise MergedChanged(str(merged))
        with open_output(path, newline="") as out:
            copy_merged(merged, out, checked=not whole)
        return self.summary(run_id, path)

    def summary(self, run_id: int, path: Path, errors_path: Path | None = None) -> ResultSummary:
        """The outcome counts, tokens and cost of a submission whose results are at ``path``."""
        submission = self._submission(run_id)
        totals = self.store.request_totals(run_id)
        summary, tokens = totals.counts, totals.tokens
        cost = self._cost(submission, tokens)
        return ResultSummary(
            run=self._run(run_id),
            path=path,
            errors_path=errors_path,
            counts=summary,
            input_tokens=summary["input_tokens"],
            output_tokens=summary["output_tokens"],
            cost_batch=cost.batch,
            cost_synchronous=cost.synchronous,
            unpriced_models=cost.unpriced_models,
            cached_tokens=sum(t.cached_tokens for t in tokens),
            reasoning_tokens=sum(t.reasoning_tokens for t in tokens),
            cache_write_tokens=sum(t.cache_write_tokens for t in tokens),
            failures=split(totals.failures),
        )

    def failures(self, run_id: int) -> FailureSplit:
        """The submission's failed requests, counted by whether a retry sends them again."""
        return split(self.store.failure_codes([run_id])[run_id])

    def _cost(self, submission: Submission, tokens: list[ModelTokens]) -> Cost:
        """The cost of the submission's tokens (``tokens``, by model).

        Kept in the submission's directory with what it was computed from, and used again
        while the tokens and the configured prices are the same: the published price data
        takes about half a second to load, once per submission rather than at every
        ``results``. So a cost is priced when its tokens were spent (its settling), as the
        run's recorded cost is."""
        discount = self.config.batches.batch_discount
        source = self.config.provider(submission.provider).published_prices
        basis = cost_basis(tokens, self.config.prices, discount, provider_id=source)
        directory = Path(submission.directory)
        kept = local.read_kept_cost(directory)
        if kept is not None and kept.get("basis") == basis:
            with suppress(KeyError, TypeError, ValueError):
                return Cost.from_json(kept["cost"])
        cost = cost_of(tokens, self.config.prices, discount, at=self.clock(), provider_id=source)
        local.keep_cost(directory, {"basis": basis, "cost": cost.to_json()})
        return cost

    # --- lookups --------------------------------------------------------------------------------
    def _remote_batch(self, provider: Provider, batch_id: str) -> RemoteBatch:
        from batchctl.providers.base import ProviderError

        try:
            return provider.get_batch(batch_id)
        except ProviderError as exc:
            if exc.status != 404:
                raise
            raise NotFoundError(
                f"no batch {batch_id} at the API",
                hint="list the account's batches with: batchctl status --remote",
            ) from None

    def _submission(self, run_id: int) -> Submission:
        submission = self.store.get_submission(run_id)
        if submission is None:
            if self.store.get_run(run_id) is None:
                raise NotFoundError(
                    f"no run with id {run_id}", hint="list runs with: batchctl status"
                )
            raise UsageError(f"run {run_id} is not a batch submission")
        return submission

    def _run(self, run_id: int) -> Run:
        run = self.store.get_run(run_id)
        assert run is not None
        return run


class DuplicateInput(UsageError):
    """The same input (by content hash) was submitted before: refused, so nobody pays twice."""

    def __init__(self, run_id: int) -> None:
        super().__init__(
            f"this input was already submitted as run {run_id}",
            hint=f"see: batchctl status {run_id}; pass --force to submit it again",
        )
        self.run_id = run_id


class SubmissionUnrecorded(BatchctlError):
    """Batches were created (and will be paid for) but the database could not record them."""

    exit_code = ExitCode.FAILED

    def __init__(self, run_id: int, created: int, unrecorded: int, reason: str) -> None:
        which = "" if unrecorded == created else f" {unrecorded} of them"
        super().__init__(
            f"run {run_id}: {created} batch(es) were created on the API and will be paid for,"
            f" but{which} could not be recorded: {reason}",
            hint=f"free space, then: batchctl wait {run_id} (it finds the batches and records"
            " them; do not submit the input again)",
        )
        self.run_id = run_id
        self.created = created


class WaitTimeout(UsageError):
    exit_code = ExitCode.FAILED

    def __init__(self, run_id: int) -> None:
        super().__init__(f"run {run_id} is still in progress", hint=f"batchctl wait {run_id}")


def follow_up(run_id: int) -> str:
    """The commands that follow or cancel a submission whose batches are in flight."""
    return f"follow it: batchctl wait {run_id}; cancel it: batchctl cancel {run_id}"


class WaitInterrupted(BatchctlError):
    """Waiting was interrupted (Ctrl-C, SIGTERM); the submission's batches go on remotely."""

    exit_code = ExitCode.CANCELLED

    def __init__(self, run_id: int) -> None:
        super().__init__(
            f"interrupted; run {run_id} goes on: its batches keep running on the API",
            hint=follow_up(run_id),
        )
        self.run_id = run_id


def remote_columns(batch: RemoteBatch) -> dict[str, Any]:
    """The part's columns that record what the API said of its batch."""
    return {
        "batch_id": batch.id,
        "status": batch.status,
        "output_file_id": batch.output_file_id,
        "error_file_id": batch.error_file_id,
        "request_counts": batch.request_counts.to_json(),
        "usage": dict(batch.usage) if batch.usage else None,
        "errors": [dict(e) for e in batch.errors],
        "remote_created_at": batch.created_at,
        "remote_ended_at": batch.ended_at,
        "expires_at": batch.expires_at,
    }


def unchanged(part: Part, batch: RemoteBatch) -> bool:
    """Whether the part already records the batch as the API reports it."""
    return _records(part, remote_columns(batch))


def _records(part: Part, columns: Mapping[str, Any]) -> bool:
    return all(getattr(part, name) == value for name, value in columns.items())


def work_ended(started: datetime | None, parts: Sequence[Part], now: datetime) -> datetime:
    """When a submission's work ended, on this host's clock: the API's end of its last batch.

    The API's times are on its clock, ``started`` and ``now`` on ours. Each batch's creation
    measures the difference: batchctl recorded ``create_started_at`` just before the API stamped
    ``created_at`` (whole seconds). The largest such offset (a create retried after a failure
    only makes it smaller) moves the last end onto our clock. The result is kept between
    ``started`` and ``now``, so a duration is never negative nor in the future whatever the
    clocks say; without any remote end (nothing was sent) it is ``now``.
    """
    ends = [p.remote_ended_at for p in parts if p.remote_ended_at is not None]
    if started is None or not ends:
        return now
    offsets = [
        p.create_started_at.timestamp() - p.remote_created_at
        for p in parts
        if p.create_started_at is not None and p.remote_created_at is not None
    ]
    end = datetime.fromtimestamp(max(ends) + max(offsets, default=0.0), UTC)
    return max(started, min(now, end))


_DRIVING: dict[int, threading.Lock] = {}
_DRIVING_GUARD = threading.Lock()


def _driving(run_id: int) -> threading.Lock:
    """The lock a thread holds while it drives a submission: the store's lease names the
    process (host and pid), so threads of one process need this too."""
    with _DRIVING_GUARD:
        return _DRIVING.setdefault(run_id, threading.Lock())


def remove_files(submission: Submission) -> None:
    shutil.rmtree(submission.directory, ignore_errors=True)


def _like(error: BaseException, message: str, hint: str) -> BatchctlError:
    """An error with this message and hint, and ``error``'s exit code."""
    like = BatchctlError(message, hint=hint)
    like.exit_code = error.exit_code if isinstance(error, BatchctlError) else ExitCode.FAILED
    return like


def _create_attempted(part: Part) -> bool:
    """Whether a batch may exist for the part: it has one, or a create was about to be sent."""
    return part.batch_id is not None or part.create_started_at is not None


def _worth_resending(requests: list[RequestState], include_invalid: bool) -> list[RequestState]:
    """Those of ``requests`` that a retry sends: every one with ``include_invalid``, else those
    that can succeed on a second try (``failures.resendable``: never ran, or failed for a
    reason other than the request itself)."""
    if include_invalid:
        return requests
    return [r for r in requests if resendable(r.outcome, r.error_code, r.status_code)]


def _chunks(items: list[RequestState], size: int) -> list[list[RequestState]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _names(inputs: Sequence[str]) -> str:
    return ", ".join(inputs) if len(inputs) <= 3 else f"{len(inputs)} files"


def _batch_error(error: Mapping[str, Any]) -> str:
    """One entry of a failed batch's errors: code, message and the line it names."""
    code, message, line = error.get("code"), error.get("message"), error.get("line")
    text = ": ".join(str(x) for x in (code, message) if x)
    return f"{text} (line {line})" if line else text


def _breakdown(summary: dict[str, int]) -> str:
    names = ("failed", "expired", "cancelled", "missing", "pending")
    return ", ".join(f"{summary[n]} {n}" for n in names if summary.get(n))
