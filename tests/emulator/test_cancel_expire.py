"""Cancelled and expired batches keep the results that finished."""

from __future__ import annotations

from collections.abc import Callable

import openai
import pytest
from emulator_helpers import chat_line, read_jsonl, run_to_end, start_batch

from batchctl.emulator import Emulator

EXPIRED_ERROR = {
    "code": "batch_expired",
    "message": "This request could not be executed before the completion window expired.",
}


def test_cancel_goes_cancelling_then_cancelled_with_partial_output(
    make_emulator: Callable[..., Emulator],
) -> None:
    emu = make_emulator(processing_rate=10.0, cancel_delay=30.0)
    with openai.OpenAI(base_url=emu.base_url, api_key="k") as sdk:
        batch = start_batch(sdk, [chat_line(f"r{i}") for i in range(100)])
        emu.advance(3.2)
        cancelling = sdk.batches.cancel(batch.id)
        emu.advance(10)
        still = sdk.batches.retrieve(batch.id)
        emu.advance(20)
        cancelled = sdk.batches.retrieve(batch.id)
        assert cancelled.output_file_id is not None
        outputs = read_jsonl(sdk, cancelled.output_file_id)

    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    assert still.status == "cancelling"
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
    assert cancelled.request_counts is not None
    done = cancelled.request_counts.completed
    assert 0 < done < 100
    assert len(outputs) == done
    assert cancelled.error_file_id is None  # never-run requests get no line
    assert cancelled.usage is not None and cancelled.usage.input_tokens > 0


def test_cancel_while_validating_gives_no_files(emulator: Emulator, client: openai.OpenAI) -> None:
    batch = start_batch(client, [chat_line("a")])
    assert client.batches.cancel(batch.id).status == "cancelling"
    final = run_to_end(emulator, client, batch.id)
    assert final.status == "cancelled"
    assert final.output_file_id is None and final.error_file_id is None


def test_cancelling_a_finished_batch_is_rejected(emulator: Emulator, client: openai.OpenAI) -> None:
    batch = run_to_end(emulator, client, start_batch(client, [chat_line("a")]).id)
    with pytest.raises(openai.BadRequestError) as caught:
        client.batches.cancel(batch.id)
    assert "Cannot cancel a batch with status 'completed'." in str(caught.value)


def test_slow_batch_expires_with_partial_output_and_expired_lines(
    make_emulator: Callable[..., Emulator],
) -> None:
    emu = make_emulator(processing_rate=5.0, completion_window=10.0)
    with openai.OpenAI(base_url=emu.base_url, api_key="k") as sdk:
        batch = run_to_end(emu, sdk, start_batch(sdk, [chat_line(f"r{i}") for i in range(100)]).id)
        assert batch.output_file_id is not None and batch.error_file_id is not None
        outputs = read_jsonl(sdk, batch.output_file_id)
        errors = read_jsonl(sdk, batch.error_file_id)

    assert batch.status == "expired"
    assert batch.expired_at == batch.created_at + 10
    assert batch.request_counts is not None
    assert batch.request_counts.completed == len(outputs) == 49
    assert batch.request_counts.failed == 0  # unrun requests are not counted as failed
    assert len(errors) == 51
    assert all(e["response"] is None and e["error"] == EXPIRED_ERROR for e in errors)
    assert {o["custom_id"] for o in outputs} | {e["custom_id"] for e in errors} == {
        f"r{i}" for i in range(100)
    }


def test_expire_after_fraction_stalls_then_expires(make_emulator: Callable[..., Emulator]) -> None:
    emu = make_emulator(expire_after_fraction=0.25, completion_window=60.0)
    with openai.OpenAI(base_url=emu.base_url, api_key="k") as sdk:
        batch = start_batch(sdk, [chat_line(f"r{i}") for i in range(40)])
        emu.advance(30)
        stalled = sdk.batches.retrieve(batch.id)
        emu.advance(31)
        expired = sdk.batches.retrieve(batch.id)
        assert expired.error_file_id is not None
        errors = read_jsonl(sdk, expired.error_file_id)

    assert stalled.status == "in_progress"
    assert stalled.request_counts is not None and stalled.request_counts.completed == 10
    assert expired.status == "expired"
    assert expired.request_counts is not None and expired.request_counts.completed == 10
    assert len(errors) == 30
