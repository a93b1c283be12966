"""Injected faults on the Message Batches API, as the anthropic SDK experiences them."""

from __future__ import annotations

import anthropic
import pytest
from anthropic_helpers import message_request

from batchctl.emulator import Emulator, Fault

CREATE = "/v1/messages/batches"


def test_429_is_retried_by_the_sdk_after_retry_after(
    emulator: Emulator, anthropic_client: anthropic.Anthropic
) -> None:
    emulator.set_faults([Fault(kind="429", method="POST", path=CREATE, count=1, retry_after=0.05)])
    batch = anthropic_client.messages.batches.create(requests=[message_request("a")])

    posts = [r for r in emulator.requests if r.method == "POST" and r.path == CREATE]
    assert [(r.status, r.fault, r.retry_count) for r in posts] == [(429, "429", 0), (200, None, 1)]
    assert list(emulator.message_batches) == [batch.id]


def test_429_reply_is_a_rate_limit_error_with_retry_after(
    emulator: Emulator, anthropic_client: anthropic.Anthropic
) -> None:
    emulator.set_faults([Fault(kind="429", retry_after=3)])
    with pytest.raises(anthropic.RateLimitError) as caught:
        anthropic_client.with_options(max_retries=0).messages.batches.list()
    assert caught.value.response.headers["retry-after"] == "3"
    assert caught.value.body["error"]["type"] == "rate_limit_error"


@pytest.mark.parametrize(
    ("kind", "error", "error_type"),
    [
        ("529", anthropic.OverloadedError, "overloaded_error"),
        ("500", anthropic.InternalServerError, "api_error"),
    ],
)
def test_server_faults_answer_in_the_api_error_envelope(
    emulator: Emulator,
    anthropic_client: anthropic.Anthropic,
    kind: str,
    error: type[anthropic.APIStatusError],
    error_type: str,
) -> None:
    emulator.set_faults([Fault(kind=kind)])
    with pytest.raises(error) as caught:
        anthropic_client.with_options(max_retries=0).messages.batches.list()
    assert caught.value.status_code == int(kind)
    assert caught.value.body["type"] == "error"
    assert caught.value.body["error"]["type"] == error_type


def test_lost_create_reply_leaves_a_batch_the_client_never_heard_of(
    emulator: Emulator, anthropic_client: anthropic.Anthropic
) -> None:
    emulator.set_faults([Fault(kind="lost_reply", method="POST", path=CREATE, count=1)])
    with pytest.raises(anthropic.APIConnectionError):
        anthropic_client.with_options(max_retries=0).messages.batches.create(
            requests=[message_request("a"), message_request("b")]
        )

    [post] = [r for r in emulator.requests if r.method == "POST" and r.path == CREATE]
    assert (post.status, post.handled_status, post.fault) == ("dropped", 200, "lost_reply")
    # Without metadata, the batch can be found by listing (newest first) and matching counts.
    [found] = anthropic_client.messages.batches.list().data
    assert found.request_counts.processing == 2
    assert list(emulator.message_batches) == [found.id]


def test_lost_create_reply_makes_a_blind_sdk_retry_create_a_second_batch(
    emulator: Emulator, anthropic_client: anthropic.Anthropic
) -> None:
    emulator.set_faults([Fault(kind="lost_reply", method="POST", path=CREATE, count=1)])
    batch = anthropic_client.messages.batches.create(requests=[message_request("a")])

    assert len(emulator.message_batches) == 2  # the hazard: the SDK sends no idempotency key
    assert batch.id in emulator.message_batches


def test_dropped_connection_is_retried_without_effect(
    emulator: Emulator, anthropic_client: anthropic.Anthropic
) -> None:
    emulator.set_faults([Fault(kind="drop", method="POST", path=CREATE, count=1)])
    batch = anthropic_client.messages.batches.create(requests=[message_request("a")])
    assert list(emulator.message_batches) == [batch.id]
