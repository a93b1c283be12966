"""A batch from upload to downloaded results, through the real SDK."""

from __future__ import annotations

from collections.abc import Callable

import openai
from emulator_helpers import chat_line, read_jsonl, run_to_end, start_batch

from batchctl.emulator import Emulator
from tests.waiting import wait_for


def test_batch_completes_with_outputs_counts_and_usage(
    emulator: Emulator, client: openai.OpenAI
) -> None:
    lines = [chat_line(f"req-{i}", text=f"hello {i}") for i in range(30)]
    batch = run_to_end(emulator, client, start_batch(client, lines).id)

    assert batch.status == "completed"
    assert batch.request_counts is not None
    assert (batch.request_counts.total, batch.request_counts.completed) == (30, 30)
    assert batch.request_counts.failed == 0
    assert batch.model == "gpt-4o-mini"
    assert batch.error_file_id is None
    assert batch.output_file_id is not None
    assert batch.in_progress_at and batch.finalizing_at and batch.completed_at
    outputs = read_jsonl(client, batch.output_file_id)
    assert len(outputs) == 30
    first = outputs[0]
    assert first["id"].startswith("batch_req_")
    assert first["error"] is None
    assert first["response"]["status_code"] == 200
    assert first["response"]["request_id"].startswith("req_")
    body = first["response"]["body"]
    assert body["object"] == "chat.completion"
    assert body["choices"][0]["message"]["content"] == f"Echo: hello {first['custom_id'][4:]}"
    usage = batch.usage
    assert usage is not None
    prompt = sum(o["response"]["body"]["usage"]["prompt_tokens"] for o in outputs)
    completion = sum(o["response"]["body"]["usage"]["completion_tokens"] for o in outputs)
    assert (usage.input_tokens, usage.output_tokens) == (prompt, completion)
    assert usage.total_tokens == prompt + completion
    assert usage.input_tokens_details.cached_tokens == 0
    assert usage.output_tokens_details.reasoning_tokens == 0


def test_create_returns_validating_batch_with_every_field(
    emulator: Emulator, client: openai.OpenAI
) -> None:
    created = start_batch(client, [chat_line("a")])
    raw = emulator.batches[created.id]

    assert created.status == "validating"
    assert created.request_counts is not None
    assert created.request_counts.total == 0
    assert created.expires_at == created.created_at + 86_400
    for name in (
        "model",
        "errors",
        "output_file_id",
        "error_file_id",
        "in_progress_at",
        "finalizing_at",
        "completed_at",
        "failed_at",
        "expired_at",
        "cancelling_at",
        "cancelled_at",
        "usage",
        "metadata",
    ):
        assert name in raw
        assert raw[name] is None


def test_output_order_is_shuffled_but_complete(emulator: Emulator, client: openai.OpenAI) -> None:
    ids = [f"req-{i:03d}" for i in range(200)]
    batch = run_to_end(emulator, client, start_batch(client, [chat_line(i) for i in ids]).id)
    assert batch.output_file_id is not None

    seen = [line["custom_id"] for line in read_jsonl(client, batch.output_file_id)]
    assert seen != ids
    assert sorted(seen) == ids


def test_output_order_is_deterministic_for_a_seed(make_emulator: Callable[..., Emulator]) -> None:
    orders = []
    for _ in range(2):
        emu = make_emulator(shuffle_seed=7)
        with openai.OpenAI(base_url=emu.base_url, api_key="k") as sdk:
            lines = [chat_line(f"r{i}") for i in range(50)]
            batch = run_to_end(emu, sdk, start_batch(sdk, lines).id)
            assert batch.output_file_id is not None
            orders.append([x["custom_id"] for x in read_jsonl(sdk, batch.output_file_id)])
    assert orders[0] == orders[1]


def test_request_counts_grow_while_in_progress(make_emulator: Callable[..., Emulator]) -> None:
    emu = make_emulator(processing_rate=10.0)
    with openai.OpenAI(base_url=emu.base_url, api_key="k") as sdk:
        batch = start_batch(sdk, [chat_line(f"r{i}") for i in range(100)])
        emu.advance(0.2)  # validation done
        emu.advance(3)
        middle = sdk.batches.retrieve(batch.id)
        emu.advance(4)
        later = sdk.batches.retrieve(batch.id)

    assert middle.status == later.status == "in_progress"
    assert middle.request_counts is not None and later.request_counts is not None
    assert middle.request_counts.total == 100
    assert 0 < middle.request_counts.completed < later.request_counts.completed < 100
    assert middle.usage is not None and later.usage is not None
    assert middle.usage.input_tokens < later.usage.input_tokens


def test_status_goes_through_finalizing(make_emulator: Callable[..., Emulator]) -> None:
    emu = make_emulator(finalizing_delay=5.0)
    with openai.OpenAI(base_url=emu.base_url, api_key="k") as sdk:
        batch = start_batch(sdk, [chat_line("a")])
        emu.advance(1)
        finalizing = sdk.batches.retrieve(batch.id)
        emu.advance(5)
        done = sdk.batches.retrieve(batch.id)

    assert finalizing.status == "finalizing"
    assert finalizing.output_file_id is None
    assert done.status == "completed"


