"""``batchctl emulator``: run the local Batch API emulator (OpenAI's and Anthropic's) in the
foreground."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

from batchctl.cli import render

if TYPE_CHECKING:
    from batchctl.emulator import Emulator


def emulator(
    port: Annotated[int, typer.Option("--port", "-p", help="Port to listen on.")] = 8089,
    host: Annotated[
        str, typer.Option("--host", help="Address to bind (loopback by default).")
    ] = "127.0.0.1",
    processing_rate: Annotated[
        float, typer.Option("--rate", help="Requests each batch completes per second.")
    ] = 50.0,
) -> None:
    """Run a LOCAL STAND-IN for the OpenAI Files + Batches API and Anthropic's Message Batches
    API (no key, no cost).

    For trying batchctl and for testing batch pipelines in CI: point OPENAI_BASE_URL (or
    ANTHROPIC_BASE_URL) at the printed address and set the API key to anything. Ctrl-C stops it.
    """
    from batchctl.emulator import EmulatorSettings, serve

    def ready(emu: Emulator) -> None:
        render.note(
            f"batchctl emulator (a local stand-in for the OpenAI and Anthropic batch APIs) on "
            f"{emu.base_url}\n"
            f"  export OPENAI_BASE_URL={emu.base_url} OPENAI_API_KEY=emulator\n"
            f"  export ANTHROPIC_BASE_URL={emu.url} ANTHROPIC_API_KEY=emulator"
        )

    try:
        serve(host, port, EmulatorSettings(processing_rate=processing_rate), on_ready=ready)
    except OSError as exc:  # binding: a port in use, an address not ours, a host unknown
        import errno

        from batchctl.errors import UsageError

        busy = exc.errno == errno.EADDRINUSE
        raise UsageError(
            f"{'--port' if busy else '--host'} {port if busy else host}: "
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="another process listens there (another emulator?); choose another --port"
            if busy
            else "give an address of this machine, e.g. 127.0.0.1 or 0.0.0.0",
        ) from None
