"""The secret values batchctl knows, masked in what it records from a job (as CI systems do).

A job still gets every variable in its environment; what it prints, logs or raises is stored
with each secret value replaced by ``***``. The secret values are:

- the values of ``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``, ``AZURE_OPENAI_API_KEY`` and of the
  variable named by ``[openai] api_key_env`` (4 characters or more);
- the value of any variable whose name ends in ``_KEY``, ``_TOKEN``, ``_SECRET`` or
  ``_PASSWORD`` (8 characters or more: shorter values would mask ordinary words);
- the password of a URL in any variable or in the database location (``postgresql://u:pw@h/db``
  or ``?password=pw``), 4 characters or more.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

MASK = "***"
PROVIDER_KEYS = ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "AZURE_OPENAI_API_KEY")
SECRET_SUFFIXES = ("_KEY", "_TOKEN", "_SECRET", "_PASSWORD")
MIN_NAMED = 4  # a provider key or a URL's password this long or longer is masked
MIN_SUFFIXED = 8  # a *_KEY/_TOKEN/_SECRET/_PASSWORD value this long or longer is masked


def secret_values(
    env: Mapping[str, str], *, named: Iterable[str] = (), urls: Iterable[str] = ()
) -> set[str]:
    """The secret values among ``env`` (and ``named`` variables in it) and ``urls``."""
    names = {*PROVIDER_KEYS, *named}
    found: set[str] = set()
    for name, value in env.items():
        least = MIN_NAMED if name in names else MIN_SUFFIXED
        if (name in names or name.upper().endswith(SECRET_SUFFIXES)) and len(value) >= least:
            found.add(value)
        found.update(url_passwords(value))
    for url in urls:
        found.update(url_passwords(url))
    return found


def url_passwords(value: str) -> set[str]:
    """The password in a URL (its user part or a ``password=`` parameter), as written and
    decoded; empty for anything else."""
    if "://" not in value:
        return set()
    try:
        parts = urlsplit(value.strip())
        written = [parts.password or ""]
        written += [v for k, v in parse_qsl(parts.query, keep_blank_values=True) if k == "password"]
    except ValueError:
        return set()
    found: set[str] = set()
    for password in written:
        found.update(p for p in (password, unquote(password)) if len(p) >= MIN_NAMED)
    return found


class Masker:
    """Replaces each secret value in a text with ``***``, the longest first."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        ordered = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, ordered))) if ordered else None

    @classmethod
    def for_environment(
        cls, env: Mapping[str, str], *, named: Iterable[str] = (), urls: Iterable[str] = ()
    ) -> Masker:
        return cls(secret_values(env, named=named, urls=urls))

    def text(self, value: str) -> str:
        return self._pattern.sub(MASK, value) if self._pattern else value

    def optional(self, value: str | None) -> str | None:
        return None if value is None else self.text(value)

    def value(self, value: Any) -> Any:
        """``value`` with the secrets masked in every string it holds (dicts, lists, tuples)."""
        if self._pattern is None:
            return value
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, dict):
            return {self.value(k): self.value(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.value(v) for v in value)
        return value
