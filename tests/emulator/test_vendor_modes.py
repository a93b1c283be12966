"""The emulator's vendor modes: one instance behaves like Azure, Groq, Together, Doubleword or
Parasail on the wire, driven through the real SDK over HTTP."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import openai
import pytest
from emulator_helpers import chat_line, jsonl

from batchctl.emulator import Emulator, EmulatorSettings
from tests.waiting import scaled

API_VERSION = "2024-10-21"
DAY = 86_400

MakeVendor = Callable[..., Emulator]


@pytest.fixture
def make_vendor() -> Iterator[MakeVendor]:
    """Start emulators behaving like a vendor, on a manual clock."""
    started: list[Emulator] = []

    def make(name: str, **settings: Any) -> Emulator:
        settings.setdefault("manual_clock", True)
        emu = Emulator(EmulatorSettings.for_vendor(name, **settings))
        started.append(emu)
        return emu

    yield make
    for emu in started:
        emu.stop()


def _azure(emu: Emulator, key: str = "azure-key") -> openai.AzureOpenAI:
    return openai.AzureOpenAI(
        azure_endpoint=emu.url, api_version=API_VERSION, api_key=key, max_retries=0
    )


def _plain(emu: Emulator, base_url: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=base_url or emu.base_url, api_key="test-key", max_retries=0)


def _start(
    client: openai.OpenAI,
    lines: Iterable[dict[str, Any]],
    *,
    endpoint: str = "/v1/chat/completions",
    window: str = "24h",
    purpose: str = "batch",
) -> dict[str, Any]:
    """Upload ``lines`` and create a batch; the create reply's JSON as the vendor wrote it."""
    uploaded = client.files.create(file=("input.jsonl", jsonl(lines)), purpose=purpose)  # type: ignore[arg-type]
    raw = client.batches.with_raw_response.create(
        input_file_id=uploaded.id,
        endpoint=endpoint,  # type: ignore[arg-type]
        completion_window=window,  # type: ignore[arg-type]
    )
    reply: dict[str, Any] = json.loads(raw.content)
    return reply


def _raw_batch(client: openai.OpenAI, batch_id: str) -> dict[str, Any]:
    batch: dict[str, Any] = json.loads(client.batches.with_raw_response.retrieve(batch_id).content)
    return batch


def _run_to_end(emu: Emulator, batch_id: str) -> dict[str, Any]:
    """Advance emulated time until the batch is final; its Batch object (OpenAI's shape)."""
    for _ in range(1_000):
        batch = emu.batches[batch_id]
        if batch["status"] in {"completed", "failed", "expired", "cancelled"}:
            return batch
        emu.advance(1.0)
    raise AssertionError(f"batch {batch_id} never finished")


def _lines_of(emu: Emulator, file_id: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in emu.file_content(file_id).splitlines()]


# --- Azure --------------------------------------------------------------------------------------


def test_azure_serves_files_and_batches_without_v1_with_the_api_version(
    make_vendor: MakeVendor,
) -> None:
    emu = make_vendor("azure")
    with _azure(emu) as client:
        _start(client, [chat_line("a", url="/chat/completions")], endpoint="/chat/completions")
    paths = [(r.method, r.path, r.query) for r in emu.requests]
    assert paths == [
        ("POST", "/openai/files", f"api-version={API_VERSION}"),
        ("POST", "/openai/batches", f"api-version={API_VERSION}"),
    ]


def test_azure_refuses_a_request_without_the_api_version(make_vendor: MakeVendor) -> None:
    emu = make_vendor("azure")
    client = openai.OpenAI(
        base_url=f"{emu.url}/openai", api_key="k", default_headers={"api-key": "k"}, max_retries=0
    )
    with client, pytest.raises(openai.BadRequestError) as caught:
        client.batches.list()
    assert "api-version" in caught.value.message


def test_azure_does_not_serve_the_v1_paths(make_vendor: MakeVendor) -> None:
    emu = make_vendor("azure")
    with _plain(emu) as client, pytest.raises(openai.NotFoundError):
        client.files.list()


def test_azure_reads_the_key_from_the_api_key_header(make_vendor: MakeVendor) -> None:
    emu = make_vendor("azure", api_key="right")
    with _azure(emu, key="right") as client:
        assert client.batches.list().data == []
    with _azure(emu, key="wrong") as client, pytest.raises(openai.AuthenticationError):
        client.batches.list()


def test_azure_refuses_a_bearer_key(make_vendor: MakeVendor) -> None:
    emu = make_vendor("azure")
    bearer = openai.OpenAI(base_url=f"{emu.url}/openai", api_key="k", max_retries=0)
    with bearer, pytest.raises(openai.AuthenticationError):
        bearer.batches.list(extra_query={"api-version": API_VERSION})


def test_azure_writes_capitalised_statuses_and_empty_file_ids(make_vendor: MakeVendor) -> None:
    emu = make_vendor("azure")
    with _azure(emu) as client:
        created = _start(
            client, [chat_line("a", url="/chat/completions")], endpoint="/chat/completions"
        )
        assert created["status"] == "Validating"
        assert created["output_file_id"] == ""
        assert created["error_file_id"] == ""
        _run_to_end(emu, created["id"])
        done = _raw_batch(client, created["id"])
    assert done["status"] == "Completed"
    assert done["output_file_id"].startswith("file-")
    assert done["error_file_id"] == ""  # nothing failed


