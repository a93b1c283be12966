"""Sending a part whose requests go inline in the create call, and finding a create whose reply
was lost — without a second batch for the part.

A provider with ``uploads = False`` (Anthropic's Message Batches) takes the requests in the
create call and keeps no metadata on a batch, so a batch cannot say which part it was made for
until its results can be read: each result line carries the id it was sent with, and those ids
carry the part's marker (``derived_ids``: the submission's token and the part's number).

The steps, each recorded before the next (``Record``, a small file beside the part's file,
written whole by a rename; the store keeps the intent and the batch id):

1. *Anchor*: the API's own time (the ``Date`` of a cheap list call) is kept, then
   ``create_started_at`` is recorded in the store, then the create is sent.
2. *Reply*: the batch id is recorded the moment the reply arrives. A refusal (any 4xx, or a
   429/529 or a connection never made, after the retries) made nothing: the intent is cleared.
   Anything else — a dropped connection, a timeout, a 5xx, a process killed — leaves the intent,
   and the part is looked for by the next ``advance`` that may send.
3. *Settle*: nothing is looked for until ``INTENT_SETTLE_S`` (``submission``) have passed
   since the intent (and since this process stopped waiting for the reply), so that a create
   still being handled has landed.
4. *Find*: the account's batches are listed newest first down to the anchor less
   ``SERVER_SKEW_S`` (without an anchor: the API's time now less the time elapsed here since the
   intent, less ``FIND_SLACK_S``). Candidates are those with exactly the part's request count
   that no part of this store records as proved its own (created with a reply, or proved by
   results). Then:

   - no candidate: the create made nothing; the part is created again (from step 1);
   - one candidate no part records: it is adopted as the part's batch, *unconfirmed*: it is
     refreshed, shown and downloaded as any other, and when its results are read, their ids
     must carry the part's marker. If they do, it is proved; if not, it is let go (nothing of
     it is recorded) and the part is created again;
   - several (or one another part holds unconfirmed): the part waits; as each candidate ends,
     its results are read: the one carrying the part's marker is adopted, proved; those that do
     not are struck out; when none is left, the part is created again.

What is proved, given the assumptions below: *a part never gets a second batch*. A create of
the part that landed made a batch created after the anchor (by the API's clock), with the
part's request count, which no other part can have recorded as proved (a reply names only the
batch it made, and results prove only the part whose marker they carry). So it is among the
candidates whenever any are looked at, and the part is created again only when there is no
candidate, or when every candidate's results proved it someone else's — in both cases no batch
of the part exists. And a batch adopted is kept only once its own results name the part, so
results merged for a part are always its own.

What is not proved: *that the wait ends soon*. A batch of another tool (or another batchctl
store) with the same request count, created in the window, makes the part wait for results —
up to the other batch's 24 hours. An unconfirmed batch is not cancelled by ``cancel``
(batchctl never cancels a batch not proved its own); it runs to its end and is merged then.

Assumptions: (1) a batch's ``created_at`` is at or after the ``Date`` of a response the API
sent before it received the create, give or take ``SERVER_SKEW_S`` between its servers'
clocks; (2) the list shows every batch made by a create answered (or abandoned)
``INTENT_SETTLE_S`` earlier, and a create not handled by then never is; (3) without an anchor
(the file lost), this host's clock does not run backwards by more than ``FIND_SLACK_S`` between
the intent and the search; (4) batchctl never deletes a batch, so a candidate that is gone
(404) was not the part's; (5) the API keeps the ids a batch was sent with in its results.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from batchctl.batches import files as local
from batchctl.batches.derived_ids import inline_requests, parse_derived, part_marker
from batchctl.providers.base import CreateUnanswered, ProviderError
from batchctl.records import LogLevel, Part, PartStatus

if TYPE_CHECKING:
    from batchctl.providers.base import InlineProvider, RemoteBatch
    from batchctl.records import Submission
    from batchctl.store.base import Store

FIND_SLACK_S = 600  # without an anchor: how far this host's clock may be trusted over a span
SERVER_SKEW_S = 300  # how far the API's servers' clocks may differ (Date vs created_at)
MARKER_LINES = 16  # result lines read to tell whose a batch is (all carry one marker)

# What a part goes back to when the batch adopted for it proves someone else's.
_UNSENT: dict[str, Any] = {
    "status": PartStatus.PLANNED.value,
    "create_started_at": None,
    "batch_id": None,
    "output_file_id": None,
    "error_file_id": None,
    "request_counts": {},
    "usage": None,
    "errors": [],
    "remote_created_at": None,
    "remote_ended_at": None,
    "expires_at": None,
    "downloaded_at": None,
}

Log = Callable[[Part, str, LogLevel], None]


@dataclass(frozen=True)
class Record:
    """What is kept beside a part's file about its create (see the module's steps)."""

    anchor: float | None = None  # the API's time just before the create was sent
    unanswered_at: float | None = None  # this host's time when a create got no answer
    unconfirmed: str | None = None  # a batch adopted as the part's, not yet proved
    candidates: tuple[str, ...] = field(default_factory=tuple)  # to tell apart by results

    def to_json(self) -> dict[str, Any]:
        return {
            "anchor": self.anchor,
            "unanswered_at": self.unanswered_at,
            "unconfirmed": self.unconfirmed,
            "candidates": list(self.candidates),
        }


def record_path(part: Part) -> Path:
    path = Path(part.path)
    return path.with_name(path.name.removesuffix(".jsonl") + ".create.json")


def read_record(part: Part) -> Record | None:
    try:
        data = json.loads(record_path(part).read_text())
    except (OSError, ValueError):
        return None
    return Record(
        anchor=data.get("anchor"),
        unanswered_at=data.get("unanswered_at"),
        unconfirmed=data.get("unconfirmed"),
        candidates=tuple(data.get("candidates") or ()),
    )


def write_record(part: Part, record: Record) -> None:
    """Written whole (a temporary file renamed into place) and flushed to disk."""
    target = record_path(part)
    partial = target.with_name(target.name + ".part")
    with partial.open("w") as out:
        json.dump(record.to_json(), out)
        out.flush()
        os.fsync(out.fileno())
    partial.replace(target)


def unconfirmed(part: Part) -> bool:
    """Whether the part's batch was adopted after a lost reply and is not yet proved its own."""
    record = read_record(part) if part.batch_id is not None else None
    return record is not None and record.unconfirmed == part.batch_id


