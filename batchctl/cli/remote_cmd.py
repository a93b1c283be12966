"""``batchctl status --remote`` and ``batchctl adopt``: batches as the API has them."""

from __future__ import annotations

from itertools import islice
from typing import Annotated

import typer

from batchctl.cli import render, session
from batchctl.cli.options import JsonOption, ProviderOption


def list_remote(limit: int | None, json_output: bool, provider_name: str | None = None) -> None:
    """The account's batches at a provider (the default one: openai), newest first, with the
    run that tracks each (if any)."""
    from datetime import UTC, datetime

    from batchctl.cli.table import Column
    from batchctl.providers import open_provider
    from batchctl.providers.profiles import DEFAULT_PROVIDER

    config = session.current.config(required=False, check_host=False)
    store = session.current.store(create=False)
    provider = open_provider(config.provider(provider_name or DEFAULT_PROVIDER))
    try:
        batches = list(islice(provider.list_batches(), limit))
    finally:
        provider.close()
    tracked = store.runs_for_batches([b.id for b in batches])
    if json_output:
        render.print_json(
            [
                {
                    "id": b.id,
                    "status": b.status,
                    "endpoint": b.endpoint,
                    "created_at": b.created_at,
                    "request_counts": b.request_counts.to_json(),
                    "metadata": dict(b.metadata),
                    "run_id": tracked.get(b.id),
                }
                for b in batches
            ]
        )
        return
    render.print_table(
        [
            Column("BATCH"),
            Column("STATUS"),
            Column("ENDPOINT"),
            Column("CREATED"),
            Column("DONE", right=True),
            Column("FAILED", right=True),
            Column("RUN", right=True),
        ],
        [
            [
                b.id,
                render.status_cell(b.status),
                b.endpoint,
                render.local_time(datetime.fromtimestamp(b.created_at, UTC)),
                f"{b.request_counts.completed:,}/{b.request_counts.total:,}",
                f"{b.request_counts.failed:,}",
                str(tracked.get(b.id, "-")),
            ]
            for b in batches
        ],
    )


def adopt(
    batch_ids: Annotated[
        list[str], typer.Argument(help="Batch ids (batch_...) to track.", show_default=False)
    ],
    provider: ProviderOption = None,
    json_output: JsonOption = False,
) -> None:
    """Track batches that batchctl did not create, so wait, results, retry and the daemon work
    on them. Each becomes a submission (its input file is downloaded to learn its requests)."""
    from batchctl.cli.batch_cmd import open_batches, run_json

    batches = open_batches()
    name = provider or "openai"
    run_ids = [batches.adopt(batch_id, name) for batch_id in batch_ids]
    if json_output:
        render.print_json([run_json(batches, run_id) for run_id in run_ids])
        return
    for batch_id, run_id in zip(batch_ids, run_ids, strict=True):
        render.out(f"adopted {batch_id} as run {run_id}; follow with: batchctl wait {run_id}")