def test_azure_runs_lines_whose_url_has_no_v1(make_vendor: MakeVendor) -> None:
    emu = make_vendor("azure")
    lines = [chat_line(str(n), model="my-deployment", url="/chat/completions") for n in range(3)]
    with _azure(emu) as client:
        created = _start(client, lines, endpoint="/chat/completions")
    batch = _run_to_end(emu, created["id"])
    assert batch["status"] == "completed"
    outputs = _lines_of(emu, batch["output_file_id"])
    assert sorted(line["custom_id"] for line in outputs) == ["0", "1", "2"]
    assert {line["response"]["body"]["model"] for line in outputs} == {"my-deployment"}


def test_azure_refuses_the_v1_endpoint_at_create(make_vendor: MakeVendor) -> None:
    emu = make_vendor("azure")
    with _azure(emu) as client, pytest.raises(openai.BadRequestError) as caught:
        _start(client, [chat_line("a")], endpoint="/v1/chat/completions")
    assert caught.value.code == "invalid_value"


def test_azure_fails_a_file_naming_two_deployments(make_vendor: MakeVendor) -> None:
    emu = make_vendor("azure")
    lines = [
        chat_line("a", model="deployment-1", url="/chat/completions"),
        chat_line("b", model="deployment-2", url="/chat/completions"),
    ]
    with _azure(emu) as client:
        created = _start(client, lines, endpoint="/chat/completions")
    batch = _run_to_end(emu, created["id"])
    assert batch["status"] == "failed"
    assert [e["code"] for e in batch["errors"]["data"]] == ["model_mismatch"]


def test_azure_refuses_a_window_other_than_24h(make_vendor: MakeVendor) -> None:
    emu = make_vendor("azure")
    line = chat_line("a", url="/chat/completions")
    with _azure(emu) as client, pytest.raises(openai.BadRequestError):
        _start(client, [line], endpoint="/chat/completions", window="48h")


# --- Groq ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("window", ["24h", "48h", "72h", "7d"])
def test_groq_accepts_windows_from_24h_to_7d(make_vendor: MakeVendor, window: str) -> None:
    emu = make_vendor("groq")
    with _plain(emu) as client:
        created = _start(client, [chat_line("a")], window=window)
    assert created["completion_window"] == window


@pytest.mark.parametrize("window", ["1h", "23h", "8d"])
def test_groq_refuses_windows_outside_24h_to_7d(make_vendor: MakeVendor, window: str) -> None:
    emu = make_vendor("groq")
    with _plain(emu) as client, pytest.raises(openai.BadRequestError):
        _start(client, [chat_line("a")], window=window)


def test_groq_batch_expires_at_the_end_of_its_own_window(make_vendor: MakeVendor) -> None:
    emu = make_vendor("groq", expire_after_fraction=0.5)
    with _plain(emu) as client:
        created = _start(client, [chat_line(str(n)) for n in range(4)], window="7d")
    assert created["expires_at"] == created["created_at"] + 7 * DAY
    emu.advance(6 * DAY)
    assert emu.batches[created["id"]]["status"] == "in_progress"
    emu.advance(DAY + 1)
    assert emu.batches[created["id"]]["status"] == "expired"


def test_groq_runs_audio_transcription_lines(make_vendor: MakeVendor) -> None:
    emu = make_vendor("groq")
    line = {
        "custom_id": "clip-1",
        "method": "POST",
        "url": "/v1/audio/transcriptions",
        "body": {"model": "whisper-large-v3", "url": "https://example.com/clip-1.wav"},
    }
    with _plain(emu) as client:
        created = _start(client, [line], endpoint="/v1/audio/transcriptions")
    batch = _run_to_end(emu, created["id"])
    [output] = _lines_of(emu, batch["output_file_id"])
    assert output["response"]["status_code"] == 200
    assert "clip-1.wav" in output["response"]["body"]["text"]


def test_groq_runs_a_file_mixing_endpoints_and_models(make_vendor: MakeVendor) -> None:
    emu = make_vendor("groq")
    lines = [
        chat_line("chat", model="llama-3.1-8b-instant"),
        {
            "custom_id": "audio",
            "method": "POST",
            "url": "/v1/audio/translations",
            "body": {"model": "whisper-large-v3", "url": "https://example.com/a.mp3"},
        },
    ]
    with _plain(emu) as client:
        created = _start(client, lines)
    batch = _run_to_end(emu, created["id"])
    assert batch["status"] == "completed"
    assert batch["request_counts"]["completed"] == 2


def test_groq_refuses_an_endpoint_it_does_not_serve(make_vendor: MakeVendor) -> None:
    emu = make_vendor("groq")
    with _plain(emu) as client, pytest.raises(openai.BadRequestError):
        _start(client, [chat_line("a", url="/v1/responses")], endpoint="/v1/responses")


