"""Choosing a provider: built-in profiles, ``[providers.NAME]`` tables, ``--provider``."""

from __future__ import annotations

from pathlib import Path

import pytest

from batchctl.config import BatchSettings, parse_config
from batchctl.errors import ConfigError, UsageError
from batchctl.providers import check_settings
from batchctl.providers.profiles import PROFILES
from tests.conftest import Workspace
from tests.test_config import GOOD, check_fails_with

BATCH_JOB = '[jobs.b]\nkind = "batch"\ninput = "in.jsonl"\n'


def test_every_built_in_provider_works_without_a_table() -> None:
    config = parse_config({}, None)
    for name in ("openai", "anthropic", "azure", "groq", "together", "doubleword", "parasail"):
        assert config.provider(name).name == name
    assert config.provider("openai-compatible").requires_base_url


def test_a_table_overrides_only_the_fields_it_names() -> None:
    config = parse_config(
        {"providers": {"anthropic": {"max_requests": 10, "api_key_env": "MY_KEY"}}}, None
    )
    settings = config.provider("anthropic")
    assert (settings.max_requests, settings.api_key_env) == (10, "MY_KEY")
    assert settings.max_bytes == PROFILES["anthropic"].max_bytes
    assert settings.api == "anthropic"


def test_the_openai_table_is_the_openai_providers_settings() -> None:
    config = parse_config({"openai": {"poll_interval": "5s"}}, None)
    assert config.provider("openai").poll_interval == 5.0
    assert config.openai.poll_interval == 5.0


def test_a_provider_of_ones_own_needs_an_api_shape(ws: Workspace, cli) -> None:
    check_fails_with(
        ws,
        cli,
        '[providers.local]\nbase_url = "http://127.0.0.1:30000/v1"\n',
        "providers.local.api: required (one of openai, anthropic)",
    )


def test_a_provider_of_ones_own_speaks_the_shape_it_names() -> None:
    config = parse_config(
        {"providers": {"sglang": {"api": "openai", "base_url": "http://127.0.0.1:30000/v1"}}},
        None,
    )
    assert config.provider("sglang").api == "openai"
    assert config.provider("sglang").base_url == "http://127.0.0.1:30000/v1"


def test_naming_both_openai_tables_is_refused(ws: Workspace, cli) -> None:
    check_fails_with(
        ws,
        cli,
        "[openai]\ntimeout = 5\n[providers.openai]\ntimeout = 6\n",
        "openai: also given as [providers.openai]; keep one of them",
    )


def test_a_job_naming_an_unknown_provider_is_refused(ws: Workspace, cli) -> None:
    ws.write_config(BATCH_JOB + 'provider = "nowhere"\n')
    result = cli("config", "check")
    assert result.exit_code == 2
    assert 'jobs.b.provider: no provider named "nowhere"' in result.stderr


def test_a_window_the_provider_does_not_offer_is_refused(ws: Workspace, cli) -> None:
    check_fails_with(
        ws,
        cli,
        BATCH_JOB + 'completion_window = "1h"\n',
        'jobs.b.completion_window: openai accepts 24h; got "1h"',
    )


def test_the_old_kind_name_openai_still_makes_a_batch_job() -> None:
    config = parse_config({"jobs": {"b": {"kind": "openai", "input": "x.jsonl"}}}, None)
    assert config.job("b").provider == "openai"


def test_a_limit_of_ours_above_the_providers_is_lowered_to_it() -> None:
    settings = BatchSettings(max_requests=80_000, max_bytes=10)
    assert settings.limits(PROFILES["openai"]) == (50_000, 10)
    assert settings.limits(PROFILES["anthropic"]) == (80_000, 10)


def test_without_limits_of_ours_the_providers_apply() -> None:
    assert BatchSettings().limits(PROFILES["anthropic"]) == (100_000, 256_000_000)


def test_an_unknown_provider_name_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="no provider named 'nowhere'"):
        parse_config({}, None).provider("nowhere")


