"""What batches cost: published prices out of the box, ``[prices]`` overriding them, cached and
reasoning tokens, "unpriced" models, and the dry run's estimate.

batchctl talks to the project's OpenAI API emulator through the real ``openai`` SDK over HTTP.
The emulator reports cached tokens for a long prompt with a ``prompt_cache_key`` and reasoning
tokens for a request with a reasoning effort, so each cost below is worked out in the test from
the usage of the API's own result lines and the published price numbers written here.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from batchctl.emulator import Emulator
from tests.batches.jsonl import request, write_jsonl
from tests.waiting import scaled

NO_PRICES = "[openai]\npoll_interval = 0.05\n"
# gpt-4o-mini as OpenAI publishes it (US dollars per million tokens): synchronous input, cached
# input, output; and the Batch API's input and output (its batch table has no cached-input rate,
# so cached input stays at the cached rate, which for this model is the batch input rate).
MINI = {"input": 0.15, "cached": 0.075, "output": 0.60}
MINI_BATCH = {"input": 0.075, "cached": 0.075, "output": 0.30}
LONG_PROMPT = "word " * 1200  # about 1,500 prompt tokens: long enough to be cached


def mixed_requests() -> list[dict[str, Any]]:
    """Plain requests, long prompts read from the cache, and requests that reason."""
    rows = [request(f"plain-{i}") for i in range(4)]
    rows += [
        request(f"cached-{i}", text=LONG_PROMPT + str(i), prompt_cache_key="prefix")
        for i in range(3)
    ]
    rows += [request(f"reasoning-{i}", reasoning_effort="low") for i in range(2)]
    return rows


def usage_totals(results: Path) -> dict[str, int]:
    """Prompt, cached, completion and reasoning tokens summed over the API's result lines."""
    totals = {"prompt": 0, "cached": 0, "completion": 0, "reasoning": 0}
    for raw in results.read_text().splitlines():
        usage = json.loads(raw)["response"]["body"]["usage"]
        totals["prompt"] += usage["prompt_tokens"]
        totals["cached"] += usage["prompt_tokens_details"]["cached_tokens"]
        totals["completion"] += usage["completion_tokens"]
        totals["reasoning"] += usage["completion_tokens_details"]["reasoning_tokens"]
    return totals


def priced(tokens: dict[str, int], price: dict[str, float]) -> float:
    """Reasoning tokens are a part of the completion tokens, billed as output: not added."""
    uncached = tokens["prompt"] - tokens["cached"]
    return (
        uncached * price["input"]
        + tokens["cached"] * price["cached"]
        + tokens["completion"] * price["output"]
    ) / 1e6


