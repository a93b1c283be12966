"""``batchctl schedule install`` and ``uninstall``: have cron or systemd run batchctl."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any

import typer

from batchctl.cli import render, session
from batchctl.cli.options import JsonOption

if TYPE_CHECKING:
    from batchctl.config import Config
    from batchctl.errors import UsageError
    from batchctl.install import CrontabChange, Paths, SystemdChange

app = typer.Typer(no_args_is_help=True, add_completion=False, rich_markup_mode="markdown")


@app.callback()
def schedule() -> None:
    """Schedules: list, pause, resume, and install batchctl into cron or systemd."""


CrontabOption = Annotated[bool, typer.Option("--crontab", help="The user's crontab (the default).")]
SystemdOption = Annotated[bool, typer.Option("--systemd", help="systemd units instead of cron.")]
UserOption = Annotated[
    bool,
    typer.Option("--user", help="systemd: the user's units (~/.config/systemd/user), not /etc."),
]
DryRunOption = Annotated[
    bool, typer.Option("--dry-run", help="Print what would be written; change nothing.")
]


@app.command("install")
def install(
    crontab: CrontabOption = False,
    systemd: SystemdOption = False,
    user: UserOption = False,
    timer: Annotated[
        bool,
        typer.Option(
            "--timer",
            help="systemd: a timer that runs `daemon --once` every minute, instead of a "
            "long-running `daemon` service.",
        ),
    ] = False,
    enable: Annotated[
        bool,
        typer.Option("--enable", help="systemd: also run the systemctl commands that start it."),
    ] = False,
    dry_run: DryRunOption = False,
    json_output: JsonOption = False,
) -> None:
    """Make batchctl run on its own, with the absolute paths of this config and database.

    With --crontab (the default): one entry in your crontab runs `batchctl daemon --once` every
    minute, in a block marked with its database (one block per database); the rest of the
    crontab is kept as it is.

    With --systemd: a `batchctl.service` runs `batchctl daemon`; with --timer, a oneshot service
    and a `batchctl.timer` run it every minute instead. Installing again updates what was
    installed.
    """
    from batchctl import install as core
    from batchctl.errors import UsageError
    from batchctl.locations import resolve_db

    use_systemd = _systemd_chosen(crontab, systemd, user)
    if not use_systemd and (timer or enable):
        raise UsageError("--timer and --enable go with --systemd")
    config = session.current.config(check_host=False)
    if config.path is None:  # config() without required=False always has a file
        raise UsageError("no config file found")
    paths = core.make_paths(config.path, resolve_db(session.current.db))
    if not use_systemd:
        planned, no_cron = _install_crontab(paths, dry_run)
        notes = [f"{no_cron.message}, so installing would fail: {no_cron.hint}"] if no_cron else []
        notes += _key_notes(config, core.crontab_variables(planned.after), _crontab_how)
        _report_crontab_install(paths, planned, dry_run, json_output, notes)
        return
    change = core.install_systemd(
        paths, user=user, timer=timer, run_as=core.run_as_user(), dry_run=dry_run
    )
    ran = enable and not dry_run
    if ran:
        core.run_commands(change.commands)
    notes = _key_notes(config, core.systemd_variables(user=user), _systemd_how(user))
    _report_systemd_install(
        change,
        user=user,
        timer=timer,
        dry_run=dry_run,
        ran=ran,
        json_output=json_output,
        notes=notes,
    )


@app.command("uninstall")
def uninstall(
    crontab: CrontabOption = False,
    systemd: SystemdOption = False,
    user: UserOption = False,
    disable: Annotated[
        bool,
        typer.Option(
            "--disable", help="systemd: also run `systemctl disable --now` before removing."
        ),
    ] = False,
    dry_run: DryRunOption = False,
    json_output: JsonOption = False,
) -> None:
    """Remove what `schedule install` installed: batchctl's crontab block for this database
    (the default) or its systemd unit files. Nothing else is touched; nothing to remove is not
    an error."""
    from batchctl import install as core
    from batchctl.errors import UsageError

    use_systemd = _systemd_chosen(crontab, systemd, user)
    if not use_systemd:
        if disable:
            raise UsageError("--disable goes with --systemd")
        from batchctl.locations import resolve_db

        removal = core.uninstall_crontab(resolve_db(session.current.db), dry_run=dry_run)
        _report_crontab_uninstall(removal, dry_run, json_output)
        return
    planned = core.uninstall_systemd(user=user, dry_run=True)
    ran = disable and not dry_run and bool(planned.commands)
    if ran:  # disable while the unit files still exist, reload once they are gone
        core.run_commands(planned.commands[:-1])
    change = planned if dry_run else core.uninstall_systemd(user=user)
    if ran:
        core.run_commands(planned.commands[-1:])
    _report_systemd_uninstall(change, dry_run=dry_run, ran=ran, json_output=json_output)


def _systemd_chosen(crontab: bool, systemd: bool, user: bool) -> bool:
    from batchctl.errors import UsageError

    if crontab and systemd:
        raise UsageError("choose one of --crontab and --systemd")
    if user and not systemd:
        raise UsageError(
            "--user goes with --systemd", hint="a crontab is always the current user's own"
        )
    return systemd


def _commands(commands: list[list[str]]) -> list[str]:
    return [shlex.join(command) for command in commands]


def _payload(mode: str, dry_run: bool, changed: bool, **fields: Any) -> dict[str, Any]:
    return {"mode": mode, "dry_run": dry_run, "changed": changed, **fields}


# -- crontab -----------------------------------------------------------------------------------


def _install_crontab(paths: Paths, dry_run: bool) -> tuple[CrontabChange, UsageError | None]:
    """Install (or with ``dry_run`` plan) the crontab block. A dry run where there is no
    crontab command still shows the block, against an empty crontab, with why it would fail."""
    from batchctl import install as core
    from batchctl.errors import UsageError

    if dry_run:
        try:
            core.crontab_program()
        except UsageError as exc:
            block = core.crontab_block(paths)
            return core.CrontabChange("", core.merge_crontab("", block, paths.db), block), exc
    return core.install_crontab(paths, dry_run=dry_run), None


def _report_crontab_install(
    paths: Paths, change: CrontabChange, dry_run: bool, json_output: bool, notes: list[str]
) -> None:
    """``notes``: what stands in the way of the entry working (shown by a dry run too)."""
    block = change.block or ""
    hints = [*notes, f"cron output (stdout and stderr) is appended to {paths.log}"]
    if json_output:
        render.print_json(
            _payload(
                "crontab",
                dry_run,
                change.changed,
                installed=["crontab"],
                removed=[],
                files=[{"path": "crontab", "content": block}],
                commands=[],
                ran=False,
                hints=hints,
            )
        )
        return
    if dry_run:
        render.note("dry run: nothing was changed; the crontab would get this block:")
        render.out(block.rstrip("\n"))
        for note in notes:
            render.note(f"hint: {note}")
        return
    verb = "is up to date" if not change.changed else "updated" if change.replaced else "added"
    render.out(f"crontab: batchctl's entry {verb}; it runs `batchctl daemon --once` every minute")
    render.out(f"  {block.splitlines()[1]}")
    render.out(hints[-1])
    for note in notes:
        render.out(f"hint: {note}")


# -- the API keys of batch jobs ----------------------------------------------------------------


def _key_notes(config: Config, provided: set[str] | None, how: Callable[[str], str]) -> list[str]:
    """One note per key variable that batch jobs need and that the environment cron or systemd
    gives the daemon does not set (``provided`` None: cannot tell, say nothing). Names only:
    a key's value is never read, let alone printed."""
    if provided is None:
        return []
    notes = []
    for var, jobs in config.keys_needed().items():
        if var in provided:
            continue
        names = ", ".join(job.name for job in jobs)
        tables = ", ".join(
            sorted(
                {
                    "[openai]" if j.provider == "openai" else f"[providers.{j.provider}]"
                    for j in jobs
                }
            )
        )
        who = f"job {names} needs its" if len(jobs) == 1 else f"jobs {names} need their"
        notes.append(
            f"{who} API key in ${var}, {how(var)}; or name another variable with {tables}"
            " api_key_env"
        )
    return notes


