"""Installing batchctl into cron or systemd, so that it runs on its own.

Both ways only *wake* batchctl: cron or a systemd timer starts ``batchctl daemon --once`` every
minute, or systemd keeps ``batchctl daemon`` running. batchctl computes every job's ticks
itself, so neither cron's nor systemd's daylight-saving handling touches a schedule.

crontab: one entry in a marked block of the user's crontab per database, read with
``crontab -l`` and written with ``crontab -`` (``$BATCHCTL_CRONTAB`` names another program with
that interface); the block's first line names its database, so blocks for several databases
live side by side, and every line outside them is kept as it is. systemd: ``batchctl.service`` (and
``batchctl.timer``) in the system or user unit directory (``$BATCHCTL_SYSTEMD_DIR`` overrides
both). Every path written is absolute. Nothing here prints: the CLI renders what is returned.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from batchctl.errors import BatchctlError, UsageError

CRONTAB_ENV = "BATCHCTL_CRONTAB"
SYSTEMD_DIR_ENV = "BATCHCTL_SYSTEMD_DIR"
# A block's first line: BLOCK_BEGIN, then " for <database> >>>". Earlier versions wrote
# BLOCK_BEGIN + " >>>" (one block per crontab); such a block's database is its entry's --db.
BLOCK_BEGIN = "# >>> batchctl (managed by `batchctl schedule install`)"
BLOCK_END = "# <<< batchctl <<<"
CRON_SCHEDULE = "* * * * *"
SERVICE = "batchctl.service"
TIMER = "batchctl.timer"
UNIT_NAMES = (SERVICE, TIMER)
# The first line of every unit file written here; only files that start with it are removed.
UNIT_MARK = "# Managed by `batchctl schedule install`"
# A round of `daemon --once` under the timer: systemd gives a oneshot no start timeout at all,
# so a hung round would hold off every later tick. Jobs have their own (shorter) timeouts.
ONESHOT_TIMEOUT = "6h"
SYSTEM_UNIT_DIR = Path("/etc/systemd/system")

_CRON_SAFE = re.compile(r"[^\n\r\x00]*")
_SYSTEMD_SAFE = re.compile(r"[A-Za-z0-9_@+=:,./-]+")


@dataclass(frozen=True)
class Paths:
    """What an installed entry runs: the program, and the absolute config and database."""

    program: tuple[str, ...]  # the batchctl console script, or (python, "-m", "batchctl")
    config: str
    db: str
    log: str  # crontab only: the daemon's stdout and stderr are appended here

    def argv(self, *command: str) -> list[str]:
        return [*self.program, "--config", self.config, "--db", self.db, *command]


@dataclass(frozen=True)
class UnitFile:
    path: Path
    text: str


@dataclass(frozen=True)
class CrontabChange:
    """A crontab before and after; ``block`` is what was installed (None: removed);
    ``replaced``: whether the crontab had a block for this database."""

    before: str
    after: str
    block: str | None
    replaced: bool = False

    @property
    def changed(self) -> bool:
        return self.before != self.after


@dataclass(frozen=True)
class SystemdChange:
    """Unit files written and removed, and the systemctl commands to run, in order."""

    written: list[UnitFile]
    removed: list[Path]
    commands: list[list[str]]
    changed: bool  # whether a file was (or, in a dry run, would be) written or removed


# -- paths -------------------------------------------------------------------------------------


def find_program() -> tuple[str, ...]:
    """The absolute command that runs this batchctl: the console script beside the running
    Python, else the script this process was started as, else ``python -m batchctl``."""
    beside = Path(sys.executable).parent / "batchctl"
    if _is_executable(beside):
        return (os.path.abspath(beside),)
    started = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if started is not None and started.name.startswith("batchctl") and _is_executable(started):
        return (os.path.abspath(started),)
    found = shutil.which("batchctl")
    if found:
        return (os.path.abspath(found),)
    return (os.path.abspath(sys.executable), "-m", "batchctl")


def _is_executable(path: Path) -> bool:
    return path.is_file() and os.access(path, os.X_OK)


def make_paths(config: Path, db: str, program: Sequence[str] | None = None) -> Paths:
    """Absolute paths for an installed entry; the cron log goes beside the database as
    ``<database name>-cron.log``."""
    config_path = os.path.abspath(config)
    db_path = absolute_db(db)
    if "://" in db:  # a database URL: keep it, and log to the default data directory
        from batchctl.locations import default_db_path

        log_dir, stem = str(default_db_path().parent), "batchctl"
    else:
        log_dir, stem = os.path.dirname(db_path), Path(db_path).stem
    paths = Paths(
        program=tuple(program) if program else find_program(),
        config=config_path,
        db=db_path,
        log=os.path.join(log_dir, f"{stem}-cron.log"),
    )
    for value in (*paths.program, paths.config, paths.db, paths.log):
        if not _CRON_SAFE.fullmatch(value):
            raise UsageError(f"cannot install a path with a line break or NUL: {value!r}")
    return paths


def absolute_db(db: str) -> str:
    """The database as an installed entry names it: a URL as it is, a file's absolute path."""
    return db if "://" in db else os.path.abspath(Path(db).expanduser())


