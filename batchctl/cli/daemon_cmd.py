"""``batchctl daemon``: fire schedules, run them, refresh in-flight batches."""

from __future__ import annotations

import logging
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Annotated

import typer

from batchctl.cli import session

if TYPE_CHECKING:
    from batchctl.config import Config


def daemon(
    once: Annotated[
        bool,
        typer.Option(
            "--once",
            help="One pass (fire what is due, refresh what is in "
            "flight), then exit: for crontab and systemd timers.",
        ),
    ] = False,
) -> None:
    """Run scheduled jobs and drive in-flight OpenAI batches until stopped (SIGTERM, Ctrl-C).

    One daemon per database: a second one exits 4 naming the holder. SIGHUP or a change of the
    config file reloads the config. Logs go to stderr (the journal under systemd).
    """
    from batchctl.config import load_config
    from batchctl.daemon import Daemon
    from batchctl.locations import resolve_db

    config = session.current.config()
    path = config.path
    assert path is not None
    _configure_logging(verbose=session.current.verbose, quiet=session.current.quiet)
    worker = Daemon(resolve_db(session.current.db), lambda: load_config(Path(path)), once=once)
    address = None if once else config.daemon.http
    stop_http = _start_http(address, worker.location, lambda: worker.config)

    def stop(signum: int, frame: FrameType | None) -> None:
        worker.stop()

    def reload(signum: int, frame: FrameType | None) -> None:
        worker.request_reload()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, reload)
    try:
        code = worker.run()
    finally:
        if stop_http is not None:
            stop_http()
    raise typer.Exit(code)


def _start_http(
    address: str | None, location: str, load_config: Callable[[], Config]
) -> Callable[[], None] | None:
    if address is None:
        return None
    from batchctl.errors import UsageError
    from batchctl.http import start_http_server

    try:
        return start_http_server(address, location, load_config)
    except OSError as exc:
        raise UsageError(f"[daemon] http: cannot serve on {address}: {exc}") from None


def _configure_logging(*, verbose: bool, quiet: bool) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("batchctl")
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose else logging.WARNING if quiet else logging.INFO)
    root.propagate = False
