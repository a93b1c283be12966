"""Batch API providers. ``base`` is the interface the core uses; each provider module owns its SDK.

A provider is opened from its settings (``profiles.ProviderSettings``, by name through
``Config.provider``) with ``open_provider``; the SDK behind it is imported only then, so commands
that need no network never pay for it. ``Providers`` opens each provider a process uses once.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

from batchctl.errors import UsageError

if TYPE_CHECKING:
    from batchctl.providers.base import Provider
    from batchctl.providers.profiles import ProviderSettings


def open_provider(settings: ProviderSettings) -> Provider:
    """The client of the provider ``settings`` describe (its SDK imported now)."""
    if settings.api == "anthropic":
        from batchctl.providers.anthropic import AnthropicProvider

        return AnthropicProvider.from_settings(settings)
    from batchctl.providers.openai import OpenAIProvider

    return OpenAIProvider.from_settings(settings)


class Providers:
    """The providers one process talks to, each opened on first use (one HTTP client each,
    shared by the threads that use it) and closed together."""

    def __init__(
        self,
        settings: Callable[[str], ProviderSettings],
        opener: Callable[[ProviderSettings], Provider] = open_provider,
    ) -> None:
        self._settings = settings
        self._opener = opener
        self._open: dict[str, Provider] = {}
        self._lock = threading.Lock()  # the daemon's workers ask from several threads

    def get(self, name: str) -> Provider:
        with self._lock:
            provider = self._open.get(name)
            if provider is None:
                provider = self._open[name] = self._opener(self._settings(name))
            return provider

    def close(self) -> None:
        with self._lock:
            for provider in self._open.values():
                provider.close()
            self._open.clear()


def check_settings(settings: ProviderSettings) -> tuple[str, str | None]:
    """The API key and base URL, checked without importing the SDK or touching the network:
    ``submit`` calls it before recording anything, so that a missing key spends nothing."""
    key = os.environ.get(settings.api_key_env)
    if not key:
        raise UsageError(
            f"no API key for {settings.name}: the environment variable"
            f" {settings.api_key_env} is not set",
            hint=f"export it, or name another variable with [providers.{settings.name}]"
            " api_key_env",
        )
    base_url = _base_url(settings)
    azure_api_version(settings)  # Azure's calls all carry one: checked before anything is sent
    return key, base_url


def azure_api_version(settings: ProviderSettings) -> str | None:
    """The api-version of a provider with the ``azure`` quirk (the profile's, else
    $OPENAI_API_VERSION, as the SDK reads it); None for any other provider."""
    from batchctl.providers.quirks import AZURE

    if AZURE not in settings.quirks:
        return None
    version = settings.api_version or os.environ.get("OPENAI_API_VERSION")
    if not version:
        raise UsageError(
            f"no API version for {settings.name}: OPENAI_API_VERSION is not set",
            hint=f"export it, or set api_version in [providers.{settings.name}] (e.g. 2024-10-21)",
        )
    return version


def _base_url(settings: ProviderSettings) -> str | None:
    """The API's base URL (the table's base_url, else its variable, else the profile's own),
    refused unless it is an http(s) URL with a host: checked before anything is recorded, so a
    typo spends nothing. A provider with no public address (azure, openai-compatible) needs one."""
    from urllib.parse import urlsplit

    where, url = f"[providers.{settings.name}] base_url", settings.base_url
    variable = settings.base_url_env
    if url is None and variable is not None and os.environ.get(variable):
        where, url = f"${variable}", os.environ[variable]
    if url is None:
        if settings.requires_base_url:
            table = f"[providers.{settings.name}]"
            hint = (
                f"set ${variable} or {table} base_url"
                if variable
                else f'set base_url = "http://host:port/v1" in {table}, or base_url_env ='
                ' "OPENAI_BASE_URL" there to read it from $OPENAI_BASE_URL'
            )
            raise UsageError(f"no base URL for {settings.name}", hint=hint)
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
