"""Fixtures shared by the test suite: a temporary home, config, database and the real CLI.

Every test gets its own XDG directories, config file and SQLite database in a temporary
directory, selected through the same environment variables users set ($BATCHCTL_CONFIG,
$BATCHCTL_DB), so the CLI under test finds them exactly as it would in the field.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
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

BIN_DIR = Path(sys.executable).parent


@dataclass
class Workspace:
    """A temporary place with a config file, processor modules and a database."""

    root: Path
    config: Path
    db: Path

    def write_config(self, text: str) -> Path:
        self.config.write_text(textwrap.dedent(text))
        return self.config

    def write_module(self, name: str, source: str) -> Path:
        path = self.root / f"{name}.py"
        path.write_text(textwrap.dedent(source))
        sys.modules.pop(name, None)
        return path

    def sql(self, query: str, *params: Any) -> list[tuple[Any, ...]]:
        """Read the database directly, as a user with the sqlite3 CLI would."""
        with sqlite3.connect(self.db) as conn:
            return conn.execute(query, params).fetchall()

    def env(self) -> dict[str, str]:
        return {**os.environ, "BATCHCTL_CONFIG": str(self.config), "BATCHCTL_DB": str(self.db)}


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
    return subprocess.run([exe, *args], env=env, capture_output=True, text=True, timeout=timeout)
