"""The OpenAI-shaped vendors' profiles: ``batchctl submit --provider NAME`` against the project's
emulator set to behave like that vendor (``EmulatorSettings.for_vendor``), through the real
``openai`` SDK over HTTP. One behaviour per test: what each profile changes (paths, auth, file
purpose, statuses, windows, endpoints, the rules on lines) and that nothing is sent when a line
breaks the vendor's rules."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from batchctl.batches.validation import Plan, scan
from batchctl.batches.vendors import line_rules
from batchctl.emulator import Emulator, EmulatorSettings, Fault
from batchctl.errors import UsageError
from batchctl.providers import check_settings
from batchctl.providers.openai import OpenAIProvider
from batchctl.providers.profiles import PROFILES
from tests.batches.jsonl import read_jsonl, request, write_jsonl

API_VERSION = "2024-10-21"

# The variables each built-in profile reads its key from (and Azure its endpoint and version).
KEY_ENV = {
    "azure": "AZURE_OPENAI_API_KEY",
    "groq": "GROQ_API_KEY",
    "together": "TOGETHER_API_KEY",
    "doubleword": "DOUBLEWORD_API_KEY",
    "parasail": "PARASAIL_API_KEY",
    "openai-compatible": "OPENAI_API_KEY",
}

StartVendor = Callable[..., Emulator]

# ``Batches`` scans with the provider's line rules (``scan(..., rules=line_rules(quirks))`` in
# batchctl/batches/submission.py), so a line a vendor would refuse is refused before anything
# is sent: the "before sending" tests below check that against each vendor's emulator.


@pytest.fixture
def vendor_api(ws: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[StartVendor]:
    """``vendor_api(name, **settings)`` starts an emulator behaving like vendor ``name`` and
    points batchctl's profile of that name at it (key variable, base URL, fast polling)."""
    started: list[Emulator] = []

    def start(name: str, *, emulated: str | None = None, **settings: Any) -> Emulator:
        emu = Emulator(EmulatorSettings.for_vendor(emulated or name, **settings))
        started.append(emu)
        monkeypatch.setenv(KEY_ENV[name], "vendor-key")
        if name == "azure":
            monkeypatch.setenv("AZURE_OPENAI_ENDPOINT", emu.url)
            monkeypatch.setenv("OPENAI_API_VERSION", API_VERSION)
            table = ""
        else:
            table = f'base_url = "{emu.base_url}"\n'
        ws.write_config(
            f"[openai]\npoll_interval = 0.05\n\n"
            f'[providers."{name}"]\n{table}poll_interval = 0.05\nmax_retries = 8\n'
        )
        return emu

    yield start
    for emu in started:
        emu.stop()


def _posts(emu: Emulator) -> list[str]:
    return [r.path for r in emu.requests if r.method == "POST"]


def _submit(cli: Any, provider: str, *args: str) -> Any:
    return cli("submit", "in.jsonl", "--provider", provider, "--json", *args)


def _azure_line(custom_id: str, model: str = "my-deployment") -> dict[str, Any]:
    line = request(custom_id, model=model)
    line["url"] = "/chat/completions"
    return line


def _audio_line(custom_id: str) -> dict[str, Any]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/audio/transcriptions",
        "body": {"model": "whisper-large-v3", "url": f"https://example.com/{custom_id}.wav"},
    }


def _results(ws: Any, cli: Any, submitted: Any) -> list[dict[str, Any]]:
    out = ws.root / "results.jsonl"
    fetched = cli("results", str(submitted.json()["id"]), "-o", str(out))
    assert fetched.exit_code == 0, fetched.stderr
    return read_jsonl(out)


# --- Azure --------------------------------------------------------------------------------------


def test_azure_submission_completes_through_the_azure_paths(
    vendor_api: StartVendor, ws: Any, cli: Any
) -> None:
    emu = vendor_api("azure")
    write_jsonl(ws.root / "in.jsonl", [_azure_line(f"r{i}") for i in range(3)])

    result = _submit(cli, "azure", "--wait")

    assert result.exit_code == 0, result.stderr
    assert _posts(emu) == ["/openai/files", "/openai/batches"]
    assert all(f"api-version={API_VERSION}" in r.query for r in emu.requests)
    assert [line["custom_id"] for line in _results(ws, cli, result)] == ["r0", "r1", "r2"]


def test_azure_status_reads_capitalised_statuses_in_lower_case(
    vendor_api: StartVendor, ws: Any, cli: Any
) -> None:
    vendor_api("azure")
    write_jsonl(ws.root / "in.jsonl", [_azure_line("r0")])
    submitted = _submit(cli, "azure", "--wait")
    assert submitted.exit_code == 0, submitted.stderr

    shown = cli("status", str(submitted.json()["id"]), "--json")

    assert shown.exit_code == 0, shown.stderr
    [part] = shown.json()["parts"]
    assert part["status"] == "completed"


