"""`batchctl schedule install | uninstall`: a crontab block or systemd units that run batchctl.

Everything is written under the test's temporary directory: the crontab by a fake `crontab`
program ($BATCHCTL_CRONTAB) that keeps it in a file, unit files in $BATCHCTL_SYSTEMD_DIR, and
`systemctl` (for --enable/--disable) is a fake on the PATH that records its arguments.

The tests drive the real root (global options, error handling, exit codes) through the `cli`
fixture, with `schedule` pointed at install_cmd's Typer in the root's lazy COMMANDS table: the
same group that batchctl.cli.schedule_cmd extends with list/pause/resume, so the tests do not
depend on that module.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

import batchctl.cli
from batchctl import install
from tests.conftest import BIN_DIR, Workspace
from tests.waiting import scaled

CONFIG = '[jobs.j]\nkind = "command"\ncommand = "true"\nschedule = "* * * * *"\n'
FAKE_CRONTAB = """#!/bin/sh
# A stand-in for crontab(1): `-l` prints the crontab, `-` replaces it with stdin.
f="$FAKE_CRONTAB_FILE"
case "$1" in
  -l) if [ -f "$f" ]; then cat "$f"; else echo "no crontab for tester" >&2; exit 1; fi ;;
  -) cat > "$f.new" && mv "$f.new" "$f" && echo write >> "$f.writes" ;;
  *) echo "usage: crontab [-l | -]" >&2; exit 2 ;;
esac
"""
FAKE_SYSTEMCTL = """#!/bin/sh
# Records each call and whether batchctl.service still existed at that moment.
if [ -f "$BATCHCTL_SYSTEMD_DIR/batchctl.service" ]; then state=present; else state=absent; fi
echo "$* ($state)" >> "$FAKE_SYSTEMCTL_LOG"
"""
MARK = "# >>> batchctl (managed by `batchctl schedule install`)"
OLD_BEGIN = f"{MARK} >>>"  # before blocks named their database: one block per crontab
END = "# <<< batchctl <<<"


def begin(db: Path | str) -> str:
    """The first line of the block for database ``db``."""
    return f"{MARK} for {db} >>>"


PROGRAM = str(BIN_DIR / "batchctl")


def _executable(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return path


@pytest.fixture(autouse=True)
def setup(ws: Workspace, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(batchctl.cli.COMMANDS, "schedule", ("batchctl.cli.install_cmd", "app"))
    ws.write_config(CONFIG)
    fakes = tmp_path / "fakes"
    fakes.mkdir()
    monkeypatch.setenv("BATCHCTL_CRONTAB", str(_executable(fakes / "crontab", FAKE_CRONTAB)))
    monkeypatch.setenv("FAKE_CRONTAB_FILE", str(tmp_path / "crontab.txt"))
    monkeypatch.setenv("BATCHCTL_SYSTEMD_DIR", str(tmp_path / "units"))
    _executable(fakes / "systemctl", FAKE_SYSTEMCTL)
    monkeypatch.setenv("FAKE_SYSTEMCTL_LOG", str(tmp_path / "systemctl.log"))
    monkeypatch.setenv("PATH", f"{fakes}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.delenv("SUDO_USER", raising=False)


@pytest.fixture
def crontab(tmp_path: Path) -> Path:
    return tmp_path / "crontab.txt"


@pytest.fixture
def units(tmp_path: Path) -> Path:
    return tmp_path / "units"


def _writes(crontab: Path) -> int:
    log = crontab.with_name(crontab.name + ".writes")
    return len(log.read_text().splitlines()) if log.exists() else 0


def _entry(text: str) -> str:
    """The one line inside batchctl's one block."""
    lines = text.splitlines()
    starts = [n for n, line in enumerate(lines) if line.startswith(MARK)]
    assert len(starts) == 1 and lines.count(END) == 1
    assert lines[starts[0] + 2] == END
    return lines[starts[0] + 1]