def block_name(db: str) -> str:
    """How a crontab block names its database: the absolute path, or the URL without its
    password."""
    if "://" not in db:
        return absolute_db(db)
    from batchctl.store.postgres import redact

    return redact(db)


# -- crontab -----------------------------------------------------------------------------------


def _cron_word(word: str) -> str:
    # cron turns an unescaped % into a newline (and the rest into stdin); \% is a literal %.
    return shlex.quote(word).replace("%", "\\%")


def cron_line(paths: Paths) -> str:
    """The crontab entry: ``daemon --once`` every minute, output appended to the log."""
    command = " ".join(_cron_word(word) for word in paths.argv("daemon", "--once"))
    return f"{CRON_SCHEDULE} {command} >> {_cron_word(paths.log)} 2>&1"


def crontab_block(paths: Paths) -> str:
    """The marked block for the paths' database, with its final newline."""
    return f"{BLOCK_BEGIN} for {block_name(paths.db)} >>>\n{cron_line(paths)}\n{BLOCK_END}\n"


def _is_begin(line: str) -> bool:
    return line.strip().startswith("# >>> batchctl")


def _is_end(line: str) -> bool:
    return line.strip() == BLOCK_END


def _block_database(lines: list[str]) -> str | None:
    """The database a block is for: named on its first line, or (a block written before
    blocks named theirs) the ``--db`` of its entry; None when neither says."""
    first = lines[0].strip()
    prefix, suffix = f"{BLOCK_BEGIN} for ", " >>>"
    if first.startswith(prefix) and first.endswith(suffix):
        return first[len(prefix) : -len(suffix)]
    for line in lines[1:-1]:
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        try:
            words = shlex.split(line.replace("\\%", "%"))
        except ValueError:
            continue
        if "--db" in words[:-1]:
            return block_name(words[words.index("--db") + 1])
    return None


def _split_blocks(existing: str) -> list[str | list[str]]:
    """The crontab's lines, each of batchctl's blocks gathered in a list of its lines."""
    pieces: list[str | list[str]] = []
    block: list[str] | None = None
    for number, line in enumerate(existing.splitlines(keepends=True), start=1):
        if block is not None:
            block.append(line)
            if _is_end(line):
                pieces.append(block)
                block = None
        elif _is_begin(line):
            block = [line]
        elif _is_end(line):
            raise UsageError(
                f"the crontab has a `{BLOCK_END}` line without its start (line {number})",
                hint="fix the crontab with `crontab -e`, then run this again",
            )
        else:
            pieces.append(line)
    if block is not None:
        raise UsageError(
            "the crontab has batchctl's start line without its end line "
            f"`{BLOCK_END}`, so batchctl cannot tell which lines are its own",
            hint="fix the crontab with `crontab -e`, then run this again",
        )
    return pieces


