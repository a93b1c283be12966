"""Shell completion of job names, provider names and run ids (for ``completions/``).

Completion must never fail or print an error, so anything that goes wrong yields no candidates.
"""

from __future__ import annotations

from batchctl.cli import session


def job_names(incomplete: str) -> list[str]:
    try:
        config = session.current.config(check_processors=False)
    except Exception:
        return []
    return [name for name in config.jobs if name.startswith(incomplete)]


def run_ids(incomplete: str) -> list[tuple[str, str]]:
    try:
        from batchctl.records import RunFilter

        runs = session.current.store().list_runs(RunFilter(limit=50))
    except Exception:
        return []
    return [
        (str(run.id), f"{run.job} {run.status.value}")
        for run in runs
        if str(run.id).startswith(incomplete)
    ]


def provider_names(incomplete: str) -> list[str]:
    from batchctl.providers.profiles import PROFILES

    try:
        configured = list(session.current.config(required=False, check_processors=False).providers)
    except Exception:
        configured = []
    return sorted(n for n in {*PROFILES, *configured} if n.startswith(incomplete))
