"""Requests that run and fail: their lines go to the error file."""

from __future__ import annotations

from collections.abc import Callable

import openai
from emulator_helpers import chat_line, read_jsonl, run_to_end, start_batch

from batchctl.emulator import Emulator


def test_nonexistent_model_gives_model_not_found_lines(
    emulator: Emulator, client: openai.OpenAI
) -> None:
    lines = [chat_line(f"r{i}", model="nonexistent-model") for i in range(3)]
    batch = run_to_end(emulator, client, start_batch(client, lines).id)
    assert batch.error_file_id is not None

    errors = read_jsonl(client, batch.error_file_id)
    assert sorted(e["custom_id"] for e in errors) == ["r0", "r1", "r2"]
    line = errors[0]
    assert line["error"] is None
    assert line["id"].startswith("batch_req_")
    assert line["response"]["status_code"] == 404
    assert line["response"]["request_id"].startswith("req_")
    assert line["response"]["body"] == {
        "error": {
            "message": "The model `nonexistent-model` does not exist or you do not have access to it.",
            "type": "invalid_request_error",
            "param": None,
            "code": "model_not_found",
        }
    }


def test_all_failed_batch_completes_without_output_file(
    emulator: Emulator, client: openai.OpenAI
) -> None:
    lines = [chat_line(f"r{i}", model="nonexistent-model") for i in range(3)]
    batch = run_to_end(emulator, client, start_batch(client, lines).id)

    assert batch.status == "completed"
    assert batch.output_file_id is None
    assert batch.error_file_id is not None
    assert batch.request_counts is not None
    assert batch.request_counts.model_dump() == {"total": 3, "completed": 0, "failed": 3}
    assert batch.usage is not None and batch.usage.total_tokens == 0


def test_failure_rate_splits_lines_between_output_and_error_files(
    make_emulator: Callable[..., Emulator],
) -> None:
    emu = make_emulator(request_failure_rate=0.3)
    with openai.OpenAI(base_url=emu.base_url, api_key="k") as sdk:
        lines = [chat_line(f"r{i}") for i in range(200)]
        batch = run_to_end(emu, sdk, start_batch(sdk, lines).id)
        assert batch.output_file_id is not None and batch.error_file_id is not None
        outputs = read_jsonl(sdk, batch.output_file_id)
        errors = read_jsonl(sdk, batch.error_file_id)

    assert batch.request_counts is not None
    assert batch.request_counts.failed == len(errors)
    assert batch.request_counts.completed == len(outputs)
    assert 30 < len(errors) < 90
    assert {e["response"]["status_code"] for e in errors} == {400, 500}
    assert {o["custom_id"] for o in outputs} | {e["custom_id"] for e in errors} == {
        f"r{i}" for i in range(200)
    }