def test_embeddings_batch_returns_vectors(emulator: Emulator, client: openai.OpenAI) -> None:
    lines = [
        {
            "custom_id": f"e{i}",
            "method": "POST",
            "url": "/v1/embeddings",
            "body": {"model": "text-embedding-3-small", "input": f"text {i}"},
        }
        for i in range(3)
    ]
    batch = run_to_end(emulator, client, start_batch(client, lines, "/v1/embeddings").id)
    assert batch.output_file_id is not None

    body = read_jsonl(client, batch.output_file_id)[0]["response"]["body"]
    assert body["object"] == "list"
    assert len(body["data"][0]["embedding"]) == 8
    assert body["usage"]["prompt_tokens"] >= 1
    assert batch.usage is not None and batch.usage.output_tokens == 0


def test_responses_batch_reports_input_and_output_tokens(
    emulator: Emulator, client: openai.OpenAI
) -> None:
    lines = [
        {
            "custom_id": "x",
            "method": "POST",
            "url": "/v1/responses",
            "body": {"model": "gpt-5-mini", "input": "Write a haiku"},
        }
    ]
    batch = run_to_end(emulator, client, start_batch(client, lines, "/v1/responses").id)
    assert batch.output_file_id is not None

    body = read_jsonl(client, batch.output_file_id)[0]["response"]["body"]
    assert body["object"] == "response"
    assert body["output"][0]["content"][0]["text"] == "Echo: Write a haiku"
    usage = body["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]
    assert batch.usage is not None
    assert batch.usage.input_tokens == usage["input_tokens"]


def test_metadata_is_returned(emulator: Emulator, client: openai.OpenAI) -> None:
    uploaded = client.files.create(file=("in.jsonl", b'{"a":1}\n'), purpose="batch")
    batch = client.batches.create(
        input_file_id=uploaded.id,
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={"job": "nightly"},
    )
    assert client.batches.retrieve(batch.id).metadata == {"job": "nightly"}


def test_progress_follows_the_wall_clock_when_not_manual(
    make_emulator: Callable[..., Emulator],
) -> None:
    emu = make_emulator(manual_clock=False, validation_delay=0.05, finalizing_delay=0.05)
    with openai.OpenAI(base_url=emu.base_url, api_key="k") as sdk:
        batch = start_batch(sdk, [chat_line("a"), chat_line("b")])

        wait_for(
            lambda: sdk.batches.retrieve(batch.id).status == "completed",
            "the batch to complete on the wall clock",
        )


def test_chat_usage_reports_cached_and_reasoning_tokens_by_rule(
    emulator: Emulator, client: openai.OpenAI
) -> None:
    long_text = "word " * 1200  # over 1,024 prompt tokens at about four characters a token
    lines = [chat_line("plain", text=long_text), chat_line("cached", text=long_text)]
    lines[1]["body"]["prompt_cache_key"] = "shared-prefix"
    lines.append(chat_line("thinking"))  # one model per batch: the effort is explicit
    lines[2]["body"]["reasoning_effort"] = "high"
    batch = run_to_end(emulator, client, start_batch(client, lines).id)
    assert batch.output_file_id is not None

    usage = {
        o["custom_id"]: o["response"]["body"]["usage"]
        for o in read_jsonl(client, batch.output_file_id)
    }
    assert usage["plain"]["prompt_tokens_details"]["cached_tokens"] == 0
    prompt = usage["cached"]["prompt_tokens"]
    assert prompt >= 1024
    assert usage["cached"]["prompt_tokens_details"]["cached_tokens"] == prompt - prompt % 128
    assert usage["plain"]["completion_tokens_details"]["reasoning_tokens"] == 0
    thinking = usage["thinking"]
    assert thinking["completion_tokens_details"]["reasoning_tokens"] == 1024
    assert thinking["completion_tokens"] > 1024  # reasoning is part of the output tokens


def test_responses_usage_reports_reasoning_tokens_of_a_reasoning_model(
    emulator: Emulator, client: openai.OpenAI
) -> None:
    lines = [
        {
            "custom_id": cid,
            "method": "POST",
            "url": "/v1/responses",
            "body": {"model": "gpt-5-mini", "input": "Write a haiku", **extra},
        }
        for cid, extra in (("default", {}), ("low", {"reasoning": {"effort": "low"}}))
    ]
    batch = run_to_end(emulator, client, start_batch(client, lines, "/v1/responses").id)
    assert batch.output_file_id is not None

    usage = {
        o["custom_id"]: o["response"]["body"]["usage"]
        for o in read_jsonl(client, batch.output_file_id)
    }
    assert usage["default"]["output_tokens_details"]["reasoning_tokens"] == 256
    assert usage["low"]["output_tokens_details"]["reasoning_tokens"] == 64
    assert usage["low"]["input_tokens_details"]["cached_tokens"] == 0


def test_batch_usage_sums_the_cached_and_reasoning_tokens_of_its_requests(
    emulator: Emulator, client: openai.OpenAI
) -> None:
    lines = [chat_line(f"c{i}", text="word " * 1200 + str(i)) for i in range(3)]
    for line in lines:
        line["body"]["prompt_cache_key"] = "shared-prefix"
        line["body"]["reasoning_effort"] = "low"
    batch = run_to_end(emulator, client, start_batch(client, lines).id)
    assert batch.output_file_id is not None and batch.usage is not None

    usage = [o["response"]["body"]["usage"] for o in read_jsonl(client, batch.output_file_id)]
    cached = sum(u["prompt_tokens_details"]["cached_tokens"] for u in usage)
    reasoning = sum(u["completion_tokens_details"]["reasoning_tokens"] for u in usage)
    assert cached > 0 and reasoning == 3 * 64
    assert batch.usage.input_tokens_details.cached_tokens == cached
    assert batch.usage.output_tokens_details.reasoning_tokens == reasoning