def test_a_provider_without_a_public_address_needs_a_base_url(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "k")
    with pytest.raises(UsageError, match="no base URL for openai-compatible"):
        check_settings(PROFILES["openai-compatible"])


def test_a_missing_key_names_the_provider_and_its_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(UsageError, match=r"no API key for anthropic: .*ANTHROPIC_API_KEY"):
        check_settings(PROFILES["anthropic"])


def test_submit_to_an_unknown_provider_exits_2_naming_it(
    ws: Workspace, cli, tmp_path: Path
) -> None:
    ws.write_config(GOOD)
    requests = tmp_path / "in.jsonl"
    requests.write_text(
        '{"custom_id":"a","method":"POST","url":"/v1/chat/completions",'
        '"body":{"model":"gpt-4o-mini","messages":[]}}\n'
    )
    result = cli("submit", str(requests), "--provider", "nowhere")
    assert result.exit_code == 2
    assert "no provider named 'nowhere'" in result.stderr
    assert "Traceback" not in result.stderr


def test_unused_config_error_type_is_config_error() -> None:
    with pytest.raises(ConfigError):
        parse_config({"providers": {"x": "not a table"}}, None)


def test_submit_with_an_empty_provider_name_exits_2_naming_the_known_ones(
    ws: Workspace, cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")  # an upload would exit 1
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    ws.write_config(GOOD)
    requests = tmp_path / "in.jsonl"
    requests.write_text(
        '{"custom_id":"a","method":"POST","url":"/v1/chat/completions",'
        '"body":{"model":"gpt-4o-mini","messages":[]}}\n'
    )
    result = cli("submit", str(requests), "--provider", "")
    assert result.exit_code == 2, result.stderr
    assert result.stderr.startswith("error: --provider: no provider name given\n")
    assert "openai, openai-compatible, parasail, together" in result.stderr
    assert "Traceback" not in result.stderr


def _one_request(tmp_path: Path) -> Path:
    requests = tmp_path / "in.jsonl"
    requests.write_text(
        '{"custom_id":"a","method":"POST","url":"/v1/chat/completions",'
        '"body":{"model":"gpt-4o-mini","messages":[]}}\n'
    )
    return requests


@pytest.mark.parametrize(
    ("provider", "allowed"),
    [
        ("openai", "/v1/responses, /v1/chat/completions, /v1/embeddings"),
        ("groq", "/v1/chat/completions, /v1/audio/transcriptions"),
        ("anthropic", "/v1/messages;"),
    ],
)
def test_submit_to_an_endpoint_the_provider_lacks_is_one_error_line_listing_its_endpoints(
    ws: Workspace, cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, provider, allowed
) -> None:
    for variable in ("OPENAI_API_KEY", "GROQ_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.setenv(variable, "test")
    ws.write_config(GOOD)
    requests = _one_request(tmp_path)
    result = cli("submit", str(requests), "-p", provider, "--endpoint", "nosuch", "--dry-run")
    assert result.exit_code == 2
    [line] = result.stderr.splitlines()
    assert line.startswith(f"error: --endpoint: {provider} accepts {allowed}")
    assert line.endswith('; got "nosuch"')


def test_a_job_naming_an_endpoint_its_anthropic_provider_lacks_is_refused(
    ws: Workspace, cli
) -> None:
    check_fails_with(
        ws,
        cli,
        BATCH_JOB + 'provider = "anthropic"\nendpoint = "/v1/chat/completions"\n',
        'jobs.b.endpoint: expected one of /v1/messages, got "/v1/chat/completions"',
    )


def test_openai_compatible_without_a_base_url_hints_at_the_table_and_the_variable(
    ws: Workspace, cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "test")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    ws.write_config(GOOD)
    result = cli("submit", str(_one_request(tmp_path)), "-p", "openai-compatible")
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [
        "error: no base URL for openai-compatible",
        'hint: set base_url = "http://host:port/v1" in [providers.openai-compatible],'
        ' or base_url_env = "OPENAI_BASE_URL" there to read it from $OPENAI_BASE_URL',
    ]
