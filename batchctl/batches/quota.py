"""Holding parts back for the provider's enqueued-token limit.

OpenAI (and Azure) count the input tokens of every batch of a model that has not ended against
the organisation's *enqueued-token limit*. A batch that would go over it is created and then
fails at once, after validating, with ``token_limit_exceeded`` in ``errors``; Azure's "fail
fast" regions refuse the create itself with a 400 of that code. Either way nothing was spent,
so the part is not failed: it is *held* and created again later, as a new batch.

A hold is recorded in one write before anything else happens (its state, its next try, why),
so a process killed at any line leaves a part the next ``advance`` handles. A held part is
tried again at its next try time (``FIRST_PAUSE_S``, doubling up to ``MAX_PAUSE_S``), or as
soon as a batch of the same model at the same provider is seen to end (that frees tokens),
whichever comes first; until one completion window after its first refusal, when its requests
end ``failed`` with the reason. When a provider's settings give the limit
(``enqueued_token_limit``), a part is held before it is sent whenever the estimated tokens of
the model's parts in flight plus its own would go over it.

Each refusal counts a try (``hold_tries``), and each try's batch carries its own metadata key,
so a lost create reply is looked for among that try's batches only: the refused batch of an
earlier try is never taken for it, and a part never has two live batches.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from batchctl.batches.validation import estimate_tokens
from batchctl.durations import format_duration, parse_duration
from batchctl.records import LogEntry, LogLevel, Part, Submission

if TYPE_CHECKING:
    from batchctl.providers.base import RemoteBatch
    from batchctl.store.batches import BatchTables

#: The error code of a batch refused for the enqueued-token limit.
TOKEN_LIMIT_CODE = "token_limit_exceeded"
#: The pause before the first try again, doubled at each refusal, up to ``MAX_PAUSE_S``.
FIRST_PAUSE_S = 60.0
MAX_PAUSE_S = 1800.0

EntryMaker = Callable[..., LogEntry]
Changes = list[tuple[int, dict[str, Any]]]


def refused_batch(batch: RemoteBatch) -> str | None:
    """Why the API refused the batch for the enqueued-token limit; None when it did not."""
    if batch.status != "failed":
        return None
    for error in batch.errors:
        message = str(error.get("message") or "")
        worded = error.get("line") is None and _names_the_limit(message)  # not one request's
        if error.get("code") == TOKEN_LIMIT_CODE or worded:
            return message or TOKEN_LIMIT_CODE
    return None


def _names_the_limit(message: str) -> bool:
    """Whether an error's text names the limit (Azure's older failures say it in words)."""
    text = message.lower()
    return (
        TOKEN_LIMIT_CODE in text or "enqueued token limit" in text or "token limit exceeded" in text
    )


def refused_create(error: BaseException) -> str | None:
    """Why a create was refused for the enqueued-token limit (a 400 naming it); else None."""
    from batchctl.providers.base import ProviderError

    if not isinstance(error, ProviderError) or error.status != 400:
        return None
    return error.message if _names_the_limit(error.message) else None


def part_key(key: str, part: Part) -> str:
    """The metadata value naming this try's batch of the part (the first try: ``key``)."""
    return key if part.hold_tries == 0 else f"{key}:q{part.hold_tries}"


def pause(tries: int) -> float:
    """Seconds until the next try after ``tries`` refusals."""
    return min(MAX_PAUSE_S, FIRST_PAUSE_S * 2.0 ** max(0, tries - 1))


def estimate(part: Part) -> int:
    """The part's input tokens, estimated as validation does (about four bytes a token)."""
    return estimate_tokens(part.bytes)


def released(part: Part) -> dict[str, Any]:
    """The columns that end a hold, once a batch of the part was accepted ({} if not held)."""
    if part.held_until is None and part.hold_reason is None:
        return {}
    return {"held_until": None, "hold_reason": None}


