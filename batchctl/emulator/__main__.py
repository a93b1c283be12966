"""``python -m batchctl.emulator``: run the emulator in the foreground until Ctrl-C/SIGTERM.

The product's entry point is ``batchctl emulator``; this one needs no CLI dependencies.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from batchctl.emulator.emulator import Emulator, serve
from batchctl.emulator.settings import EmulatorSettings


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and serve; returns the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m batchctl.emulator",
        description="A local emulator of the OpenAI Files + Batches and Anthropic Message "
        "Batches APIs.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback)")
    parser.add_argument("--port", type=int, default=8089, help="port (0 picks a free one)")
    parser.add_argument("--api-key", default=None, help="accept only this key")
    parser.add_argument("--processing-rate", type=float, default=None, help="requests/second")
    parser.add_argument("--completion-window", type=float, default=None, help="seconds")
    parser.add_argument("--manual-clock", action="store_true", help="time moves only on advance")
    parser.add_argument("--state-dir", type=Path, default=None, help="where to keep files")
    args = parser.parse_args(argv)
    changes: dict[str, object] = {"manual_clock": args.manual_clock, "api_key": args.api_key}
    if args.processing_rate is not None:
        changes["processing_rate"] = args.processing_rate
    if args.completion_window is not None:
        changes["completion_window"] = args.completion_window
    try:
        settings = EmulatorSettings(state_dir=args.state_dir).updated(changes)
    except ValueError as exc:
        parser.error(str(exc))

    def ready(emu: Emulator) -> None:
        print(f"Emulator listening; OPENAI_BASE_URL={emu.base_url}", flush=True)
        print(f"Emulator listening; ANTHROPIC_BASE_URL={emu.url}", flush=True)

    serve(args.host, args.port, settings, on_ready=ready)
    return 0


if __name__ == "__main__":
    sys.exit(main())
