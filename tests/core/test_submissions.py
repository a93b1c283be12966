"""Submissions in process: submit, split, refresh, settle in input order, retry, cancel, resume.

The core (``batchctl.batches.submission.Batches``) on a real SQLite store, against the emulator's
state machine on a fake clock: a batch moves only when the test advances the clock, and a wait
advances it instead of sleeping. The same behaviours end to end (the SDK over HTTP, the CLI) are
the slow layer's (tests/batches).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from batchctl.batches.submission import INTENT_SETTLE_S, Batches, DuplicateInput, SubmitOptions
from batchctl.errors import BatchctlError
from batchctl.records import RunStatus
from batchctl.store.base import Store
from tests.conftest import write_chat_requests
from tests.core.emulated import EmulatedProvider, FakeClock

SPLIT = SubmitOptions(max_requests=2)  # 5 requests make 3 parts


class Crash(BaseException):
    """The process dies here (kill -9): nothing after the call is recorded."""


@pytest.fixture
def requests(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    write_chat_requests(path, 5)
    return path


def merged_ids(batches: Batches, run_id: int) -> list[str]:
    submission = batches.store.get_submission(run_id)
    assert submission is not None and submission.results_path is not None
    lines = Path(submission.results_path).read_text().splitlines()
    return [json.loads(line)["custom_id"] for line in lines]


def test_submit_sends_each_part_as_a_batch(
    batches: Batches, provider: EmulatedProvider, requests: Path
) -> None:
    run_id = batches.submit([requests], SPLIT)
    parts = batches.store.parts(run_id)
    assert [p.requests for p in parts] == [2, 2, 1]
    assert sorted(p.batch_id for p in parts) == sorted(b.id for b in provider.batches())
    assert {p.status for p in parts} == {"validating"}


def test_submit_records_the_run_before_the_first_call(
    batches: Batches, provider: EmulatedProvider, store: Store, requests: Path
) -> None:
    provider.lose_reply("upload", Crash())
    with pytest.raises(Crash):
        batches.submit([requests], SPLIT)
    (run_id,) = store.submissions_in_flight()
    assert [p.upload_started_at is not None for p in store.parts(run_id)] == [True, False, False]


def test_refresh_records_what_the_api_reports(
    batches: Batches, clock: FakeClock, requests: Path
) -> None:
    run_id = batches.submit([requests], SPLIT)
    clock.advance(0.3)  # past validation: the emulator runs the requests
    assert batches.advance(run_id) is False
    assert {p.status for p in batches.store.parts(run_id)} == {"finalizing"}
    clock.advance(0.3)
    assert batches.advance(run_id) is True
    assert {p.status for p in batches.store.parts(run_id)} == {"completed"}


def test_settled_results_are_merged_in_input_order(batches: Batches, requests: Path) -> None:
    run_id = batches.submit([requests], SPLIT)
    run = batches.wait(run_id)
    assert run.status is RunStatus.COMPLETED
    assert merged_ids(batches, run_id) == ["r0", "r1", "r2", "r3", "r4"]


def test_wait_advances_by_the_poll_interval_not_the_wall_clock(
    batches: Batches, clock: FakeClock, requests: Path
) -> None:
    run_id = batches.submit([requests], SPLIT)
    began = clock()
    batches.wait(run_id)
    assert 0 < (clock() - began).total_seconds() <= 5.0  # [openai] poll_interval


def test_the_same_input_is_refused_a_second_time(batches: Batches, requests: Path) -> None:
    run_id = batches.submit([requests], SPLIT)
    with pytest.raises(DuplicateInput) as refused:
        batches.submit([requests], SPLIT)
    assert str(run_id) in refused.value.message


def test_failed_requests_are_retried_in_a_new_part(
    batches: Batches, provider: EmulatedProvider, tmp_path: Path
) -> None:
    path = tmp_path / "mixed.jsonl"
    write_chat_requests(path, 3)
    lines = path.read_text().splitlines()
    broken = json.loads(lines[1])
    broken["body"]["model"] = "nonexistent-model"  # the emulator answers 404 for this request
    path.write_text("\n".join([lines[0], json.dumps(broken), lines[2]]) + "\n")
    run_id = batches.submit([path], SubmitOptions())
    assert batches.wait(run_id).status is RunStatus.PARTIAL
    # A 404 is invalid: a retry sends it again only when asked to (tests/core/test_retry_classes)
    assert batches.retry(run_id, ["failed"], include_invalid=True) == 1
    parts = batches.store.parts(run_id)
    assert [(p.round, p.requests) for p in parts][-1] == (2, 1)
    assert len(provider.batches()) == len(parts)


def test_expired_requests_are_resubmitted_when_asked(
    batches: Batches, provider: EmulatedProvider, clock: FakeClock, requests: Path
) -> None:
    stalls = dataclasses.replace(
        provider.state.settings, expire_after_fraction=0.5, completion_window=60.0
    )
    provider.state.settings = stalls
    run_id = batches.submit([requests], SubmitOptions(on_expired="resubmit"))
    clock.advance(61)  # the window ends with half the requests done
    provider.state.settings = dataclasses.replace(stalls, expire_after_fraction=None)
    run = batches.wait(run_id)
    assert run.status is RunStatus.COMPLETED
    rounds = {(p.round, p.status) for p in batches.store.parts(run_id)}
    assert rounds == {(1, "expired"), (2, "completed")}
    assert merged_ids(batches, run_id) == ["r0", "r1", "r2", "r3", "r4"]


def test_expired_requests_are_kept_expired_by_default(
    batches: Batches, provider: EmulatedProvider, clock: FakeClock, requests: Path
) -> None:
    provider.state.settings = dataclasses.replace(
        provider.state.settings, expire_after_fraction=0.4, completion_window=60.0
    )
    run_id = batches.submit([requests], SubmitOptions())
    clock.advance(61)
    run = batches.wait(run_id)
    assert run.status is RunStatus.PARTIAL
    assert batches.store.request_summaries([run_id])[run_id]["expired"] == 3


def test_cancel_stops_every_part_in_flight(
    batches: Batches, provider: EmulatedProvider, requests: Path
) -> None:
    run_id = batches.submit([requests], SPLIT)
    batches.cancel(run_id)
    assert {b.status for b in provider.batches()} == {"cancelling"}
    run = batches.wait(run_id)
    assert run.status is RunStatus.CANCELLED
    assert {p.status for p in batches.store.parts(run_id)} == {"cancelled"}


def test_an_upload_lost_in_a_crash_is_found_not_repeated(
    batches: Batches, provider: EmulatedProvider, clock: FakeClock, requests: Path
) -> None:
    provider.lose_reply("upload", Crash())
    with pytest.raises(Crash):
        batches.submit([requests], SubmitOptions())
    (run_id,) = batches.store.submissions_in_flight()
    clock.advance(INTENT_SETTLE_S)  # what the dead process sent has landed
    assert batches.wait(run_id).status is RunStatus.COMPLETED
    assert provider.count("upload") == 1
    assert len(provider.state.files_view()) >= 1


def test_a_create_lost_in_a_crash_is_found_not_repeated(
    batches: Batches, provider: EmulatedProvider, clock: FakeClock, requests: Path
) -> None:
    provider.lose_reply("create_batch", Crash())
    with pytest.raises(Crash):
        batches.submit([requests], SubmitOptions())
    (run_id,) = batches.store.submissions_in_flight()
    assert batches.advance(run_id) is False  # the create may still be landing: not sent again
    assert provider.count("create_batch") == 1
    clock.advance(INTENT_SETTLE_S)
    assert batches.wait(run_id).status is RunStatus.COMPLETED
    assert provider.count("create_batch") == 1
    (batch,) = provider.batches()
    assert [p.batch_id for p in batches.store.parts(run_id)] == [batch.id]


def test_a_crash_after_the_run_ended_but_before_the_merge_was_recorded_is_finished_by_wait(
    batches: Batches, store: Store, requests: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def killed(*args: object) -> None:  # kill -9 between the run's end and its merge's record
        raise Crash()

    run_id = batches.submit([requests], SPLIT)
    with monkeypatch.context() as patch:
        patch.setattr(store, "mark_merged", killed)
        with pytest.raises(Crash):
            batches.wait(run_id)
    run = batches.store.get_run(run_id)
    assert run is not None and run.status is RunStatus.COMPLETED

    assert batches.wait(run_id).status is RunStatus.COMPLETED
    assert merged_ids(batches, run_id) == [f"r{i}" for i in range(5)]
    assert batches.store.submissions_in_flight() == []


def test_an_error_before_any_batch_records_the_run_failed(
    batches: Batches, provider: EmulatedProvider, requests: Path
) -> None:
    provider.lose_reply("upload", BatchctlError("the API refused the file"))
    with pytest.raises(BatchctlError, match="recorded failed; nothing was sent"):
        batches.submit([requests], SubmitOptions())
    assert batches.store.submissions_in_flight() == []
