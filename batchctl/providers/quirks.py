"""The vendor quirks a provider profile may name, and what each one changes.

A profile's ``quirks`` (built in, or ``quirks = [...]`` in ``[providers.NAME]``) are names from
``QUIRKS`` below. Differences that are only spelling (Azure's ``Validating``, Together's
``IN_PROGRESS``, ``""`` for a missing file id) need no quirk: the provider reads every vendor's
spelling (``providers.openai._from_json``). Facts and sources:
``/work/shared/reference/providers.md`` §2.
"""

from __future__ import annotations

from collections.abc import Iterable

#: Azure OpenAI: the SDK's ``AzureOpenAI`` client (``api-key`` header, ``?api-version=``, the
#: older paths without ``/v1``), lines whose ``url`` has no ``/v1`` (``/chat/completions``).
AZURE = "azure"
#: Every line names the same model: on Azure it is the deployment's name.
ONE_DEPLOYMENT = "one-deployment"
#: One file may mix endpoints (Groq).
MIXED_ENDPOINTS = "mixed-endpoints"
#: Only chat completions (plus audio with ``AUDIO``): Groq.
CHAT_ONLY = "chat-only"
#: Only chat completions and embeddings: Doubleword.
CHAT_AND_EMBEDDINGS = "chat-and-embeddings"
#: Audio transcription and translation endpoints too: Groq.
AUDIO = "audio"
#: custom_id at most 64 characters: Doubleword.
SHORT_CUSTOM_IDS = "custom-id-64"

QUIRKS: dict[str, str] = {
    AZURE: "Azure OpenAI client (api-key, api-version, paths without /v1); urls without /v1",
    ONE_DEPLOYMENT: "every line names the same model (the deployment)",
    MIXED_ENDPOINTS: "one file may mix endpoints",
    CHAT_ONLY: "only /v1/chat/completions (and audio, with 'audio')",
    CHAT_AND_EMBEDDINGS: "only /v1/chat/completions and /v1/embeddings",
    AUDIO: "also /v1/audio/transcriptions and /v1/audio/translations",
    SHORT_CUSTOM_IDS: "custom_id at most 64 characters",
}

OPENAI_ENDPOINTS = (
    "/v1/responses",
    "/v1/chat/completions",
    "/v1/embeddings",
    "/v1/completions",
    "/v1/moderations",
    "/v1/images/generations",
    "/v1/images/edits",
    "/v1/videos",
)
AZURE_ENDPOINTS = ("/chat/completions", "/embeddings", "/responses")
AUDIO_ENDPOINTS = ("/v1/audio/transcriptions", "/v1/audio/translations")
CUSTOM_ID_LIMIT = 64


def unknown_quirks(quirks: Iterable[str]) -> list[str]:
    """The names in ``quirks`` that are not quirks batchctl knows (for the config's errors)."""
    return sorted(set(quirks) - QUIRKS.keys())


def endpoints(quirks: frozenset[str]) -> tuple[str, ...]:
    """The endpoints a provider with these quirks accepts, as its lines write them."""
    if AZURE in quirks:
        return AZURE_ENDPOINTS
    if CHAT_ONLY in quirks:
        accepted: tuple[str, ...] = ("/v1/chat/completions",)
    elif CHAT_AND_EMBEDDINGS in quirks:
        accepted = ("/v1/chat/completions", "/v1/embeddings")
    else:
        accepted = OPENAI_ENDPOINTS
    return accepted + AUDIO_ENDPOINTS if AUDIO in quirks else accepted


def max_custom_id(quirks: frozenset[str]) -> int | None:
    """The longest custom_id the provider accepts (None: no limit batchctl knows of)."""
    return CUSTOM_ID_LIMIT if SHORT_CUSTOM_IDS in quirks else None