def _is_for(block: list[str], name: str) -> bool:
    # A block that names no database at all can only come from an earlier version, when a
    # crontab had one block: it is taken to be this database's.
    found = _block_database(block)
    return found is None or found == name


def merge_crontab(existing: str, block: str | None, db: str) -> str:
    """``existing`` with the block for database ``db`` replaced by ``block`` (in place;
    appended when there was none), or removed when ``block`` is None. Blocks for other
    databases and every other line are kept exactly."""
    name = block_name(db)
    kept: list[str] = []
    position: int | None = None
    for piece in _split_blocks(existing):
        if isinstance(piece, str):
            kept.append(piece)
        elif _is_for(piece, name):
            position = len(kept) if position is None else position
        else:
            kept.extend(piece)
    if kept and not kept[-1].endswith("\n"):
        kept[-1] += "\n"  # crontab refuses a last line without its newline
    if block is not None:
        kept.insert(len(kept) if position is None else position, block)
    return "".join(kept)


def has_block(text: str, db: str) -> bool:
    """Whether ``text`` has a block for database ``db``."""
    name = block_name(db)
    return any(isinstance(p, list) and _is_for(p, name) for p in _split_blocks(text))


def crontab_program() -> str:
    """The crontab command: ``$BATCHCTL_CRONTAB``, else ``crontab`` on the PATH."""
    override = os.environ.get(CRONTAB_ENV)
    if override:
        if not _is_executable(Path(override)):
            raise UsageError(f"${CRONTAB_ENV} names {override}, which is not an executable file")
        return override
    found = shutil.which("crontab")
    if found is None:
        raise UsageError(
            "the crontab command was not found",
            hint="install cron (e.g. `apt install cron`), or use --systemd --user",
        )
    return found


def read_crontab() -> str:
    """The current user's crontab; empty when there is none (``crontab -l`` then fails with
    "no crontab for USER")."""
    result = _run([crontab_program(), "-l"])
    if result.returncode == 0:
        return result.stdout
    message = result.stderr.strip()
    if not result.stdout and re.search(r"no crontab|no such file", message, re.IGNORECASE):
        return ""
    raise BatchctlError(
        f"`crontab -l` failed (exit {result.returncode}): {message or 'no message'}",
        hint="is cron allowed for this user (/etc/cron.allow, /etc/cron.deny)?",
    )


def write_crontab(text: str) -> None:
    result = _run([crontab_program(), "-"], stdin=text)
    if result.returncode != 0:
        raise BatchctlError(
            f"`crontab -` refused the new crontab (exit {result.returncode}): "
            f"{result.stderr.strip() or 'no message'}",
            hint="nothing was changed; see `crontab -l`",
        )


def install_crontab(paths: Paths, *, dry_run: bool = False) -> CrontabChange:
    """Put batchctl's block into the crontab (replacing an earlier one) and create the log's
    directory; with ``dry_run`` only compute the change. An unchanged crontab is not written."""
    before = read_crontab()
    block = crontab_block(paths)
    change = CrontabChange(
        before, merge_crontab(before, block, paths.db), block, has_block(before, paths.db)
    )
    if not dry_run:
        from batchctl.locations import make_private_dirs

        make_private_dirs(Path(paths.log).parent)  # often the data directory: private
        if change.changed:
            write_crontab(change.after)
    return change


def uninstall_crontab(db: str, *, dry_run: bool = False) -> CrontabChange:
    """Remove the block for database ``db`` from the crontab, if it has one."""
    before = read_crontab()
    change = CrontabChange(before, merge_crontab(before, None, db), None, has_block(before, db))
    if change.changed and not dry_run:
        write_crontab(change.after)
    return change


# -- systemd -----------------------------------------------------------------------------------


