"""Batch API providers. ``base`` is the interface the core uses; each provider module owns its SDK.

A provider is chosen by name with ``open_provider``; the SDK behind it is imported only then, so
commands that need no network never pay for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from batchctl.config import OpenAIConfig
    from batchctl.providers.base import Provider


def open_provider(settings: OpenAIConfig) -> Provider:
    from batchctl.providers.openai import OpenAIProvider

    return OpenAIProvider.from_config(settings)
