"""Store contract: ticks (inserted once, claimed once), cursors, pauses, the daemons."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from batchctl.records import Owner, Tick, utcnow
from batchctl.store.base import Store
from tests.store_contract.support import Backend

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ME = Owner("host-a", 101)
OTHER = Owner("host-b", 202)


def _at(minutes: int) -> datetime:
    return T0 + timedelta(minutes=minutes)


def _record(store: Store, job: str, *minutes: int, priority: int = 0, cursor: int = 0) -> list[int]:
    return store.record_ticks(
        job,
        None,
        pending=[_at(m) for m in minutes],
        closed=[],
        cursor=_at(cursor or max(minutes, default=0)),
        priority=priority,
        now=T0,
    )


def test_a_tick_is_inserted_once_and_the_cursor_only_moves_forward(store: Store) -> None:
    assert store.cursor("j", None) is None
    store.set_cursor("j", None, _at(0))
    store.set_cursor("j", None, _at(-100))  # only when there is none
    assert store.cursor("j", None) == _at(0)
    first = _record(store, "j", 1, 2)
    assert len(first) == 2
    assert _record(store, "j", 1, 2) == []
    assert _record(store, "j", 2, 3) != [] and len(_record(store, "j", 4)) == 1
    assert store.cursor("j", None) == _at(4)
    _record(store, "j", cursor=1)  # an older cursor never moves it back
    assert store.cursor("j", None) == _at(4)
    assert store.pending_tick_count() == 4
    store.record_ticks(
        "j",
        "eu",
        pending=[],
        closed=[(_at(1), "missed", "catchup=latest"), (_at(2), "skipped", "paused")],
        cursor=_at(2),
        priority=0,
        now=T0,
    )
    assert store.cursor("j", "eu") == _at(2) and store.cursor("j", None) == _at(4)
    ticks = store.ticks(job="j")
    assert [(t.scheduled_for, t.scope, t.status) for t in ticks] == [
        (_at(4), None, "pending"),
        (_at(3), None, "pending"),
        (_at(2), "eu", "skipped"),
        (_at(2), None, "pending"),
        (_at(1), "eu", "missed"),
        (_at(1), None, "pending"),
    ]
    assert store.ticks(limit=2) == ticks[:2] and store.ticks(job="other") == []
    assert store.tick_counts(_at(2)) == {("j", "pending"): 3, ("j", "skipped"): 1}


def test_claim_ticks_by_priority_then_time_and_close_them(store: Store) -> None:
    low = _record(store, "low", 1, 2)
    high = _record(store, "high", 5, priority=10)
    claimed = store.claim_ticks(2, _at(10))
    assert [(t.job, t.scheduled_for, t.status) for t in claimed] == [
        ("high", _at(5), "fired"),
        ("low", _at(1), "fired"),
    ]
    assert [t.id for t in claimed] == [high[0], low[0]]
    assert claimed[0].priority == 10
    assert store.pending_tick_count() == 1
    assert [t.id for t in store.claim_ticks(5, _at(10))] == [low[1]]
    assert store.claim_ticks(5, _at(10)) == []
    store.close_tick(low[0], "fired", run_id=7)
    store.close_tick(low[1], "skipped", reason="busy")
    last = store.last_tick_per_job()
    assert {job: (t.id, t.status, t.run_id, t.reason) for job, t in last.items()} == {
        "low": (low[1], "skipped", None, "busy"),
        "high": (high[0], "fired", None, None),
    }


def test_claim_ticks_closes_the_claimers_finished_tick_in_the_same_call(store: Store) -> None:
    first, second = _record(store, "j", 1, 2)
    [done] = store.claim_ticks(1, _at(10), claimer="d1")
    assert done.id == first
    closing = done._replace(status="fired", run_id=7, reason=None)
    [following] = store.claim_ticks(1, _at(11), claimer="d1", closing=closing)
    assert following.id == second
    skipped = following._replace(status="skipped", run_id=8, reason="locked out")
    assert store.claim_ticks(1, _at(12), claimer="d1", closing=skipped) == []
    by_id = {t.id: (t.status, t.run_id, t.reason) for t in store.ticks()}
    assert by_id == {first: ("fired", 7, None), second: ("skipped", 8, "locked out")}
    assert store.claim_ticks(0, _at(13), closing=skipped._replace(reason=None)) == []
    assert store.ticks(limit=1)[0].reason == "locked out"  # a reason of None keeps it


def test_claim_ticks_closes_several_finished_ticks_in_the_same_call(store: Store) -> None:
    first, second, third = _record(store, "j", 1, 2, 3)
    done = store.claim_ticks(2, _at(10), claimer="d1")
    assert [t.id for t in done] == [first, second]
    closing = [
        done[0]._replace(status="fired", run_id=7, reason=None),
        done[1]._replace(status="skipped", run_id=8, reason="locked out"),
    ]
    [following] = store.claim_ticks(5, _at(11), claimer="d1", closing=closing)
    assert following.id == third
    by_id = {t.id: (t.status, t.run_id, t.reason) for t in store.ticks()}
    assert by_id == {
        first: ("fired", 7, None),
        second: ("skipped", 8, "locked out"),
        third: ("fired", None, None),
    }


def test_release_ticks_puts_claimed_unstarted_ticks_back_to_pending(store: Store) -> None:
    started, unstarted, untouched = _record(store, "j", 1, 2, 3)
    claimed = store.claim_ticks(2, _at(10), claimer="d1")
    assert [t.id for t in claimed] == [started, unstarted]
    store.close_tick(started, "fired", run_id=7)
    # Only a claimed tick without a run goes back; a pending one is left as it is.
    assert store.release_ticks([started, unstarted, untouched]) == 1
    assert store.pending_tick_count() == 2
    assert [t.id for t in store.claim_ticks(5, _at(11), claimer="d2")] == [unstarted, untouched]
    assert store.release_ticks([]) == 0


def test_reopen_ticks_skipped_while_paused(store: Store) -> None:
    store.record_ticks(
        "j",
        None,
        pending=[],
        closed=[(_at(m), "skipped", "paused") for m in (1, 2, 3)],
        cursor=_at(3),
        priority=0,
        now=T0,
    )
    assert store.reopen_ticks("j", _at(2), latest_only=True, limit=10) == 1
    assert [t.scheduled_for for t in store.claim_ticks(10, T0)] == [_at(3)]
    assert store.reopen_ticks("j", _at(0), latest_only=False, limit=10) == 2
    reopened = store.claim_ticks(10, T0)
    assert [(t.scheduled_for, t.reason) for t in reopened] == [
        (_at(1), "fired at resume"),
        (_at(2), "fired at resume"),
    ]


def test_pauses(store: Store) -> None:
    assert store.paused() == {}
    assert store.pause("j", T0, "maintenance")
    assert not store.pause("j", _at(1), "again")
    assert store.paused() == {"j": T0}
    assert store.resume("j") == T0
    assert store.resume("j") is None
    assert store.paused() == {}


def test_two_stores_recording_the_same_ticks_at_once_insert_each_once(backend: Backend) -> None:
    stores = [backend.open(), backend.open()]
    results: list[list[int]] = [[], []]
    start = threading.Barrier(2)

    def record(index: int) -> None:
        start.wait()
        for minute in range(1, 21):
            results[index] += _record(stores[index], "race", minute)

    threads = [threading.Thread(target=record, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(results[0]) + len(results[1]) == 20
    assert not set(results[0]) & set(results[1])
    assert stores[0].pending_tick_count() == 20


def test_two_concurrent_claimers_never_get_the_same_tick(backend: Backend) -> None:
    setup = backend.open()
    for job in range(4):
        _record(setup, f"job{job}", *range(1, 16))
    stores = [backend.open(), backend.open()]
    claimed: list[list[Tick]] = [[], []]
    start = threading.Barrier(2)

    def claim(index: int) -> None:
        start.wait()
        while True:
            got = stores[index].claim_ticks(3, T0)
            if not got:
                return
            claimed[index] += got

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ids = [t.id for t in claimed[0] + claimed[1]]
    assert len(ids) == 60 and len(set(ids)) == 60
    assert setup.pending_tick_count() == 0


# --- the daemons ---------------------------------------------------------------------------------
def test_daemon_lock_take_renew_release_and_expiry(store: Store) -> None:
    now = utcnow()
    assert store.daemon_lock_holder() is None
    assert store.take_daemon_lock("d1", ME, now + timedelta(seconds=60), now) is None
    assert store.take_daemon_lock("d1", ME, now + timedelta(seconds=60), now) is None
    assert store.take_daemon_lock("d2", OTHER, now + timedelta(seconds=60), now) == ("d1", ME)
    holder = store.daemon_lock_holder()
    assert holder is not None and holder[:2] == ("d1", ME) and holder[2] > utcnow()
    assert store.renew_daemon_lock("d1", utcnow() + timedelta(seconds=60))
    assert not store.renew_daemon_lock("d2", utcnow() + timedelta(seconds=60))
    store.release_daemon_lock("d2")  # not the holder: nothing happens
    assert store.daemon_lock_holder() is not None
    store.release_daemon_lock("d1")
    assert store.daemon_lock_holder() is None
    assert store.take_daemon_lock("d2", OTHER, now - timedelta(seconds=1), now) is None
    # d2's lease has run out: d1 takes over.
    assert store.take_daemon_lock("d1", ME, now + timedelta(seconds=60), now) is None
    holder = store.daemon_lock_holder()
    assert holder is not None and holder[0] == "d1"


def test_daemons_register_beat_stop_and_are_listed(store: Store) -> None:
    store.register_daemon("d1", ME, "daemon", T0)
    store.register_daemon("d2", OTHER, "daemon", _at(1))
    store.register_daemon("o1", ME, "once", _at(2))
    store.daemon_heartbeat("d1", _at(5), passed=True)
    store.daemon_heartbeat("d2", _at(3))
    store.daemon_stopped("o1", _at(2))
    listed = store.daemons()
    assert [(d.instance, d.host, d.pid, d.mode) for d in listed] == [
        ("d1", "host-a", 101, "daemon"),
        ("d2", "host-b", 202, "daemon"),
        ("o1", "host-a", 101, "once"),
    ]
    d1, d2, o1 = listed
    assert (d1.started_at, d1.heartbeat_at, d1.last_pass_at, d1.stopped_at) == (
        T0,
        _at(5),
        _at(5),
        None,
    )
    assert d2.last_pass_at is None and o1.stopped_at == _at(2)
    assert [d.instance for d in store.daemons(limit=1)] == ["d1"]
    latest = store.latest_daemon("daemon")
    assert latest is not None and latest.instance == "d1"
    assert store.latest_daemon("once") is None  # stopped
    assert [d.instance for d in store.daemons_since(_at(4))] == ["d1", "d2"]
    assert [d.instance for d in store.daemons_since(_at(0))] == ["d1", "d2", "o1"]
    store.register_daemon("d1", ME, "daemon", _at(6))  # re-registering starts afresh
    again = store.daemons(limit=1)[0]
    assert (again.instance, again.started_at, again.last_pass_at) == ("d1", _at(6), None)


def test_serial_jobs_get_one_tick_at_a_time(store: Store) -> None:
    _record(store, "s", 1, 2, 3)
    _record(store, "p", 1, 2)
    first = store.claim_ticks(10, _at(10), serial_jobs={"s"})
    assert [(t.job, t.scheduled_for) for t in first] == [
        ("s", _at(1)),
        ("p", _at(1)),
        ("p", _at(2)),
    ]
    busy = {("s", None): _at(10)}
    again = store.claim_ticks(10, _at(11), busy=busy, serial_jobs={"s"})
    assert [(t.job, t.scheduled_for) for t in again] == []
    _record(store, "s", 30)
    later = store.claim_ticks(10, _at(40), busy={("s", None): _at(10)}, serial_jobs={"s"})
    # ticks due before the running one was handed out wait; the one due later is handed out
    assert [(t.job, t.scheduled_for) for t in later] == [("s", _at(30))]
    assert [t.scheduled_for for t in store.claim_ticks(10, _at(41), serial_jobs={"s"})] == [_at(2)]