def systemd_dir(*, user: bool) -> Path:
    """Where unit files go: ``$BATCHCTL_SYSTEMD_DIR``, else the user's
    ``$XDG_CONFIG_HOME/systemd/user`` (--user), else ``/etc/systemd/system``."""
    override = os.environ.get(SYSTEMD_DIR_ENV)
    if override:
        return Path(override).expanduser()
    if not user:
        return SYSTEM_UNIT_DIR
    config_home = os.environ.get("XDG_CONFIG_HOME")
    base = Path(config_home) if config_home else Path.home() / ".config"
    return base / "systemd" / "user"


def _systemd_word(word: str) -> str:
    # systemd splits ExecStart= like a shell with C escapes inside quotes, expands %-specifiers
    # and $VARIABLES: quote what is not plain, and double % and $ to keep them literal.
    if not _SYSTEMD_SAFE.fullmatch(word):
        word = '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return word.replace("%", "%%").replace("$", "$$")


def exec_start(paths: Paths, *command: str) -> str:
    return " ".join(_systemd_word(word) for word in paths.argv(*command))


def run_as_user() -> str | None:
    """For a system unit: the user who ran ``sudo``, else the current user; None for root
    (a system unit without ``User=`` runs as root)."""
    name = os.environ.get("SUDO_USER")
    if name and name != "root":
        return name
    if os.geteuid() == 0:
        return None
    import pwd

    return pwd.getpwuid(os.geteuid()).pw_name


def _header(unit: str, *, user: bool) -> str:
    edit = f"systemctl{' --user' if user else ''} edit {unit}"
    return (
        f"{UNIT_MARK}: reinstalling overwrites this file\n"
        f"# and `batchctl schedule uninstall --systemd{' --user' if user else ''}` removes it.\n"
        f"# Put local changes (Environment=, EnvironmentFile=, ...) in a drop-in: {edit}\n"
    )


def _unit_section(description: str, *, user: bool) -> str:
    text = f"[Unit]\nDescription={description}\n"
    if not user:  # the user manager has no network-online.target to wait for
        text += "Wants=network-online.target\nAfter=network-online.target\n"
    return text


def daemon_service(paths: Paths, *, user: bool, run_as: str | None = None) -> str:
    """``batchctl.service`` that keeps ``batchctl daemon`` running."""
    target = "default.target" if user else "multi-user.target"
    return (
        _header(SERVICE, user=user)
        + _unit_section("batchctl daemon: runs scheduled batch jobs", user=user)
        + "\n[Service]\n"
        "Type=simple\n"
        f"ExecStart={exec_start(paths, 'daemon')}\n"
        + (f"User={run_as}\n" if run_as and not user else "")
        + "Restart=on-failure\n"
        "RestartSec=10s\n"
        "# SIGTERM goes to batchctl alone, which stops its jobs with each job's grace period.\n"
        "KillMode=mixed\n"
        "StandardOutput=journal\n"
        "StandardError=journal\n"
        "\n[Install]\n"
        f"WantedBy={target}\n"
    )


def oneshot_service(paths: Paths, *, user: bool, run_as: str | None = None) -> str:
    """``batchctl.service`` that runs one round of ``batchctl daemon --once``, started by
    ``batchctl.timer`` (hence no [Install] section)."""
    return (
        _header(SERVICE, user=user)
        + _unit_section(
            "batchctl: run the jobs that are due (started by batchctl.timer)", user=user
        )
        + "\n[Service]\n"
        "Type=oneshot\n"
        f"ExecStart={exec_start(paths, 'daemon', '--once')}\n"
        + (f"User={run_as}\n" if run_as and not user else "")
        + "# A oneshot has no start timeout unless given one; jobs have their own timeouts, and\n"
        "# this bounds a round that hangs, which would hold off every later tick.\n"
        f"TimeoutStartSec={ONESHOT_TIMEOUT}\n"
        "KillMode=mixed\n"
        "StandardOutput=journal\n"
        "StandardError=journal\n"
        "# No [Install] section: batchctl.timer starts this service.\n"
    )