def submit_and_wait(cli: Any, ws: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    write_jsonl(ws.root / "in.jsonl", rows)
    result = cli("submit", "in.jsonl", "--wait", "--json")
    assert result.exit_code == 0, result.stderr
    summary: dict[str, Any] = result.json()
    return summary


# --- published prices ----------------------------------------------------------------------------


def test_without_a_prices_table_a_submission_costs_the_published_batch_price(
    api: Emulator, ws: Any, cli: Any
):
    ws.write_config(NO_PRICES)

    summary = submit_and_wait(cli, ws, mixed_requests())

    tokens = usage_totals(Path(summary["output"]))
    assert tokens["cached"] > 0 and tokens["reasoning"] > 0  # the emulator's rules at work
    assert (summary["cached_tokens"], summary["reasoning_tokens"]) == (
        tokens["cached"],
        tokens["reasoning"],
    )
    # --json rounds to a billionth of a dollar; the run keeps the exact sum
    assert summary["cost"] == pytest.approx(priced(tokens, MINI_BATCH), abs=2e-9)
    assert summary["synchronous_cost"] == pytest.approx(priced(tokens, MINI), abs=2e-9)
    assert summary["cost"] > 0
    assert summary["unpriced_models"] == []
    (run,) = cli("status", "--json").json()
    assert run["total_cost"] == pytest.approx(priced(tokens, MINI_BATCH), rel=1e-9)
    assert run["unpriced_models"] == []


def test_results_prints_the_cached_and_reasoning_tokens_and_the_cost(
    api: Emulator, ws: Any, cli: Any
):
    ws.write_config(NO_PRICES)
    summary = submit_and_wait(cli, ws, mixed_requests())
    tokens = usage_totals(Path(summary["output"]))

    shown = cli("results", str(summary["id"]))

    assert shown.exit_code == 0, shown.stderr
    assert (
        f"tokens: {tokens['prompt']:,} in ({tokens['cached']:,} cached), "
        f"{tokens['completion']:,} out ({tokens['reasoning']:,} reasoning)"
    ) in shown.stdout
    assert f"cost: ${priced(tokens, MINI_BATCH):,.4f} at batch price" in shown.stdout


def test_a_prices_table_overrides_the_published_price(api: Emulator, ws: Any, cli: Any):
    mine = {"input": 2.0, "cached": 0.5, "output": 8.0}
    ws.write_config(
        NO_PRICES + '\n[prices."gpt-4o-mini"]\ninput = 2.0\ncached_input = 0.5\noutput = 8.0\n'
    )

    summary = submit_and_wait(cli, ws, mixed_requests())

    tokens = usage_totals(Path(summary["output"]))
    assert summary["synchronous_cost"] == pytest.approx(priced(tokens, mine), abs=2e-9)
    assert summary["cost"] == pytest.approx(priced(tokens, mine) * 0.5, abs=2e-9)
    (cost,) = ws.sql("SELECT total_cost FROM runs")[0]
    assert cost == pytest.approx(priced(tokens, mine) * 0.5, rel=1e-9)


# --- unpriced models -----------------------------------------------------------------------------


def test_a_model_without_a_price_is_null_in_json_never_zero(api: Emulator, ws: Any, cli: Any):
    ws.write_config(NO_PRICES)

    summary = submit_and_wait(cli, ws, [request(f"r{i}", model="acme-private-1") for i in range(3)])

    assert summary["input_tokens"] > 0
    assert (summary["cost"], summary["synchronous_cost"], summary["saving"]) == (None, None, None)
    assert summary["unpriced_models"] == ["acme-private-1"]
    (run,) = cli("status", "--json").json()
    assert (run["total_cost"], run["unpriced_models"]) == (None, ["acme-private-1"])
    assert ws.sql("SELECT unpriced_models FROM runs") == [('["acme-private-1"]',)]


def test_a_model_without_a_price_is_shown_unpriced_in_tables(api: Emulator, ws: Any, cli: Any):
    ws.write_config(NO_PRICES)
    run_id = submit_and_wait(cli, ws, [request("r0", model="acme-private-1")])["id"]

    listed = cli("status").stdout
    detail = cli("status", str(run_id)).stdout
    results = cli("results", str(run_id)).stdout

    assert "unpriced" in listed and "$0.0000" not in listed
    assert "unpriced" in detail and "acme-private-1" in detail and "$0.0000" not in detail
    assert "\ncost: unpriced\n" in results and "$0.0000" not in results
    assert "acme-private-1" in results


def test_a_run_with_priced_and_unpriced_models_shows_its_cost_as_a_lower_bound(
    api: Emulator, ws: Any, cli: Any
):
    ws.write_config(NO_PRICES)
    rows = [request("a", text=LONG_PROMPT * 5), request("b", model="acme-private-1")]
    summary = submit_and_wait(cli, ws, rows)
    run_id = summary["id"]
    lines = [json.loads(raw) for raw in Path(summary["output"]).read_text().splitlines()]
    (usage,) = [line["response"]["body"]["usage"] for line in lines if line["custom_id"] == "a"]
    lower = (usage["prompt_tokens"] * 0.075 + usage["completion_tokens"] * 0.30) / 1e6

    detail = cli("status", str(run_id)).stdout

    assert lower > 0.0001
    assert f"≥ ${lower:,.4f}" in detail
    (run,) = cli("status", "--json").json()
    assert (run["total_cost"], run["unpriced_models"]) == (None, ["acme-private-1"])
    assert ws.sql("SELECT total_cost FROM runs")[0][0] == pytest.approx(lower, rel=1e-9)


# --- the dry run's estimate ----------------------------------------------------------------------


def test_dry_run_estimates_output_up_to_each_requests_limit(api: Emulator, ws: Any, cli: Any):
    ws.write_config(NO_PRICES)
    rows = [request(f"r{i}", max_completion_tokens=100) for i in range(10)]
    rows += [request(f"old{i}", max_tokens=50, n=2) for i in range(4)]
    write_jsonl(ws.root / "in.jsonl", rows)

    plan = cli("submit", "in.jsonl", "--dry-run", "--json").json()

    assert plan["estimated_output_tokens"] == 10 * 100 + 4 * 50 * 2
    assert plan["uncounted_output_requests"] == 0
    expected = (plan["estimated_input_tokens"] * 0.075 + (10 * 100 + 4 * 100) * 0.30) / 1e6
    assert plan["estimated_cost"]["batch"] == pytest.approx(expected, abs=2e-9)
    assert api.requests == []


def test_dry_run_says_its_cost_is_an_estimate_bounded_by_max_tokens(
    api: Emulator, ws: Any, cli: Any
):
    ws.write_config(NO_PRICES)
    write_jsonl(ws.root / "in.jsonl", [request(f"r{i}", max_tokens=100) for i in range(10)])

    result = cli("submit", "in.jsonl", "--dry-run")

    assert result.exit_code == 0, result.stderr
    assert "≤ 1,000" in result.stdout  # the part's output tokens, at most
    assert "estimated cost (an estimate, not a quote): $" in result.stdout
    assert "output at most each request's max_tokens" in result.stdout


def test_dry_run_names_the_requests_whose_output_it_cannot_bound(api: Emulator, ws: Any, cli: Any):
    ws.write_config(NO_PRICES)
    rows = [request("bounded", max_completion_tokens=10), request("open-1"), request("open-2")]
    write_jsonl(ws.root / "in.jsonl", rows)

    result = cli("submit", "in.jsonl", "--dry-run")
    plan = cli("submit", "in.jsonl", "--dry-run", "--json").json()

    assert "output not counted for 2 request(s) that set no output limit" in result.stdout
    assert (plan["estimated_output_tokens"], plan["uncounted_output_requests"]) == (10, 2)


def test_dry_run_shows_a_part_whose_requests_set_no_output_limit_as_unbounded(
    api: Emulator, ws: Any, cli: Any
):
    ws.write_config(NO_PRICES + "[batches]\nmax_requests = 2\n")
    rows = [
        request("open-0"),
        request("open-1"),
        request("capped", max_tokens=7),
        request("open-2"),
    ]
    write_jsonl(ws.root / "in.jsonl", rows)

    shown = cli("submit", "in.jsonl", "--dry-run").stdout

    [first, second] = [line for line in shown.splitlines() if "gpt-4o-mini" in line]
    assert first.endswith("no limit") and "≤" not in first
    assert second.endswith("≤ 7 + no limit")


def test_dry_run_of_a_job_estimates_output_from_its_earlier_runs(api: Emulator, ws: Any, cli: Any):
    ws.write_config(NO_PRICES + '\n[jobs.nightly]\nkind = "openai"\ninput = "in.jsonl"\n')
    first = submit_and_wait_job(cli, ws, [request(f"r{i}") for i in range(6)])
    per_request = first["output_tokens"] / 6
    write_jsonl(ws.root / "next.jsonl", [request(f"n{i}") for i in range(12)])

    plan = cli("submit", "next.jsonl", "--job", "nightly", "--dry-run", "--json").json()

    (part,) = plan["parts"]
    assert part["output_estimate"] == "history"
    assert part["estimated_output_tokens"] == round(per_request * 12)
    assert plan["uncounted_output_requests"] == 0


def submit_and_wait_job(cli: Any, ws: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    write_jsonl(ws.root / "in.jsonl", rows)
    result = cli("submit", "in.jsonl", "--job", "nightly", "--wait", "--json")
    assert result.exit_code == 0, result.stderr
    summary: dict[str, Any] = result.json()
    return summary


def test_dry_run_with_an_unpriced_model_gives_no_number(api: Emulator, ws: Any, cli: Any):
    ws.write_config(NO_PRICES)
    write_jsonl(ws.root / "in.jsonl", [request("r0", model="acme-private-1", max_tokens=5)])

    plan = cli("submit", "in.jsonl", "--dry-run", "--json").json()
    shown = cli("submit", "in.jsonl", "--dry-run").stdout

    assert plan["estimated_cost"] == {"batch": None, "synchronous": None}
    assert plan["unpriced_models"] == ["acme-private-1"]
    assert "estimated cost (an estimate, not a quote): unpriced" in shown


def test_dry_run_prices_a_vendors_model_at_that_vendors_published_price(
    api: Emulator, ws: Any, cli: Any
):
    import genai_prices

    ws.write_config(NO_PRICES)
    model = "llama-3.1-8b-instant"
    write_jsonl(ws.root / "in.jsonl", [request("r0", model=model, max_tokens=100)])

    plan = cli("submit", "in.jsonl", "--provider", "groq", "--dry-run", "--json").json()

    usage = genai_prices.Usage(input_tokens=plan["estimated_input_tokens"], output_tokens=100)
    groq = genai_prices.calc_price(usage, model, provider_id="groq")
    assert plan["unpriced_models"] == []
    assert plan["estimated_cost"]["synchronous"] == pytest.approx(float(groq.total_price))


def test_a_server_of_ones_own_is_never_priced_at_another_vendors_rates(
    api: Emulator, ws: Any, cli: Any
):
    # gpt-4o-mini has a published OpenAI price; a model of that name on one's own server does not.
    ws.write_config(
        NO_PRICES + '\n[providers.mine]\napi = "openai"\nbase_url = "http://127.0.0.1:9/v1"\n'
    )
    write_jsonl(ws.root / "in.jsonl", [request("r0", max_tokens=5)])

    plan = cli("submit", "in.jsonl", "--provider", "mine", "--dry-run", "--json").json()

    assert plan["estimated_cost"] == {"batch": None, "synchronous": None}
    assert plan["unpriced_models"] == ["gpt-4o-mini"]


def test_a_submission_in_flight_shows_no_cost_yet_rather_than_zero(
    start_api: Any, ws: Any, cli: Any
):
    start_api(config=NO_PRICES, manual_clock=True)  # time stands still: the batch stays in flight
    write_jsonl(ws.root / "in.jsonl", [request("r0")])
    assert cli("submit", "in.jsonl").exit_code == 0

    table = cli("status", "--no-refresh").stdout
    shown = cli("status", "1", "--no-refresh").stdout

    [row] = [line for line in table.splitlines() if " submit " in line]  # the runs table's
    assert "running" in row and row.rstrip().endswith(" -") and "$" not in row
    assert re.search(r"^\s*cost\s+-$", shown, re.MULTILINE), shown


# --- start-up ------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [["--version"], ["status"], ["jobs"]])
def test_commands_that_price_nothing_do_not_load_the_price_data(ws: Any, command: list[str]):
    ws.write_config('[jobs.j]\nkind = "command"\ncommand = "true"\n')

    found = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "batchctl", *command],
        env=ws.env(),
        cwd=ws.root,
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )

    assert found.returncode == 0, found.stderr
    assert "genai_prices" not in found.stderr


