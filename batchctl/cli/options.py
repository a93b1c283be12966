"""Options shared by several commands, declared once."""

from __future__ import annotations

from typing import Annotated

import typer

from batchctl.cli.complete import provider_names


def _provider_named(ctx: typer.Context, value: str | None) -> str | None:
    """Refuse ``--provider ''`` (a blank name would otherwise mean the default, silently)."""
    if value is not None and not value.strip():
        from batchctl.errors import UsageError

        known = ", ".join(provider_names(ctx, ""))
        raise UsageError("--provider: no provider name given", hint=f"use one of {known}")
    return value


JsonOption = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON on stdout (see the README).")
]

ProviderOption = Annotated[
    str | None,
    typer.Option(
        "--provider",
        "-p",
        autocompletion=provider_names,
        callback=_provider_named,
        help="The batch provider: openai (default), anthropic, azure, groq, together, doubleword,"
        " parasail, openai-compatible, or a [providers.NAME] table.",
        show_default=False,
    ),
]