class Holds:
    """The holds of one submission's parts: recorded in ``store``, told in its log."""

    def __init__(
        self,
        store: BatchTables,
        submission: Submission,
        now: datetime,
        entry: EntryMaker,
        limit: int | None = None,
    ) -> None:
        self.store = store
        self.submission = submission
        self.now = now
        self.entry = entry
        self.limit = limit

    def before_send(self, part: Part) -> Part | None:
        """The part as it stays for now (held, or failed when its window ran out), or None when
        it may be sent. Called only when no create of it is under way."""
        if part.held_until is not None:
            if self.now >= self.window_end(part):
                return self._give_up(part)
            if not self._due(part):
                return part
        if self.limit is None:
            return None
        provider = self.submission.provider
        enqueued = estimate_tokens(self.store.enqueued_bytes(provider, part.model, besides=part.id))
        if not enqueued or enqueued + estimate(part) <= self.limit:
            return None  # nothing else in flight: the API judges a part too large on its own
        reason = (
            f"about {enqueued:,} tokens of {part.model} are enqueued and this part adds about"
            f" {estimate(part):,}: over the configured enqueued_token_limit of {self.limit:,}"
        )
        return self._hold(part, reason, {})

    def refused_at_create(self, part: Part, reason: str) -> Part:
        """Hold a part whose create was refused (nothing was created)."""
        return self._hold(part, reason, {"create_started_at": None})

    def refused_batch(
        self, part: Part, batch: RemoteBatch, reason: str, changes: Changes, logs: list[LogEntry]
    ) -> Part:
        """Hold a part whose batch failed for the limit: the part forgets that batch (it spent
        nothing and never runs) and keeps its uploaded file for the next try. The columns and
        the log line are added to ``changes`` and ``logs``, written with the rest of a refresh."""
        forget: dict[str, Any] = {
            "batch_id": None,
            "status": "uploaded",
            "create_started_at": None,
            "output_file_id": None,
            "error_file_id": None,
            "request_counts": {},
            "usage": None,
            "errors": [],
            "remote_created_at": None,
            "remote_ended_at": None,
            "expires_at": None,
        }
        # A batch seen to end after the refused one was sent may have made room for it: seen in
        # this same refresh (before this part was looked at) or later, it is tried again.
        since = part.create_started_at or self.now
        columns = {**forget, **self._hold_columns(part, reason, since)}
        changes.append((part.id, columns))
        logs.append(self._told(part, columns, f"batch {batch.id} refused: {reason}"))
        return part._replace(**columns)

    def window_end(self, part: Part) -> datetime:
        """When a held part stops waiting: one completion window after its first refusal."""
        since = part.held_since or self.now
        return since + timedelta(seconds=parse_duration(self.submission.completion_window))

    def _due(self, part: Part) -> bool:
        assert part.held_until is not None
        if self.now >= part.held_until:
            return True
        since = part.held_at or part.held_since or self.now
        return self.store.batch_ended_since(self.submission.provider, part.model, since)

    def _hold_columns(
        self, part: Part, reason: str, since: datetime | None = None
    ) -> dict[str, Any]:
        """The columns of a hold; ``since``: from when a batch of the model that ends frees
        room for it (now, unless the refusal came from a batch sent earlier)."""
        tries = part.hold_tries + 1
        return {
            "held_since": part.held_since or self.now,
            "held_at": since or self.now,
            "held_until": self.now + timedelta(seconds=pause(tries)),
            "hold_reason": reason,
            "hold_tries": tries,
        }

    def _hold(self, part: Part, reason: str, extra: dict[str, Any]) -> Part:
        columns = {**extra, **self._hold_columns(part, reason)}
        self.store.update_parts([(part.id, columns)], [self._told(part, columns, reason)])
        return part._replace(**columns)

    def _told(self, part: Part, columns: dict[str, Any], reason: str) -> LogEntry:
        wait = format_duration(pause(columns["hold_tries"]))
        return self.entry(
            part.run_id,
            f"part {part.number}: waiting for quota ({reason}); next try in {wait} or when a"
            f" batch of {part.model} ends (refusal {columns['hold_tries']})",
            LogLevel.WARNING,
            part=part.number,
        )

    def _give_up(self, part: Part) -> Part:
        since = part.held_since or self.now
        message = (
            f"the enqueued-token limit for {part.model} left no room within the completion"
            f" window ({self.submission.completion_window}) after the first refusal at"
            f" {since:%Y-%m-%d %H:%M:%S} UTC ({part.hold_tries} refusal(s)); last: "
            f"{part.hold_reason}"
        )
        columns: dict[str, Any] = {
            "status": "failed",
            "held_until": None,
            "errors": [{"code": TOKEN_LIMIT_CODE, "message": message, "line": None}],
        }
        entry = self.entry(
            part.run_id, f"part {part.number}: {message}", LogLevel.ERROR, part=part.number
        )
        self.store.update_parts([(part.id, columns)], [entry])
        return part._replace(**columns)
