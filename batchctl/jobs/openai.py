"""Jobs of kind ``batch`` (``openai`` is its old name): a configured batch submission.

``input`` is a file or glob (relative to the config file's directory; ``{scope}`` is replaced by
the run's scope) or ``{ command = "..." }`` whose stdout is the JSONL. A run submits it like
``batchctl submit`` does and ends when the submission's results are merged; then the merged
results are copied to ``output_dir`` and ``on_complete`` runs with their path (batches/delivery.py).
"""

from __future__ import annotations

import glob
import os
import subprocess
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from batchctl.config import ON_EXPIRED, Config, JobConfig
from batchctl.errors import UsageError
from batchctl.jobs import Retried, StartRequest
from batchctl.providers.profiles import DEFAULT_PROVIDER, ProviderSettings
from batchctl.records import REQUEST_OUTCOMES, RequestOutcome, Run, RunStatus, utcnow

if TYPE_CHECKING:
    from batchctl.batches.submission import Batches, SubmitOptions
    from batchctl.runs import Runs


class BatchKind:
    """A run submits the job's input as a batch submission and goes on at the provider; it ends
    when a later ``wait``, ``results`` or daemon pass merges its results."""

    remote = True

    def start(self, runs: Runs, job: JobConfig, scope: str | None, request: StartRequest) -> Run:
        batches = runs.batches()
        trigger, when = request.trigger, request.scheduled_for
        return runs.get(submit_job(batches, job, scope, trigger=trigger, scheduled_for=when))

    def cancel(self, runs: Runs, run: Run) -> Run:
        runs.batches().cancel(run.id)
        return runs.get(run.id)

    def retry(
        self, runs: Runs, run: Run, outcomes: Sequence[str], *, include_invalid: bool = False
    ) -> Retried:
        """Send again the requests with these outcomes (all that did not succeed, by default)
        as new parts of the same submission: those that can succeed on a second try, and with
        ``include_invalid`` the invalid failures too."""
        chosen = outcomes or [o for o in REQUEST_OUTCOMES if o != RequestOutcome.SUCCEEDED]
        count = runs.batches().retry(run.id, chosen, include_invalid=include_invalid)
        return Retried(runs.get(run.id), count)


KIND = BatchKind()


def submit_options(
    job: JobConfig | None,
    config: Config,
    *,
    provider: str | None = None,
    endpoint: str | None = None,
    completion_window: str | None = None,
    metadata: Mapping[str, str] | None = None,
    max_requests: int | None = None,
    max_bytes: int | None = None,
    on_expired: str | None = None,
    force: bool = False,
) -> SubmitOptions:
    """A submission's options: each one given, else the job's, else ``[batches]``'s (and the
    provider's limits). Given metadata is added to the job's (a key given twice takes the given
    value)."""
    from batchctl.batches.submission import SubmitOptions

    settings = config.batches
    name = provider or (job.provider if job else DEFAULT_PROVIDER)
    profile = config.provider(name)
    most_requests, most_bytes = settings.limits(profile)
    options = SubmitOptions(
        endpoint=endpoint or (job.endpoint if job else None),
        completion_window=completion_window
        or (job.completion_window if job else settings.completion_window),
        metadata={**(dict(job.metadata) if job else {}), **(metadata or {})},
        max_requests=most_requests if max_requests is None else max_requests,
        max_bytes=most_bytes if max_bytes is None else max_bytes,
        on_expired=on_expired or (job.on_expired if job else settings.on_expired),
        force=force,
        provider=name,
    )
    _check(options, profile)
    return options


def _check(options: SubmitOptions, provider: ProviderSettings) -> None:
    """The provider's limits and batchctl's reserved keys, named as ``submit``'s options (a
    job's own values were checked with the config, by the same rules)."""
    from batchctl.batches.metadata import metadata_problems

    problems = metadata_problems(options.metadata or {})
    if problems:
        raise UsageError(f"--metadata: {problems[0]}")
    if options.on_expired not in ON_EXPIRED:
        raise UsageError(f"--on-expired: expected keep or resubmit, got {options.on_expired!r}")
    if options.completion_window not in provider.windows:
        raise UsageError(
            f"--completion-window: {provider.name} offers {', '.join(provider.windows)},"
            f" not {options.completion_window!r}"
        )
    if options.max_requests < 1 or options.max_bytes < 1:
        raise UsageError("--max-requests and --max-bytes must be 1 or more")
    if options.max_requests > provider.max_requests:
        raise UsageError(
            f"--max-requests: {provider.name} takes at most {provider.max_requests:,} requests"
            " per batch"
        )
    if options.max_bytes > provider.max_bytes:
        raise UsageError(
            f"--max-bytes: {provider.name} takes at most {provider.max_bytes:,} bytes per batch"
        )


def submit_job(
    batches: Batches,
    job: JobConfig,
    scope: str | None,
    *,
    trigger: str = "manual",
    scheduled_for: datetime | None = None,
) -> int:
    """Submit one run of an ``openai`` job; returns its run id."""
    from batchctl.batches import files as local
    from batchctl.batches.submission import DuplicateInput

    config = batches.config
    options = submit_options(job, config)
    staging = local.files_root(batches.store.location) / "inputs"
    paths = _inputs(job, scope, config.base_dir, staging)
    try:
        return batches.submit(
            paths, options, job=job.name, scope=scope, trigger=trigger, scheduled_for=scheduled_for
        )
    except DuplicateInput as exc:
        # A job whose input has not changed has nothing new to pay for: the run is skipped.
        return batches.store.create_run(
            job=job.name,
            scope=scope,
            trigger=trigger,
            status=RunStatus.SKIPPED,
            max_attempts=1,
            now=batches.clock(),
            scheduled_for=scheduled_for,
            reason=f"input unchanged since run {exc.run_id} (same content); nothing to submit",
        )
    finally:
        if job.input_command is not None:
            for path in paths:
                path.unlink(missing_ok=True)


def _inputs(job: JobConfig, scope: str | None, base_dir: Path, staging: Path) -> list[Path]:
    if job.input_command is not None:
        return [_run_input_command(job, scope, base_dir, staging)]
    assert job.input is not None
    pattern = job.input.replace("{scope}", scope or "")
    matches = sorted(glob.glob(str(base_dir / pattern)))
    if not matches:
        raise UsageError(f"jobs.{job.name}.input: no file matches {pattern!r} (in {base_dir})")
    return [Path(m) for m in matches]


def _run_input_command(job: JobConfig, scope: str | None, base_dir: Path, staging: Path) -> Path:
    assert job.input_command is not None
    staging.mkdir(parents=True, exist_ok=True)
    target = staging / f"{job.name}-{os.getpid()}-{utcnow().strftime('%Y%m%dT%H%M%S%f')}.jsonl"
    env = {**os.environ, **job.env, "BATCHCTL_JOB": job.name, "BATCHCTL_SCOPE": scope or ""}
    with target.open("wb") as out:
        finished = subprocess.run(
            job.input_command,
            shell=True,
            cwd=job.cwd or base_dir,
            env=env,
            stdout=out,
            stderr=subprocess.PIPE,
            timeout=job.timeout,
            check=False,
        )
    if finished.returncode != 0:
        target.unlink(missing_ok=True)
        detail = finished.stderr.decode(errors="replace").strip().splitlines()[-1:] or [""]
        raise UsageError(
            f"jobs.{job.name}.input: the command exited {finished.returncode}: {detail[0]}"
        )
    return target
