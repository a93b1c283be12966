"""Store contract: batch submissions, their parts and requests, and the submission lease."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from batchctl.records import (
    LogEntry,
    LogLevel,
    ModelTokens,
    Owner,
    PartPlanRow,
    RequestResult,
    RequestRow,
    RunStatus,
    Submission,
    utcnow,
)
from batchctl.store.base import Store

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
ME = Owner("host-a", 101)
OTHER = Owner("host-b", 202)


def _submit(store: Store, token: str = "tok1", sha: str = "sha-1", requests: int = 4) -> int:
    submission = Submission(
        run_id=0,
        provider="openai",
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"z": "1", "a": "2"},
        input_sha256=sha,
        inputs=["in.jsonl"],
        directory=f"/tmp/{token}",
        token=token,
        requests=requests,
        bytes=1000,
        on_expired="retry",
        max_request_attempts=3,
        merged_at=None,
        results_path=None,
    )
    parts = [
        PartPlanRow(1, 1, "gpt-4o-mini", 2, 500, "/tmp/p1", "f1.jsonl"),
        PartPlanRow(2, 1, "gpt-4o", requests - 2, 500, "/tmp/p2", "f2.jsonl"),
    ]
    rows = [RequestRow(f"r{i}", i, 1 if i < 2 else 2, i * 100, 100) for i in range(requests)]
    return store.record_submission(
        job="batch",
        scope=None,
        trigger="submit",
        now=T0,
        submission=submission,
        parts=parts,
        requests=iter(rows),
        scheduled_for=T0 - timedelta(minutes=5),
    )


def _result(
    custom_id: str, outcome: str, kind: str, offset: int, tokens: int = 10
) -> RequestResult:
    return RequestResult(
        custom_id,
        outcome,
        200 if outcome == "succeeded" else 400,
        None,
        None,
        tokens,
        1,
        kind,
        offset,
        50,
        cached_tokens=tokens // 2,
        reasoning_tokens=1,
    )


def test_record_and_read_a_submission(store: Store) -> None:
    run_id = _submit(store)
    run = store.get_run(run_id)
    assert run is not None and run.status is RunStatus.RUNNING and run.attempts == 1
    assert run.scheduled_for == T0 - timedelta(minutes=5) and run.started_at == T0
    assert [t.reason for t in store.transitions(run_id)] == ["submitting 4 requests in 2 part(s)"]
    sub = store.get_submission(run_id)
    assert sub is not None
    assert sub.run_id == run_id and sub.metadata == {"z": "1", "a": "2"}
    assert list(sub.metadata) == ["z", "a"] and sub.inputs == ["in.jsonl"]
    assert (sub.token, sub.requests, sub.bytes, sub.merged_at) == ("tok1", 4, 1000, None)
    assert store.get_submission(run_id + 99) is None
    assert store.submission_for_input("sha-1") == run_id
    assert store.submission_for_input("nope") is None
    assert store.submissions_in_flight() == [run_id]
    assert len(store.instance_id()) == 32
    parts = store.parts(run_id)
    assert [(p.number, p.model, p.status, p.request_counts, p.errors, p.usage) for p in parts] == [
        (1, "gpt-4o-mini", "planned", {}, [], None),
        (2, "gpt-4o", "planned", {}, [], None),
    ]
    assert store.parts_for_runs([run_id, run_id + 99]) == {run_id: parts}
    assert store.parts_for_runs([]) == {}
    requests = list(store.requests_in_order(run_id))
    assert [(r.custom_id, r.ordinal, r.part_id, r.attempts, r.outcome) for r in requests] == [
        ("r0", 0, parts[0].id, 1, None),
        ("r1", 1, parts[0].id, 1, None),
        ("r2", 2, parts[1].id, 1, None),
        ("r3", 3, parts[1].id, 1, None),
    ]
    assert store.request_summaries([run_id])[run_id] == {
        "pending": 4,
        "input_tokens": 0,
        "output_tokens": 0,
    }


def test_update_part_and_runs_for_batches(store: Store) -> None:
    run_id = _submit(store)
    part = store.parts(run_id)[0]
    store.update_part(
        part.id,
        status="in_progress",
        batch_id="batch_1",
        input_file_id="file_1",
        upload_started_at=T0,
        request_counts={"total": 2, "completed": 1},
        usage={"input_tokens": 3},
        errors=[{"code": "x"}],
        expires_at=1_900_000_000,
        downloaded_at=T0 + timedelta(seconds=1),
    )
    updated = store.parts(run_id)[0]
    assert updated.status == "in_progress" and updated.batch_id == "batch_1"
    assert updated.upload_started_at == T0 and updated.expires_at == 1_900_000_000
    assert updated.request_counts == {"total": 2, "completed": 1}
    assert updated.usage == {"input_tokens": 3} and updated.errors == [{"code": "x"}]
    assert updated.downloaded_at == T0 + timedelta(seconds=1)
    store.update_part(part.id, usage=None)
    assert store.parts(run_id)[0].usage is None
    assert store.runs_for_batches(["batch_1", "batch_2"]) == {"batch_1": run_id}
    assert store.runs_for_batches([]) == {}
    with pytest.raises(ValueError, match="not a part column"):
        store.update_part(part.id, model="other")


def test_a_hold_is_recorded_and_read_back(store: Store) -> None:
    run_id = _submit(store)
    part = store.parts(run_id)[0]
    store.update_part(
        part.id,
        held_since=T0,
        held_at=T0 + timedelta(seconds=5),
        held_until=T0 + timedelta(seconds=65),
        hold_reason="Enqueued token limit reached",
        hold_tries=2,
    )
    held = store.parts(run_id)[0]
    assert (held.held_since, held.held_at) == (T0, T0 + timedelta(seconds=5))
    assert held.held_until == T0 + timedelta(seconds=65)
    assert (held.hold_reason, held.hold_tries) == ("Enqueued token limit reached", 2)
    assert held.waiting_for_quota
    assert store.parts(run_id)[1].hold_tries == 0 and not store.parts(run_id)[1].waiting_for_quota


def test_enqueued_bytes_count_the_parts_of_a_model_in_flight(store: Store) -> None:
    first = store.parts(_submit(store))[0]
    second = store.parts(_submit(store, "tok2", "sha-2"))[0]
    assert first.model == second.model == "gpt-4o-mini"
    assert store.enqueued_bytes("openai", "gpt-4o-mini", besides=second.id) == 0  # not sent
    store.update_part(first.id, status="in_progress", batch_id="b1")
    store.update_part(second.id, create_started_at=T0)  # a create under way counts too
    assert store.enqueued_bytes("openai", "gpt-4o-mini", besides=0) == 1000
    assert store.enqueued_bytes("openai", "gpt-4o-mini", besides=second.id) == 500
    assert store.enqueued_bytes("azure", "gpt-4o-mini", besides=0) == 0
    assert store.enqueued_bytes("openai", "gpt-4o", besides=0) == 0
    store.update_part(first.id, status="completed", refreshed_at=T0 + timedelta(seconds=10))
    assert store.enqueued_bytes("openai", "gpt-4o-mini", besides=second.id) == 0


def test_batch_ended_since_looks_at_when_an_end_was_seen(store: Store) -> None:
    part = store.parts(_submit(store))[0]
    store.update_part(part.id, status="in_progress", batch_id="b1", refreshed_at=T0)
    assert not store.batch_ended_since("openai", "gpt-4o-mini", T0 - timedelta(seconds=1))
    store.update_part(part.id, status="completed", refreshed_at=T0 + timedelta(seconds=10))
    assert store.batch_ended_since("openai", "gpt-4o-mini", T0 + timedelta(seconds=10))
    assert not store.batch_ended_since("openai", "gpt-4o-mini", T0 + timedelta(seconds=11))
    assert not store.batch_ended_since("openai", "gpt-4o", T0)
    assert not store.batch_ended_since("groq", "gpt-4o-mini", T0)


def test_update_parts_writes_parts_and_log_lines_together(store: Store) -> None:
    run_id = _submit(store)
    first, second = store.parts(run_id)
    lines = [LogEntry(run_id, 1, T0, LogLevel.INFO, "part 1: moved", "batch", {"part": 1})]

    store.update_parts(
        [
            (first.id, {"status": "in_progress", "refreshed_at": T0}),
            (second.id, {"request_counts": {"total": 2}}),
        ],
        lines,
    )
    store.update_parts([])  # nothing to write: no transaction

    updated = store.parts(run_id)
    assert updated[0].status == "in_progress" and updated[1].request_counts == {"total": 2}
    assert [(e.message, e.stream, e.fields) for e in store.logs(run_id)] == [
        ("part 1: moved", "batch", {"part": 1})
    ]
    with pytest.raises(ValueError, match="not a part column"):
        store.update_parts([(first.id, {"status": "failed"}), (second.id, {"model": "x"})])
    assert store.parts(run_id)[0].status == "in_progress"  # all or nothing


def test_results_settle_orders_summary_and_tokens(store: Store) -> None:
    run_id = _submit(store)
    p1, p2 = store.parts(run_id)
    store.record_results(
        p2.id,
        [_result("r3", "succeeded", "output", 0), _result("r2", "failed", "error", 0, 5)],
        T0,
    )
    store.record_results(p1.id, [_result("r1", "succeeded", "output", 0, 7)], T0)
    store.record_results(p1.id, [_result("r3", "succeeded", "output", 9)], T0)  # not in p1
    # recording results does not mark the part downloaded: its caller does, once every file of
    # the part is recorded and settled (a crash in between must not lose outcomes)
    assert store.parts(run_id)[0].downloaded_at is None
    assert store.settle_pending(p1.id, "expired", "batch_expired", "it expired") == 1
    assert store.settle_pending(p1.id, "expired", "batch_expired", "again") == 0
    by_input = [(r.custom_id, r.outcome) for r in store.requests_in_order(run_id)]
    assert by_input == [
        ("r0", "expired"),
        ("r1", "succeeded"),
        ("r2", "failed"),
        ("r3", "succeeded"),
    ]
    completion = [r.custom_id for r in store.requests_in_order(run_id, order="completion")]
    assert completion == ["r1", "r3", "r2", "r0"]
    r0 = next(iter(store.requests_in_order(run_id)))
    assert (r0.error_code, r0.error_message, r0.result_part_id) == (
        "batch_expired",
        "it expired",
        None,
    )
    assert store.request_summaries([run_id])[run_id] == {
        "expired": 1,
        "succeeded": 2,
        "failed": 1,
        "input_tokens": 22,
        "output_tokens": 3,
    }
    assert store.request_totals(run_id).tokens == [
        ModelTokens("gpt-4o", 15, 2, cached_tokens=5 + 2, reasoning_tokens=2),
        ModelTokens("gpt-4o-mini", 7, 1, cached_tokens=3, reasoning_tokens=1),
    ]
    summary = store.request_summaries([run_id])[run_id]
    assert all(type(v) is int for v in summary.values())  # not Decimal: the core does arithmetic
    summaries = store.request_summaries([run_id, run_id + 99])
    assert summaries == {run_id: summary, run_id + 99: {"input_tokens": 0, "output_tokens": 0}}
    assert all(type(v) is int for v in summaries[run_id].values())
    assert all(type(n) is int for row in store.request_totals(run_id).tokens for n in row[1:])


def test_failure_codes_count_failed_requests_by_code_and_status(store: Store) -> None:
    run_id = _submit(store)
    p1, p2 = store.parts(run_id)
    server = RequestResult("r0", "failed", 500, None, "boom", 0, 0, "error", 0, 50)
    invalid = RequestResult("r1", "failed", 400, "invalid_request", "bad", 0, 0, "error", 50, 50)
    store.record_results(p1.id, [server, invalid], T0)
    store.record_results(p2.id, [_result("r2", "succeeded", "output", 0)], T0)
    store.settle_pending(p2.id, "failed", "batch_failed", "the batch failed")

    found = store.failure_codes([run_id, run_id + 99])

    assert sorted(found[run_id], key=str) == sorted(
        [(None, 500, 1), ("invalid_request", 400, 1), ("batch_failed", None, 1)], key=str
    )
    assert found[run_id + 99] == []
    assert all(type(row[2]) is int for row in found[run_id])


def test_request_totals_agree_with_the_summary_and_the_failure_codes_in_one_pass(
    store: Store,
) -> None:
    run_id = _submit(store)
    p1, p2 = store.parts(run_id)
    server = RequestResult("r0", "failed", 500, None, "boom", 3, 0, "error", 0, 50)
    store.record_results(p1.id, [server, _result("r1", "succeeded", "output", 0)], T0)
    store.record_results(p2.id, [_result("r2", "expired", "error", 0)], T0)

    totals = store.request_totals(run_id)

    assert totals.counts == store.request_summaries([run_id])[run_id]
    assert totals.failures == store.failure_codes([run_id])[run_id] == [(None, 500, 1)]
    assert sum(t.input_tokens for t in totals.tokens) == totals.counts["input_tokens"]
    assert [t.model for t in totals.tokens] == sorted({p1.model, p2.model})
    assert all(type(v) is int for v in totals.counts.values())


def test_request_totals_of_a_merged_submission_are_those_stored_at_the_merge(
    store: Store,
) -> None:
    run_id = _submit(store)
    p1, _ = store.parts(run_id)
    store.record_results(p1.id, [_result("r1", "succeeded", "output", 0)], T0)
    merged = store.request_totals(run_id)
    stored = merged._replace(counts={**merged.counts, "succeeded": 99})  # told apart from a count
    store.mark_merged(run_id, "/tmp/results.jsonl", stored, T0)

    assert store.request_totals(run_id) == stored
    store.reopen_submission(run_id, T0, "retry --failed")
    assert store.request_totals(run_id) == merged  # counted again once reopened


def test_output_history_counts_the_succeeded_requests_of_a_job_by_model(store: Store) -> None:
    run_id = _submit(store)
    p1, p2 = store.parts(run_id)
    store.record_results(p1.id, [_result("r0", "succeeded", "output", 0)], T0)
    store.record_results(p1.id, [_result("r1", "failed", "error", 0)], T0)
    store.record_results(p2.id, [_result("r2", "succeeded", "output", 0)], T0)
    store.record_results(p2.id, [_result("r3", "succeeded", "output", 9)], T0)

    assert store.output_history("batch") == {"gpt-4o-mini": (1, 1), "gpt-4o": (2, 2)}
    assert store.output_history("another-job") == {}


def test_a_run_records_its_unpriced_models_apart_from_its_cost(store: Store) -> None:
    priced, unpriced = _submit(store), _submit(store, token="tok2", sha="sha-2")
    for run_id, models in ((priced, ()), (unpriced, ("zeta-model", "alpha-model"))):
        store.finish_submission_run(
            run_id,
            RunStatus.COMPLETED,
            items_processed=4,
            items_failed=0,
            total_tokens=40,
            total_cost=0.25,
            unpriced_models=models,
            error=None,
            now=T0,
        )

    first, second = store.get_run(priced), store.get_run(unpriced)
    assert first is not None and second is not None
    assert (first.total_cost, first.unpriced_models) == (0.25, ())
    assert (second.total_cost, second.unpriced_models) == (0.25, ("alpha-model", "zeta-model"))


def test_resend_parts_move_requests_and_count_attempts(store: Store) -> None:
    run_id = _submit(store)
    p1, p2 = store.parts(run_id)
    store.record_results(p2.id, [_result("r2", "failed", "error", 0)], T0)
    store.settle_pending(p1.id, "expired", "batch_expired", "late")
    resend = store.requests_to_resend(run_id, ["expired", "failed"], 3)
    assert [r.custom_id for r in resend] == ["r0", "r1", "r2"]
    assert store.requests_to_resend(run_id, ["expired"], 1) == []
    new_part = store.record_resend_part(
        run_id,
        PartPlanRow(3, 2, "gpt-4o-mini", 2, 200, "/tmp/p3", "f3.jsonl"),
        [("r0", 0, 100), ("r2", 100, 100)],
    )
    assert [p.number for p in store.parts(run_id)] == [1, 2, 3]
    moved = {r.custom_id: r for r in store.requests_in_order(run_id)}
    assert (moved["r0"].part_id, moved["r0"].attempts, moved["r0"].outcome) == (new_part, 2, None)
    assert (moved["r2"].line_offset, moved["r2"].error_code) == (100, None)
    assert moved["r1"].outcome == "expired" and moved["r1"].attempts == 1


def test_merge_finish_and_reopen(store: Store) -> None:
    run_id = _submit(store)
    assert store.finish_submission_run(
        run_id,
        RunStatus.PARTIAL,
        items_processed=3,
        items_failed=1,
        total_tokens=40,
        total_cost=0.01,
        error="1 failed",
        now=T0 + timedelta(seconds=9),
    )
    assert not store.finish_submission_run(
        run_id,
        RunStatus.COMPLETED,
        items_processed=4,
        items_failed=0,
        total_tokens=0,
        total_cost=0,
        error=None,
        now=T0,
    )
    totals = store.request_totals(run_id)
    store.mark_merged(run_id, "/tmp/results.jsonl", totals, T0 + timedelta(seconds=10))
    sub = store.get_submission(run_id)
    assert sub is not None and sub.merged_at == T0 + timedelta(seconds=10)
    assert sub.results_path == "/tmp/results.jsonl"
    assert store.request_totals(run_id) == totals
    assert store.submissions_in_flight() == []
    run = store.get_run(run_id)
    assert run is not None and run.status is RunStatus.PARTIAL and run.items_failed == 1
    store.request_cancel(run_id)
    store.reopen_submission(run_id, T0 + timedelta(minutes=1), "retry --failed")
    run = store.get_run(run_id)
    assert run is not None
    assert (run.status, run.attempts, run.max_attempts, run.error) == (
        RunStatus.RUNNING,
        2,
        2,
        None,
    )
    assert run.finished_at is None and not run.cancel_requested
    assert store.submissions_in_flight() == [run_id]
    # (The sums stored at the merge are cleared too: see the test of request_totals below.)
    last = store.transitions(run_id)[-1]
    assert (last.from_status, last.to_status, last.reason) == (
        RunStatus.PARTIAL,
        RunStatus.RUNNING,
        "retry --failed",
    )


def test_submission_lease(store: Store) -> None:
    run_id = _submit(store)
    now = utcnow()
    assert store.take_submission_lease(run_id, ME, now + timedelta(seconds=60), now) is None
    assert store.take_submission_lease(run_id, ME, now + timedelta(seconds=60), now) is None
    assert store.take_submission_lease(run_id, OTHER, now + timedelta(seconds=60), now) == ME
    store.release_submission_lease(run_id, OTHER)  # not the holder: nothing happens
    assert store.take_submission_lease(run_id, OTHER, now + timedelta(seconds=60), now) == ME
    store.release_submission_lease(run_id, ME)
    assert store.take_submission_lease(run_id, OTHER, now - timedelta(seconds=1), now) is None
    # OTHER's lease has run out: anyone may take it over.
    assert store.take_submission_lease(run_id, ME, now + timedelta(seconds=60), now) is None
    assert store.take_submission_lease(run_id + 99, ME, now, now) is None


def test_a_submission_failed_before_any_create_is_recorded_so_and_is_no_duplicate(
    store: Store,
) -> None:
    run_id = _submit(store)
    (part, _) = store.parts(run_id)
    store.update_part(part.id, upload_started_at=T0, input_file_id="file-1", status="uploaded")

    assert store.fail_unsent_submission(run_id, "HTTP 401", T0 + timedelta(seconds=1))

    run = store.get_run(run_id)
    assert run is not None and (run.status, run.error) == (RunStatus.FAILED, "HTTP 401")
    assert {p.status for p in store.parts(run_id)} == {"not_sent"}
    assert store.submissions_in_flight() == []
    assert store.submission_for_input("sha-1") is None
    assert not store.fail_unsent_submission(run_id, "again", T0)  # it has ended


def test_a_submission_interrupted_before_any_create_is_recorded_cancelled_and_no_duplicate(
    store: Store,
) -> None:
    run_id = _submit(store)

    assert store.fail_unsent_submission(run_id, "interrupted", T0, RunStatus.CANCELLED)

    run = store.get_run(run_id)
    assert run is not None and (run.status, run.error) == (RunStatus.CANCELLED, "interrupted")
    assert store.submission_for_input("sha-1") is None


def test_a_submission_with_a_create_attempted_is_not_failed_as_unsent(store: Store) -> None:
    run_id = _submit(store)
    (part, _) = store.parts(run_id)
    store.update_part(part.id, create_started_at=T0)

    assert not store.fail_unsent_submission(run_id, "timed out", T0)

    run = store.get_run(run_id)
    assert run is not None and run.status is RunStatus.RUNNING
    assert store.submission_for_input("sha-1") == run_id


def test_known_tokens_are_those_of_recorded_submissions(store: Store) -> None:
    _submit(store, token="tok1")
    _submit(store, token="tok2", sha="sha-2")

    assert store.known_tokens(["tok2", "gone", "tok1"]) == {"tok1", "tok2"}
    assert store.known_tokens([]) == set()


def test_a_parts_remote_times_are_kept(store: Store) -> None:
    run_id = _submit(store)
    part = store.parts(run_id)[0]

    store.update_part(part.id, remote_created_at=1_700_000_000, remote_ended_at=1_700_000_021)

    updated = store.parts(run_id)[0]
    assert (updated.remote_created_at, updated.remote_ended_at) == (1_700_000_000, 1_700_000_021)


def test_a_submission_run_ends_when_its_work_ended_not_when_it_was_recorded(store: Store) -> None:
    run_id = _submit(store)
    ended = T0 + timedelta(seconds=21)
    recorded = T0 + timedelta(minutes=7)

    assert store.finish_submission_run(
        run_id,
        RunStatus.COMPLETED,
        items_processed=4,
        items_failed=0,
        total_tokens=40,
        total_cost=0.01,
        error=None,
        now=recorded,
        finished_at=ended,
    )

    run = store.get_run(run_id)
    assert run is not None and run.finished_at == ended and run.duration == 21.0
    assert store.transitions(run_id)[-1].at == recorded
    (stats,) = [s for s in store.run_stats() if s.job == "batch"]
    assert stats.duration_count == 1
    assert stats.duration_sum == pytest.approx(21.0, abs=0.01)


def test_results_named_by_ordinal_are_recorded_against_that_request_of_the_part(
    store: Store,
) -> None:
    # Message Batches results name their request by the derived id sent for it: its ordinal.
    run_id = _submit(store)
    _, p2 = store.parts(run_id)
    store.record_results(
        p2.id,
        [
            RequestResult(
                "sent-3",
                "succeeded",
                None,
                None,
                None,
                30,
                4,
                "output",
                0,
                50,
                cached_tokens=5,
                cache_write_tokens=6,
                cache_write_1h_tokens=2,
                ordinal=3,
            ),
            RequestResult(
                "sent-2",
                "failed",
                None,
                "overloaded_error",
                "busy",
                0,
                0,
                "output",
                50,
                40,
                ordinal=2,
            ),
            RequestResult(
                "sent-1", "succeeded", None, None, None, 9, 9, "output", 90, 50, ordinal=1
            ),  # request 1 is p1's: not recorded against p2
        ],
        T0,
    )
    outcomes = [(r.custom_id, r.outcome, r.error_code) for r in store.requests_in_order(run_id)]
    assert outcomes == [
        ("r0", None, None),
        ("r1", None, None),
        ("r2", "failed", "overloaded_error"),
        ("r3", "succeeded", None),
    ]
    assert store.request_totals(run_id).tokens == [
        ModelTokens(
            "gpt-4o", 30, 4, cached_tokens=5, cache_write_tokens=6, cache_write_1h_tokens=2
        ),
        ModelTokens("gpt-4o-mini", 0, 0),
    ]