def _crontab_how(var: str) -> str:
    return (
        f"which cron does not take from your shell: put a line {var}=... in the crontab "
        "(`crontab -e`, above batchctl's block)"
    )


def _systemd_how(user: bool) -> Callable[[str], str]:
    from batchctl.install import SERVICE

    edit = f"systemctl{' --user' if user else ''} edit {SERVICE}"
    return lambda var: (
        f"which {SERVICE} does not set: add a line Environment={var}=... (or an"
        f" EnvironmentFile=) to a drop-in, with `{edit}`"
    )


def _report_crontab_uninstall(change: CrontabChange, dry_run: bool, json_output: bool) -> None:
    removed = ["crontab"] if change.changed else []
    if json_output:
        render.print_json(
            _payload("crontab", dry_run, change.changed, removed=removed, commands=[], ran=False)
        )
        return
    if not change.changed:
        render.out("crontab: no batchctl entry for this database; nothing to remove")
    elif dry_run:
        render.out("crontab: would remove batchctl's entry (dry run: nothing was changed)")
    else:
        render.out("crontab: removed batchctl's entry for this database")


# -- systemd -----------------------------------------------------------------------------------


def _linger_hint() -> str:
    import getpass

    return (
        "a user's services stop when they log out, and start only at their login; to keep "
        f"batchctl running, enable lingering: loginctl enable-linger {getpass.getuser()}"
    )


