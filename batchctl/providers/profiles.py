"""The batch providers batchctl knows by name, and the settings of each.

A provider is a batch API at a base URL with a key: ``api`` says which wire shape it speaks —
``"openai"`` (upload a JSONL file to ``/v1/files``, then ``/v1/batches``: OpenAI and the vendors
that copy it) or ``"anthropic"`` (Message Batches: the requests go inline in the create call).
The built-in profiles below carry each vendor's limits and quirks (sources in
``../shared/reference/providers.md``); a ``[providers.NAME]`` table in the config overrides any
field of a built-in profile, or defines a new provider from ``api`` up. ``[openai]`` is still
read as the table of ``openai``.

Plain data only: nothing here imports an SDK or touches the network.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from batchctl.providers import quirks as q

API_SHAPES = ("openai", "anthropic")
DEFAULT_PROVIDER = "openai"


@dataclass(frozen=True)
class ProviderSettings:
    """Where a provider is, how to reach it, and what it accepts. Keys are never stored: only
    the name of the environment variable that holds one."""

    name: str = DEFAULT_PROVIDER
    api: str = "openai"  # the wire shape: one of API_SHAPES
    base_url: str | None = None  # None: $base_url_env, else the SDK's own default
    base_url_env: str | None = "OPENAI_BASE_URL"
    api_key_env: str = "OPENAI_API_KEY"
    api_version: str | None = None  # Azure's api-version (None: $OPENAI_API_VERSION)
    organization: str | None = None
    project: str | None = None
    timeout: float = 600.0
    max_retries: int = 5
    poll_interval: float = 30.0
    max_requests: int = 50_000  # per batch: larger inputs are split
    max_bytes: int = 200_000_000
    windows: tuple[str, ...] = ("24h",)  # the completion windows it accepts
    file_purpose: str = "batch"
    # Vendor differences the OpenAI-shaped client smooths over (see providers/openai.py).
    quirks: frozenset[str] = field(default_factory=frozenset)
    # Tokens of unfinished batches per model the account may have queued (None: not set, the
    # provider's refusal is what tells). Parts beyond it are held back before sending.
    enqueued_token_limit: int | None = None
    requires_base_url: bool = False  # no public default (openai-compatible, azure)
    # Whose published prices (genai-prices' provider id) price its models when [prices] does
    # not: the vendor's own. None for a server whose prices nobody publishes (a provider of the
    # user's own, openai-compatible, parasail): its models are "unpriced" unless [prices] names
    # them, never priced at another vendor's rates.
    published_prices: str | None = "openai"


def _openai_shaped(name: str, **overrides: object) -> ProviderSettings:
    return ProviderSettings(name=name, **overrides)  # type: ignore[arg-type]


PROFILES: dict[str, ProviderSettings] = {
    "openai": ProviderSettings(),
    "anthropic": ProviderSettings(
        name="anthropic",
        api="anthropic",
        base_url_env="ANTHROPIC_BASE_URL",
        api_key_env="ANTHROPIC_API_KEY",
        max_requests=100_000,
        max_bytes=256_000_000,
        file_purpose="",
        published_prices="anthropic",
    ),
    "azure": _openai_shaped(
        "azure",
        base_url_env="AZURE_OPENAI_ENDPOINT",
        api_key_env="AZURE_OPENAI_API_KEY",
        max_requests=100_000,
        max_bytes=200_000_000,
        requires_base_url=True,
        quirks=frozenset({q.AZURE, q.ONE_DEPLOYMENT}),
        published_prices="azure",  # priced when the deployment is named as the model
    ),
    "groq": _openai_shaped(
        "groq",
        base_url="https://api.groq.com/openai/v1",
        base_url_env=None,
        api_key_env="GROQ_API_KEY",
        max_requests=50_000,
        max_bytes=200_000_000,
        windows=("24h", "48h", "72h", "96h", "120h", "144h", "168h", "7d"),
        quirks=frozenset({q.CHAT_ONLY, q.AUDIO, q.MIXED_ENDPOINTS}),
        published_prices="groq",
    ),
    "together": _openai_shaped(
        "together",
        base_url="https://api.together.xyz/v1",
        base_url_env=None,
        api_key_env="TOGETHER_API_KEY",
        max_requests=50_000,
        max_bytes=100_000_000,
        file_purpose="batch-api",
        published_prices="together",
    ),
    "doubleword": _openai_shaped(
        "doubleword",
        base_url="https://api.doubleword.ai/v1",
        base_url_env=None,
        api_key_env="DOUBLEWORD_API_KEY",
        windows=("24h", "1h"),
        quirks=frozenset({q.CHAT_AND_EMBEDDINGS, q.SHORT_CUSTOM_IDS}),
        published_prices="doubleword",
    ),
    "parasail": _openai_shaped(
        "parasail",
        base_url="https://api.parasail.io/v1",
        base_url_env=None,
        api_key_env="PARASAIL_API_KEY",
        max_requests=50_000,
        max_bytes=500_000_000,
        published_prices=None,  # not in genai-prices
    ),
    "openai-compatible": _openai_shaped(
        "openai-compatible",
        base_url_env=None,
        api_key_env="OPENAI_API_KEY",
        requires_base_url=True,
        published_prices=None,
    ),
}
