"""The enqueued-token limit: a model's batches not yet ended hold tokens against it.

Through the real SDK over HTTP, on a manual clock. A batch counts its input file's bytes / 4.
"""

from __future__ import annotations

from collections.abc import Callable

import openai
import pytest

from batchctl.emulator import Emulator
from tests.emulator.emulator_helpers import chat_line, jsonl, run_to_end, start_batch

LINES = [chat_line(f"r{i}") for i in range(2)]
TOKENS = len(jsonl(LINES)) // 4  # what one batch of LINES counts
ONE_FITS = TOKENS + TOKENS // 2  # one such batch fits, two do not


def client_of(emu: Emulator) -> openai.OpenAI:
    return openai.OpenAI(base_url=emu.base_url, api_key="test-key", max_retries=0)


def test_a_batch_over_the_limit_fails_after_validation_with_token_limit_exceeded(
    make_emulator: Callable[..., Emulator],
) -> None:
    emu = make_emulator(enqueued_token_limit=ONE_FITS)
    with client_of(emu) as client:
        first = start_batch(client, LINES)
        second = start_batch(client, LINES)
        assert second.status == "validating"  # created: the refusal comes after validating
        refused = run_to_end(emu, client, second.id, step=0.1)
        assert run_to_end(emu, client, first.id).status == "completed"
    assert refused.status == "failed"
    assert refused.errors is not None and refused.errors.data is not None
    (error,) = refused.errors.data
    assert error.code == "token_limit_exceeded" and error.line is None
    assert f"Limit: {ONE_FITS:,} enqueued tokens" in (error.message or "")


def test_a_batch_fits_again_once_the_earlier_one_has_ended(
    make_emulator: Callable[..., Emulator],
) -> None:
    emu = make_emulator(enqueued_token_limit=ONE_FITS)
    with client_of(emu) as client:
        first = start_batch(client, LINES)
        assert run_to_end(emu, client, first.id).status == "completed"
        second = start_batch(client, LINES)
        assert run_to_end(emu, client, second.id).status == "completed"


def test_another_model_has_its_own_limit(make_emulator: Callable[..., Emulator]) -> None:
    emu = make_emulator(enqueued_token_limit=ONE_FITS)
    with client_of(emu) as client:
        first = start_batch(client, LINES)
        other = start_batch(client, [chat_line(f"r{i}", model="gpt-4o") for i in range(2)])
        assert run_to_end(emu, client, other.id).status == "completed"
        assert run_to_end(emu, client, first.id).status == "completed"


def test_fail_fast_refuses_the_create_with_a_400(make_emulator: Callable[..., Emulator]) -> None:
    emu = make_emulator(enqueued_token_limit=ONE_FITS, token_limit_fail_fast=True)
    with client_of(emu) as client:
        start_batch(client, LINES)
        with pytest.raises(openai.BadRequestError) as refused:
            start_batch(client, LINES)
    assert refused.value.code == "token_limit_exceeded"
    assert len(emu.batches) == 1


def test_the_limit_is_a_setting_that_changes_at_run_time(
    make_emulator: Callable[..., Emulator],
) -> None:
    emu = make_emulator()
    settings = emu.update_settings(enqueued_token_limit=ONE_FITS, token_limit_fail_fast=True)
    assert (settings.enqueued_token_limit, settings.token_limit_fail_fast) == (ONE_FITS, True)
    assert emu.update_settings(enqueued_token_limit=None).enqueued_token_limit is None
    with pytest.raises(ValueError, match="enqueued_token_limit"):
        emu.update_settings(enqueued_token_limit=1.5)