def _report_systemd_install(
    change: SystemdChange,
    *,
    user: bool,
    timer: bool,
    dry_run: bool,
    ran: bool,
    json_output: bool,
    notes: list[str],
) -> None:
    hints = [*notes, _linger_hint()] if user else [*notes]
    unit = "batchctl.timer" if timer else "batchctl.service"
    hints.append(
        f"logs: journalctl {'--user-unit' if user else '--unit'} batchctl.service; "
        f"status: systemctl{' --user' if user else ''} status {unit}"
    )
    if json_output:
        render.print_json(
            _payload(
                "systemd",
                dry_run,
                change.changed,
                user=user,
                timer=timer,
                installed=[str(u.path) for u in change.written],
                removed=[str(p) for p in change.removed],
                files=[{"path": str(u.path), "content": u.text} for u in change.written],
                commands=_commands(change.commands),
                ran=ran,
                hints=hints,
            )
        )
        return
    if dry_run:
        render.note("dry run: nothing was changed; these files would be written:")
        for u in change.written:
            render.out(f"# ---- {u.path}")
            render.out(u.text)
    for path in change.removed:
        render.out(f"{'would remove' if dry_run else 'removed'} {path} (not used any more)")
    if not dry_run:
        state = "wrote" if change.changed else "up to date:"
        for u in change.written:
            render.out(f"{state} {u.path}")
    when = "at every login" if user else "at every boot"
    render.out("ran:" if ran else f"to start it now and {when}, run:")
    for command in _commands(change.commands):
        render.out(f"  {command}")
    for hint in hints:
        render.out(f"hint: {hint}")


def _report_systemd_uninstall(
    change: SystemdChange, *, dry_run: bool, ran: bool, json_output: bool
) -> None:
    commands = _commands(change.commands)
    if json_output:
        render.print_json(
            _payload(
                "systemd",
                dry_run,
                change.changed,
                removed=[str(p) for p in change.removed],
                commands=commands,
                ran=ran,
            )
        )
        return
    if not change.removed:
        render.out("systemd: no batchctl unit files; nothing to remove")
        return
    render.out(f"{'ran' if ran else 'to stop and disable them, run'}: {commands[0]}")
    for path in change.removed:
        render.out(f"{'would remove' if dry_run else 'removed'} {path}")
    render.out(f"{'ran' if ran else 'then run'}: {commands[-1]}")
