"""The run lifecycle in process: the engine runs ``python`` jobs (processors on a thread) on a real
SQLite store, with a fake clock for everything the engine reads as "now" (leases, locks,
recorded times). Attempts, retries with backoff, locks and timeouts, each in milliseconds; the
same with real processes (command jobs, signals, kill -9) is the slow layer's
(tests/test_locks_and_signals.py, tests/test_crash_harness.py).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from batchctl.config import Config, JobConfig, RetryPolicy
from batchctl.engine import Engine, EngineSettings, lock_key
from batchctl.owners import this_process
from batchctl.records import Run, RunOutcome, RunStatus
from batchctl.runs import Runs
from batchctl.store.base import Store
from tests.core.emulated import FakeClock

QUICK = EngineSettings(poll=0.002, cancel_check=0.01, log_flush_interval=0.01)


def job(processor: str, **settings: Any) -> JobConfig:
    return JobConfig(
        name="job", kind="python", processor=f"tests.core.processors:{processor}", **settings
    )


class Retries:
    """An observer that hears of each retry and its delay."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    def run_started(self, run_id: int, job: JobConfig, scope: str | None) -> None: ...

    def progress(self, run_id: int, done: int, total: int | None) -> None: ...

    def log(self, entry: object) -> None: ...

    def retrying(self, run_id: int, attempt: int, outcome: RunOutcome, delay: float) -> None:
        self.delays.append(delay)

    def run_finished(self, run: Run) -> None: ...


@pytest.fixture
def engine(store: Store, clock: FakeClock, tmp_path: Path) -> Engine:
    return Engine(store, Config(path=tmp_path / "batchctl.toml"), clock=clock, settings=QUICK)


def test_a_run_that_returns_completes_with_its_figures(engine: Engine) -> None:
    run = engine.run(job("succeed"))
    assert (run.status, run.attempts, run.items_processed) == (RunStatus.COMPLETED, 1, 3)
    assert (run.progress_done, run.progress_total) == (3, 3)


def test_a_run_that_raises_fails_with_the_error(engine: Engine) -> None:
    run = engine.run(job("fail"))
    assert run.status is RunStatus.FAILED
    assert run.error == "RuntimeError: attempt 1 failed"


def test_a_failed_attempt_is_retried_until_one_succeeds(engine: Engine, store: Store) -> None:
    run = engine.run(job("succeed_on_third_attempt", retries=RetryPolicy(3, backoff=0.001)))
    assert (run.status, run.attempts) == (RunStatus.COMPLETED, 3)
    statuses = [a.status for a in store.attempts(run.id)]
    assert statuses == [RunStatus.FAILED, RunStatus.FAILED, RunStatus.COMPLETED]


def test_retries_stop_after_max_attempts(engine: Engine) -> None:
    run = engine.run(job("fail", retries=RetryPolicy(2, backoff=0.001)))
    assert (run.status, run.attempts) == (RunStatus.FAILED, 2)


def test_retries_wait_twice_as_long_each_time_with_jitter(store: Store, clock: FakeClock) -> None:
    retries = Retries()
    engine = Engine(
        store, Config(path=None), clock=clock, settings=QUICK, observer=retries, rand=lambda: 0.5
    )
    engine.run(job("fail", retries=RetryPolicy(4, backoff=0.002, max_backoff=0.006)))
    # Half the delay fixed, half random (0.5 here): 3/4 of 0.002, 0.004, then the cap 0.006.
    assert retries.delays == pytest.approx([0.0015, 0.003, 0.0045])


def test_a_cause_not_in_retry_on_is_not_retried(engine: Engine) -> None:
    policy = RetryPolicy(3, backoff=0.001, on=frozenset({"timeout"}))
    run = engine.run(job("fail", retries=policy))
    assert (run.status, run.attempts) == (RunStatus.FAILED, 1)


def test_a_disabled_job_is_recorded_skipped(store: Store, clock: FakeClock, tmp_path: Path) -> None:
    runs = Runs(store, Config(path=tmp_path / "batchctl.toml"), clock=clock, settings=QUICK)
    run = runs.start(job("succeed", enabled=False))
    assert (run.status, run.reason, run.attempts) == (RunStatus.SKIPPED, "job is disabled", 0)


def test_an_attempt_past_its_timeout_is_stopped(engine: Engine) -> None:
    run = engine.run(job("run_until_cancelled", timeout=0.02, grace=5.0))
    assert run.status is RunStatus.FAILED
    assert run.error is not None and "timed out" in run.error


def queued_run(store: Store, clock: FakeClock) -> int:
    """A run of the job recorded queued by nobody (no process owns it yet)."""
    return store.create_run(
        job="job",
        scope=None,
        trigger="manual",
        status=RunStatus.QUEUED,
        max_attempts=1,
        now=clock(),
    )


def locked_by_another_run(store: Store, clock: FakeClock, lease: float) -> int:
    """A running run of the same job that holds its lock for ``lease`` seconds from now."""
    owner = this_process()
    other = queued_run(store, clock)
    until = clock() + timedelta(seconds=lease)
    assert store.start_attempt(other, 1, owner, until, clock())
    assert store.try_lock(lock_key("job", None), other, owner, until, clock())[0]
    return other


def test_a_run_is_skipped_while_another_holds_its_lock(
    engine: Engine, store: Store, clock: FakeClock
) -> None:
    other = locked_by_another_run(store, clock, lease=30)
    run = engine.run(job("succeed"))
    assert run.status is RunStatus.SKIPPED
    assert run.reason is not None and f"run {other} of job is still running" in run.reason


def test_a_lock_whose_lease_ran_out_is_taken_and_its_run_abandoned(
    engine: Engine, store: Store, clock: FakeClock
) -> None:
    other = locked_by_another_run(store, clock, lease=30)
    clock.advance(31)  # its holder stopped renewing it
    assert engine.run(job("succeed")).status is RunStatus.COMPLETED
    abandoned = engine.get(other)
    assert abandoned.status is RunStatus.ABANDONED
    assert abandoned.reason is not None and "its lease expired" in abandoned.reason


def test_concurrency_allow_runs_beside_a_locked_run(
    engine: Engine, store: Store, clock: FakeClock
) -> None:
    locked_by_another_run(store, clock, lease=30)
    assert engine.run(job("succeed", concurrency="allow")).status is RunStatus.COMPLETED


def test_a_queued_run_is_cancelled_at_once(engine: Engine, store: Store, clock: FakeClock) -> None:
    queued = queued_run(store, clock)
    assert engine.cancel(queued).status is RunStatus.CANCELLED


def test_retry_runs_a_failed_run_again_linked_to_it(store: Store, clock: FakeClock) -> None:
    failing = job("fail")
    runs = Runs(store, Config(path=None, jobs={"job": failing}), clock=clock, settings=QUICK)
    first = runs.start(failing)
    again = runs.retry(first.id).run
    assert (again.trigger, again.retry_of) == ("retry", first.id)


def test_times_are_recorded_by_the_engine_clock(engine: Engine, clock: FakeClock) -> None:
    began = clock()
    run = engine.run(job("succeed"))
    assert run.created_at == run.started_at == run.finished_at == began