def timer_unit(*, user: bool) -> str:
    """``batchctl.timer``: wakes batchctl.service every minute, on the minute, in UTC."""
    return (
        _header(TIMER, user=user) + "[Unit]\n"
        "Description=Wake batchctl every minute to run the jobs that are due\n"
        "# No Requires= (or Wants=) on batchctl.service: starting this timer at boot would then\n"
        "# start the service at once, outside any schedule. Unit= below is all a timer needs.\n"
        "\n[Timer]\n"
        "# Every minute, in UTC. batchctl computes each job's ticks itself, in the job's zone:\n"
        "# systemd's calendar skips ticks around daylight-saving changes; UTC has none.\n"
        "OnCalendar=*-*-* *:*:00 UTC\n"
        "AccuracySec=1s\n"
        "# After downtime or sleep, run once at start; batchctl catches up by each job's policy.\n"
        "Persistent=true\n"
        f"Unit={SERVICE}\n"
        "\n[Install]\n"
        "WantedBy=timers.target\n"
    )


def systemd_units(
    paths: Paths, *, user: bool, timer: bool, directory: Path, run_as: str | None = None
) -> list[UnitFile]:
    """The unit files to write: the daemon service, or the oneshot service and its timer."""
    if not timer:
        return [UnitFile(directory / SERVICE, daemon_service(paths, user=user, run_as=run_as))]
    return [
        UnitFile(directory / SERVICE, oneshot_service(paths, user=user, run_as=run_as)),
        UnitFile(directory / TIMER, timer_unit(user=user)),
    ]


def systemctl(*args: str, user: bool) -> list[str]:
    return ["systemctl", *(["--user"] if user else []), *args]


def managed_units(directory: Path) -> list[Path]:
    """batchctl's unit files in ``directory`` (those that start with its mark)."""
    return [path for path in (directory / name for name in UNIT_NAMES) if _is_managed(path)]


def _is_managed(path: Path) -> bool:
    try:
        with path.open(encoding="utf-8") as file:
            return file.readline().startswith(UNIT_MARK)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read {path}: {exc}") from None


def _check_foreign(path: Path) -> None:
    if path.exists() and not _is_managed(path):
        raise UsageError(
            f"{path} exists and was not written by batchctl; leaving it alone",
            hint="remove or rename it first, or pass --user for the user's units",
        )


def install_systemd(
    paths: Paths, *, user: bool, timer: bool, run_as: str | None = None, dry_run: bool = False
) -> SystemdChange:
    """Write the unit files (replacing batchctl's earlier ones; a unit file batchctl did not
    write is refused) and return the systemctl commands that enable them. Switching between the
    daemon and the timer removes the timer, or disables the daemon service, first."""
    directory = systemd_dir(user=user)
    units = systemd_units(paths, user=user, timer=timer, directory=directory, run_as=run_as)
    for unit in units:
        _check_foreign(unit.path)
    stale = [p for p in managed_units(directory) if p not in {u.path for u in units}]
    commands = [systemctl("disable", "--now", p.name, user=user) for p in stale]
    if timer and _is_daemon_service(directory / SERVICE):
        commands.append(systemctl("disable", "--now", SERVICE, user=user))
    commands.append(systemctl("daemon-reload", user=user))
    commands.append(systemctl("enable", "--now", TIMER if timer else SERVICE, user=user))
    changed = bool(stale) or any(_read(unit.path) != unit.text for unit in units)
    if not dry_run:
        for unit in units:
            _write_file(unit.path, unit.text, user=user)
        for path in stale:
            _remove_file(path, user=user)
    return SystemdChange(written=units, removed=stale, commands=commands, changed=changed)


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def _is_daemon_service(path: Path) -> bool:
    """Whether ``path`` is batchctl's daemon service (the one with an [Install] section, which
    ``enable`` linked into a target)."""
    return _is_managed(path) and "\n[Install]\n" in path.read_text(encoding="utf-8")


