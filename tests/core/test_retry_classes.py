"""Retrying what is worth retrying, in process: a retry sends again the failures that can
succeed on a second try (server errors, overloaded, rate limits) and leaves invalid requests
alone unless asked; the failures are counted apart.

The emulator's ``request_failure_rate`` with ``request_failure_status`` makes chosen requests
fail with a chosen status; a model named ``nonexistent-...`` gets a 404 ``model_not_found``
(invalid). The CLI's side (flags, messages, exit codes, --json) is in tests/batches.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from batchctl.batches.failures import FailureSplit, retryable
from batchctl.batches.submission import Batches, SubmitOptions
from batchctl.errors import ExitCode, UsageError
from batchctl.records import RunStatus
from tests.conftest import write_chat_requests
from tests.core.emulated import EmulatedProvider

INVALID = "r1"  # the request of ``mixed`` whose model does not exist: 404, invalid


def fail_requests(provider: EmulatedProvider, status: int | None, rate: float = 1.0) -> None:
    """Every request of a batch created from now on fails with ``status`` (None: none fail)."""
    settings = provider.state.settings
    provider.state.settings = dataclasses.replace(
        settings,
        request_failure_rate=0.0 if status is None else rate,
        request_failure_status=status,
    )


@pytest.fixture
def mixed(tmp_path: Path) -> Path:
    """Three requests; ``r1`` asks for a model that does not exist."""
    path = tmp_path / "mixed.jsonl"
    write_chat_requests(path, 3)
    lines = path.read_text().splitlines()
    broken = json.loads(lines[1])
    broken["body"]["model"] = "nonexistent-model"
    path.write_text("\n".join([lines[0], json.dumps(broken), lines[2]]) + "\n")
    return path


def failed_run(batches: Batches, provider: EmulatedProvider, path: Path, status: int) -> int:
    """A settled submission of ``path`` whose valid requests failed with ``status``; the
    emulator answers every request from now on."""
    fail_requests(provider, status)
    run_id = batches.submit([path], SubmitOptions())
    assert batches.wait(run_id).status is RunStatus.FAILED
    fail_requests(provider, None)
    return run_id


def outcomes(batches: Batches, run_id: int) -> dict[str, tuple[str | None, int]]:
    """Each request's outcome and how many times it was sent."""
    return {r.custom_id: (r.outcome, r.attempts) for r in batches.store.requests_in_order(run_id)}


@pytest.mark.parametrize("status", [500, 503, 429])
def test_a_server_error_overload_or_rate_limit_is_sent_again(
    batches: Batches, provider: EmulatedProvider, mixed: Path, status: int
) -> None:
    run_id = failed_run(batches, provider, mixed, status)

    assert batches.retry(run_id, ["failed"]) == 2
    batches.wait(run_id)

    found = outcomes(batches, run_id)
    assert (found["r0"], found["r2"]) == (("succeeded", 2), ("succeeded", 2))


def test_an_invalid_request_is_not_sent_again(
    batches: Batches, provider: EmulatedProvider, mixed: Path
) -> None:
    run_id = failed_run(batches, provider, mixed, 500)

    batches.retry(run_id, ["failed"])
    batches.wait(run_id)

    assert outcomes(batches, run_id)[INVALID] == ("failed", 1)
    resent = batches.store.parts(run_id)[-1]
    assert (resent.round, resent.requests) == (2, 2)


def test_a_retry_of_everything_leaves_invalid_requests_alone_too(
    batches: Batches, provider: EmulatedProvider, mixed: Path
) -> None:
    run_id = failed_run(batches, provider, mixed, 500)

    assert batches.retry(run_id, ["failed", "expired", "cancelled", "missing"]) == 2

    assert outcomes(batches, run_id)[INVALID] == ("failed", 1)


def test_include_invalid_sends_invalid_requests_again(
    batches: Batches, provider: EmulatedProvider, mixed: Path
) -> None:
    run_id = failed_run(batches, provider, mixed, 500)

    assert batches.retry(run_id, ["failed"], include_invalid=True) == 3
    batches.wait(run_id)

    assert outcomes(batches, run_id)[INVALID] == ("failed", 2)  # a 404 again


def test_a_retry_with_only_invalid_failures_left_is_refused_naming_the_flag(
    batches: Batches, provider: EmulatedProvider, mixed: Path
) -> None:
    run_id = failed_run(batches, provider, mixed, 400)
    parts = batches.store.parts(run_id)

    with pytest.raises(UsageError) as refused:
        batches.retry(run_id, ["failed"])

    assert refused.value.exit_code == ExitCode.USAGE
    assert "--include-invalid" in refused.value.message
    assert "\n" not in refused.value.message
    assert batches.store.parts(run_id) == parts
    assert batches.store.get_run(run_id).status is RunStatus.FAILED  # type: ignore[union-attr]


def test_expired_requests_are_sent_again_whatever_they_failed_with(
    batches: Batches, provider: EmulatedProvider, tmp_path: Path
) -> None:
    path = tmp_path / "in.jsonl"
    write_chat_requests(path, 4)
    provider.state.settings = dataclasses.replace(
        provider.state.settings, expire_after_fraction=0.5, completion_window=2.0
    )
    run_id = batches.submit([path], SubmitOptions())
    assert batches.wait(run_id).status is RunStatus.PARTIAL
    provider.state.settings = dataclasses.replace(
        provider.state.settings, expire_after_fraction=None, completion_window=86_400.0
    )

    assert batches.retry(run_id, ["expired"]) == 2


def test_failures_are_counted_retryable_and_invalid(
    batches: Batches, provider: EmulatedProvider, mixed: Path
) -> None:
    run_id = failed_run(batches, provider, mixed, 500)

    assert batches.failures(run_id) == FailureSplit(retryable=2, invalid=1)


def test_a_merged_result_says_whether_its_failure_is_retryable(
    batches: Batches, provider: EmulatedProvider, mixed: Path
) -> None:
    run_id = failed_run(batches, provider, mixed, 500)
    submission = batches.store.get_submission(run_id)
    assert submission is not None and submission.results_path is not None

    lines = [json.loads(line) for line in Path(submission.results_path).read_text().splitlines()]

    assert [line["error"]["retryable"] for line in lines] == [True, False, True]


# The rule itself, on the codes each provider records (providers.md, "Retry or not").
@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        # OpenAI: response.status_code with body.error.code (http_<status> when null)
        ("http_500", 500, True),
        ("http_503", 503, True),
        ("rate_limit_exceeded", 429, True),
        ("insufficient_quota", 429, False),  # the quota is spent: no wait cures it
        ("http_400", 400, False),
        ("invalid_request", 400, False),
        ("model_not_found", 404, False),
        ("invalid_api_key", 401, False),
        ("http_408", 408, True),
        # Anthropic: error.error.type of an errored line, no HTTP status per request
        ("overloaded_error", None, True),
        ("api_error", None, True),
        ("rate_limit_error", None, True),
        ("timeout_error", None, True),
        ("invalid_request_error", None, False),
        ("authentication_error", None, False),
        ("permission_error", None, False),
        ("billing_error", None, False),
        ("not_found_error", None, False),
        # A whole batch's end: its requests never ran
        ("batch_failed", None, True),
        ("batch_expired", None, True),
        ("token_limit_exceeded", None, True),
        # Nothing says the request is at fault
        ("something_new", None, True),
        (None, None, True),
    ],
)
def test_a_failure_is_retryable_by_its_code_then_its_status(
    code: str | None, status: int | None, expected: bool
) -> None:
    assert retryable(code, status) is expected
