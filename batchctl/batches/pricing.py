"""Token prices and costs: what a batch costs, and what the synchronous API would have cost.

Prices come from the config's ``[prices]`` table, in US dollars per million tokens at the
synchronous list price; the Batch API charges ``batch_discount`` of that (0.5 by default). A
model is priced by its longest configured prefix, so "gpt-4o-mini" also prices
"gpt-4o-mini-2024-07-18".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import NamedTuple

PER = 1_000_000


class Price(NamedTuple):
    input: float
    output: float = 0.0


class Cost(NamedTuple):
    batch: float
    synchronous: float
    unpriced_models: tuple[str, ...]

    @property
    def saving(self) -> float:
        return self.synchronous - self.batch


def price_for(model: str, prices: Mapping[str, Price]) -> Price | None:
    matches = [name for name in prices if model == name or model.startswith(name + "-")]
    if not matches:
        return None
    return prices[max(matches, key=len)]


def cost_of(
    usage: Iterable[tuple[str, int, int]], prices: Mapping[str, Price], batch_discount: float
) -> Cost:
    """Cost of ``(model, input_tokens, output_tokens)`` rows."""
    synchronous = 0.0
    unpriced: list[str] = []
    for model, tokens_in, tokens_out in usage:
        price = price_for(model, prices)
        if price is None:
            if tokens_in or tokens_out:
                unpriced.append(model)
            continue
        synchronous += (tokens_in * price.input + tokens_out * price.output) / PER
    return Cost(synchronous * batch_discount, synchronous, tuple(sorted(set(unpriced))))
