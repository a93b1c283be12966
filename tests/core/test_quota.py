"""The enqueued-token limit in process: parts the API refuses for it are held, then created again.

The emulator's state machine holds a limit per model (``enqueued_token_limit``): a batch whose
tokens, with those of the model's batches not yet ended, go over it fails after validating with
``token_limit_exceeded`` (or, ``token_limit_fail_fast``, is refused at create with a 400). The
same behaviours end to end are in tests/batches/test_quota.py.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from batchctl.batches import quota
from batchctl.batches.submission import INTENT_SETTLE_S, Batches, SubmitOptions
from batchctl.config import Config
from batchctl.emulator.settings import DAY, EmulatorSettings
from batchctl.providers.base import RemoteBatch, RequestCounts
from batchctl.records import Part, RunStatus
from batchctl.store.base import Store
from tests.conftest import write_chat_requests
from tests.core.emulated import EmulatedProvider, FakeClock

SPLIT = SubmitOptions(max_requests=2)  # 5 requests make 3 parts: 2, 2 and 1


class Crash(BaseException):
    """The process dies here (kill -9): nothing after the call is recorded."""


@pytest.fixture
def requests(tmp_path: Path) -> Path:
    path = tmp_path / "in.jsonl"
    write_chat_requests(path, 5)
    return path


def one_part_fits(requests: Path) -> int:
    """A limit that one part of two requests fits under, and no two parts together."""
    first_two = sum(len(line) for line in requests.read_bytes().splitlines(keepends=True)[:2])
    return first_two // 4 + 5


def limited(
    store: Store,
    config: Config,
    clock: FakeClock,
    limit: int,
    **settings: object,
) -> tuple[Batches, EmulatedProvider]:
    """Batches against an emulator whose models each have the enqueued-token ``limit``."""
    base = EmulatorSettings(manual_clock=True, enqueued_token_limit=limit)
    emulated = EmulatedProvider(clock, dataclasses.replace(base, **settings))
    return Batches(store, config, provider=emulated, clock=clock, sleep=clock.sleep), emulated


def live_batches_by_part(emulated: EmulatedProvider) -> dict[str, int]:
    """How many batches of each part (by its metadata key, whatever the try) were not refused."""
    counts: dict[str, int] = {}
    for batch in emulated.batches():
        if quota.refused_batch(batch) is None:
            part = batch.metadata["batchctl_part"].split(":q")[0]
            counts[part] = counts.get(part, 0) + 1
    return counts


def held(parts: list[Part]) -> list[int]:
    return [p.number for p in parts if p.waiting_for_quota]


def test_a_part_refused_for_the_limit_is_created_again_and_the_run_completes(
    store: Store, config: Config, clock: FakeClock, requests: Path
) -> None:
    batches, emulated = limited(store, config, clock, one_part_fits(requests))
    run_id = batches.submit([requests], SPLIT)
    assert batches.wait(run_id).status is RunStatus.COMPLETED
    parts = store.parts(run_id)
    assert {p.status for p in parts} == {"completed"}
    assert max(p.hold_tries for p in parts) >= 1  # some part was refused on the way
    assert any(quota.refused_batch(b) for b in emulated.batches())
    assert live_batches_by_part(emulated) == dict.fromkeys(live_batches_by_part(emulated), 1)
    assert len(live_batches_by_part(emulated)) == 3


def test_a_refused_part_waits_for_quota_with_its_next_try(
    store: Store, config: Config, clock: FakeClock, requests: Path
) -> None:
    batches, _ = limited(store, config, clock, one_part_fits(requests), processing_rate=0.01)
    run_id = batches.submit([requests], SPLIT)
    clock.advance(1)  # past validation: the first part runs, the others are refused
    batches.advance(run_id)
    parts = store.parts(run_id)
    assert held(parts) == [2, 3]
    shown = parts[1].to_json()
    assert shown["status"] == "waiting_for_quota"
    assert shown["batch_id"] is None
    waiting = shown["waiting_for_quota"]
    assert waiting["tries"] == 1
    assert "Enqueued token limit reached for gpt-4o-mini" in waiting["reason"]
    assert waiting["since"] < waiting["next_try"]


def test_a_held_part_is_not_created_again_before_its_next_try(
    store: Store, config: Config, clock: FakeClock, requests: Path
) -> None:
    batches, emulated = limited(store, config, clock, one_part_fits(requests), processing_rate=0.01)
    run_id = batches.submit([requests], SPLIT)
    clock.advance(1)
    batches.advance(run_id)
    created = emulated.count("create_batch")
    clock.advance(quota.FIRST_PAUSE_S / 2)
    batches.advance(run_id)
    assert emulated.count("create_batch") == created
    assert held(store.parts(run_id)) == [2, 3]


def test_the_window_running_out_fails_a_held_part_with_the_reason(
    store: Store, config: Config, clock: FakeClock, requests: Path
) -> None:
    # The first part runs for days, so the quota never frees up within the window.
    batches, _ = limited(
        store,
        config,
        clock,
        one_part_fits(requests),
        processing_rate=1e-6,
        completion_window=3 * DAY,
    )
    run_id = batches.submit([requests], SPLIT)
    clock.advance(1)
    batches.advance(run_id)
    clock.advance(DAY)
    batches.advance(run_id)
    parts = store.parts(run_id)
    assert [p.status for p in parts][1:] == ["failed", "failed"]
    assert not held(parts)
    ended = [r for r in store.requests_in_order(run_id) if r.outcome == "failed"]
    assert [r.custom_id for r in ended] == ["r2", "r3", "r4"]
    assert {r.error_code for r in ended} == {"token_limit_exceeded"}
    assert all("completion window (24h)" in (r.error_message or "") for r in ended)


def test_a_create_refused_at_once_holds_the_part(
    store: Store, config: Config, clock: FakeClock, requests: Path
) -> None:
    batches, emulated = limited(
        store, config, clock, one_part_fits(requests), token_limit_fail_fast=True
    )
    run_id = batches.submit([requests], SPLIT)
    parts = store.parts(run_id)
    assert held(parts) == [2, 3]
    assert [p.create_started_at is None for p in parts] == [False, True, True]
    assert len(emulated.batches()) == 1  # refused at create: nothing was made for them
    assert batches.wait(run_id).status is RunStatus.COMPLETED
    assert live_batches_by_part(emulated) == dict.fromkeys(live_batches_by_part(emulated), 1)


def test_a_lost_reply_to_a_second_try_finds_that_try_not_the_refused_batch(
    store: Store, config: Config, clock: FakeClock, requests: Path
) -> None:
    batches, emulated = limited(store, config, clock, one_part_fits(requests))
    run_id = batches.submit([requests], SPLIT)
    clock.advance(1)  # the first part has ended; the others were refused and are due again
    emulated.lose_reply("create_batch", Crash())
    with pytest.raises(Crash):
        batches.advance(run_id)
    clock.advance(INTENT_SETTLE_S)
    assert batches.wait(run_id).status is RunStatus.COMPLETED
    counts = live_batches_by_part(emulated)
    assert len(counts) == 3 and set(counts.values()) == {1}


def test_a_configured_limit_holds_a_part_before_it_is_sent(
    store: Store, config: Config, provider: EmulatedProvider, clock: FakeClock, requests: Path
) -> None:
    openai = dataclasses.replace(config.openai, enqueued_token_limit=one_part_fits(requests))
    limited_config = dataclasses.replace(config, providers={"openai": openai})
    batches = Batches(store, limited_config, provider=provider, clock=clock, sleep=clock.sleep)
    run_id = batches.submit([requests], SPLIT)
    parts = store.parts(run_id)
    assert held(parts) == [2, 3]
    assert [p.input_file_id is None for p in parts] == [False, True, True]  # not even uploaded
    assert "configured enqueued_token_limit" in (parts[1].hold_reason or "")
    assert len(provider.batches()) == 1
    assert batches.wait(run_id).status is RunStatus.COMPLETED
    assert [b.status for b in provider.batches()] == ["completed"] * 3  # none was refused


def test_only_a_refusal_for_the_limit_is_held() -> None:
    def failed(*errors: dict[str, object]) -> RemoteBatch:
        return RemoteBatch(
            id="batch_1",
            status="failed",
            endpoint="/v1/chat/completions",
            input_file_id="file-1",
            output_file_id=None,
            error_file_id=None,
            created_at=0,
            expires_at=None,
            completed_at=None,
            request_counts=RequestCounts(0, 0, 0),
            metadata={},
            errors=errors,
            usage=None,
            model="gpt-4o-mini",
        )

    assert quota.refused_batch(failed({"code": "token_limit_exceeded", "message": "m"})) == "m"
    azure = {"code": "validation_error", "message": "Token limit exceeded.", "line": None}
    assert quota.refused_batch(failed(azure)) == "Token limit exceeded."
    one_line = {"code": "invalid_request", "message": "token limit exceeded", "line": 3}
    assert quota.refused_batch(failed(one_line)) is None
    assert (
        quota.refused_batch(failed({"code": "invalid_json", "message": "bad", "line": 1})) is None
    )
