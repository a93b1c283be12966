"""Token prices and costs: what a batch costs, and what the synchronous API would have cost.

A model's price comes from the first of these that has it:

1. the config's ``[prices]`` table: US dollars per million tokens at the synchronous list price
   (``input``, ``output``, and ``cached_input``, which defaults to ``input``), the longest
   configured prefix winning, so "gpt-4o-mini" also prices "gpt-4o-mini-2024-07-18"; a batch
   costs ``batch_discount`` of that (0.5 by default);
2. the published prices of pydantic's genai-prices package (an offline snapshot that ships with
   it) for the models of the submission's provider (OpenAI's, or Anthropic's for Message
   Batches): the synchronous price, and the batch price where the data has one — else
   ``batch_discount`` of the synchronous price, the documented 50% of both;
3. none: the model is *unpriced*, and a cost that includes it is never shown as a number.

Cached input tokens are priced at the cached-input rate and reasoning tokens (a part of the
output tokens) as output, as OpenAI bills them. Cache writes (a part of the input tokens) are
priced at the published cache-write rates, five-minute and one-hour, as Anthropic bills them;
a ``[prices]`` table has no such rate and prices them as input.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from batchctl.records import ModelTokens

if TYPE_CHECKING:
    from batchctl.batches.validation import PartPlan

PER = 1_000_000


class Price(NamedTuple):
    input: float
    output: float = 0.0
    cached_input: float | None = None  # None: the input price


class Cost(NamedTuple):
    batch: float  # of the priced models only when some are unpriced
    synchronous: float
    unpriced_models: tuple[str, ...]

    @property
    def saving(self) -> float:
        return self.synchronous - self.batch

    def to_json(self) -> dict[str, Any]:
        return {
            "batch": self.batch,
            "synchronous": self.synchronous,
            "unpriced_models": list(self.unpriced_models),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Cost:
        return cls(
            float(data["batch"]),
            float(data["synchronous"]),
            tuple(str(m) for m in data["unpriced_models"]),
        )


def cost_basis(
    usage: Iterable[ModelTokens],
    prices: Mapping[str, Price],
    batch_discount: float,
    *,
    provider_id: str | None = "openai",
) -> dict[str, Any]:
    """What a cost is computed from, as JSON: the same basis gives the same cost (for tokens
    spent at the same time, with the same published data), so a cost kept with its basis can
    be used again rather than computed again."""
    return {
        "tokens": [list(row) for row in sorted(usage)],
        "prices": {name: list(prices[name]) for name in sorted(prices)},
        "batch_discount": batch_discount,
        "provider_id": provider_id,
    }


def price_for(model: str, prices: Mapping[str, Price]) -> Price | None:
    matches = [name for name in prices if model == name or model.startswith(name + "-")]
    if not matches:
        return None
    return prices[max(matches, key=len)]


def cost_of(
    usage: Iterable[ModelTokens],
    prices: Mapping[str, Price],
    batch_discount: float,
    *,
    at: datetime | None = None,
    provider_id: str | None = "openai",
) -> Cost:
    """The cost of the tokens of each model; ``at`` is when they were spent (default: now),
    for prices that changed over time; ``provider_id`` whose published prices apply
    (genai-prices' name: "openai", "anthropic", ...; the provider's ``published_prices``), None
    when none do: then only ``prices`` prices a model."""
    synchronous = batch = 0.0
    unpriced: set[str] = set()
    for row in usage:
        if not (row.input_tokens or row.output_tokens):
            continue
        price = price_for(row.model, prices)
        both = (
            _configured(row, price, batch_discount)
            if price is not None
            else _published(row, batch_discount, at, provider_id)
        )
        if both is None:
            unpriced.add(row.model)
            continue
        synchronous += both[0]
        batch += both[1]
    return Cost(batch, synchronous, tuple(sorted(unpriced)))


def _configured(row: ModelTokens, price: Price, discount: float) -> tuple[float, float]:
    cached = min(row.cached_tokens, row.input_tokens)
    cached_price = price.input if price.cached_input is None else price.cached_input
    synchronous = (
        (row.input_tokens - cached) * price.input
        + cached * cached_price
        + row.output_tokens * price.output
    ) / PER
    return synchronous, synchronous * discount


def _published(
    row: ModelTokens, discount: float, at: datetime | None, provider_id: str | None
) -> tuple[float, float] | None:
    """(synchronous, batch) cost from genai-prices' data, or None when it has no price."""
    if provider_id is None:
        return None
    # Imported here, only when a model is not in [prices]: it costs ~0.5 s (pydantic).
    import genai_prices

    # genai-prices counts cache reads and writes as parts of the input tokens, as batchctl does.
    cache_read = min(row.cached_tokens, row.input_tokens)
    cache_write = min(row.cache_write_tokens, row.input_tokens - cache_read)
    usage = genai_prices.Usage(
        input_tokens=row.input_tokens,
        cache_read_tokens=cache_read,
        cache_write_tokens=cache_write,
        cache_write_1h_tokens=min(row.cache_write_1h_tokens, cache_write),
        output_tokens=row.output_tokens,
        output_reasoning_tokens=min(row.reasoning_tokens, row.output_tokens),
    )
    try:
        standard = genai_prices.calc_price(
            usage, row.model, provider_id=provider_id, genai_request_timestamp=at
        )
        batch = genai_prices.calc_price(
            usage,
            row.model,
            provider_id=provider_id,
            genai_request_timestamp=at,
            price_context={"processing": "batch"},
        )
    except (LookupError, ValueError):
        return None
    synchronous = float(standard.total_price)
    if batch.model_price == standard.model_price:
        return synchronous, synchronous * discount  # no published batch price for this model
    return synchronous, float(batch.total_price)


class OutputEstimate(NamedTuple):
    """A dry run's estimate of a part's output tokens, and what it rests on."""

    tokens: int
    basis: str  # "history" (the job's earlier runs) or "limit" (the requests' max tokens)
    uncounted: int  # requests whose output is not counted: no limit and no history


def estimate_output(part: PartPlan, history: Mapping[str, tuple[int, int]]) -> OutputEstimate:
    """The output tokens of a part: the job's average per request for its model when it has
    earlier runs (never above the requests' limits), else the sum of the requests' limits."""
    requests, tokens = history.get(part.model, (0, 0))
    if requests:
        estimate = round(tokens / requests * part.requests)
        if not part.unbounded_requests:
            estimate = min(estimate, part.max_output_tokens)
        return OutputEstimate(estimate, "history", 0)
    return OutputEstimate(part.max_output_tokens, "limit", part.unbounded_requests)