def test_azure_refuses_lines_naming_two_deployments_before_sending(
    vendor_api: StartVendor, ws: Any, cli: Any
) -> None:
    emu = vendor_api("azure")
    write_jsonl(ws.root / "in.jsonl", [_azure_line("a", "dep-1"), _azure_line("b", "dep-2")])

    result = _submit(cli, "azure")

    assert result.exit_code != 0
    assert "in.jsonl:2" in result.stderr
    assert "same deployment" in result.stderr
    assert _posts(emu) == []


def test_azure_refuses_a_v1_url_before_sending(vendor_api: StartVendor, ws: Any, cli: Any) -> None:
    emu = vendor_api("azure")
    write_jsonl(ws.root / "in.jsonl", [request("a")])

    result = _submit(cli, "azure")

    assert result.exit_code != 0
    assert '"/v1/chat/completions" is not a supported batch endpoint' in result.stderr
    assert _posts(emu) == []


def test_azure_lost_create_reply_adopts_the_batch_it_made(
    vendor_api: StartVendor, ws: Any, cli: Any
) -> None:
    emu = vendor_api("azure")
    emu.set_faults([Fault(kind="lost_reply", method="POST", path="/openai/batches", count=1)])
    write_jsonl(ws.root / "in.jsonl", [_azure_line("r0")])

    result = _submit(cli, "azure", "--wait")

    assert result.exit_code == 0, result.stderr
    assert len(emu.batches) == 1


# --- Groq ---------------------------------------------------------------------------------------


def test_groq_submits_with_a_7d_window(vendor_api: StartVendor, ws: Any, cli: Any) -> None:
    emu = vendor_api("groq")
    write_jsonl(ws.root / "in.jsonl", [request("r0")])

    result = _submit(cli, "groq", "--completion-window", "7d")

    assert result.exit_code == 0, result.stderr
    [batch] = emu.batches.values()
    assert batch["completion_window"] == "7d"


def test_groq_refuses_a_window_it_does_not_offer(
    vendor_api: StartVendor, ws: Any, cli: Any
) -> None:
    emu = vendor_api("groq")
    write_jsonl(ws.root / "in.jsonl", [request("r0")])

    result = _submit(cli, "groq", "--completion-window", "1h")

    assert result.exit_code != 0
    assert "1h" in result.stderr
    assert _posts(emu) == []


def test_groq_submits_a_file_mixing_chat_and_audio(
    vendor_api: StartVendor, ws: Any, cli: Any
) -> None:
    vendor_api("groq")
    write_jsonl(ws.root / "in.jsonl", [request("chat"), _audio_line("clip")])

    result = _submit(cli, "groq", "--wait")

    assert result.exit_code == 0, result.stderr
    assert [line["custom_id"] for line in _results(ws, cli, result)] == ["chat", "clip"]


# --- Together -----------------------------------------------------------------------------------


def test_together_uploads_with_purpose_batch_api(
    vendor_api: StartVendor, ws: Any, cli: Any
) -> None:
    emu = vendor_api("together")
    write_jsonl(ws.root / "in.jsonl", [request(f"r{i}") for i in range(3)])

    result = _submit(cli, "together", "--wait")

    assert result.exit_code == 0, result.stderr
    purposes = {f["purpose"] for f in emu.files.values() if f["filename"].endswith(".jsonl")}
    assert "batch-api" in purposes
    assert len(_results(ws, cli, result)) == 3


def test_together_lost_upload_reply_adopts_the_file_it_made(
    vendor_api: StartVendor, ws: Any, cli: Any
) -> None:
    emu = vendor_api("together")
    emu.set_faults([Fault(kind="lost_reply", method="POST", path="/v1/files", count=1)])
    write_jsonl(ws.root / "in.jsonl", [request("r0")])

    result = _submit(cli, "together", "--wait")

    assert result.exit_code == 0, result.stderr
    assert emu.summary()["files"]["by_purpose"].get("batch-api") == 1


# --- Doubleword ---------------------------------------------------------------------------------


def test_doubleword_refuses_a_custom_id_over_64_characters_before_sending(
    vendor_api: StartVendor, ws: Any, cli: Any
) -> None:
    emu = vendor_api("doubleword")
    write_jsonl(ws.root / "in.jsonl", [request("a" * 64), request("b" * 65)])

    result = _submit(cli, "doubleword")

    assert result.exit_code != 0
    assert "in.jsonl:2: custom_id: 65 characters" in result.stderr
    assert _posts(emu) == []


def test_doubleword_submits_with_a_1h_window(vendor_api: StartVendor, ws: Any, cli: Any) -> None:
    emu = vendor_api("doubleword")
    write_jsonl(ws.root / "in.jsonl", [request("r0")])

    result = _submit(cli, "doubleword", "--completion-window", "1h", "--wait")

    assert result.exit_code == 0, result.stderr
    [batch] = emu.batches.values()
    assert batch["completion_window"] == "1h"


def test_doubleword_refuses_an_endpoint_it_does_not_serve_before_sending(
    vendor_api: StartVendor, ws: Any, cli: Any
) -> None:
    emu = vendor_api("doubleword")
    line = request("a")
    line["url"] = "/v1/responses"
    write_jsonl(ws.root / "in.jsonl", [line])

    result = _submit(cli, "doubleword")

    assert result.exit_code != 0
    assert "not a supported batch endpoint" in result.stderr
    assert _posts(emu) == []


