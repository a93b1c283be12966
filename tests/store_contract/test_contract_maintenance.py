"""Store contract: metrics and health aggregates, and the deletes of ``prune``."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from batchctl.records import (
    LogEntry,
    LogLevel,
    Owner,
    PartPlanRow,
    RequestRow,
    RunOutcome,
    RunStatus,
    SchedulePosition,
    Submission,
)
from batchctl.store.base import Store

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ME = Owner("host-a", 101)


def _at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _finished(store: Store, job: str, status: RunStatus, start: float, end: float) -> int:
    run_id = store.create_run(
        job=job,
        scope=None,
        trigger="manual",
        status=RunStatus.QUEUED,
        max_attempts=1,
        now=_at(start),
    )
    store.start_attempt(run_id, 1, ME, _at(end), _at(start))
    store.finish_run(run_id, RunOutcome(status, total_tokens=10, total_cost=0.25), _at(end))
    return run_id


def _submission(store: Store, token: str) -> int:
    return store.record_submission(
        job="batch",
        scope=None,
        trigger="submit",
        now=T0,
        submission=Submission(
            0, "openai", "/v1/chat/completions", "24h", {}, token, [], f"/tmp/{token}", token,
            1, 10, "retry", 3, None, None,
        ),
        parts=[PartPlanRow(1, 1, "m", 1, 10, "/tmp/p", "f.jsonl")],
        requests=[RequestRow("r0", 0, 1, 0, 10)],
    )  # fmt: skip


def test_run_stats(store: Store) -> None:
    _finished(store, "b-job", RunStatus.COMPLETED, 0, 1)
    _finished(store, "b-job", RunStatus.COMPLETED, 10, 10.5)
    _finished(store, "B-job", RunStatus.FAILED, 0, 2)
    store.create_run(
        job="a-job", scope=None, trigger="manual", status=RunStatus.QUEUED, max_attempts=1, now=T0
    )
    stats = store.run_stats()
    assert [(s.job, s.status, s.runs, s.duration_count) for s in stats] == [
        ("B-job", "failed", 1, 1),
        ("a-job", "queued", 1, 0),
        ("b-job", "completed", 2, 2),
    ]
    completed = stats[2]
    assert completed.total_tokens == 20 and completed.total_cost == pytest.approx(0.5)
    assert completed.duration_sum == pytest.approx(90.0, abs=0.01)
    assert completed.last_finished_at == _at(10.5)
    assert stats[1].last_finished_at is None and stats[1].duration_sum == 0.0


def test_tick_part_and_schedule_aggregates(store: Store) -> None:
    store.record_ticks(
        "j",
        None,
        pending=[_at(1), _at(2)],
        closed=[(_at(0), "missed", "x")],
        cursor=_at(3),
        priority=0,
        now=T0,
    )
    store.set_cursor("k", "eu", _at(7))
    assert store.tick_stats(["pending", "missed"]) == {("j", "pending"): 2, ("j", "missed"): 1}
    assert store.tick_stats([]) == {}
    assert store.schedule_positions() == {
        ("j", None): SchedulePosition(_at(3), _at(2)),
        ("k", "eu"): SchedulePosition(_at(7), None),
    }
    run_id = _submission(store, "t1")
    part = store.parts(run_id)[0]
    store.update_part(part.id, status="in_progress")
    assert store.part_stats() == {("openai", "in_progress"): 1}
    store.mark_merged(run_id, "/tmp/out", store.request_totals(run_id), T0)
    assert store.part_stats() == {}


def test_prune_runs_keeps_active_recent_and_unmerged_ones(store: Store) -> None:
    old = _finished(store, "j", RunStatus.COMPLETED, 0, 1)
    store.append_logs(
        [LogEntry(old, 1, T0, LogLevel.INFO, "x"), LogEntry(old, 1, T0, LogLevel.INFO, "y")]
    )
    recent = _finished(store, "j", RunStatus.COMPLETED, 100, 200)
    active = store.create_run(
        job="j", scope=None, trigger="manual", status=RunStatus.QUEUED, max_attempts=1, now=T0
    )
    unmerged = _submission(store, "t1")
    store.finish_submission_run(
        unmerged, RunStatus.COMPLETED, items_processed=1, items_failed=0, total_tokens=0,
        total_cost=0.0, error=None, now=_at(1),
    )  # fmt: skip
    cutoff = _at(50)
    prunable = store.prunable_runs(cutoff)
    assert [(p.id, p.log_lines, p.directory) for p in prunable] == [(old, 2, None)]
    assert store.prunable_runs(cutoff, after_id=old) == []
    assert store.unmerged_finished_count(cutoff) == 1
    store.mark_merged(unmerged, "/tmp/out", store.request_totals(unmerged), _at(2))
    assert [p.id for p in store.prunable_runs(cutoff, limit=1)] == [old]
    assert [(p.id, p.directory) for p in store.prunable_runs(cutoff)][1] == (unmerged, "/tmp/t1")
    assert store.delete_runs([old, recent, active, unmerged], cutoff) == [old, unmerged]
    assert store.get_run(old) is None and store.logs(old) == []
    assert store.get_submission(unmerged) is None and store.parts(unmerged) == []
    assert store.get_run(recent) is not None and store.get_run(active) is not None
    assert store.delete_runs([], cutoff) == []
    store.compact()
    store.compact(vacuum=True)


def test_prune_ticks_and_daemons(store: Store) -> None:
    store.record_ticks(
        "j",
        None,
        pending=[_at(1), _at(2), _at(3)],
        closed=[(_at(0), "missed", "x")],
        cursor=_at(3),
        priority=0,
        now=T0,
    )
    fired = store.claim_ticks(2, _at(5))
    store.close_tick(fired[0].id, "fired", run_id=12345)  # its run is gone: prunable
    # fired[1] was fired since firing_since with no run recorded yet: kept; _at(3) pending: kept.
    assert store.prune_ticks(_at(10), _at(4), dry_run=True) == 2
    assert store.prune_ticks(_at(10), _at(4)) == 2
    assert sorted(t.scheduled_for for t in store.ticks()) == [_at(2), _at(3)]
    assert store.cursor("j", None) == _at(3)

    store.register_daemon("stopped", ME, "daemon", T0)
    store.daemon_stopped("stopped", _at(1))
    store.register_daemon("dead", ME, "daemon", T0)
    store.register_daemon("holder", ME, "daemon", T0)
    store.take_daemon_lock(
        "holder", ME, datetime.now(UTC) + timedelta(seconds=60), datetime.now(UTC)
    )
    store.register_daemon("alive", ME, "daemon", _at(100))
    assert store.prune_daemons(_at(50), _at(50), dry_run=True) == 2
    assert store.prune_daemons(_at(50), _at(50)) == 2
    assert sorted(d.instance for d in store.daemons()) == ["alive", "holder"]
