"""The command-line interface: parse arguments, call the core, render the result.

Every command module here imports the core lazily, inside the command, so that start-up stays
fast and commands that need no network never import ``openai``.
"""

from __future__ import annotations

import errno
import gc
import importlib
import os
import sys
from typing import Annotated, Any, NoReturn

import typer
from typer.core import TyperGroup

from batchctl import __version__
from batchctl.cli import render, session
from batchctl.errors import BatchctlError, ConfigError, ExitCode

# Each command lives in its own module and is imported only when it is invoked (or listed by
# --help): start-up then pays for one command, not for all of them.
COMMANDS: dict[str, tuple[str, str]] = {
    "run": ("batchctl.cli.run_cmd", "run"),
    "status": ("batchctl.cli.status_cmd", "status"),
    "logs": ("batchctl.cli.logs_cmd", "logs"),
    "jobs": ("batchctl.cli.jobs_cmd", "jobs"),
    "cancel": ("batchctl.cli.run_cmd", "cancel"),
    "retry": ("batchctl.cli.run_cmd", "retry"),
    "config": ("batchctl.cli.config_cmd", "app"),
    "submit": ("batchctl.cli.batch_cmd", "submit"),
    "wait": ("batchctl.cli.batch_cmd", "wait"),
    "results": ("batchctl.cli.batch_cmd", "results"),
    "adopt": ("batchctl.cli.remote_cmd", "adopt"),
    "emulator": ("batchctl.cli.emulator_cmd", "emulator"),
    "demo": ("batchctl.cli.demo_cmd", "demo"),
    "daemon": ("batchctl.cli.daemon_cmd", "daemon"),
    "health": ("batchctl.cli.observe_cmd", "health"),
    "metrics": ("batchctl.cli.observe_cmd", "metrics"),
    "prune": ("batchctl.cli.observe_cmd", "prune"),
    "schedule": ("batchctl.cli.schedule_cmd", "app"),
}


class _Group(TyperGroup):
    """The root group: loads commands lazily, and turns errors into one ``error:`` line and a
    documented exit code."""

    def list_commands(self, ctx: Any) -> list[str]:
        return list(COMMANDS)

    def get_command(self, ctx: Any, cmd_name: str) -> Any:
        if cmd_name not in COMMANDS:
            return None
        module_name, attr = COMMANDS[cmd_name]
        target = getattr(importlib.import_module(module_name), attr)
        if isinstance(target, typer.Typer):
            group = typer.main.get_command(target)
            group.name = cmd_name
            return group
        holder = typer.Typer(rich_markup_mode="markdown", add_completion=False)
        holder.command(cmd_name)(target)
        return typer.main.get_command(holder)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except BatchctlError as exc:
            _report(exc)
            raise typer.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt as exc:
            _let_go(exc)
            render.error("interrupted")
            raise typer.Exit(int(ExitCode.CANCELLED)) from None
        except BrokenPipeError as exc:  # stdout's reader went away (`| head`): end quietly
            _let_go(exc)
            render.silence(sys.stdout)
            raise typer.Exit(BROKEN_PIPE) from None
        except OSError as exc:
            if exc.errno not in _EXPECTED_ERRNOS:
                _internal_error(exc)
            _report(exc)
            where = f"{exc.filename}: " if exc.filename else ""
            render.error(f"{where}{exc.strerror or exc}")
            raise typer.Exit(int(ExitCode.USAGE)) from None
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise
        except Exception as exc:  # a bug in batchctl: say so plainly, trace with --verbose
            _internal_error(exc)
        finally:
            session.current.close()


def _let_go(exc: BaseException) -> None:
    """Let go of what the frames of a command cut short held (a half-read query) while the
    database is still open, rather than when the interpreter collects them after it is closed
    (which prints "Exception ignored in" with a traceback)."""
    import traceback

    traceback.clear_frames(exc.__traceback__)


def _internal_error(exc: Exception) -> NoReturn:
    _report(exc)
    render.error(
        f"internal error: {type(exc).__name__}: {exc}",
        hint="run with --verbose for the traceback, and please report it",
    )
    raise typer.Exit(int(ExitCode.FAILED)) from None


