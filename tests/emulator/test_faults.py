"""Injected faults, as the SDK experiences them."""

from __future__ import annotations

import time

import openai
import pytest
from emulator_helpers import chat_line, jsonl, upload

from batchctl.emulator import Emulator, Fault


def test_429_with_short_retry_after_is_retried_by_sdk(
    emulator: Emulator, client: openai.OpenAI
) -> None:
    emulator.set_faults(
        [Fault(kind="429", method="POST", path="/v1/files", count=1, retry_after=0.05)]
    )
    uploaded = upload(client, jsonl([chat_line("a")]))

    posts = [r for r in emulator.requests if r.method == "POST" and r.path == "/v1/files"]
    assert [(r.status, r.fault, r.retry_count) for r in posts] == [
        (429, "429", 0),
        (200, None, 1),
    ]
    assert list(emulator.files) == [uploaded.id]


def test_429_reply_has_retry_after_and_rate_limit_code(
    emulator: Emulator, client: openai.OpenAI
) -> None:
    emulator.set_faults([Fault(kind="429", retry_after=3)])
    with pytest.raises(openai.RateLimitError) as caught:
        client.with_options(max_retries=0).files.list()
    assert caught.value.response.headers["retry-after"] == "3"
    assert caught.value.code == "rate_limit_exceeded"


def test_lost_reply_makes_sdk_retry_create_a_second_batch(
    emulator: Emulator, client: openai.OpenAI
) -> None:
    uploaded = upload(client, jsonl([chat_line("a")]))
    emulator.set_faults([Fault(kind="lost_reply", method="POST", path="/v1/batches", count=1)])

    batch = client.batches.create(
        input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
    )

    assert len(emulator.batches) == 2  # the hazard: a blind retry duplicated the batch
    assert batch.id in emulator.batches
    posts = [r for r in emulator.requests if r.method == "POST" and r.path == "/v1/batches"]
    assert [(r.status, r.handled_status, r.fault) for r in posts] == [
        ("dropped", 200, "lost_reply"),
        (200, 200, None),
    ]
    assert sum(r.succeeded for r in posts) == 2


def test_dropped_connection_is_retried_without_effect(
    emulator: Emulator, client: openai.OpenAI
) -> None:
    emulator.set_faults([Fault(kind="drop", method="POST", path="/v1/files", count=1)])
    upload(client, jsonl([chat_line("a")]))

    posts = [r for r in emulator.requests if r.path == "/v1/files"]
    assert [(r.status, r.handled_status) for r in posts] == [("dropped", None), (200, 200)]
    assert len(emulator.files) == 1


def test_server_errors_exhaust_sdk_retries(emulator: Emulator, client: openai.OpenAI) -> None:
    emulator.set_faults([Fault(kind="503", path="/v1/files")])
    with pytest.raises(openai.InternalServerError):
        client.with_options(max_retries=1).files.list()
    assert [r.status for r in emulator.requests] == [503, 503]


def test_500_fault_is_a_json_server_error(emulator: Emulator, client: openai.OpenAI) -> None:
    emulator.set_faults([Fault(kind="500")])
    with pytest.raises(openai.InternalServerError) as caught:
        client.with_options(max_retries=0).batches.list()
    assert caught.value.status_code == 500
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["type"] == "server_error"


def test_slow_fault_delays_the_reply(emulator: Emulator, client: openai.OpenAI) -> None:
    emulator.set_faults([Fault(kind="slow", delay=0.3, count=1)])
    started = time.monotonic()
    client.files.list()
    assert time.monotonic() - started >= 0.3
    assert emulator.requests[0].fault == "slow"


def test_fault_only_hits_matching_method_and_path(
    emulator: Emulator, client: openai.OpenAI
) -> None:
    emulator.set_faults([Fault(kind="500", method="POST", path="/v1/batches")])
    uploaded = upload(client, jsonl([chat_line("a")]))
    client.files.retrieve(uploaded.id)
    assert all(r.fault is None for r in emulator.requests)


def test_fault_count_limits_the_hits(emulator: Emulator, client: openai.OpenAI) -> None:
    emulator.set_faults([Fault(kind="500", count=2)])
    sdk = client.with_options(max_retries=0)
    statuses = []
    for _ in range(4):
        try:
            sdk.files.list()
            statuses.append(200)
        except openai.InternalServerError:
            statuses.append(500)
    assert statuses == [500, 500, 200, 200]


def test_fault_rate_is_deterministic_for_a_seed(emulator: Emulator, client: openai.OpenAI) -> None:
    sdk = client.with_options(max_retries=0)
    runs = []
    for _ in range(2):
        emulator.set_faults([Fault(kind="500", rate=0.5)], seed=42)
        hits = []
        for _ in range(20):
            try:
                sdk.files.list()
                hits.append(False)
            except openai.InternalServerError:
                hits.append(True)
        runs.append(hits)
    assert runs[0] == runs[1]
    assert 2 < sum(runs[0]) < 18