class InlineSender:
    """Sends the parts of a store's submissions to an inline provider (see the module)."""

    def __init__(
        self,
        store: Store,
        provider: InlineProvider,
        *,
        clock: Callable[[], datetime],
        log: Log,
        settle_s: float,
    ) -> None:
        self.store = store
        self.provider = provider
        self.clock = clock
        self.log = log
        self.settle_s = settle_s  # ``INTENT_SETTLE_S``: how long a lost create may take to land

    def send(self, submission: Submission, part: Part) -> tuple[RemoteBatch, str] | None:
        """The part's batch (created, or found after a lost reply) and how it was had; None
        when it cannot be had now (a lost create settling, or candidates not yet ended)."""
        if part.create_started_at is None:
            return self._create(submission, part), "created batch"
        record = read_record(part) or Record()
        if self._settling(part, record):
            return None
        if record.candidates:
            return self._resolve(submission, part, record)
        return self._find(submission, part, record)

    # --- create ---------------------------------------------------------------------------------
    def _create(self, submission: Submission, part: Part) -> RemoteBatch:
        marker = part_marker(submission.token, part.number)
        body = list(inline_requests(Path(part.path), marker))  # read before the intent
        record = Record(anchor=self.provider.server_time())
        write_record(part, record)
        self.store.update_part(part.id, create_started_at=self.clock())
        try:
            return self.provider.create_inline(body)
        except CreateUnanswered:
            write_record(part, replace(record, unanswered_at=self.clock().timestamp()))
            raise
        except ProviderError:
            # Refused: the API made nothing, so there is nothing to look for.
            self.store.update_part(part.id, create_started_at=None)
            raise

    def _settling(self, part: Part, record: Record) -> bool:
        assert part.create_started_at is not None
        now = self.clock().timestamp()
        since = max(part.create_started_at.timestamp(), record.unanswered_at or 0.0)
        return now - since < self.settle_s

    # --- find -----------------------------------------------------------------------------------
    def _find(
        self, submission: Submission, part: Part, record: Record
    ) -> tuple[RemoteBatch, str] | None:
        found = [b for b in self._since(part, record) if b.request_counts.total == part.requests]
        holders = self.store.runs_for_batches([b.id for b in found])
        held_unproved = {b for b, run in holders.items() if self._held_unproved(run, b)}
        open_ = [b for b in found if b.id not in holders or b.id in held_unproved]
        if not open_:
            self.log(
                part,
                f"part {part.number}: no batch was made by the create that got no answer;"
                " creating it again",
                LogLevel.WARNING,
            )
            return self._create(submission, part), "created batch"
        if len(open_) == 1 and open_[0].id not in holders:
            write_record(part, replace(record, unconfirmed=open_[0].id, candidates=()))
            return open_[
                0
            ], "adopted batch (its create's reply was lost; its results will prove it)"
        ids = tuple(b.id for b in open_)
        write_record(part, replace(record, unconfirmed=None, candidates=ids))
        self.log(
            part,
            f"part {part.number}: {len(ids)} batches could be the one its lost create made"
            f" ({', '.join(ids)}); waiting for their results to tell",
            LogLevel.WARNING,
        )
        return self._resolve(submission, part, replace(record, candidates=ids))

    def _since(self, part: Part, record: Record) -> Iterator[RemoteBatch]:
        """The batches created since the part's intent, newest first (by the API's clock)."""
        floor = self._floor(part, record)
        since = None if floor is None else int(floor)
        for page in self.provider.batch_pages(since=since):
            for batch in page:
                if since is not None and batch.created_at < since:
                    return
                yield batch

    def _floor(self, part: Part, record: Record) -> float | None:
        if record.anchor is not None:
            return record.anchor - SERVER_SKEW_S
        now = self.provider.server_time()
        if now is None or part.create_started_at is None:
            return None  # nothing bounds the search: every batch is looked at
        elapsed = max(0.0, (self.clock() - part.create_started_at).total_seconds())
        return now - elapsed - FIND_SLACK_S - SERVER_SKEW_S

    def _held_unproved(self, run_id: int, batch_id: str) -> bool:
        """Whether the part of ``run_id`` recording ``batch_id`` adopted it unconfirmed."""
        return any(p.batch_id == batch_id and unconfirmed(p) for p in self.store.parts(run_id))

    # --- several candidates: their results tell ------------------------------------------------
    def _resolve(
        self, submission: Submission, part: Part, record: Record
    ) -> tuple[RemoteBatch, str] | None:
        marker = part_marker(submission.token, part.number)
        left: list[str] = []
        for batch_id in record.candidates:
            batch = self._batch(batch_id)
            if batch is None:
                continue  # gone: batchctl never deletes a batch, so it was not this part's
            if batch.output_file_id is None:
                left.append(batch_id)  # its results cannot be read yet
                continue
            if self._marker(submission, part, batch) != marker:
                continue
            if self.store.runs_for_batches([batch_id]):
                left.append(batch_id)  # held unconfirmed by another part, which lets it go
                continue
            write_record(part, replace(record, candidates=()))
            return batch, "found batch (its results name this part)"
        if left:
            if tuple(left) != record.candidates:
                write_record(part, replace(record, candidates=tuple(left)))
            return None
        self.log(
            part,
            f"part {part.number}: none of the batches its lost create could have made is its"
            " own; creating it again",
            LogLevel.WARNING,
        )
        return self._create(submission, part), "created batch"

    def _batch(self, batch_id: str) -> RemoteBatch | None:
        try:
            return self.provider.get_batch(batch_id)
        except ProviderError as exc:
            if exc.status == 404:
                return None
            raise

    def _marker(self, submission: Submission, part: Part, batch: RemoteBatch) -> str | None:
        """The part marker the batch's results carry (read from a download kept aside)."""
        assert batch.output_file_id is not None
        aside = Path(submission.directory) / f"candidate-{batch.id}.jsonl"
        try:
            self.provider.download(batch.output_file_id, aside)
            return marker_in(aside)
        finally:
            aside.unlink(missing_ok=True)

    # --- one candidate: proved when its results are read ---------------------------------------
    def proved(self, submission: Submission, part: Part, downloaded: Path) -> bool:
        """Whether the part's batch, whose results are at ``downloaded``, is its own. Only a
        batch adopted unconfirmed can fail this; it is then let go and the part made unsent
        (created again by the next advance that sends)."""
        record = read_record(part)
        if record is None or record.unconfirmed is None or record.unconfirmed != part.batch_id:
            return True
        if marker_in(downloaded) == part_marker(submission.token, part.number):
            write_record(part, replace(record, unconfirmed=None))
            self.log(
                part,
                f"part {part.number}: batch {part.batch_id} proved its own by its results",
                LogLevel.INFO,
            )
            return True
        for path in (downloaded, local.checksum_path(downloaded)):
            path.unlink(missing_ok=True)
        # It was the only candidate and is someone else's: the part's create made nothing.
        self.store.update_part(part.id, **_UNSENT)
        write_record(part, Record())
        self.log(
            part,
            f"part {part.number}: batch {part.batch_id} is not its own (its results carry"
            " other ids); let go, the part is sent again",
            LogLevel.WARNING,
        )
        return False


def marker_in(path: Path) -> str | None:
    """The part marker of the ids in a results file (its first lines); None if they carry
    none, or several."""
    markers: set[str | None] = set()
    read = 0
    with path.open("rb") as handle:
        for raw in handle:
            if raw.isspace():
                continue
            try:
                sent = json.loads(raw).get("custom_id")
            except (ValueError, AttributeError):
                return None
            parsed = parse_derived(str(sent))
            markers.add(None if parsed is None else parsed[0])
            read += 1
            if len(markers) > 1 or read == MARKER_LINES:
                break
    return next(iter(markers)) if len(markers) == 1 else None