# Failures of the machine rather than of batchctl: a path that is missing or not allowed, a full
# or read-only disk, a port in use. They get one line naming the path, and exit 2.
_EXPECTED_ERRNOS = frozenset(
    {
        errno.ENOENT,
        errno.ENOTDIR,
        errno.EISDIR,
        errno.EACCES,
        errno.EPERM,
        errno.ENOSPC,
        errno.EDQUOT,
        errno.EROFS,
        errno.ENAMETOOLONG,
        errno.EADDRINUSE,
        errno.EADDRNOTAVAIL,
    }
)
# Exit status when stdout's reader has gone: that of a process ended by SIGPIPE (128 + 13), which
# is what a shell reports for `git log | head` and what scripts with `pipefail` already expect.
BROKEN_PIPE = 141


def _report(exc: BaseException) -> None:
    if session.current.verbose:
        import traceback

        traceback.print_exception(exc, file=sys.stderr)
    if not isinstance(exc, BatchctlError):
        return
    problems: list[str] = getattr(exc, "problems", None) or []
    for problem in problems:  # a config or an input file: one line per problem
        render.error(problem)
    if not problems or exc.hint or not isinstance(exc, ConfigError):
        render.error(exc.message, exc.hint)


app = typer.Typer(
    name="batchctl",
    cls=_Group,
    help="Run batch jobs reliably: OpenAI Batch API submissions and local jobs, with history, "
    "retries, locks and schedules.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"batchctl {__version__}")
        raise typer.Exit()


@app.callback()
def _global_options(
    config: Annotated[
        str | None,
        typer.Option(
            "--config",
            "-c",
            help="Config file (else $BATCHCTL_CONFIG, ./batchctl.toml, the XDG config dir).",
            show_default=False,
        ),
    ] = None,
    db: Annotated[
        str | None,
        typer.Option(
            "--db", help="Database file (else $BATCHCTL_DB, the XDG data dir).", show_default=False
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print only errors and results.")
    ] = False,
    verbose: Annotated[
        bool, typer.Option("--verbose", "-v", help="Show log lines as they come, and tracebacks.")
    ] = False,
    no_color: Annotated[
        bool, typer.Option("--no-color", help="No colours (also NO_COLOR=1).")
    ] = False,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Print the version."),
    ] = False,
) -> None:
    session.reset(config_path=config, db=db, quiet=quiet, verbose=verbose, no_color=no_color)


COMPLETE_VAR = "_BATCHCTL_COMPLETE"
GC_THRESHOLD = 50_000  # new containers between two runs of the youngest collection


def main() -> None:
    """The ``batchctl`` console script."""
    # What batchctl allocates by the hundred thousand (parsed lines, rows) is freed by reference
    # counting; CPython's cycle collector, run every 700 new containers by default, only walks
    # it: ~250 collections (0.05 s of CPU) for a batch of 50,000 requests. Every 50,000 (as
    # mypy raises its own threshold) it runs a few times per batch, holding little garbage.
    gc.set_threshold(GC_THRESHOLD, 20, 100)
    if COMPLETE_VAR in os.environ:
        enable_completion()
    _interrupt_on_termination()
    stdout_was = _stdout_identity()
    try:
        app(prog_name="batchctl")
    except SystemExit as exc:
        # Rich meets a closed stdout outside the commands (printing --help): it points stdout at
        # /dev/null and exits 1. That is a reader gone, not a failure.
        if exc.code == 1 and _stdout_identity() != stdout_was:
            raise SystemExit(BROKEN_PIPE) from None
        raise
    finally:
        _flush_stdout()


def _stdout_identity() -> tuple[int, int] | None:
    try:
        found = os.fstat(sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    return found.st_dev, found.st_ino


def _interrupt_on_termination() -> None:
    """SIGTERM and SIGHUP stop a command as Ctrl-C does (``KeyboardInterrupt``), so that what it
    was doing ends as after Ctrl-C: a submit being sent is recorded, a partial output file is
    removed. Left to their default action they would kill it mid-step. A signal that is ignored
    (``nohup``) stays ignored; commands that wait set handlers of their own over these."""
    import signal

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) == signal.SIG_DFL:
            signal.signal(signum, interrupt)


def _flush_stdout() -> None:
    """Flush stdout before the interpreter does, so that a reader gone since the command ended
    ends quietly too (a closed pipe met while Click prints --help, Click quiets itself)."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        render.silence(sys.stdout)
        raise SystemExit(BROKEN_PIPE) from None


def enable_completion() -> None:
    """Register Typer's shell completion classes (only when a shell asks: they cost start-up)."""
    from typer import completion

    completion.completion_init()  # type: ignore[attr-defined]
