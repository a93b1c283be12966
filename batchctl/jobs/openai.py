"""Jobs of kind ``openai``: a configured batch submission.

``input`` is a file or glob (relative to the config file's directory; ``{scope}`` is replaced by
the run's scope) or ``{ command = "..." }`` whose stdout is the JSONL. A run submits it like
``batchctl submit`` does and ends when the submission's results are merged; then the merged
results are copied to ``output_dir`` and ``on_complete`` runs with their path (batches/delivery.py).
"""

from __future__ import annotations

import glob
import os
import subprocess
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from batchctl.config import JobConfig
from batchctl.errors import UsageError
from batchctl.records import RunStatus, utcnow

if TYPE_CHECKING:
    from batchctl.batches.submission import Batches


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
    from batchctl.batches.submission import DuplicateInput, SubmitOptions

    config = batches.config
    settings = config.batches
    options = SubmitOptions(
        endpoint=job.endpoint,
        completion_window=job.completion_window,
        metadata=dict(job.metadata),
        max_requests=settings.max_requests,
        max_bytes=settings.max_bytes,
        on_expired=job.on_expired,
    )
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
