"""Input-file validation (asynchronous: the batch turns failed) and create-time checks."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import openai
import pytest
from emulator_helpers import chat_line, jsonl, run_to_end, upload

from batchctl.emulator import Emulator


def _fail(emu: Emulator, client: openai.OpenAI, data: bytes) -> list[dict[str, Any]]:
    """Run a batch on ``data``; assert it failed; return its errors."""
    uploaded = upload(client, data)
    created = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )
    assert created.status == "validating"  # validation is asynchronous
    batch = run_to_end(emu, client, created.id)
    assert batch.status == "failed"
    assert batch.failed_at is not None
    assert batch.output_file_id is None and batch.error_file_id is None
    assert batch.errors is not None
    return [e.model_dump() for e in batch.errors.data or []]


def test_invalid_json_line_fails_batch(emulator: Emulator, client: openai.OpenAI) -> None:
    data = jsonl([chat_line("a")]) + b"{not json\n" + jsonl([chat_line("c")])
    errors = _fail(emulator, client, data)
    assert errors == [
        {
            "code": "invalid_json_line",
            "line": 2,
            "message": "This line is not parseable as valid JSON.",
            "param": None,
        }
    ]


def test_a_line_nested_deeper_than_python_parses_is_an_invalid_json_line(
    emulator: Emulator, client: openai.OpenAI
) -> None:
    deep = b'{"custom_id": "b", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}\n"
    errors = _fail(emulator, client, jsonl([chat_line("a")]) + deep)
    assert [(e["code"], e["line"]) for e in errors] == [("invalid_json_line", 2)]


def test_duplicate_custom_id_fails_batch(emulator: Emulator, client: openai.OpenAI) -> None:
    errors = _fail(emulator, client, jsonl([chat_line("a"), chat_line("b"), chat_line("a")]))
    assert [(e["code"], e["line"]) for e in errors] == [("duplicate_custom_id", 3)]


def test_url_mismatch_fails_batch(emulator: Emulator, client: openai.OpenAI) -> None:
    lines = [chat_line("a"), chat_line("b", url="/v1/responses")]
    errors = _fail(emulator, client, jsonl(lines))
    assert [(e["code"], e["line"], e["param"]) for e in errors] == [("url_mismatch", 2, "url")]


def test_model_mismatch_fails_batch(emulator: Emulator, client: openai.OpenAI) -> None:
    lines = [chat_line("a"), chat_line("b", model="gpt-4o")]
    errors = _fail(emulator, client, jsonl(lines))
    assert [(e["code"], e["line"]) for e in errors] == [("model_mismatch", 2)]


def test_empty_file_fails_batch(emulator: Emulator, client: openai.OpenAI) -> None:
    errors = _fail(emulator, client, b"")
    assert [(e["code"], e["line"]) for e in errors] == [("empty_file", None)]


def test_too_many_tasks_fails_batch(make_emulator: Callable[..., Emulator]) -> None:
    emu = make_emulator(max_requests_per_batch=5)
    with openai.OpenAI(base_url=emu.base_url, api_key="k") as sdk:
        errors = _fail(emu, sdk, jsonl(chat_line(f"r{i}") for i in range(6)))
    assert [(e["code"], e["line"]) for e in errors] == [("too_many_tasks", None)]


@pytest.mark.parametrize("field", ["custom_id", "method", "url", "body"])
def test_missing_field_fails_batch(emulator: Emulator, client: openai.OpenAI, field: str) -> None:
    line = chat_line("a")
    del line[field]
    errors = _fail(emulator, client, jsonl([chat_line("ok"), line]))
    assert [(e["code"], e["line"], e["param"]) for e in errors] == [
        ("missing_required_parameter", 2, field)
    ]


def test_errors_list_is_capped(emulator: Emulator, client: openai.OpenAI) -> None:
    errors = _fail(emulator, client, b"x\n" * 50)
    assert len(errors) == 10
    assert [e["line"] for e in errors] == list(range(1, 11))


def test_missing_create_parameter_is_rejected(emulator: Emulator, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.post("/batches", body={"endpoint": "/v1/chat/completions"}, cast_to=object)
    assert caught.value.status_code == 400
    assert caught.value.code == "missing_required_parameter"
    assert caught.value.body == {
        "message": "Missing required parameter: 'input_file_id'.",
        "type": "invalid_request_error",
        "param": "input_file_id",
        "code": "missing_required_parameter",
    }


def test_unsupported_endpoint_is_rejected(emulator: Emulator, client: openai.OpenAI) -> None:
    uploaded = upload(client, jsonl([chat_line("a")]))
    with pytest.raises(openai.BadRequestError) as caught:
        client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/audio/speech",  # type: ignore[arg-type]
            completion_window="24h",
        )
    assert caught.value.param == "endpoint"


def test_completion_window_other_than_24h_is_rejected(
    emulator: Emulator, client: openai.OpenAI
) -> None:
    uploaded = upload(client, jsonl([chat_line("a")]))
    with pytest.raises(openai.BadRequestError) as caught:
        client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="48h",  # type: ignore[arg-type]
        )
    assert caught.value.param == "completion_window"


def test_unknown_input_file_is_rejected(emulator: Emulator, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.batches.create(
            input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h"
        )
    assert caught.value.param == "file_id"
    assert caught.value.message.startswith("Error code: 400")
    assert "Cannot find file file-nope, or project" in str(caught.value.body)


@pytest.mark.parametrize(
    "metadata",
    [
        {f"k{i}": "v" for i in range(17)},
        {"k" * 65: "v"},
        {"k": "v" * 513},
    ],
    ids=["too-many-pairs", "long-key", "long-value"],
)
def test_metadata_over_limits_is_rejected(
    emulator: Emulator, client: openai.OpenAI, metadata: dict[str, str]
) -> None:
    uploaded = upload(client, jsonl([chat_line("a")]))
    with pytest.raises(openai.BadRequestError):
        client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata=metadata,
        )


def test_batch_upload_must_be_jsonl(emulator: Emulator, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("input.json", b"{}\n"), purpose="batch")
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["message"] == "Invalid file format for Batch API. Must be .jsonl"


def test_oversized_batch_upload_is_rejected(make_emulator: Callable[..., Emulator]) -> None:
    emu = make_emulator(max_batch_file_bytes=1_000)
    with openai.OpenAI(base_url=emu.base_url, api_key="k") as sdk:
        with pytest.raises(openai.BadRequestError) as caught:
            sdk.files.create(file=("big.jsonl", b"x" * 5_000), purpose="batch")
        # The connection is still usable after the refused upload.
        assert sdk.files.list().data == []
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["message"] == "File is too large."


def test_unknown_purpose_is_rejected(emulator: Emulator, client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("a.jsonl", b"{}\n"), purpose="bogus")  # type: ignore[arg-type]
    assert caught.value.param == "purpose"


def test_input_file_with_wrong_purpose_is_rejected(
    emulator: Emulator, client: openai.OpenAI
) -> None:
    uploaded = client.files.create(file=("a.jsonl", b"{}\n"), purpose="user_data")
    with pytest.raises(openai.BadRequestError):
        client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
