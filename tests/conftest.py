"""Fixtures shared by the test suite: a temporary home, config, database and the real CLI.

Every test gets its own XDG directories, config file and SQLite database in a temporary
directory, selected through the same environment variables users set ($BATCHCTL_CONFIG,
$BATCHCTL_DB), so the CLI under test finds them exactly as it would in the field.

A test that asks for the ``database`` fixture runs twice: on that SQLite file, and on a fresh
database of the PostgreSQL test server (``tests/databases.py``; skipped, saying why, without a
server). Such a test reaches its database through ``ws.location`` and ``ws.sql``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from batchctl.cli import app
from tests import databases
from tests.databases import PgServer
from tests.waiting import scaled

BIN_DIR = Path(sys.executable).parent


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that runs the installed ``batchctl`` (the ``batchctl_exe`` fixture, also behind
    ``spawn`` and the daemon launchers) starts real processes: it belongs to the slow layer
    whether or not its module says so."""
    for item in items:
        if "batchctl_exe" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    """pytest-timeout's per-test limit (``timeout`` in pyproject.toml) stretches with
    $BATCHCTL_TEST_TIMEOUT_SCALE, as every wait of a test does; ``--timeout`` overrides it."""
    if config.getoption("timeout", None) is None and config.getini("timeout"):
        config.option.timeout = scaled(float(config.getini("timeout")))
    # The processes a test starts inherit the signals this one ignores: started under nohup, or
    # in the background by a shell without job control, they would ignore SIGHUP or SIGINT, as
    # batchctl (and Python) rightly keep doing, and the tests of what those signals do would
    # wait for an exit that never comes. The suite tests batchctl as a terminal starts it.
    for signum, default in (
        (signal.SIGHUP, signal.SIG_DFL),
        (signal.SIGINT, signal.default_int_handler),
    ):
        if signal.getsignal(signum) == signal.SIG_IGN:
            signal.signal(signum, default)


@dataclass
class Workspace:
    """A temporary place with a config file, processor modules and a database."""

    root: Path
    config: Path
    db: Path
    url: str | None = None  # a PostgreSQL database used instead of the SQLite file ``db``

    @property
    def location(self) -> str:
        """What ``--db`` / ``$BATCHCTL_DB`` name: the PostgreSQL URL, or the SQLite file."""
        return self.url or str(self.db)

    @property
    def backend(self) -> str:
        return "postgres" if self.url else "sqlite"

    def write_config(self, text: str) -> Path:
        self.config.write_text(textwrap.dedent(text))
        return self.config

    def write_module(self, name: str, source: str) -> Path:
        path = self.root / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        sys.modules.pop(name, None)
        return path

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Read the database directly (``?`` placeholders), as a user with sqlite3/psql would."""
        return databases.sql(self.location, query, *params)

    def query(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """``sql`` that reads a database not created (or not migrated) yet as empty: for polling
        while another process sets it up."""
        if self.url is None and not self.db.exists():
            return []
        try:
            return self.sql(query, *params)
        except databases.DATABASE_ERRORS:
            return []

    def has_tables(self) -> bool:
        return databases.has_tables(self.location)

    def integrity_problems(self) -> list[str]:
        return databases.integrity_problems(self.location)

    def env(self) -> dict[str, str]:
        return {**os.environ, "BATCHCTL_CONFIG": str(self.config), "BATCHCTL_DB": self.location}


@pytest.fixture
def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Workspace]:
    home = tmp_path / "home"
    home.mkdir()
    root = tmp_path / "work"
    root.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    monkeypatch.setenv("XDG_DATA_HOME", str(home / ".local/share"))
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.setenv("COLUMNS", "200")
    workspace = Workspace(root=root, config=root / "batchctl.toml", db=root / "batchctl.db")
    monkeypatch.setenv("BATCHCTL_CONFIG", str(workspace.config))
    monkeypatch.setenv("BATCHCTL_DB", str(workspace.db))
    monkeypatch.chdir(root)
    monkeypatch.syspath_prepend(str(root))
    yield workspace


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer | str]:
    """The PostgreSQL test server, or why there is none; drops what the tests left behind."""
    server = databases.find_pg_server()
    yield server
    if isinstance(server, PgServer):
        for name in list(server.created):
            server.drop(server.url_for(name))


@pytest.fixture(params=databases.BACKENDS)
def database(
    request: pytest.FixtureRequest, ws: Workspace, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """Run the test on each back end: the workspace's SQLite file, or a new PostgreSQL database
    (``ws.url``, also in ``$BATCHCTL_DB``), dropped afterwards. Yields the back end's name."""
    if request.param == "sqlite":
        yield "sqlite"
        return
    ws.url = request.getfixturevalue("pg_url")
    monkeypatch.setenv("BATCHCTL_DB", ws.url)
    yield "postgres"


@pytest.fixture
def pg_url(pg_server: PgServer | str) -> Iterator[str]:
    """A fresh, empty database on the PostgreSQL test server (skipped without one), dropped
    afterwards."""
    server = databases.require_pg(pg_server)
    url = server.create()
    yield url
    server.drop(url)


@dataclass
class Result:
    exit_code: int
    stdout: str
    stderr: str

    def json(self) -> Any:
        return json.loads(self.stdout)


def invoke(*args: str) -> Result:
    """Run the batchctl CLI in-process, as a user would from a shell."""
    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    return Result(result.exit_code, result.stdout, result.stderr)


@pytest.fixture
def cli() -> Any:
    return invoke


@pytest.fixture(scope="session")
def batchctl_exe() -> str:
    """The installed console script, for tests where real processes matter."""
    exe = BIN_DIR / "batchctl"
    found = str(exe) if exe.exists() else shutil.which("batchctl")
    assert found, "the batchctl console script is not installed"
    return found


def run_exe(
    exe: str, *args: str, env: dict[str, str], timeout: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run the console script to its end; ``timeout`` (scaled) only bounds a hang."""
    return subprocess.run(
        [exe, *args], env=env, capture_output=True, text=True, timeout=scaled(timeout)
    )


def run_into_a_closed_pipe(exe: str, *args: str, env: dict[str, str]) -> tuple[int, str]:
    """Run ``batchctl ARGS`` with stdout a pipe whose reader has already gone (``| head -0``
    that won the race): the first write fails. Returns the exit code and stderr."""
    env = {k: v for k, v in env.items() if k != "PYTHONUNBUFFERED"}
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        done = subprocess.run(
            [exe, *args],
            env=env,
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=scaled(60),
        )
    finally:
        os.close(write_end)
    return done.returncode, done.stderr


def write_chat_requests(path: Path, count: int) -> None:
    """A JSONL input of ``count`` chat requests to gpt-4o-mini, ids ``r0``, ``r1``, ..."""
    with path.open("w") as out:
        for i in range(count):
            body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"q{i}"}]}
            line = {"custom_id": f"r{i}", "method": "POST", "url": "/v1/chat/completions"}
            out.write(json.dumps({**line, "body": body}) + "\n")
