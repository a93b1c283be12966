"""Read models over the store for showing a run: its attempts, transitions and errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from batchctl.errors import NotFoundError
from batchctl.records import Attempt, LogLevel, Run, Transition, to_iso

if TYPE_CHECKING:
    from batchctl.store.runs import RunTables


@dataclass(frozen=True)
class RunError:
    attempt: int
    message: str
    source: str  # "attempt": why an attempt ended; "result": reported by the processor

    def to_json(self) -> dict[str, Any]:
        return {"attempt": self.attempt, "message": self.message, "source": self.source}


@dataclass(frozen=True)
class RunDetail:
    run: Run
    attempts: list[Attempt]
    transitions: list[Transition]
    errors: list[RunError]

    def to_json(self) -> dict[str, Any]:
        """``status RUN_ID --json``: the run's object with errors, transitions and attempts."""
        data = self.run.to_json()
        data["errors"] = [e.to_json() for e in self.errors]
        data["transitions"] = [t.to_json() for t in self.transitions]
        data["attempt_history"] = [a.to_json() for a in self.attempts]
        data["lease_until"] = to_iso(self.run.lease_until)
        data["owner"] = (
            None
            if self.run.owner is None
            else {"host": self.run.owner.host, "pid": self.run.owner.pid}
        )
        return data


def load_detail(store: RunTables, run_id: int) -> RunDetail:
    run = store.get_run(run_id)
    if run is None:
        raise NotFoundError(f"no run with id {run_id}", hint="list runs with: batchctl status")
    attempts = store.attempts(run_id)
    errors = [RunError(a.number, a.error, "attempt") for a in attempts if a.error]
    errors += [
        RunError(entry.attempt, entry.message, "result")
        for entry in store.logs(run_id, min_level=LogLevel.ERROR)
        if entry.fields.get("source") == "result"
    ]
    if run.error and not attempts:
        errors.append(RunError(0, run.error, "run"))
    return RunDetail(run, attempts, store.transitions(run_id), errors)