# --- Parasail and any server at a base URL ------------------------------------------------------


def test_parasail_submission_completes(vendor_api: StartVendor, ws: Any, cli: Any) -> None:
    vendor_api("parasail")
    write_jsonl(ws.root / "in.jsonl", [request(f"r{i}") for i in range(2)])

    result = _submit(cli, "parasail", "--wait")

    assert result.exit_code == 0, result.stderr


def test_openai_compatible_submission_completes_at_its_base_url(
    vendor_api: StartVendor, ws: Any, cli: Any
) -> None:
    emu = vendor_api("openai-compatible", emulated="openai")
    write_jsonl(ws.root / "in.jsonl", [request("r0")])

    result = _submit(cli, "openai-compatible", "--wait")

    assert result.exit_code == 0, result.stderr
    assert _posts(emu) == ["/v1/files", "/v1/batches"]


def test_openai_compatible_without_a_base_url_sends_nothing(
    ws: Any, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "key")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    ws.write_config("")
    write_jsonl(ws.root / "in.jsonl", [request("r0")])

    result = _submit(cli, "openai-compatible")

    assert result.exit_code != 0
    assert "base URL" in result.stderr or "base_url" in result.stderr
    assert not ws.has_tables() or ws.sql("SELECT count(*) FROM runs") == [(0,)]


# --- the profiles' rules on lines, as validation applies them (no network) ----------------------


def _plan(ws: Any, provider: str, rows: list[dict[str, Any]]) -> Plan:
    path = write_jsonl(ws.root / "in.jsonl", rows)
    return scan([path], rules=line_rules(PROFILES[provider].quirks))


def _problems(plan: Plan) -> list[str]:
    return [f"{p.line}: {p.message}" for p in plan.problems]


def test_azure_profile_takes_urls_without_v1_and_one_deployment(ws: Any) -> None:
    plan = _plan(ws, "azure", [_azure_line("a"), _azure_line("b")])
    assert _problems(plan) == []
    assert (plan.endpoint, plan.models) == ("/chat/completions", ["my-deployment"])


def test_azure_profile_refuses_a_second_deployment(ws: Any) -> None:
    plan = _plan(ws, "azure", [_azure_line("a", "dep-1"), _azure_line("b", "dep-2")])
    assert _problems(plan) == [
        '2: body.model: "dep-2" differs from "dep-1" (line 1); every line must name the same'
        " deployment"
    ]


def test_groq_profile_takes_chat_and_audio_lines_in_one_file(ws: Any) -> None:
    plan = _plan(ws, "groq", [request("chat"), _audio_line("clip")])
    assert _problems(plan) == []
    assert plan.requests == 2


def test_groq_profile_refuses_embeddings(ws: Any) -> None:
    line = request("a")
    line["url"] = "/v1/embeddings"
    [problem] = _problems(_plan(ws, "groq", [line]))
    assert '"/v1/embeddings" is not a supported batch endpoint' in problem


def test_doubleword_profile_refuses_a_65_character_custom_id(ws: Any) -> None:
    plan = _plan(ws, "doubleword", [request("a" * 64), request("b" * 65)])
    assert _problems(plan) == ["2: custom_id: 65 characters; the provider takes 64"]


def test_openai_profile_keeps_openai_rules(ws: Any) -> None:
    rows = [request("a" * 65), request("b", model="gpt-4o")]
    plan = _plan(ws, "openai", rows)
    assert _problems(plan) == []
    assert plan.models == ["gpt-4o", "gpt-4o-mini"]


# --- the provider on its own: Azure's client and spellings --------------------------------------


def test_azure_provider_reads_capitalised_statuses_and_empty_ids(
    vendor_api: StartVendor, ws: Any
) -> None:
    emu = vendor_api("azure", manual_clock=True)
    path = write_jsonl(ws.root / "in.jsonl", [_azure_line("a")])
    provider = OpenAIProvider.from_settings(PROFILES["azure"])
    try:
        uploaded = provider.upload(path, "in.jsonl")
        created = provider.create_batch(
            input_file_id=uploaded.id,
            endpoint="/chat/completions",
            completion_window="24h",
            metadata={"batchctl_part": "x"},
        )
        assert emu.batches[created.id]["status"] == "validating"
        assert (created.status, created.output_file_id, created.error_file_id) == (
            "validating",
            None,
            None,
        )
        emu.advance(60)
        done = provider.get_batch(created.id)
    finally:
        provider.close()
    assert (done.status, done.error_file_id) == ("completed", None)
    assert done.output_file_id is not None


def test_azure_without_an_api_version_is_refused_before_sending(
    vendor_api: StartVendor, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = vendor_api("azure")
    monkeypatch.delenv("OPENAI_API_VERSION")

    with pytest.raises(UsageError, match="no API version for azure"):
        check_settings(PROFILES["azure"])
    assert emu.requests == []