def _as_cron_runs_it(entry: str) -> list[str]:
    """The argv /bin/sh gets from a crontab entry: cron turns `\\%` into `%` (an unescaped %
    would end the command), then the shell splits the words."""
    schedule, command = entry[:10], entry[10:]
    assert schedule == "* * * * * "
    assert "%" not in command.replace("\\%", "")
    return shlex.split(command.replace("\\%", "%"))


def _directives(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


# -- crontab -----------------------------------------------------------------------------------


def test_install_is_crontab_by_default_with_absolute_paths_and_daemon_once(
    ws: Workspace, cli, crontab: Path
) -> None:
    result = cli("--config", "batchctl.toml", "--db", "data/jobs.db", "schedule", "install")
    assert result.exit_code == 0, result.stderr
    argv = _as_cron_runs_it(_entry(crontab.read_text()))
    db = ws.root / "data" / "jobs.db"
    log = ws.root / "data" / "jobs-cron.log"
    assert argv == [
        PROGRAM,
        "--config",
        str(ws.config),
        "--db",
        str(db),
        "daemon",
        "--once",
        ">>",
        str(log),
        "2>&1",
    ]
    assert log.parent.is_dir()  # cron cannot append to a file in a missing directory
    assert stat.S_IMODE(log.parent.stat().st_mode) == 0o700  # made for the database: private
    assert "entry added" in result.stdout and str(log) in result.stdout


def test_install_uses_the_environment_config_and_database(ws: Workspace, cli, crontab: Path):
    assert cli("schedule", "install").exit_code == 0
    argv = _as_cron_runs_it(_entry(crontab.read_text()))
    assert argv[1:5] == ["--config", str(ws.config), "--db", str(ws.db)]


def test_install_keeps_every_other_line_exactly(ws: Workspace, cli, crontab: Path) -> None:
    original = (
        "# m h  dom mon dow   command\n"
        "MAILTO=ops@example.com\n"
        "SHELL=/bin/bash\n"
        "\n"
        "0 3 * * *\t/usr/local/bin/backup --date=$(date +\\%F)   # trailing   spaces   \n"
        "@reboot echo hi\n"
        "   \n"
    )
    crontab.write_text(original)
    assert cli("schedule", "install").exit_code == 0
    after = crontab.read_text()
    assert after.startswith(original)
    assert after[len(original) :].splitlines()[0] == begin(ws.db)
    assert cli("schedule", "uninstall").exit_code == 0
    assert crontab.read_text() == original


def test_a_last_line_without_newline_gets_one(ws: Workspace, cli, crontab: Path) -> None:
    crontab.write_text("0 1 * * * echo no-newline")
    assert cli("schedule", "install").exit_code == 0
    lines = crontab.read_text().splitlines()
    assert lines[0] == "0 1 * * * echo no-newline" and lines[1] == begin(ws.db)
    assert crontab.read_text().endswith("\n")


def test_install_twice_leaves_one_block_updated_in_place(ws: Workspace, cli, crontab: Path):
    crontab.write_text("0 1 * * * first\n")
    assert cli("schedule", "install").exit_code == 0
    crontab.write_text(crontab.read_text() + "0 2 * * * added-after\n")
    (ws.root / "other.toml").write_text(CONFIG)
    result = cli("--config", "other.toml", "schedule", "install")
    assert result.exit_code == 0 and "entry updated" in result.stdout
    lines = crontab.read_text().splitlines()
    assert lines[0] == "0 1 * * * first" and lines[1] == begin(ws.db) and lines[3] == END
    assert lines[4] == "0 2 * * * added-after" and len(lines) == 5
    assert str(ws.root / "other.toml") in _as_cron_runs_it(lines[2])


def _blocks(text: str) -> dict[str, list[str]]:
    """Each block's database (from its first line) and the argv of its entry."""
    lines = text.splitlines()
    return {
        line[len(MARK) + len(" for ") : -len(" >>>")]: _as_cron_runs_it(lines[n + 1])
        for n, line in enumerate(lines)
        if line.startswith(f"{MARK} for ")
    }


def test_installs_for_two_databases_live_side_by_side(ws: Workspace, cli, crontab: Path):
    other = ws.root / "other.db"
    assert cli("schedule", "install").exit_code == 0
    result = cli("--db", str(other), "schedule", "install")
    assert result.exit_code == 0 and "entry added" in result.stdout
    blocks = _blocks(crontab.read_text())
    assert list(blocks) == [str(ws.db), str(other)]
    assert blocks[str(ws.db)][4] == str(ws.db) and blocks[str(other)][4] == str(other)
    assert crontab.read_text().splitlines().count(END) == 2


def test_installing_again_updates_only_that_databases_block(ws: Workspace, cli, crontab: Path):
    other = ws.root / "other.db"
    assert cli("schedule", "install").exit_code == 0
    assert cli("--db", str(other), "schedule", "install").exit_code == 0
    (ws.root / "other.toml").write_text(CONFIG)
    result = cli("--config", "other.toml", "--db", str(other), "schedule", "install")
    assert result.exit_code == 0 and "entry updated" in result.stdout
    blocks = _blocks(crontab.read_text())
    assert list(blocks) == [str(ws.db), str(other)]
    assert blocks[str(ws.db)][2] == str(ws.config)
    assert blocks[str(other)][2] == str(ws.root / "other.toml")


def test_uninstall_removes_only_this_databases_block(ws: Workspace, cli, crontab: Path):
    other = ws.root / "other.db"
    crontab.write_text("0 1 * * * mine\n")
    assert cli("schedule", "install").exit_code == 0
    assert cli("--db", str(other), "schedule", "install").exit_code == 0
    with_both = crontab.read_text()
    result = cli("--db", str(other), "schedule", "uninstall")
    assert result.exit_code == 0 and "removed" in result.stdout
    assert list(_blocks(crontab.read_text())) == [str(ws.db)]
    assert crontab.read_text() == with_both.split(begin(other))[0]
    again = cli("--db", str(other), "schedule", "uninstall")
    assert again.exit_code == 0 and "nothing to remove" in again.stdout
    assert cli("schedule", "uninstall").exit_code == 0
    assert crontab.read_text() == "0 1 * * * mine\n"


def _old_block(ws: Workspace, db: Path) -> str:
    """A block as batchctl wrote it before blocks named their database."""
    command = f"{PROGRAM} --config {ws.config} --db {db} daemon --once"
    return f"{OLD_BEGIN}\n* * * * * {command} >> {db.with_suffix('')}-cron.log 2>&1\n{END}\n"


def test_an_old_block_for_this_database_is_updated_in_place(ws: Workspace, cli, crontab: Path):
    crontab.write_text("0 1 * * * first\n" + _old_block(ws, ws.db) + "0 2 * * * last\n")
    result = cli("schedule", "install")
    assert result.exit_code == 0 and "entry updated" in result.stdout
    lines = crontab.read_text().splitlines()
    assert lines[0] == "0 1 * * * first" and lines[1] == begin(ws.db)
    assert lines[3] == END and lines[4] == "0 2 * * * last" and len(lines) == 5


def test_an_old_block_for_another_database_is_kept_and_found_by_its_uninstall(
    ws: Workspace, cli, crontab: Path
) -> None:
    other = ws.root / "other.db"
    old = _old_block(ws, other)
    crontab.write_text(old)
    assert cli("schedule", "install").exit_code == 0
    assert crontab.read_text().startswith(old)
    assert list(_blocks(crontab.read_text())) == [str(ws.db)]
    assert cli("--db", str(other), "schedule", "uninstall").exit_code == 0
    assert OLD_BEGIN not in crontab.read_text()
    assert list(_blocks(crontab.read_text())) == [str(ws.db)]


def test_a_database_url_names_its_block_without_the_password(cli, crontab: Path) -> None:
    url = "postgresql://jobs:s3cret-pw@db.example:5432/batchctl"
    result = cli("--db", url, "schedule", "install", "--dry-run")
    assert result.exit_code == 0, result.stderr
    first = result.stdout.splitlines()[0]
    assert first == begin("postgresql://jobs@db.example:5432/batchctl")


def test_reinstalling_the_same_entry_does_not_rewrite_the_crontab(cli, crontab: Path) -> None:
    assert cli("schedule", "install").exit_code == 0
    first = crontab.read_text()
    result = cli("schedule", "install")
    assert result.exit_code == 0 and "is up to date" in result.stdout
    assert crontab.read_text() == first and _writes(crontab) == 1


def test_uninstall_removes_only_the_block(cli, crontab: Path) -> None:
    crontab.write_text("# mine\n*/5 * * * * /bin/true\n")
    assert cli("schedule", "install").exit_code == 0
    crontab.write_text(crontab.read_text() + "0 0 * * 0 weekly\n")
    result = cli("schedule", "uninstall")
    assert result.exit_code == 0 and "removed batchctl's entry" in result.stdout
    assert crontab.read_text() == "# mine\n*/5 * * * * /bin/true\n0 0 * * 0 weekly\n"


def test_uninstall_without_a_block_changes_nothing(cli, crontab: Path) -> None:
    crontab.write_text("0 1 * * * mine\n")
    result = cli("schedule", "uninstall")
    assert result.exit_code == 0 and "nothing to remove" in result.stdout
    assert crontab.read_text() == "0 1 * * * mine\n" and _writes(crontab) == 0


def test_an_empty_crontab_works(ws: Workspace, cli, crontab: Path) -> None:
    assert not crontab.exists()  # `crontab -l` says "no crontab for tester" and exits 1
    assert cli("schedule", "install").exit_code == 0
    assert crontab.read_text().splitlines()[0] == begin(ws.db)
    assert len(crontab.read_text().splitlines()) == 3
    assert cli("schedule", "uninstall").exit_code == 0
    assert crontab.read_text() == ""


def test_crontab_dry_run_prints_the_block_and_writes_nothing(
    ws: Workspace, cli, crontab: Path
) -> None:
    crontab.write_text("0 1 * * * mine\n")
    result = cli("--db", "new/x.db", "schedule", "install", "--dry-run")
    assert result.exit_code == 0
    assert result.stdout.splitlines()[0] == begin(ws.root / "new" / "x.db")
    assert "daemon --once" in result.stdout
    assert "dry run" in result.stderr
    assert crontab.read_text() == "0 1 * * * mine\n" and _writes(crontab) == 0
    assert not (ws.root / "new").exists()


def test_uninstall_dry_run_writes_nothing(cli, crontab: Path) -> None:
    assert cli("schedule", "install").exit_code == 0
    before = crontab.read_text()
    result = cli("schedule", "uninstall", "--dry-run")
    assert result.exit_code == 0 and "would remove" in result.stdout
    assert crontab.read_text() == before and _writes(crontab) == 1


def test_paths_with_spaces_quotes_and_percent_survive_cron(
    ws: Workspace, cli, crontab: Path
) -> None:
    odd = ws.root / "it's 100% $HOME"
    odd.mkdir()
    (odd / "my config.toml").write_text(CONFIG)
    result = cli(
        "--config", str(odd / "my config.toml"), "--db", str(odd / "d b.db"), "schedule", "install"
    )
    assert result.exit_code == 0, result.stderr
    argv = _as_cron_runs_it(_entry(crontab.read_text()))
    assert argv[1:5] == ["--config", str(odd / "my config.toml"), "--db", str(odd / "d b.db")]
    assert argv[-2] == str(odd / "d b-cron.log")


def test_a_missing_crontab_command_is_a_usage_error(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BATCHCTL_CRONTAB")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = cli("schedule", "install")
    assert result.exit_code == 2
    assert result.stderr.startswith("error: the crontab command was not found")
    assert "--systemd --user" in result.stderr


def test_a_dry_run_without_the_crontab_command_still_prints_the_block(
    ws: Workspace, cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BATCHCTL_CRONTAB")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    result = cli("schedule", "install", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert result.stdout.splitlines()[0] == begin(ws.db)
    assert "daemon --once" in result.stdout
    assert "the crontab command was not found" in result.stderr
    assert "--systemd --user" in result.stderr


def test_a_failing_crontab_is_reported(
    cli, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    denied = _executable(
        tmp_path / "denied", "#!/bin/sh\necho 'you are not allowed to use cron' >&2\nexit 1\n"
    )
    monkeypatch.setenv("BATCHCTL_CRONTAB", str(denied))
    result = cli("schedule", "install")
    assert result.exit_code == 1
    assert "you are not allowed to use cron" in result.stderr and "Traceback" not in result.stderr


def test_a_block_without_its_end_is_refused_untouched(cli, crontab: Path) -> None:
    text = f"0 1 * * * mine\n{OLD_BEGIN}\n* * * * * something\n"
    crontab.write_text(text)
    for command in ("install", "uninstall"):
        result = cli("schedule", command)
        assert result.exit_code == 2 and "crontab -e" in result.stderr
    assert crontab.read_text() == text


def test_a_missing_config_is_a_usage_error(ws: Workspace, cli, crontab: Path) -> None:
    ws.config.unlink()
    result = cli("schedule", "install")
    assert result.exit_code == 2 and result.stderr.startswith("error:")
    assert not crontab.exists()


def test_crontab_install_json(ws: Workspace, cli) -> None:
    result = cli("schedule", "install", "--json")
    assert result.exit_code == 0
    data = result.json()
    assert data["mode"] == "crontab" and data["installed"] == ["crontab"]
    assert (data["dry_run"], data["changed"], data["commands"]) == (False, True, [])
    assert data["files"][0]["content"].startswith(begin(ws.db))
    again = cli("schedule", "uninstall", "--json").json()
    assert again == {
        "mode": "crontab",
        "dry_run": False,
        "changed": True,
        "removed": ["crontab"],
        "commands": [],
        "ran": False,
    }


@pytest.mark.parametrize(
    "args",
    [
        ["install", "--crontab", "--systemd"],
        ["install", "--user"],
        ["install", "--timer"],
        ["install", "--crontab", "--enable"],
        ["uninstall", "--user"],
        ["uninstall", "--disable"],
    ],
)
def test_options_that_do_not_go_together_are_usage_errors(cli, crontab: Path, args) -> None:
    result = cli("schedule", *args)
    assert result.exit_code == 2 and result.stderr.startswith("error:")
    assert not crontab.exists()


# -- systemd -----------------------------------------------------------------------------------


def test_timer_units(ws: Workspace, cli, units: Path) -> None:
    result = cli("schedule", "install", "--systemd", "--timer")
    assert result.exit_code == 0, result.stderr
    service = (units / "batchctl.service").read_text()
    timer = (units / "batchctl.timer").read_text()
    assert "Type=oneshot" in _directives(service)
    assert f"ExecStart={PROGRAM} --config {ws.config} --db {ws.db} daemon --once" in _directives(
        service
    )
    assert any(d.startswith("TimeoutStartSec=") for d in _directives(service))
    assert "[Install]" not in _directives(service)
    for directive in (
        "OnCalendar=*-*-* *:*:00 UTC",
        "AccuracySec=1s",
        "Persistent=true",
        "Unit=batchctl.service",
        "WantedBy=timers.target",
    ):
        assert directive in _directives(timer)
    assert not any(d.startswith(("Requires=", "Wants=", "BindsTo=")) for d in _directives(timer))
    assert "Requires=" in timer and "daylight-saving" in timer  # the comments say why


def test_daemon_service_for_the_user(ws: Workspace, cli, units: Path) -> None:
    result = cli("schedule", "install", "--systemd", "--user")
    assert result.exit_code == 0, result.stderr
    assert sorted(p.name for p in units.iterdir()) == ["batchctl.service"]
    directives = _directives((units / "batchctl.service").read_text())
    for directive in (
        "Type=simple",
        f"ExecStart={PROGRAM} --config {ws.config} --db {ws.db} daemon",
        "Restart=on-failure",
        "StandardOutput=journal",
        "WantedBy=default.target",
    ):
        assert directive in directives
    assert not any(d.startswith(("User=", "After=network")) for d in directives)


def test_daemon_service_for_the_system_runs_as_the_sudo_user(
    cli, units: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SUDO_USER", "alice")
    assert cli("schedule", "install", "--systemd").exit_code == 0
    directives = _directives((units / "batchctl.service").read_text())
    for directive in (
        "WantedBy=multi-user.target",
        "User=alice",
        "After=network-online.target",
        "Wants=network-online.target",
    ):
        assert directive in directives


def test_user_install_prints_the_linger_hint_and_the_commands(cli) -> None:
    result = cli("schedule", "install", "--systemd", "--user", "--timer")
    assert result.exit_code == 0
    assert "loginctl enable-linger" in result.stdout
    assert "  systemctl --user daemon-reload\n" in result.stdout
    assert "  systemctl --user enable --now batchctl.timer\n" in result.stdout


def test_system_install_prints_system_commands_and_no_linger_hint(cli) -> None:
    result = cli("schedule", "install", "--systemd")
    assert result.exit_code == 0
    assert "linger" not in result.stdout
    assert "  systemctl daemon-reload\n  systemctl enable --now batchctl.service\n" in result.stdout


def test_reinstall_is_idempotent(cli, units: Path) -> None:
    args = ("schedule", "install", "--systemd", "--user", "--timer")
    assert cli(*args).exit_code == 0
    first = {p.name: p.read_bytes() for p in units.iterdir()}
    result = cli(*args)
    assert result.exit_code == 0 and "up to date:" in result.stdout
    assert {p.name: p.read_bytes() for p in units.iterdir()} == first


def test_switching_from_timer_to_daemon_removes_the_timer(cli, units: Path) -> None:
    assert cli("schedule", "install", "--systemd", "--user", "--timer").exit_code == 0
    result = cli("schedule", "install", "--systemd", "--user", "--json")
    data = result.json()
    assert [Path(p).name for p in data["removed"]] == ["batchctl.timer"]
    assert data["commands"][0] == "systemctl --user disable --now batchctl.timer"
    assert sorted(p.name for p in units.iterdir()) == ["batchctl.service"]


def test_switching_from_daemon_to_timer_disables_the_daemon_first(cli) -> None:
    assert cli("schedule", "install", "--systemd", "--user").exit_code == 0
    data = cli("schedule", "install", "--systemd", "--user", "--timer", "--json").json()
    assert data["commands"] == [
        "systemctl --user disable --now batchctl.service",
        "systemctl --user daemon-reload",
        "systemctl --user enable --now batchctl.timer",
    ]


def test_uninstall_removes_the_unit_files_and_prints_disable_first(cli, units: Path) -> None:
    assert cli("schedule", "install", "--systemd", "--user", "--timer").exit_code == 0
    (units / "other.service").write_text("[Service]\nExecStart=/bin/true\n")
    result = cli("schedule", "uninstall", "--systemd", "--user")
    assert result.exit_code == 0
    lines = result.stdout.splitlines()
    assert "systemctl --user disable --now batchctl.timer batchctl.service" in lines[0]
    assert lines[-1].endswith("systemctl --user daemon-reload")
    assert sorted(p.name for p in units.iterdir()) == ["other.service"]
    again = cli("schedule", "uninstall", "--systemd", "--user")
    assert again.exit_code == 0 and "nothing to remove" in again.stdout


def test_a_unit_file_batchctl_did_not_write_is_left_alone(cli, units: Path) -> None:
    units.mkdir()
    mine = "[Service]\nExecStart=/usr/bin/batchctl daemon\n"
    (units / "batchctl.service").write_text(mine)
    result = cli("schedule", "install", "--systemd", "--user")
    assert result.exit_code == 2 and "not written by batchctl" in result.stderr
    assert cli("schedule", "uninstall", "--systemd", "--user").exit_code == 0
    assert (units / "batchctl.service").read_text() == mine


def test_systemd_dry_run_prints_each_unit_and_writes_nothing(cli, units: Path) -> None:
    result = cli("schedule", "install", "--systemd", "--user", "--timer", "--dry-run")
    assert result.exit_code == 0
    assert f"# ---- {units / 'batchctl.service'}" in result.stdout
    assert f"# ---- {units / 'batchctl.timer'}" in result.stdout
    assert "OnCalendar=*-*-* *:*:00 UTC" in result.stdout and "Type=oneshot" in result.stdout
    assert not units.exists()
    assert cli("schedule", "install", "--systemd", "--user").exit_code == 0
    result = cli("schedule", "uninstall", "--systemd", "--user", "--dry-run")
    assert result.exit_code == 0 and "would remove" in result.stdout
    assert (units / "batchctl.service").exists()


def test_systemd_install_json(cli, units: Path) -> None:
    data = cli("schedule", "install", "--systemd", "--user", "--timer", "--json").json()
    assert data["mode"] == "systemd" and (data["user"], data["timer"]) == (True, True)
    assert data["installed"] == [str(units / "batchctl.service"), str(units / "batchctl.timer")]
    assert [f["path"] for f in data["files"]] == data["installed"]
    assert data["commands"] == [
        "systemctl --user daemon-reload",
        "systemctl --user enable --now batchctl.timer",
    ]
    assert data["ran"] is False and any("enable-linger" in h for h in data["hints"])


def test_enable_runs_the_systemctl_commands(cli, tmp_path: Path) -> None:
    result = cli("schedule", "install", "--systemd", "--user", "--timer", "--enable")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "systemctl.log").read_text().splitlines() == [
        "--user daemon-reload (present)",
        "--user enable --now batchctl.timer (present)",
    ]


def test_disable_runs_disable_before_removing_and_reload_after(cli, tmp_path: Path) -> None:
    assert cli("schedule", "install", "--systemd", "--timer").exit_code == 0
    result = cli("schedule", "uninstall", "--systemd", "--disable")
    assert result.exit_code == 0, result.stderr
    assert (tmp_path / "systemctl.log").read_text().splitlines() == [
        "disable --now batchctl.timer batchctl.service (present)",
        "daemon-reload (absent)",
    ]


def test_unit_dir_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("BATCHCTL_SYSTEMD_DIR")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    assert install.systemd_dir(user=True) == tmp_path / "xdg" / "systemd" / "user"
    assert install.systemd_dir(user=False) == Path("/etc/systemd/system")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
@pytest.mark.parametrize("options", [["--user", "--timer"], ["--user"], ["--timer"], []], ids=repr)
def test_units_pass_systemd_analyze_verify(ws: Workspace, cli, units: Path, options) -> None:
    odd = ws.root / "100% sure"  # % and spaces must be escaped for systemd
    odd.mkdir()
    (odd / "c.toml").write_text(CONFIG)
    args = ("--config", str(odd / "c.toml"), "schedule", "install", "--systemd", *options)
    assert cli(*args).exit_code == 0
    files = sorted(str(p) for p in units.iterdir())
    verify = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *files],
        capture_output=True,
        text=True,
        timeout=scaled(60),
    )
    complaints = [line for line in verify.stderr.splitlines() if "batchctl." in line]
    assert (verify.returncode, complaints) == (0, []), verify.stderr
    service = (units / "batchctl.service").read_text()
    assert f'"{odd}/c.toml"'.replace("%", "%%") in service


def test_json_is_the_only_stdout(cli) -> None:
    result = cli("schedule", "install", "--systemd", "--user", "--dry-run", "--json")
    assert json.loads(result.stdout)["dry_run"] is True


# -- the API keys batch jobs need --------------------------------------------------------------

BATCH_CONFIG = (
    '[jobs.nightly]\nkind = "batch"\ninput = "in.jsonl"\nschedule = "0 2 * * *"\n'
    '[jobs.claude]\nkind = "batch"\nprovider = "anthropic"\ninput = "in.jsonl"\n'
)
SECRET = "sk-not-to-be-printed"


@pytest.fixture
def batch_jobs(ws: Workspace, monkeypatch: pytest.MonkeyPatch) -> None:
    ws.write_config(BATCH_CONFIG)
    monkeypatch.setenv("OPENAI_API_KEY", SECRET)  # in the shell, which cron does not pass on
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)


@pytest.mark.usefixtures("batch_jobs")
def test_crontab_install_says_the_crontab_must_set_each_key_batch_jobs_need(cli) -> None:
    result = cli("schedule", "install")
    assert result.exit_code == 0, result.stderr
    output = result.stdout + result.stderr
    assert "hint: job nightly needs its API key in $OPENAI_API_KEY" in output
    assert "hint: job claude needs its API key in $ANTHROPIC_API_KEY" in output
    assert "put a line OPENAI_API_KEY=... in the crontab" in output
    assert "[providers.anthropic] api_key_env" in output
    assert SECRET not in output


@pytest.mark.usefixtures("batch_jobs")
def test_crontab_dry_run_says_it_too(cli) -> None:
    result = cli("schedule", "install", "--dry-run")
    assert result.exit_code == 0, result.stderr
    assert "$OPENAI_API_KEY" in result.stderr and SECRET not in result.stdout + result.stderr


@pytest.mark.usefixtures("batch_jobs")
def test_a_key_the_crontab_sets_is_not_mentioned(cli, crontab: Path) -> None:
    crontab.write_text("OPENAI_API_KEY=sk-in-the-crontab\n0 1 * * * mine\n")
    result = cli("schedule", "install")
    assert result.exit_code == 0, result.stderr
    output = result.stdout + result.stderr
    assert "$OPENAI_API_KEY" not in output and "$ANTHROPIC_API_KEY" in output
    assert "sk-in-the-crontab" not in output


def test_jobs_that_need_no_key_get_no_key_hint(cli) -> None:
    result = cli("schedule", "install")
    assert result.exit_code == 0 and "API key" not in result.stdout + result.stderr


@pytest.mark.usefixtures("batch_jobs")
def test_systemd_install_says_the_unit_must_set_each_key(cli) -> None:
    result = cli("schedule", "install", "--systemd", "--user", "--json")
    assert result.exit_code == 0, result.stderr
    hints = result.json()["hints"]
    assert any(
        "$OPENAI_API_KEY" in h
        and "Environment=OPENAI_API_KEY=..." in h
        and "systemctl --user edit batchctl.service" in h
        for h in hints
    )
    assert SECRET not in result.stdout


@pytest.mark.usefixtures("batch_jobs")
def test_a_key_a_drop_in_sets_is_not_mentioned(cli, units: Path, tmp_path: Path) -> None:
    keys = tmp_path / "keys.env"
    keys.write_text("ANTHROPIC_API_KEY=sk-ant\n")
    (units / "batchctl.service.d").mkdir(parents=True)
    (units / "batchctl.service.d" / "override.conf").write_text(
        f'[Service]\nEnvironment="OPENAI_API_KEY=sk-x" "OTHER=1"\nEnvironmentFile=-{keys}\n'
    )
    result = cli("schedule", "install", "--systemd", "--user")
    assert result.exit_code == 0, result.stderr
    assert "API key" not in result.stdout + result.stderr
