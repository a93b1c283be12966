"""Options shared by several commands, declared once."""

from __future__ import annotations

from typing import Annotated

import typer

from batchctl.cli.complete import provider_names

JsonOption = Annotated[
    bool, typer.Option("--json", help="Print machine-readable JSON on stdout (see the README).")
]

ProviderOption = Annotated[
    str | None,
    typer.Option(
        "--provider",
        "-p",
        autocompletion=provider_names,
        help="The batch provider: openai (default), anthropic, azure, groq, together, doubleword,"
        " parasail, openai-compatible, or a [providers.NAME] table.",
        show_default=False,
    ),
]