def uninstall_systemd(*, user: bool, dry_run: bool = False) -> SystemdChange:
    """Remove batchctl's unit files; the commands are: disable them (run before the removal),
    then reload systemd (after)."""
    directory = systemd_dir(user=user)
    found = managed_units(directory)
    commands: list[list[str]] = []
    if found:
        names = sorted((p.name for p in found), key=lambda n: n != TIMER)  # the timer first
        commands = [
            systemctl("disable", "--now", *names, user=user),
            systemctl("daemon-reload", user=user),
        ]
    if not dry_run:
        for path in found:
            _remove_file(path, user=user)
    return SystemdChange(written=[], removed=found, commands=commands, changed=bool(found))


def run_commands(commands: Sequence[Sequence[str]]) -> None:
    """Run each command in order; the first that fails raises, naming it and its message."""
    for command in commands:
        try:
            result = _run(list(command))
        except FileNotFoundError:
            raise UsageError(
                f"{command[0]} was not found", hint="is systemd this machine's init system?"
            ) from None
        if result.returncode != 0:
            raise BatchctlError(
                f"`{shlex.join(command)}` failed (exit {result.returncode}): "
                f"{result.stderr.strip() or 'no message'}"
            )


def _permission_hint(user: bool) -> str:
    if user:
        return f"check the directory's permissions, or set ${SYSTEMD_DIR_ENV}"
    return "system units need root: run with sudo, or pass --user"


def _write_file(path: Path, text: str, *, user: bool) -> None:
    """Write atomically (a reader never sees half a unit) with mode 0644."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary.write_text(text, encoding="utf-8")
        temporary.chmod(0o644)
        os.replace(temporary, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            temporary.unlink(missing_ok=True)
        raise UsageError(
            f"cannot write {path}: {exc.strerror or exc}", hint=_permission_hint(user)
        ) from None


def _remove_file(path: Path, *, user: bool) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise UsageError(
            f"cannot remove {path}: {exc.strerror or exc}", hint=_permission_hint(user)
        ) from None


def _run(argv: list[str], stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, input=stdin, capture_output=True, text=True, timeout=60, check=False
    )


# -- the environment cron or systemd gives the daemon ------------------------------------------

_ASSIGNMENT = re.compile(r"\s*(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)\s*=")


def crontab_variables(text: str) -> set[str]:
    """The variables a crontab sets (its ``NAME=value`` lines): what cron gives its jobs
    beyond its own few (an API key a batch job needs must be one of them)."""
    found = set()
    for line in text.splitlines():
        match = _ASSIGNMENT.match(line)
        if match and not line.lstrip().startswith("#"):
            found.add(match.group(1))
    return found


def systemd_variables(*, user: bool) -> set[str] | None:
    """The variables batchctl.service's drop-ins set (Environment=, EnvironmentFile=), and for
    a user unit, ``environment.d``; None (cannot tell) when a file they name cannot be read."""
    found: set[str] = set()
    files = sorted((systemd_dir(user=user) / f"{SERVICE}.d").glob("*.conf"))
    for conf in files:
        for line in _read_lines(conf) or []:
            key, _, value = line.strip().partition("=")
            if key == "Environment":
                try:
                    words = shlex.split(value)
                except ValueError:  # unbalanced quotes: systemd will say so
                    return None
                found.update(word.partition("=")[0] for word in words)
            elif key == "EnvironmentFile":
                lines = _read_lines(Path(value.lstrip("-")))
                if lines is None:
                    return None
                found |= crontab_variables("\n".join(lines))
    if user:
        config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
        for conf in sorted((config_home / "environment.d").glob("*.conf")):
            found |= crontab_variables("\n".join(_read_lines(conf) or []))
    return found


def _read_lines(path: Path) -> list[str] | None:
    try:
        return path.read_text().splitlines()
    except (OSError, UnicodeDecodeError):
        return None
