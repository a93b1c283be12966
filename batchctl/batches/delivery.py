"""Delivering a settled submission's merged results: the job's ``output_dir`` and ``on_complete``.

Called by the submission when it settles, whichever process settles it (``wait``, ``results``,
the daemon); a run of no configured job, or of a job with neither setting, has nothing to deliver.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

from batchctl.config import Config, JobConfig
from batchctl.records import LogEntry, LogLevel, utcnow

if TYPE_CHECKING:
    from batchctl.store.base import Store

ON_COMPLETE_TIMEOUT_S = 3600


def after_settle(store: Store, config: Config, run_id: int, job_name: str, results: Path) -> None:
    """Deliver a settled run's merged results: copy to ``output_dir``, run ``on_complete``."""
    job = config.jobs.get(job_name)
    if job is None or (job.output_dir is None and not job.on_complete):
        return
    delivered = results
    if job.output_dir is not None:
        job.output_dir.mkdir(parents=True, exist_ok=True)
        delivered = job.output_dir / f"{job.name}-run{run_id}{results.suffix}"
        shutil.copyfile(results, delivered)
    if job.on_complete:
        _on_complete(store, job, run_id, delivered, config.base_dir)


def _on_complete(store: Store, job: JobConfig, run_id: int, results: Path, base_dir: Path) -> None:
    command = job.on_complete or ""
    env = {
        **os.environ,
        **job.env,
        "BATCHCTL_RESULTS": str(results),
        "BATCHCTL_RUN_ID": str(run_id),
        "BATCHCTL_JOB": job.name,
    }
    try:
        finished = subprocess.run(
            command.replace("{results}", str(results)),
            shell=True,
            cwd=job.cwd or base_dir,
            env=env,
            capture_output=True,
            timeout=ON_COMPLETE_TIMEOUT_S,
            check=False,
        )
        lines = [("stdout", line) for line in finished.stdout.decode(errors="replace").splitlines()]
        lines += [
            ("stderr", line) for line in finished.stderr.decode(errors="replace").splitlines()
        ]
        outcome = f"on_complete exited {finished.returncode}"
        level = LogLevel.INFO if finished.returncode == 0 else LogLevel.ERROR
    except (OSError, subprocess.TimeoutExpired) as exc:
        lines, outcome, level = [], f"on_complete failed: {exc}", LogLevel.ERROR
    now = utcnow()
    entries = [LogEntry(run_id, 1, now, LogLevel.INFO, text, stream) for stream, text in lines]
    entries.append(LogEntry(run_id, 1, now, level, outcome, "engine", {"command": command}))
    store.append_logs(entries)
