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
    vendor: Annotated[
        str,
        typer.Option(
            "--vendor",
            help="Behave like this vendor's Batch API: openai, azure, groq, together, "
            "doubleword or parasail.",
        ),
    ] = "openai",
) -> None:
    """Run a LOCAL STAND-IN for the OpenAI Files + Batches API and Anthropic's Message Batches
    API (no key, no cost).

    For trying batchctl and for testing batch pipelines in CI: point OPENAI_BASE_URL (or
    ANTHROPIC_BASE_URL) at the printed address and set the API key to anything. Ctrl-C stops it.
    """
    from batchctl.emulator import EmulatorSettings, serve
    from batchctl.errors import UsageError

    def ready(emu: Emulator) -> None:
        render.note(_banner(vendor, emu))

    try:
        settings = EmulatorSettings.for_vendor(vendor, processing_rate=processing_rate)
    except ValueError as exc:
        raise UsageError(f"--vendor: {exc}") from None
    try:
        serve(host, port, settings, on_ready=ready)
    except OSError as exc:  # binding: a port in use, an address not ours, a host unknown
        import errno

        busy = exc.errno == errno.EADDRINUSE
        raise UsageError(
            f"{'--port' if busy else '--host'} {port if busy else host}: "
            f"cannot listen on {host}:{port}: {exc.strerror or exc}",
            hint="another process listens there (another emulator?); choose another --port"
            if busy
            else "give an address of this machine, e.g. 127.0.0.1 or 0.0.0.0",
        ) from None


def _banner(vendor: str, emu: Emulator) -> str:
    """Where the emulator listens, and what points batchctl (``--provider VENDOR`` too) at it."""
    from batchctl.providers.profiles import PROFILES

    lines = [
        f"batchctl emulator (a local stand-in for the {vendor} Batch API and Anthropic's "
        f"Message Batches API) on {emu.url}"
    ]
    if vendor == "azure":
        lines.append(
            f"  export AZURE_OPENAI_ENDPOINT={emu.url} AZURE_OPENAI_API_KEY=emulator "
            "OPENAI_API_VERSION=2024-10-21"
        )
    else:
        lines.append(f"  export OPENAI_BASE_URL={emu.base_url} OPENAI_API_KEY=emulator")
    lines.append(f"  export ANTHROPIC_BASE_URL={emu.url} ANTHROPIC_API_KEY=emulator")
    profile = PROFILES.get(vendor)
    if profile is not None and profile.base_url_env is None:
        # A vendor's provider goes to the vendor's own URL, whatever OPENAI_BASE_URL says.
        lines += [
            f"  for --provider {vendor}: export {profile.api_key_env}=emulator, "
            "and put in the config file:",
            f"    [providers.{vendor}]",
            f'    base_url = "{emu.base_url}"',
        ]
    return "\n".join(lines)
