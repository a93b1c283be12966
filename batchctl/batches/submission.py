"""Submissions: record, send, refresh, download, resubmit and settle — crash-safe at every line.

The rule everywhere: write the intent to the store before a call that spends or creates
something remote, write the answer the moment it arrives, and before repeating a call whose
answer may have been lost, look for what it created. ``advance`` does everything that can be done
for a submission now and is safe to call again at any time, from any process: ``submit --wait``,
``wait``, ``status`` and the daemon all drive submissions through it, one process at a time per
submission (a lease in the store).
"""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, NamedTuple

from batchctl.batches import files as local
from batchctl.batches.metadata import PART_KEY, RUN_KEY
from batchctl.batches.pricing import cost_of
from batchctl.batches.results import (
    RESENDABLE,
    MergedWriter,
    copy_merged,
    merged_copy_source,
    read_results,
)
from batchctl.batches.validation import Plan, scan
from batchctl.config import Config
from batchctl.errors import ExitCode, NotFoundError, UsageError
from batchctl.locations import make_private_dirs
from batchctl.owners import is_dead, this_process
from batchctl.records import (
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
INTENT_SETTLE_S = 10.0  # how long a dead process's last upload or create may take to land
FIND_SLACK_S = 600  # look back this far (seconds) for what a lost call may have created
TERMINAL = frozenset({"completed", "failed", "expired", "cancelled"})
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
    on_expired: str = "keep"
    force: bool = False


class ResultSummary(NamedTuple):
    run: Run
    path: Path
    errors_path: Path | None
    counts: dict[str, int]
    input_tokens: int
    output_tokens: int
    cost_batch: float
    cost_synchronous: float
    unpriced_models: tuple[str, ...]

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
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost": round(self.cost_batch, 6),
            "synchronous_cost": round(self.cost_synchronous, 6),
            "saving": round(self.cost_synchronous - self.cost_batch, 6),
            "unpriced_models": list(self.unpriced_models),
        }


ProgressCallback = Callable[[Run, list[Part]], None]


