"""Store contract: runs, attempts, transitions, logs, locks and migrations."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from batchctl.errors import StoreError
from batchctl.records import (
    LockHolder,
    LogEntry,
    LogLevel,
    Owner,
    RunFilter,
    RunOutcome,
    RunStatus,
    utcnow,
)
from batchctl.store import migrations, open_store
from batchctl.store.base import Store
from batchctl.store.migrations import LATEST_VERSION
from tests.store_contract.support import Backend

ME = Owner("host-a", 101)
OTHER = Owner("host-b", 202)
T0 = datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def _run(store: Store, job: str = "job", **extra: object) -> int:
    args: dict[str, object] = {
        "job": job,
        "scope": None,
        "trigger": "manual",
        "status": RunStatus.QUEUED,
        "max_attempts": 2,
        "now": T0,
    }
    args.update(extra)
    return store.create_run(**args)  # type: ignore[arg-type]


# --- runs ----------------------------------------------------------------------------------------
def test_a_created_run_reads_back_with_every_field(store: Store) -> None:
    run_id = _run(store, scope="eu", reason="by hand", scheduled_for=T0 - timedelta(minutes=1))
    run = store.get_run(run_id)
    assert run is not None
    assert (run.id, run.job, run.scope, run.status, run.trigger) == (
        run_id,
        "job",
        "eu",
        RunStatus.QUEUED,
        "manual",
    )
    assert (run.attempts, run.max_attempts, run.reason) == (0, 2, "by hand")
    assert run.created_at == T0 and run.created_at.tzinfo is not None
    assert run.started_at is None and run.finished_at is None and run.owner is None
    assert run.scheduled_for == T0 - timedelta(minutes=1)
    assert run.total_cost == 0.0 and isinstance(run.total_cost, float)
    assert run.cancel_requested is False
    assert store.get_run(run_id + 1000) is None


def test_the_process_group_of_the_unfinished_attempt_is_what_attempt_process_returns(
    store: Store,
) -> None:
    run_id = _run(store, max_attempts=3)
    lease = utcnow() + timedelta(seconds=30)
    assert store.attempt_process(run_id) is None
    assert store.start_attempt(run_id, 1, ME, lease, T0)
    store.record_attempt_process(run_id, 1, 4321, "998877")
    assert store.attempt_process(run_id) == (1, 4321, "998877")
    store.finish_attempt(run_id, 1, RunOutcome(RunStatus.FAILED, error="boom"), T0)
    assert store.attempt_process(run_id) is None  # its attempt ended: nothing is left over
    assert store.start_attempt(run_id, 2, ME, lease, T0)
    assert store.attempt_process(run_id) is None  # not recorded (a python job): nothing
    store.record_attempt_process(run_id, 2, 5555, "1000")
    assert store.attempt_process(run_id) == (2, 5555, "1000")


def test_a_run_without_scope_reads_back_none_and_a_terminal_run_is_finished(store: Store) -> None:
    run_id = _run(store, status=RunStatus.SKIPPED, reason="busy")
    run = store.get_run(run_id)
    assert run is not None and run.scope is None
    assert run.finished_at == T0


def test_start_finish_and_transitions(store: Store) -> None:
    run_id = _run(store)
    now = utcnow()
    assert store.start_attempt(run_id, 1, ME, now + timedelta(seconds=30), T0)
    run = store.get_run(run_id)
    assert run is not None
    assert run.status is RunStatus.RUNNING and run.attempts == 1 and run.owner == ME
    assert run.started_at == T0
    assert run.lease_until is not None and run.lease_until > utcnow()
    store.record_progress(run_id, 3, 10)
    store.finish_attempt(run_id, 1, RunOutcome(RunStatus.FAILED, error="boom", exit_code=2), T0)
    assert store.set_status(run_id, RunStatus.RETRYING, T0, reason="retry 2")
    assert store.start_attempt(run_id, 2, ME, now + timedelta(seconds=30), T0 + timedelta(1))
    outcome = RunOutcome(RunStatus.COMPLETED, items_processed=5, total_tokens=7, total_cost=0.5)
    assert store.finish_run(run_id, outcome, T0 + timedelta(seconds=5))
    assert not store.finish_run(run_id, outcome, T0 + timedelta(seconds=6))
    assert not store.start_attempt(run_id, 3, ME, now, T0)
    run = store.get_run(run_id)
    assert run is not None
    assert run.status is RunStatus.COMPLETED and run.lease_until is None
    assert (run.items_processed, run.total_tokens, run.total_cost) == (5, 7, 0.5)
    assert (run.progress_done, run.progress_total) == (3, 10)
    assert run.started_at == T0 and run.finished_at == T0 + timedelta(seconds=5)
    assert run.duration == 5.0
    attempts = store.attempts(run_id)
    assert [(a.number, a.status, a.error, a.exit_code) for a in attempts] == [
        (1, RunStatus.FAILED, "boom", 2),
        (2, RunStatus.RUNNING, None, None),
    ]
    assert [(t.from_status, t.to_status, t.reason) for t in store.transitions(run_id)] == [
        (None, RunStatus.QUEUED, None),
        (RunStatus.QUEUED, RunStatus.RUNNING, "attempt 1"),
        (RunStatus.RUNNING, RunStatus.RETRYING, "retry 2"),
        (RunStatus.RETRYING, RunStatus.RUNNING, "attempt 2"),
        (RunStatus.RUNNING, RunStatus.COMPLETED, None),
    ]


def _start(store: Store, lock: str | None, owner: Owner = ME) -> tuple[int, bool]:
    return store.start_run(
        job="job",
        scope="eu",
        trigger="schedule",
        max_attempts=2,
        now=T0,
        owner=owner,
        lease_until=T0 + timedelta(seconds=30),
        queued_until=T0 + timedelta(hours=1),
        scheduled_for=T0 - timedelta(seconds=1),
        lock=lock,
    )


def test_start_run_records_the_run_takes_its_lock_and_starts_attempt_one(store: Store) -> None:
    run_id, started = _start(store, "job/eu")
    assert started
    run = store.get_run(run_id)
    assert run is not None
    assert (run.status, run.attempts, run.owner, run.scope, run.trigger) == (
        RunStatus.RUNNING,
        1,
        ME,
        "eu",
        "schedule",
    )
    assert run.created_at == T0 and run.started_at == T0
    assert run.scheduled_for == T0 - timedelta(seconds=1)
    assert run.lease_until is not None
    assert [(a.number, a.status, a.started_at) for a in store.attempts(run_id)] == [
        (1, RunStatus.RUNNING, T0)
    ]
    assert [(t.from_status, t.to_status, t.reason, t.at) for t in store.transitions(run_id)] == [
        (None, RunStatus.QUEUED, None, T0),
        (RunStatus.QUEUED, RunStatus.RUNNING, "attempt 1", T0),
    ]
    holder = store.get_lock("job/eu")
    assert holder is not None and (holder.run_id, holder.owner) == (run_id, ME)
    unlocked, started = _start(store, None)  # no lock named: started beside the holder
    assert started and store.attempts(unlocked)[0].status is RunStatus.RUNNING


def test_start_run_leaves_the_run_queued_while_its_lock_has_a_holder(store: Store) -> None:
    now = utcnow()
    assert store.try_lock("job/eu", 7, OTHER, now - timedelta(seconds=1), now)[0]  # expired
    run_id, started = _start(store, "job/eu")
    assert not started
    run = store.get_run(run_id)
    assert run is not None and run.status is RunStatus.QUEUED and run.attempts == 0
    assert run.owner == ME
    started_id, _ = _start(store, None)
    beside = store.get_run(started_id)  # started: the lease of a running run
    assert beside is not None and beside.lease_until is not None
    assert run.lease_until is not None
    assert run.lease_until > beside.lease_until + timedelta(minutes=30)  # the queued lease
    assert store.attempts(run_id) == []
    assert [(t.from_status, t.to_status) for t in store.transitions(run_id)] == [
        (None, RunStatus.QUEUED)
    ]
    holder = store.get_lock("job/eu")
    assert holder is not None and (holder.run_id, holder.owner) == (7, OTHER)


def test_finish_run_with_its_attempt_and_lock_in_one_call(store: Store) -> None:
    run_id, _ = _start(store, "job/eu")
    outcome = RunOutcome(RunStatus.FAILED, error="boom", exit_code=3, items_failed=2)
    assert store.finish_run(run_id, outcome, T0 + timedelta(seconds=2), attempt=1, lock="job/eu")
    run = store.get_run(run_id)
    assert run is not None
    assert (run.status, run.error, run.items_failed, run.lease_until) == (
        RunStatus.FAILED,
        "boom",
        2,
        None,
    )
    assert run.finished_at == T0 + timedelta(seconds=2)
    assert [(a.status, a.error, a.exit_code, a.finished_at) for a in store.attempts(run_id)] == [
        (RunStatus.FAILED, "boom", 3, T0 + timedelta(seconds=2))
    ]
    assert store.get_lock("job/eu") is None
    assert store.transitions(run_id)[-1].to_status is RunStatus.FAILED


def test_finish_run_of_an_ended_run_still_ends_its_attempt_and_releases_only_its_lock(
    store: Store,
) -> None:
    run_id, _ = _start(store, "job/eu")
    assert store.set_status(run_id, RunStatus.CANCELLED, T0, reason="cancelled")
    other, started = _start(store, "other/eu", OTHER)
    assert started
    outcome = RunOutcome(RunStatus.CANCELLED, error="cancelled", cause="cancelled")
    assert not store.finish_run(run_id, outcome, T0, attempt=1, lock="other/eu")
    assert store.attempts(run_id)[0].status is RunStatus.CANCELLED
    holder = store.get_lock("other/eu")  # held by another run: kept
    assert holder is not None and holder.run_id == other
    assert not store.finish_run(run_id, outcome, T0, lock="job/eu")
    assert store.get_lock("job/eu") is None
    assert len(store.transitions(run_id)) == 3  # queued, running, cancelled: none added


def test_set_status_only_if(store: Store) -> None:
    run_id = _run(store)
    assert not store.set_status(run_id, RunStatus.ABANDONED, T0, only_if=[RunStatus.RUNNING])
    assert store.set_status(run_id, RunStatus.CANCELLED, T0, reason="stop", only_if=[])
    run = store.get_run(run_id)
    assert run is not None and run.status is RunStatus.CANCELLED and run.reason == "stop"
    assert run.finished_at == T0
    assert not store.set_status(run_id + 99, RunStatus.CANCELLED, T0)


def test_cancel_signal_and_renew(store: Store) -> None:
    run_id = _run(store)
    assert store.run_signal(run_id) == (RunStatus.QUEUED, False)
    assert store.start_attempt(run_id, 1, ME, utcnow() + timedelta(seconds=5), utcnow())
    store.request_cancel(run_id)
    assert store.run_signal(run_id) == (RunStatus.RUNNING, True)
    assert store.run_signal(run_id + 99) is None
    before = store.get_run(run_id)
    assert before is not None and before.lease_until is not None
    renewed = store.renew_run(run_id, ME, utcnow() + timedelta(seconds=60))
    assert renewed is not None and renewed.cancel_requested
    assert renewed.lease_until is not None and renewed.lease_until > before.lease_until
    not_mine = store.renew_run(run_id, OTHER, utcnow() + timedelta(seconds=600))
    assert not_mine is not None and not_mine.lease_until == renewed.lease_until
    assert store.renew_run(run_id + 99, ME, utcnow()) is None


def test_list_count_and_last_run_per_job(store: Store) -> None:
    a1 = _run(store, "a", now=T0)
    b1 = _run(store, "b", now=T0 + timedelta(hours=1))
    a2 = _run(store, "a", now=T0 + timedelta(hours=2), status=RunStatus.FAILED)
    assert [r.id for r in store.list_runs(RunFilter())] == [a2, b1, a1]
    assert [r.id for r in store.list_runs(RunFilter(job="a"))] == [a2, a1]
    assert [r.id for r in store.list_runs(RunFilter(status=("failed", "completed")))] == [a2]
    assert [r.id for r in store.list_runs(RunFilter(since=T0 + timedelta(minutes=30)))] == [
        a2,
        b1,
    ]
    assert [r.id for r in store.list_runs(RunFilter(limit=1))] == [a2]
    assert store.count_runs(RunFilter()) == 3
    assert store.count_runs(RunFilter(job="a", status=("queued",))) == 1
    assert {job: run.id for job, run in store.last_run_per_job().items()} == {"a": a2, "b": b1}
    assert [r.id for r in store.active_runs()] == [a1, b1]
    assert [r.id for r in store.active_runs("b")] == [b1]


def test_iter_runs_fetches_in_chunks_the_runs_list_runs_gives(store: Store) -> None:
    ids = [_run(store, "ab"[i % 2], now=T0 + timedelta(minutes=i)) for i in range(7)]
    for query in (
        RunFilter(),
        RunFilter(job="a"),
        RunFilter(status=("queued",), since=T0 + timedelta(minutes=2)),
        RunFilter(limit=5),
        RunFilter(job="b", limit=2),
        RunFilter(limit=4),
    ):
        expected = [r.id for r in store.list_runs(query)]
        for chunk in (1, 2, 3, 1000):
            assert [r.id for r in store.iter_runs(query, chunk=chunk)] == expected, (query, chunk)
    assert [r.id for r in store.iter_runs(RunFilter(), chunk=2)] == ids[::-1]
    assert list(store.iter_runs(RunFilter(job="none"), chunk=2)) == []


def test_runs_past_lease(store: Store) -> None:
    live = _run(store)
    dead = _run(store)
    now = utcnow()
    store.start_attempt(live, 1, ME, now + timedelta(seconds=60), now)
    store.start_attempt(dead, 1, OTHER, now - timedelta(seconds=1), now)
    assert [r.id for r in store.runs_past_lease(utcnow())] == [dead]
    store.renew_run(dead, OTHER, utcnow() + timedelta(seconds=60))
    assert store.runs_past_lease(utcnow()) == []


def test_a_queued_run_with_an_owner_is_past_its_lease_once_that_runs_out(store: Store) -> None:
    now = utcnow()
    waiting = _run(store, now=now, owner=ME, lease_until=now + timedelta(seconds=60))
    stuck = _run(store, now=now, owner=OTHER, lease_until=now - timedelta(seconds=1))
    _run(store, now=now)  # no owner, no lease: never judged by a lease
    assert [r.id for r in store.runs_past_lease(utcnow())] == [stuck]
    run = store.get_run(waiting)
    assert run is not None and run.status is RunStatus.QUEUED and run.owner == ME


# --- logs ----------------------------------------------------------------------------------------
def test_logs_with_levels_fields_and_after_id(store: Store) -> None:
    run_id = _run(store)
    store.append_logs([])
    store.append_logs(
        [
            LogEntry(run_id, 1, T0, LogLevel.DEBUG, "d"),
            LogEntry(run_id, 1, T0, LogLevel.INFO, "i", stream="stdout"),
            LogEntry(run_id, 1, T0, LogLevel.WARNING, "w", fields={"z": 1, "a": [1, "x"]}),
            LogEntry(run_id, 2, T0 + timedelta(seconds=1), LogLevel.ERROR, "e", "stderr"),
        ]
    )
    everything = store.logs(run_id)
    assert [(e.message, e.level, e.stream, e.attempt) for e in everything] == [
        ("d", LogLevel.DEBUG, "engine", 1),
        ("i", LogLevel.INFO, "stdout", 1),
        ("w", LogLevel.WARNING, "engine", 1),
        ("e", LogLevel.ERROR, "stderr", 2),
    ]
    assert everything[2].fields == {"z": 1, "a": [1, "x"]}
    assert list(everything[2].fields) == ["z", "a"]
    assert everything[0].fields == {} and everything[0].at == T0
    ids = [e.id for e in everything]
    assert all(i is not None for i in ids) and ids == sorted(ids)
    assert [e.message for e in store.logs(run_id, min_level=LogLevel.WARNING)] == ["w", "e"]
    assert [e.message for e in store.logs(run_id, after_id=ids[1] or 0)] == ["w", "e"]
    assert store.logs(run_id + 99) == []
    assert [e.message for e in store.logs(run_id, limit=2)] == ["d", "i"]
    for chunk in (1, 2, 3, 4, 1000):
        assert list(store.iter_logs(run_id, chunk=chunk)) == everything
        assert [e.message for e in store.iter_logs(run_id, after_id=ids[0] or 0, chunk=chunk)] == [
            "i",
            "w",
            "e",
        ]
        warned = store.iter_logs(run_id, min_level=LogLevel.WARNING, chunk=chunk)
        assert [e.message for e in warned] == ["w", "e"]


# --- locks ---------------------------------------------------------------------------------------
def test_lock_take_hold_renew_release(store: Store) -> None:
    now = utcnow()
    assert store.try_lock("job:", 1, ME, now + timedelta(seconds=60), now) == (True, None)
    taken, holder = store.try_lock("job:", 2, OTHER, now + timedelta(seconds=60), now)
    assert not taken and holder is not None
    assert (holder.key, holder.run_id, holder.owner) == ("job:", 1, ME)
    assert store.get_lock("job:") == holder
    assert store.renew_lock("job:", 1, utcnow() + timedelta(seconds=120))
    assert not store.renew_lock("job:", 2, utcnow() + timedelta(seconds=120))
    renewed = store.get_lock("job:")
    assert renewed is not None and renewed.lease_until > holder.lease_until
    store.release_lock("job:", 2)  # not the holder: nothing happens
    assert store.get_lock("job:") is not None
    store.release_lock("job:", 1)
    assert store.get_lock("job:") is None
    assert store.try_lock("job:", 2, OTHER, now + timedelta(seconds=60), now) == (True, None)


def test_an_expired_lock_is_taken_over_and_the_replaced_holder_returned(store: Store) -> None:
    now = utcnow()
    assert store.try_lock("k", 1, ME, now - timedelta(seconds=1), now)[0]
    expired = store.get_lock("k")
    assert expired is not None
    taken, replaced = store.try_lock("k", 2, OTHER, now + timedelta(seconds=60), now)
    assert taken and replaced == expired
    current = store.get_lock("k")
    assert current is not None and (current.run_id, current.owner) == (2, OTHER)


def test_steal_lock_only_from_the_named_holder(store: Store) -> None:
    now = utcnow()
    store.try_lock("k", 1, ME, now + timedelta(seconds=60), now)
    holder = store.get_lock("k")
    assert holder is not None
    stale = LockHolder("k", 99, OTHER, holder.lease_until)
    assert not store.steal_lock("k", stale, 3, OTHER, now + timedelta(seconds=60), now)
    assert store.steal_lock("k", holder, 2, OTHER, now + timedelta(seconds=60), now)
    current = store.get_lock("k")
    assert current is not None and (current.run_id, current.owner) == (2, OTHER)
    assert not store.steal_lock("k", holder, 3, ME, now + timedelta(seconds=60), now)
    store.release_lock("k", 2)
    assert store.steal_lock("k", holder, 4, ME, now + timedelta(seconds=60), now)


# --- migrations ----------------------------------------------------------------------------------
def test_the_postgres_migrations_keep_step_with_sqlite() -> None:
    from batchctl.store import postgres_migrations

    assert len(postgres_migrations.MIGRATIONS) == LATEST_VERSION


def test_a_fresh_database_gets_the_latest_schema_and_reopens(
    backend: Backend, fresh_location: Callable[[], str]
) -> None:
    location = fresh_location()
    first = open_store(location)
    instance = first.instance_id()
    first.close()
    again = open_store(location)
    assert again.instance_id() == instance
    again.close()
    fresh = Backend(backend.name, location)
    assert fresh.sql("SELECT max(version), count(*) FROM schema_version") == [
        (LATEST_VERSION, LATEST_VERSION)
    ]


def test_a_database_from_a_newer_batchctl_is_refused(
    backend: Backend, fresh_location: Callable[[], str]
) -> None:
    location = fresh_location()
    open_store(location).close()
    fresh = Backend(backend.name, location)
    fresh.sql("INSERT INTO schema_version (version, applied_at) VALUES (?, ?)", 999, T0.isoformat())
    with pytest.raises(StoreError, match="newer than this batchctl"):
        open_store(location)


# What a database's schema is made of, as its catalogue tells it: every table's, index's and
# column's definition.
_SCHEMA = {
    "sqlite": ["SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY name"],
    "postgres": [
        "SELECT table_name, ordinal_position, column_name, data_type, is_nullable, column_default"
        " FROM information_schema.columns WHERE table_schema = current_schema() ORDER BY 1, 2",
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() ORDER BY 1",
    ],
}


@pytest.mark.parametrize("version", [1, 3, 10])
def test_a_database_upgraded_from_an_older_schema_gets_the_schema_of_a_fresh_one(
    backend: Backend,
    fresh_location: Callable[[], str],
    monkeypatch: pytest.MonkeyPatch,
    version: int,
) -> None:
    fresh, older = Backend(backend.name, fresh_location()), Backend(backend.name, fresh_location())
    open_store(fresh.location).close()
    with monkeypatch.context() as patch:  # the batchctl that knew the first ``version`` only
        patch.setattr(migrations, "MIGRATIONS", migrations.MIGRATIONS[:version])
        patch.setattr(migrations, "LATEST_VERSION", version)
        open_store(older.location).close()
    assert older.sql("SELECT max(version) FROM schema_version") == [(version,)]
    open_store(older.location).close()
    for query in _SCHEMA[backend.name]:
        assert older.sql(query) == fresh.sql(query)


# --- errors --------------------------------------------------------------------------------------
def test_a_database_error_is_a_store_error_whatever_the_driver(store: Store) -> None:
    # The core and the CLI know batchctl's errors only, never sqlite3's or psycopg's.
    run_id = _run(store)
    store.close()
    with pytest.raises(StoreError, match="database error"):
        store.get_run(run_id)
    with pytest.raises(StoreError):
        store.request_cancel(run_id)