# --- Together -----------------------------------------------------------------------------------


def test_together_refuses_the_batch_purpose(make_vendor: MakeVendor) -> None:
    emu = make_vendor("together")
    with _plain(emu) as client, pytest.raises(openai.BadRequestError) as caught:
        client.files.create(file=("input.jsonl", jsonl([chat_line("a")])), purpose="batch")
    assert caught.value.param == "purpose"


def test_together_runs_a_batch_api_file(make_vendor: MakeVendor) -> None:
    emu = make_vendor("together")
    with _plain(emu) as client:
        created = _start(client, [chat_line("a")], purpose="batch-api")
    batch = _run_to_end(emu, created["job"]["id"])
    assert batch["status"] == "completed"


def test_together_wraps_the_created_batch_in_job(make_vendor: MakeVendor) -> None:
    emu = make_vendor("together")
    with _plain(emu) as client:
        created = _start(client, [chat_line("a")], purpose="batch-api")
    assert set(created) == {"job"}
    assert created["job"]["id"].startswith("batch_")


def test_together_writes_upper_case_statuses_and_progress(make_vendor: MakeVendor) -> None:
    emu = make_vendor("together", processing_rate=1.0)
    with _plain(emu) as client:
        job = _start(client, [chat_line(str(n)) for n in range(4)], purpose="batch-api")["job"]
        assert (job["status"], job["progress"]) == ("VALIDATING", 0.0)
        emu.advance(0.2 + 2.0)  # validated, then two of four requests done
        halfway = _raw_batch(client, job["id"])
        _run_to_end(emu, job["id"])
        done = _raw_batch(client, job["id"])
    assert (halfway["status"], halfway["progress"]) == ("IN_PROGRESS", 50.0)
    assert (done["status"], done["progress"]) == ("COMPLETED", 100.0)


# --- Doubleword ---------------------------------------------------------------------------------


def test_doubleword_batch_with_a_1h_window_expires_after_an_hour(make_vendor: MakeVendor) -> None:
    emu = make_vendor("doubleword", expire_after_fraction=0.5)
    with _plain(emu) as client:
        created = _start(client, [chat_line(str(n)) for n in range(4)], window="1h")
    assert created["expires_at"] == created["created_at"] + 3_600
    emu.advance(3_600 + 1)
    assert emu.batches[created["id"]]["status"] == "expired"


def test_doubleword_fails_a_custom_id_over_64_characters(make_vendor: MakeVendor) -> None:
    emu = make_vendor("doubleword")
    with _plain(emu) as client:
        created = _start(client, [chat_line("x" * 64), chat_line("y" * 65)])
    batch = _run_to_end(emu, created["id"])
    assert batch["status"] == "failed"
    [error] = batch["errors"]["data"]
    assert (error["code"], error["line"]) == ("invalid_custom_id", 2)


def test_doubleword_serves_only_chat_and_embeddings(make_vendor: MakeVendor) -> None:
    emu = make_vendor("doubleword")
    with _plain(emu) as client, pytest.raises(openai.BadRequestError):
        _start(client, [chat_line("a", url="/v1/responses")], endpoint="/v1/responses")


def test_doubleword_refuses_a_2h_window(make_vendor: MakeVendor) -> None:
    emu = make_vendor("doubleword")
    with _plain(emu) as client, pytest.raises(openai.BadRequestError):
        _start(client, [chat_line("a")], window="2h")


# --- limits and the knob ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("vendor", "requests", "megabytes"),
    [
        ("openai", 50_000, 200),
        ("azure", 100_000, 200),
        ("groq", 50_000, 200),
        ("together", 50_000, 100),
        ("doubleword", 50_000, 200),
        ("parasail", 50_000, 500),
    ],
)
def test_each_vendor_mode_takes_its_limits_per_batch(
    vendor: str, requests: int, megabytes: int
) -> None:
    settings = EmulatorSettings.for_vendor(vendor)
    assert settings.max_requests_per_batch == requests
    assert settings.max_batch_file_bytes == megabytes * 1024 * 1024


def test_the_control_api_switches_the_vendor(make_vendor: MakeVendor) -> None:
    emu = make_vendor("openai")
    request = urllib.request.Request(
        f"{emu.url}/_emulator/settings",
        data=json.dumps({"vendor": "together"}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        settings = json.loads(response.read())
    assert (settings["vendor"], settings["max_batch_file_bytes"]) == ("together", 100 * 1024**2)
    with _plain(emu) as client:
        created = _start(client, [chat_line("a")], purpose="batch-api")
    assert created["job"]["status"] == "VALIDATING"


def test_an_unknown_vendor_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown vendor 'acme'"):
        EmulatorSettings(vendor="acme")


def test_the_emulator_process_takes_a_vendor() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "batchctl.emulator", "--port", "0", "--vendor", "azure"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        root = process.stdout.readline().strip().split("OPENAI_BASE_URL=")[1].removesuffix("/v1")
        azure = openai.AzureOpenAI(azure_endpoint=root, api_version=API_VERSION, api_key="k")
        with azure:
            assert azure.batches.list().data == []
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=scaled(10)) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
