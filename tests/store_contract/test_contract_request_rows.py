"""The requests of a submission as plain rows in input order, as a merge reads them."""

from __future__ import annotations

from batchctl.records import RequestState
from batchctl.store.base import Store
from tests.store_contract.test_contract_batches import T0, _result, _submit


def test_request_rows_in_order_are_the_requests_in_input_order_field_for_field(
    store: Store,
) -> None:
    run_id = _submit(store)
    p1, p2 = store.parts(run_id)
    store.record_results(p2.id, [_result("r3", "succeeded", "output", 0)], T0)
    store.record_results(p1.id, [_result("r0", "failed", "error", 0, 5)], T0)

    rows = list(store.request_rows_in_order(run_id))

    assert [RequestState(*row) for row in rows] == list(store.requests_in_order(run_id))
    assert [row[0] for row in rows] == ["r0", "r1", "r2", "r3"]
