"""A create whose reply was lost, for a provider that takes the requests inline and keeps no
metadata (Anthropic's Message Batches): found by time and request count, proved by the part
marker in its results' ids, never created twice (``batchctl.batches.inline``).

In process, on the emulator's Message Batches state and a fake clock. Every part here has the
same request count, so the store's records and the results' ids are all that tell batches apart.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchctl.batches.derived_ids import parse_derived
from batchctl.batches.submission import INTENT_SETTLE_S, Batches, SubmitOptions
from batchctl.config import Config
from batchctl.emulator.settings import EmulatorSettings
from batchctl.errors import BatchctlError
from batchctl.providers.base import ProviderError
from batchctl.records import RunStatus
from batchctl.store.base import Store
from tests.core.emulated import FakeClock
from tests.core.emulated_anthropic import EmulatedMessageBatches

SPLIT = SubmitOptions(max_requests=2, provider="anthropic")  # 6 requests make 3 parts of 2


@pytest.fixture
def anthropic(clock: FakeClock) -> Iterator[EmulatedMessageBatches]:
    emulated = EmulatedMessageBatches(clock)
    yield emulated
    emulated.discard()


@pytest.fixture
def driver(
    store: Store, config: Config, anthropic: EmulatedMessageBatches, clock: FakeClock
) -> Iterator[Batches]:
    batches = Batches(store, config, provider=anthropic, clock=clock, sleep=clock.sleep)
    yield batches
    batches.close()


@pytest.fixture
def requests(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    with path.open("w") as out:
        for i in range(6):
            params = {
                "model": "claude-haiku-4-5",
                "max_tokens": 16,
                "messages": [{"role": "user", "content": f"question {i}"}],
            }
            out.write(json.dumps({"custom_id": f"q/{i}.txt", "params": params}) + "\n")
    return path


USER_IDS = [f"q/{i}.txt" for i in range(6)]


def marker_of(anthropic: EmulatedMessageBatches, batch_id: str) -> set[str | None]:
    source, _ = anthropic.state.open_results(batch_id)
    with source:
        lines = [json.loads(line) for line in source if line.strip()]
    parsed = (parse_derived(line["custom_id"]) for line in lines)
    return {None if p is None else p[0] for p in parsed}


def merged_ids(driver: Batches, run_id: int) -> list[str]:
    submission = driver.store.get_submission(run_id)
    assert submission is not None and submission.results_path is not None
    lines = Path(submission.results_path).read_text().splitlines()
    return [json.loads(line)["custom_id"] for line in lines]


def assert_each_part_has_its_own_batch(
    driver: Batches, anthropic: EmulatedMessageBatches, run_id: int
) -> None:
    submission = driver.store.get_submission(run_id)
    assert submission is not None
    for part in driver.store.parts(run_id):
        assert part.batch_id is not None
        assert marker_of(anthropic, part.batch_id) == {f"{submission.token}-p{part.number}"}


def test_a_lost_create_reply_is_adopted_and_proved_not_created_again(
    driver: Batches, anthropic: EmulatedMessageBatches, clock: FakeClock, requests: Path
) -> None:
    anthropic.lose_reply("create_inline")

    run_id = driver.submit([requests], SPLIT)  # the lost reply is no error: it is found later

    assert [p.batch_id is None for p in driver.store.parts(run_id)] == [True, False, False]
    assert driver.advance(run_id) is False  # the create may still be landing: not sent again
    assert anthropic.count("create_inline") == 3
    clock.advance(INTENT_SETTLE_S)
    assert driver.wait(run_id).status is RunStatus.COMPLETED
    assert anthropic.count("create_inline") == 3
    assert len(anthropic.batches()) == 3
    assert_each_part_has_its_own_batch(driver, anthropic, run_id)
    assert merged_ids(driver, run_id) == USER_IDS


def test_a_batch_of_another_tool_with_the_same_count_waits_for_results_then_the_part_takes_its_own(
    driver: Batches, anthropic: EmulatedMessageBatches, clock: FakeClock, requests: Path
) -> None:
    anthropic.settings = EmulatorSettings(manual_clock=True, processing_rate=0.05)  # 40 s
    foreign = anthropic.create_foreign(2)
    anthropic.lose_reply("create_inline")
    run_id = driver.submit([requests], SPLIT)
    clock.advance(INTENT_SETTLE_S)

    driver.advance(run_id)  # two candidates, neither ended: the part takes neither yet

    assert driver.store.parts(run_id)[0].batch_id is None
    assert driver.wait(run_id).status is RunStatus.COMPLETED
    assert anthropic.count("create_inline") == 3
    assert foreign.id not in {p.batch_id for p in driver.store.parts(run_id)}
    assert len(anthropic.batches()) == 4
    assert_each_part_has_its_own_batch(driver, anthropic, run_id)
    assert merged_ids(driver, run_id) == USER_IDS


def test_a_create_that_never_landed_beside_a_lookalike_is_sent_again_once_results_disprove_it(
    driver: Batches, anthropic: EmulatedMessageBatches, clock: FakeClock, requests: Path
) -> None:
    anthropic.settings = EmulatorSettings(manual_clock=True, processing_rate=0.05)  # 40 s
    foreign = anthropic.create_foreign(2)
    anthropic.drop("create_inline")  # the request never reached the API
    run_id = driver.submit([requests], SPLIT)
    clock.advance(INTENT_SETTLE_S)

    driver.advance(run_id)  # one candidate: adopted, unconfirmed

    assert driver.store.parts(run_id)[0].batch_id == foreign.id
    assert driver.wait(run_id).status is RunStatus.COMPLETED
    assert anthropic.count("create_inline") == 4  # three landed, the dropped one sent again
    assert foreign.id not in {p.batch_id for p in driver.store.parts(run_id)}
    assert len(anthropic.batches()) == 4
    assert_each_part_has_its_own_batch(driver, anthropic, run_id)
    assert merged_ids(driver, run_id) == USER_IDS


def test_cancel_leaves_a_batch_not_yet_proved_the_parts_running(
    driver: Batches, anthropic: EmulatedMessageBatches, clock: FakeClock, requests: Path
) -> None:
    anthropic.settings = EmulatorSettings(manual_clock=True, processing_rate=0.05)  # 40 s
    foreign = anthropic.create_foreign(2)
    anthropic.drop("create_inline")
    run_id = driver.submit([requests], SPLIT)
    clock.advance(INTENT_SETTLE_S)
    driver.advance(run_id)
    assert driver.store.parts(run_id)[0].batch_id == foreign.id

    parts = driver.cancel(run_id)

    assert anthropic.count("cancel_batch") == 2  # the two batches the part created itself
    assert anthropic.get_batch(foreign.id).status == "in_progress"
    assert [p.status for p in parts] == ["in_progress", "cancelling", "cancelling"]


def test_a_refused_create_made_nothing_and_the_run_is_recorded_failed(
    driver: Batches, anthropic: EmulatedMessageBatches, requests: Path
) -> None:
    anthropic.drop("create_inline", ProviderError("Anthropic API: HTTP 400: bad", status=400))

    with pytest.raises(BatchctlError, match="recorded failed; nothing was sent"):
        driver.submit([requests], SPLIT)

    run = driver.store.get_run(1)
    assert run is not None and run.status is RunStatus.FAILED
    assert anthropic.batches() == []
    assert all(p.create_started_at is None for p in driver.store.parts(1))


def test_retry_sends_failed_requests_again_in_new_parts_under_their_own_markers(
    driver: Batches, anthropic: EmulatedMessageBatches, requests: Path
) -> None:
    # Every request errors (api_error or invalid_request_error, by a hash of its random sent
    # id): the retry sends all of them again, whichever class each failure is.
    anthropic.settings = EmulatorSettings(manual_clock=True, request_failure_rate=1.0)
    run_id = driver.submit([requests], SPLIT)
    assert driver.wait(run_id).status is RunStatus.FAILED

    resent = driver.retry(run_id, ("failed",), include_invalid=True)
    driver.wait(run_id)

    parts = driver.store.parts(run_id)
    assert resent > 0 and len(parts) > 3 and {p.round for p in parts} == {1, 2}
    assert anthropic.count("create_inline") == len(parts)
    assert_each_part_has_its_own_batch(driver, anthropic, run_id)
    assert merged_ids(driver, run_id) == USER_IDS
