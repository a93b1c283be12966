"""The requests of a submission in input order as a merge of JSONL reads them (``merge_rows``):
a request whose line is copied as it is gives only what the merge reads of it."""

from __future__ import annotations

import pytest

from batchctl.errors import StoreError
from batchctl.records import RequestState
from batchctl.store.base import Store
from tests.store_contract.support import Backend
from tests.store_contract.test_contract_batches import T0, _result, _submit

COPIED_FIELDS = RequestState._fields.index("ordinal") + 1


def test_merge_rows_give_a_succeeded_request_its_first_fields_and_any_other_whole(
    store: Store,
) -> None:
    run_id = _submit(store)
    p1, p2 = store.parts(run_id)
    store.record_results(p2.id, [_result("r3", "succeeded", "output", 0)], T0)
    store.record_results(p1.id, [_result("r0", "failed", "error", 0, 5)], T0)
    states = list(store.requests_in_order(run_id))

    rows = list(store.merge_rows(run_id))

    assert [row[0] for row in rows] == ["r0", "r1", "r2", "r3"]
    assert rows[:3] == states[:3]  # failed, and two without an outcome: whole
    assert all(isinstance(row, RequestState) for row in rows[:3])
    assert len(rows[3]) == COPIED_FIELDS
    assert tuple(rows[3]) == states[3][:COPIED_FIELDS]


def test_merge_rows_give_a_request_changed_between_their_two_queries_whole_and_once(
    backend: Backend, store: Store
) -> None:
    run_id = _submit(store)
    p1, _ = store.parts(run_id)
    store.record_results(p1.id, [_result("r0", "succeeded", "output", 0)], T0)
    rows = store.merge_rows(run_id)
    assert next(rows)[0] == "r0"  # the first query has read r1 without an outcome

    # Another connection records r1 before the second query (of the requests not copied) begins.
    elsewhere = backend.open()
    elsewhere.record_results(p1.id, [_result("r1", "succeeded", "output", 50)], T0)
    elsewhere.close()
    rest = list(rows)

    assert [row[0] for row in rest] == ["r1", "r2", "r3"]
    assert all(isinstance(row, RequestState) for row in rest)
    # SQLite: one connection reads in one transaction, so both queries see the moment the first
    # began. PostgreSQL: each statement sees what was committed when it began, so the second
    # does not hold r1, which is then read as it is now.
    now = (None, None) if backend.name == "sqlite" else ("succeeded", 50)
    assert (rest[0].outcome, rest[0].result_offset) == now
    assert [row.outcome for row in rest[1:]] == [None, None]


def test_merge_rows_refuse_a_request_removed_between_their_two_queries(
    backend: Backend, store: Store
) -> None:
    run_id = _submit(store)
    p1, _ = store.parts(run_id)
    store.record_results(p1.id, [_result("r0", "succeeded", "output", 0)], T0)
    rows = store.merge_rows(run_id)
    assert next(rows)[0] == "r0"  # the first query has read r1

    backend.sql("DELETE FROM requests WHERE run_id = ? AND custom_id = ?", run_id, "r1")

    if backend.name == "sqlite":  # one transaction: r1 is read as the first query saw it
        assert [row[0] for row in rows] == ["r1", "r2", "r3"]
    else:
        with pytest.raises(StoreError, match=r"'r1' of run \d+ was removed during a merge"):
            list(rows)
