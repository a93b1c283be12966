"""Shell completion of job names, provider names, run ids and options' fixed values (for
``completions/``).

Completion must never fail or print an error, so anything that goes wrong yields no candidates.
Click runs no command callbacks while completing, so the root's own callback never set up the
session: the config and database are those the command line names (``--config``/``--db``
before the command), else the environment's, read here from the root context.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import typer

from batchctl.cli.session import Session


@contextmanager
def _session(ctx: typer.Context) -> Iterator[Session]:
    params = ctx.find_root().params
    session = Session(config_path=params.get("config"), db=params.get("db"))
    try:
        yield session
    finally:
        session.close()


def job_names(ctx: typer.Context, incomplete: str) -> list[str]:
    try:
        with _session(ctx) as session:
            config = session.config(check_host=False)
    except Exception:
        return []
    return [name for name in config.jobs if name.startswith(incomplete)]


def run_ids(ctx: typer.Context, incomplete: str) -> list[tuple[str, str]]:
    try:
        from batchctl.records import RunFilter

        with _session(ctx) as session:
            runs = session.store(create=False).list_runs(RunFilter(limit=50))
    except Exception:
        return []
    return [
        (str(run.id), f"{run.job} {run.status.value}")
        for run in runs
        if str(run.id).startswith(incomplete)
    ]


def provider_names(ctx: typer.Context, incomplete: str) -> list[str]:
    from batchctl.providers.profiles import PROFILES

    try:
        with _session(ctx) as session:
            configured = list(session.config(required=False, check_host=False).providers)
    except Exception:
        configured = []
    return sorted(n for n in {*PROFILES, *configured} if n.startswith(incomplete))


def choices(values: Callable[[], Iterable[str]]) -> Callable[[str], list[str]]:
    """Completion of an option that takes one of fixed ``values`` (a function, called only
    when completing, so that start-up imports nothing for it)."""

    def complete(incomplete: str) -> list[str]:
        return [value for value in values() if value.startswith(incomplete)]

    return complete


def _log_levels() -> list[str]:
    from batchctl.records import LogLevel

    return [level.value for level in LogLevel]


def _run_statuses() -> list[str]:
    from batchctl.records import RunStatus

    return [status.value for status in RunStatus]


def _on_expired() -> tuple[str, ...]:
    from batchctl.config import ON_EXPIRED

    return ON_EXPIRED


log_levels = choices(_log_levels)
run_statuses = choices(_run_statuses)
on_expired_choices = choices(_on_expired)
