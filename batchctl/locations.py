"""Where batchctl finds its config file and keeps its database (XDG base directories)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

CONFIG_ENV = "BATCHCTL_CONFIG"
DB_ENV = "BATCHCTL_DB"
LOCAL_CONFIG = "batchctl.toml"


def _xdg(variable: str, fallback: str) -> Path:
    value = os.environ.get(variable)
    return Path(value) if value else Path.home() / fallback


def default_config_path() -> Path:
    return _xdg("XDG_CONFIG_HOME", ".config") / "batchctl" / "config.toml"


def default_db_path() -> Path:
    return _xdg("XDG_DATA_HOME", ".local/share") / "batchctl" / "batchctl.db"


def config_candidates(explicit: str | None) -> list[tuple[Path, str]]:
    """The places searched for a config file, in order, each with why it is searched."""
    if explicit:
        return [(Path(explicit).expanduser(), "--config")]
    env = os.environ.get(CONFIG_ENV)
    if env:
        return [(Path(env).expanduser(), f"${CONFIG_ENV}")]
    return [(Path.cwd() / LOCAL_CONFIG, "current directory"), (default_config_path(), "XDG")]


def find_config(explicit: str | None) -> tuple[Path | None, list[tuple[Path, str]]]:
    """The config file to use (None when there is none) and the places that were searched.

    A path named by ``--config`` or ``$BATCHCTL_CONFIG`` is returned even when it does not
    exist, so the caller can say that it is missing rather than silently look elsewhere.
    """
    candidates = config_candidates(explicit)
    if explicit or os.environ.get(CONFIG_ENV):
        return candidates[0][0], candidates
    for path, _why in candidates:
        if path.is_file():
            return path, candidates
    return None, candidates


def resolve_db(explicit: str | None) -> str:
    """The database location: ``--db``, then ``$BATCHCTL_DB``, then the XDG data directory."""
    return explicit or os.environ.get(DB_ENV) or str(default_db_path())


def make_private_dirs(path: Path) -> None:
    """Create the directory ``path`` and its missing parents readable by the user only (0700,
    or tighter under the umask), as ``mkdir -p -m 700`` would; existing ones keep their mode."""
    missing: list[Path] = []
    current = path
    while not current.exists() and current != current.parent:
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):  # another process made it meanwhile
            directory.mkdir(mode=0o700)
    path.mkdir(exist_ok=True)  # raises as mkdir does when something else is in the way


def create_private_file(path: Path) -> None:
    """Create ``path`` empty and readable by the user only (0600), unless it exists (its mode
    is left as it is)."""
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(descriptor)