# --- metrics -------------------------------------------------------------------------------------


def test_metrics_count_the_runs_whose_cost_leaves_out_an_unpriced_model(
    api: Emulator, ws: Any, cli: Any
):
    ws.write_config(NO_PRICES)
    submit_and_wait(cli, ws, [request("r0", model="acme-private-1")])

    exposition = cli("metrics").stdout

    assert re.search(r'^batchctl_unpriced_runs_total\{\w+="submit"\} 1(\.0)?$', exposition, re.M)
    assert re.search(r'^batchctl_cost_dollars_total\{\w+="submit"\} 0(\.0)?$', exposition, re.M)


def test_a_real_cost_below_a_hundredth_of_a_cent_is_not_shown_as_zero(
    api: Emulator, ws: Any, cli: Any
):
    ws.write_config(NO_PRICES)
    line = {
        "custom_id": "e0",
        "method": "POST",
        "url": "/v1/embeddings",
        "body": {"model": "text-embedding-3-small", "input": "a few words"},
    }
    summary = submit_and_wait(cli, ws, [line])
    assert 0 < summary["synchronous_cost"] < 0.00005  # $0.02 per million tokens
    assert 0 < ws.sql("SELECT total_cost FROM runs")[0][0] < 0.00005

    shown = cli("results", str(summary["id"])).stdout

    assert "cost: < $0.0001 at batch price" in shown