class Batches:
    """Submissions of one store, driven against one provider (opened on first network use)."""

    def __init__(
        self,
        store: Store,
        config: Config,
        *,
        provider: Provider | None = None,
        provider_factory: Callable[[], Provider] | None = None,
        clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.store = store
        self.config = config
        self._provider = provider
        self._provider_factory = provider_factory
        self.clock = clock
        self.sleep = sleep
        self.owner = this_process()

    @property
    def provider(self) -> Provider:
        if self._provider is None:
            if self._provider_factory is not None:
                self._provider = self._provider_factory()
            else:
                from batchctl.providers import open_provider

                self._provider = open_provider(self.config.openai)
        return self._provider

    def close(self) -> None:
        if self._provider is not None:
            self._provider.close()

    # --- submit ---------------------------------------------------------------------------------
    def plan(self, paths: Sequence[Path], options: SubmitOptions) -> Plan:
        """Validate and split without writing anything (``submit --dry-run``)."""
        plan = scan(
            paths,
            endpoint=options.endpoint,
            max_requests=options.max_requests,
            max_bytes=options.max_bytes,
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

        Nothing touches the network until the submission, its parts and every request are
        recorded; a crash after that is picked up by the next ``advance``.
        """
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
            provider="openai",
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
        self.advance(run_id)
        return run_id

    def adopt(self, batch_id: str) -> int:
        """Track a batch that batchctl did not create, as a new submission. Returns its run id.

        Its input file is downloaded to learn its requests, so results merge in input order.
        """
        tracked = self.store.runs_for_batches([batch_id])
        if batch_id in tracked:
            raise UsageError(f"batch {batch_id} is already tracked as run {tracked[batch_id]}")
        batch = self.provider.get_batch(batch_id)
        token = local.new_token()
        directory = local.files_root(self.store.location) / token
        make_private_dirs(directory)
        downloaded = directory / "input.jsonl"
        self.provider.download(batch.input_file_id, downloaded)
        writer = local.PartWriter(directory)
        plan = scan(
            [downloaded], endpoint=batch.endpoint, max_requests=10**9, max_bytes=10**12, sink=writer
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
            provider="openai",
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
        self.advance(run_id)
        return run_id

    # --- drive ----------------------------------------------------------------------------------
    def advance(self, run_id: int, *, refresh: bool = True) -> bool:
        """Do all that can be done for the submission now; True when it is settled."""
        submission = self._submission(run_id)
        if submission.merged_at is not None:
            return True
        driving = _driving(run_id)
        if not driving.acquire(blocking=False):
            return False  # another thread of this process is driving it (the lease names us)
        try:
            return self._advance_leased(run_id, refresh=refresh)
        finally:
            driving.release()

    def _advance_leased(self, run_id: int, *, refresh: bool) -> bool:
        now = self.clock()
        until = now + timedelta(seconds=LEASE_S)
        holder = self.store.take_submission_lease(run_id, self.owner, until, now)
        if holder is not None and is_dead(holder):
            # Its driver died (kill -9): take over now rather than wait for the lease to run out.
            self.store.release_submission_lease(run_id, holder)
            holder = self.store.take_submission_lease(run_id, self.owner, until, now)
        if holder is not None:
            return False  # another process is driving it right now
        try:
            # Read again under the lease: another process may have settled it meanwhile.
            submission = self._submission(run_id)
            if submission.merged_at is not None:
                return True
            for part in self.store.parts(run_id):
                self._advance_part(submission, part, refresh=refresh)
            self._resubmit_expired(submission)
            return self._settle(submission)
        finally:
            self.store.release_submission_lease(run_id, self.owner)

    def _advance_part(self, submission: Submission, part: Part, *, refresh: bool) -> None:
        if part.batch_id is None and part.status not in TERMINAL:
            part = self._send(submission, part)
        elif part.status not in TERMINAL and refresh:
            part = self._record_remote(part, self.provider.get_batch(part.batch_id or ""))
        if part.status in TERMINAL and part.downloaded_at is None:
            self._download(submission, part)

    def _send(self, submission: Submission, part: Part) -> Part:
        if self._settling(
            part.upload_started_at if part.input_file_id is None else part.create_started_at
        ):
            return part  # a crashed process's call may still be landing: look again shortly
        if part.input_file_id is None:
            part = self._upload(part)
        key = f"{self.store.instance_id()}:{submission.token}:{part.number}"
        found: RemoteBatch | None = None
        if part.create_started_at is not None:  # a create may have happened: never repeat it
            found = self.provider.find_batch(PART_KEY, key, since=_since(part.create_started_at))
        if found is None:
            self.store.update_part(part.id, create_started_at=self.clock())
            metadata = {PART_KEY: key, RUN_KEY: str(part.run_id), **submission.metadata}
            found = self.provider.create_batch(
                input_file_id=part.input_file_id or "",
                endpoint=submission.endpoint,
                completion_window=submission.completion_window,
                metadata=metadata,
            )
        return self._record_remote(part, found)

    def _settling(self, intent: datetime | None) -> bool:
        """True while a call recorded at ``intent`` by another process may still take effect.

        A process killed mid-call may have sent a request that the server has not finished
        handling; looking for its result at once could miss it and send it twice.
        """
        if intent is None:
            return False
        return (self.clock() - intent).total_seconds() < INTENT_SETTLE_S

    def _upload(self, part: Part) -> Part:
        path = Path(part.path)
        found = None
        if part.upload_started_at is not None:  # an upload may have happened: adopt it
            found = self.provider.find_file(
                part.filename, path.stat().st_size, since=_since(part.upload_started_at)
            )
        if found is None:
            self.store.update_part(part.id, upload_started_at=self.clock())
            found = self.provider.upload(path, part.filename)
        self.store.update_part(part.id, input_file_id=found.id, status="uploaded")
        return part._replace(input_file_id=found.id, status="uploaded")

    def _record_remote(self, part: Part, batch: RemoteBatch) -> Part:
        errors = [dict(e) for e in batch.errors]
        fields = {
            "batch_id": batch.id,
            "status": batch.status,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "request_counts": batch.request_counts.to_json(),
            "usage": dict(batch.usage) if batch.usage else None,
            "errors": errors,
            "remote_created_at": batch.created_at,
            "expires_at": batch.expires_at,
            "refreshed_at": self.clock(),
        }
        self.store.update_part(part.id, **fields)
        return part._replace(
            batch_id=batch.id,
            status=batch.status,
            output_file_id=batch.output_file_id,
            error_file_id=batch.error_file_id,
            request_counts=batch.request_counts.to_json(),
            errors=errors,
        )

    def _download(self, submission: Submission, part: Part) -> None:
        directory = Path(submission.directory)
        for kind, file_id in (("output", part.output_file_id), ("error", part.error_file_id)):
            if file_id is None:
                continue
            destination = self._fetch(directory, part.number, kind, file_id)
            self.store.record_results(part.id, read_results(destination, kind), self.clock())
        outcome, code, message = _SETTLE[part.status]
        if part.status == "failed" and part.errors:
            first = part.errors[0]
            code, message = str(first.get("code") or code), str(first.get("message") or message)
        self.store.settle_pending(part.id, outcome, code, message)
        self.store.update_part(part.id, downloaded_at=self.clock())

    def _fetch(self, directory: Path, number: int, kind: str, file_id: str) -> Path:
        """The downloaded file, fetched once: whole (renamed into place) and checksummed."""
        destination = local.download_path(directory, number, kind)
        if not local.checksum_ok(destination):
            self.provider.download(file_id, destination)
            local.write_checksum(destination)
        return destination

    def _verify_downloads(self, submission: Submission, parts: dict[int, Part]) -> None:
        """Fetch again any download whose content no longer matches its checksum."""
        directory = Path(submission.directory)
        for part in parts.values():
            if part.downloaded_at is None:
                continue
            for kind, file_id in (("output", part.output_file_id), ("error", part.error_file_id)):
                if file_id is not None:
                    self._fetch(directory, part.number, kind, file_id)

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
        self.write_results(run_id, path)
        local.write_checksum(path)  # so that ``results`` can copy it rather than merge again
        summary = self.store.request_summary(run_id)
        cost = cost_of(
            self.store.tokens_by_model(run_id),
            self.config.prices,
            self.config.batches.batch_discount,
        )
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
        finished = self.store.finish_submission_run(
            run_id,
            status,
            items_processed=succeeded,
            items_failed=failed,
            total_tokens=summary["input_tokens"] + summary["output_tokens"],
            total_cost=cost.batch,
            error=error,
            now=self.clock(),
        )
        if not finished:
            return True  # settled by another process: its results and on_complete stand
        self.store.mark_merged(run_id, str(path), self.clock())
        self._drop_unneeded_inputs(submission)
        if run is not None:
            from batchctl.jobs.openai import after_settle

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
    ) -> Run:
        """Drive the submission until it is settled (or ``timeout`` seconds pass)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            settled = self.advance(run_id)
            run = self._run(run_id)
            if on_progress is not None:
                on_progress(run, self.store.parts(run_id))
            if settled:
                return run
            if deadline is not None and time.monotonic() >= deadline:
                raise WaitTimeout(run_id)
            pause = self.config.openai.poll_interval
            if deadline is not None:
                pause = max(0.0, min(pause, deadline - time.monotonic()))
            self.sleep(pause)

    def cancel(self, run_id: int) -> list[Part]:
        """Cancel every part that has not ended; parts never sent end at once."""
        self._submission(run_id)
        self.store.request_cancel(run_id)
        for part in self.store.parts(run_id):
            if part.status in TERMINAL:
                continue
            if part.batch_id is None:
                self.store.update_part(part.id, status="cancelled")
            elif part.status != "cancelling":
                self._record_remote(part, self.provider.cancel_batch(part.batch_id))
        return self.store.parts(run_id)

    def retry(self, run_id: int, outcomes: Sequence[str]) -> int:
        """Send the requests with these outcomes again, in new parts of the same submission."""
        submission = self._submission(run_id)
        if any(p.status not in TERMINAL for p in self.store.parts(run_id)):
            raise UsageError(
                f"run {run_id} still has batches in flight",
                hint=f"wait for them: batchctl wait {run_id}",
            )
        waiting = self.store.requests_to_resend(run_id, outcomes, submission.max_request_attempts)
        if not waiting:
            raise UsageError(
                f"run {run_id} has no {'/'.join(outcomes)} requests left to retry",
                hint=f"each request is sent at most {submission.max_request_attempts} times "
                "([batches] max_request_attempts)",
            )
        # Reopen first: a crash after it leaves a submission that the next advance settles
        # again; recording the new parts first would leave them unsent behind a merged one.
        self.store.reopen_submission(run_id, self.clock(), f"retrying {len(waiting)} request(s)")
        count = self._resend(submission, outcomes)
        self.advance(run_id)
        return count

    def _resend(self, submission: Submission, outcomes: Sequence[str]) -> int:
        requests = self.store.requests_to_resend(
            submission.run_id, outcomes, submission.max_request_attempts
        )
        if not requests:
            return 0
        parts = {p.id: p for p in self.store.parts(submission.run_id)}
        number = max(p.number for p in parts.values())
        next_round = max(p.round for p in parts.values()) + 1
        by_model: dict[str, list[RequestState]] = {}
        for request in requests:
            by_model.setdefault(parts[request.part_id].model, []).append(request)
        directory = Path(submission.directory)
        handles: dict[str, IO[bytes]] = {}
        try:
            for model, group in by_model.items():
                for chunk in _chunks(group, self.config.batches.max_requests):
                    number += 1
                    self._write_resend_part(
                        submission, directory, number, next_round, model, chunk, parts, handles
                    )
        finally:
            for handle in handles.values():
                handle.close()
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
        """Write one result line per request (input order by default), atomically."""
        parts = {p.id: p for p in self.store.parts(run_id)}
        submission = self._submission(run_id)
        merged = merged_copy_source(submission, fmt=fmt, order=order, errors_path=errors_path)
        if merged is not None:
            return self._copy_merged(run_id, merged, path)
        self._verify_downloads(submission, parts)
        directory = Path(submission.directory)
        lines = local.LineReader()
        paths: dict[tuple[int, str], Path] = {}
        temporary = path.with_name(path.name + ".part")
        errors_temporary = (
            None if errors_path is None else errors_path.with_name(errors_path.name + ".part")
        )
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            with temporary.open("w", encoding="utf-8") as out:
                errors_out = (
                    None
                    if errors_temporary is None
                    else errors_temporary.open("w", encoding="utf-8")
                )
                try:
                    writer = MergedWriter(out, fmt, errors_out)
                    for request in self.store.requests_in_order(run_id, order=order):
                        raw = _result_line(request, parts, directory, lines, paths)
                        writer.write(request, raw)
                finally:
                    if errors_out is not None:
                        errors_out.close()
            temporary.replace(path)
            if errors_temporary is not None and errors_path is not None:
                errors_temporary.replace(errors_path)
        finally:
            lines.close()
        return self.summary(run_id, path, errors_path)

    def _copy_merged(self, run_id: int, merged: Path, path: Path) -> ResultSummary:
        """Write the merged file of a settled submission to ``path`` as it is (a copy, whole
        or not at all), rather than merge the downloads again."""
        if not local.same_file(merged, path):  # ``results`` without -o: it is already there
            temporary = path.with_name(path.name + ".part")
            path.parent.mkdir(parents=True, exist_ok=True)
            with temporary.open("w", encoding="utf-8") as out:
                copy_merged(merged, out)
            temporary.replace(path)
        return self.summary(run_id, path)

    def summary(self, run_id: int, path: Path, errors_path: Path | None = None) -> ResultSummary:
        """The outcome counts, tokens and cost of a submission whose results are at ``path``."""
        summary = self.store.request_summary(run_id)
        cost = cost_of(
            self.store.tokens_by_model(run_id),
            self.config.prices,
            self.config.batches.batch_discount,
        )
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
        )

    # --- lookups --------------------------------------------------------------------------------
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


class WaitTimeout(UsageError):
    exit_code = ExitCode.FAILED

    def __init__(self, run_id: int) -> None:
        super().__init__(f"run {run_id} is still in progress", hint=f"batchctl wait {run_id}")


_DRIVING: dict[int, threading.Lock] = {}
_DRIVING_GUARD = threading.Lock()


def _driving(run_id: int) -> threading.Lock:
    """The lock a thread holds while it drives a submission: the store's lease names the
    process (host and pid), so threads of one process need this too."""
    with _DRIVING_GUARD:
        return _DRIVING.setdefault(run_id, threading.Lock())


def remove_files(submission: Submission) -> None:
    shutil.rmtree(submission.directory, ignore_errors=True)


def _since(moment: datetime) -> int:
    return int(moment.timestamp()) - FIND_SLACK_S


def _chunks(items: list[RequestState], size: int) -> list[list[RequestState]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _breakdown(summary: dict[str, int]) -> str:
    names = ("failed", "expired", "cancelled", "missing", "pending")
    return ", ".join(f"{summary[n]} {n}" for n in names if summary.get(n))


def _result_line(
    request: RequestState,
    parts: dict[int, Part],
    directory: Path,
    lines: local.LineReader,
    paths: dict[tuple[int, str], Path],
) -> bytes | None:
    """The raw line of the request's result in its downloaded file, if it has one."""
    if request.result_part_id is None or request.result_offset is None:
        return None
    kind = request.result_kind or "output"
    key = (request.result_part_id, kind)
    if key not in paths:
        paths[key] = local.download_path(directory, parts[request.result_part_id].number, kind)
    return lines.line(paths[key], request.result_offset, request.result_length or 0)
