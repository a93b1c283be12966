"""``batchctl config check``: validate the config file and nothing else."""

from __future__ import annotations

import typer

from batchctl.cli import render, session
from batchctl.cli.options import JsonOption

app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode="markdown")


@app.callback()
def config() -> None:
    """Inspect the config file."""


@app.command("check")
def check(json_output: JsonOption = False) -> None:
    """Validate the config (keys, types, cron, time zones, processors); exit 2 on any problem."""
    from batchctl.errors import ConfigError

    try:
        config = session.current.config()
    except ConfigError as exc:
        if json_output:
            render.print_json({"ok": False, "errors": exc.problems or [exc.message]})
        raise
    if json_output:
        render.print_json({"ok": True, "path": str(config.path), "jobs": sorted(config.jobs)})
        return
    count = len(config.jobs)
    ok = render.paint("ok", "green", render.colour())
    render.out(f"{ok}: {config.path}: {count} job{'s' if count != 1 else ''}")
