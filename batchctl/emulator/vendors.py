"""How each OpenAI-shaped vendor's Batch API differs on the wire: one table, read by the
handlers, so that one emulator instance can behave like Azure, Groq, Together, Doubleword or
Parasail (``--vendor NAME``, or ``{"vendor": NAME}`` to ``POST /_emulator/settings``).

Sources: ``/work/shared/reference/providers.md`` §2. Where a vendor's documentation is silent
the emulator picks one plausible answer and says so here:

- Azure: the api-version paths (``/openai/files``, ``/openai/batches``) require
  ``?api-version=`` (a missing one gets 400 ``MissingApiVersionParameter``; the wording is the
  emulator's); ``/openai/v1/...`` needs none. Statuses are capitalised (``Validating``,
  ``In_progress``, ``Completed``: the samples show ``Validating``; the rest is our guess).
- Together: the create reply wraps the batch in ``{"job": ...}`` (its SDK returns ``.job``);
  ``progress`` is a percentage of the requests finished.
- Groq: any window from ``24h`` to ``7d``, written in hours or days.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

OPENAI_ENDPOINTS = (
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/responses",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)
AUDIO_ENDPOINTS = ("/v1/audio/transcriptions", "/v1/audio/translations")
_MB = 1024 * 1024
_HOUR = 3_600
_WINDOW = re.compile(r"^([1-9][0-9]*)([hd])$")

StatusCase = Literal["lower", "capitalized", "upper"]


@dataclass(frozen=True)
class Vendor:
    """One vendor's differences from OpenAI's Files + Batches API."""

    name: str
    #: Where the API lives: (path prefix, whether ``?api-version=`` is required there).
    prefixes: tuple[tuple[str, bool], ...] = (("/v1", False),)
    #: The header that carries the key: ``Authorization`` (Bearer) or ``api-key``.
    key_header: str = "Authorization"
    #: The upload purpose a batch's input file must have.
    batch_purpose: str = "batch"
    #: Windows accepted at create, as written.
    windows: tuple[str, ...] = ("24h",)
    #: Or any window between these (seconds), when set.
    window_span: tuple[int, int] | None = None
    #: Endpoints accepted at create and on lines, as the vendor writes them.
    endpoints: tuple[str, ...] = OPENAI_ENDPOINTS
    #: Lines may mix endpoints and models (each line's own url is run).
    mixed_lines: bool = False
    #: Longest custom_id accepted (None: no limit).
    max_custom_id: int | None = None
    status_case: StatusCase = "lower"
    #: A file id that does not exist is written ``""`` rather than ``null``.
    empty_ids: bool = False
    #: Batches carry ``progress`` (percent of the requests finished).
    progress: bool = False
    #: The create reply wraps the batch in this key.
    create_envelope: str | None = None
    max_requests: int = 50_000
    max_bytes: int = 200 * _MB

    # --- what the handlers ask ------------------------------------------------------------------
    def api_path(self, path: str) -> tuple[list[str], bool] | None:
        """The path's segments after the API prefix and whether ``api-version`` is required;
        None when the path is not this vendor's API."""
        for prefix, versioned in self.prefixes:
            if path == prefix or path.startswith(prefix + "/"):
                rest = path[len(prefix) :].strip("/")
                return (rest.split("/") if rest else []), versioned
        return None

    def window_seconds(self, window: str) -> float | None:
        """The window's length, or None if this vendor refuses it."""
        match = _WINDOW.match(window)
        if match is None:
            return None
        seconds = int(match.group(1)) * (_HOUR if match.group(2) == "h" else 24 * _HOUR)
        if window in self.windows:
            return float(seconds)
        if self.window_span is not None and self.window_span[0] <= seconds <= self.window_span[1]:
            return float(seconds)
        return None

    def status(self, status: str) -> str:
        if self.status_case == "upper":
            return status.upper()
        if self.status_case == "capitalized":
            return status.capitalize()
        return status

    def render(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A Batch object as this vendor writes it (``batch`` is OpenAI's shape)."""
        if self is OPENAI:
            return batch
        out = dict(batch)
        out["status"] = self.status(batch["status"])
        if self.empty_ids:
            for name in ("output_file_id", "error_file_id"):
                if out[name] is None:
                    out[name] = ""
        if self.progress:
            counts = batch["request_counts"]
            total = counts["total"]
            finished = counts["completed"] + counts["failed"]
            out["progress"] = round(100.0 * finished / total, 1) if total else 0.0
        return out

    def created(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The create reply."""
        rendered = self.render(batch)
        return {self.create_envelope: rendered} if self.create_envelope else rendered


def canonical_endpoint(endpoint: str) -> str:
    """The OpenAI path of an endpoint written without ``/v1`` (Azure's lines)."""
    return endpoint if endpoint.startswith("/v1/") else "/v1" + endpoint


OPENAI = Vendor("openai")

VENDORS: dict[str, Vendor] = {
    vendor.name: vendor
    for vendor in (
        OPENAI,
        Vendor(
            "azure",
            prefixes=(("/openai/v1", False), ("/openai", True)),
            key_header="api-key",
            endpoints=("/chat/completions", "/embeddings", "/responses"),
            status_case="capitalized",
            empty_ids=True,
            max_requests=100_000,
        ),
        Vendor(
            "groq",
            window_span=(24 * _HOUR, 7 * 24 * _HOUR),
            endpoints=("/v1/chat/completions", *AUDIO_ENDPOINTS),
            mixed_lines=True,
        ),
        Vendor(
            "together",
            batch_purpose="batch-api",
            status_case="upper",
            progress=True,
            create_envelope="job",
            max_bytes=100 * _MB,
        ),
        Vendor(
            "doubleword",
            windows=("24h", "1h"),
            endpoints=("/v1/chat/completions", "/v1/embeddings"),
            max_custom_id=64,
        ),
        Vendor("parasail", max_bytes=500 * _MB),
    )
}


def vendor(name: str) -> Vendor:
    """The vendor called ``name``; ValueError naming the known ones otherwise."""
    try:
        return VENDORS[name]
    except KeyError:
        raise ValueError(f"unknown vendor {name!r} (one of {', '.join(VENDORS)})") from None
