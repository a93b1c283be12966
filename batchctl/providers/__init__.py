"""Batch API providers. ``base`` is the interface the core uses; each provider module owns its SDK.

A provider is chosen by name with ``open_provider``; the SDK behind it is imported only then, so
commands that need no network never pay for it.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from batchctl.errors import UsageError

if TYPE_CHECKING:
    from batchctl.config import OpenAIConfig
    from batchctl.providers.base import Provider


def open_provider(settings: OpenAIConfig) -> Provider:
    from batchctl.providers.openai import OpenAIProvider

    return OpenAIProvider.from_config(settings)


def check_settings(settings: OpenAIConfig) -> tuple[str, str | None]:
    """The API key and base URL, checked without importing the SDK or touching the network:
    ``submit`` calls it before recording anything, so that a missing key spends nothing."""
    key = os.environ.get(settings.api_key_env)
    if not key:
        raise UsageError(
            f"no API key: the environment variable {settings.api_key_env} is not set",
            hint="export it, or name another variable with [openai] api_key_env",
        )
    return key, _base_url(settings)


def _base_url(settings: OpenAIConfig) -> str | None:
    """The API's base URL ([openai] base_url, else $OPENAI_BASE_URL), refused unless it is an
    http(s) URL with a host: checked before anything is recorded, so a typo spends nothing."""
    from urllib.parse import urlsplit

    where, url = "[openai] base_url", settings.base_url
    if url is None:
        where, url = "$OPENAI_BASE_URL", os.environ.get("OPENAI_BASE_URL") or None
    if url is None:
        return None
    try:
        parts = urlsplit(url)
        well_formed = parts.scheme in ("http", "https") and bool(parts.hostname)
        parts.port  # noqa: B018  (raises ValueError on a bad port)
    except ValueError:
        well_formed = False
    if not well_formed:
        shown = "the value" if "@" in url else repr(url)  # a URL may carry a password
        raise UsageError(
            f"{where}: {shown} is not an http(s) URL with a host",
            hint="e.g. https://api.openai.com/v1",
        )
    return url
