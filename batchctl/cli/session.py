"""The global options of one invocation, and the config and store they select (opened lazily)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from batchctl.errors import ConfigError

if TYPE_CHECKING:
    from batchctl.config import Config
    from batchctl.store import Store


class Session:
    def __init__(
        self,
        config_path: str | None = None,
        db: str | None = None,
        quiet: bool = False,
        verbose: bool = False,
        no_color: bool = False,
    ) -> None:
        self.config_path = config_path
        self.db = db
        self.quiet = quiet
        self.verbose = verbose
        self.no_color = no_color
        self._config: Config | None = None
        self._store: Store | None = None

    def config(self, *, required: bool = True, check_host: bool = True) -> Config:
        """The validated config; without a config file, an error or (not required) an empty one."""
        if self._config is not None:
            return self._config
        from batchctl.config import EMPTY, load_config
        from batchctl.locations import find_config

        path, searched = find_config(self.config_path)
        if path is None:
            if not required:
                return EMPTY
            places = "; ".join(f"{p} ({why})" for p, why in searched)
            raise ConfigError(
                "no config file found",
                hint=f"looked in: {places}. Pass --config, or start from sample-config.toml",
            )
        self._config = load_config(Path(path), check_host=check_host)
        return self._config

    def use_config(self, config: Config) -> None:
        """Serve ``config`` from now on (the demo points its providers at the emulator)."""
        self._config = config

    def store(self, *, create: bool = True) -> Store:
        """The store. A command that only reads (``create=False``) is given an empty one in
        memory when the SQLite database does not exist yet: it shows that nothing has run,
        and never creates a database (at a mistyped ``--db``, say) nor its directories."""
        if self._store is None:
            from batchctl.locations import resolve_db
            from batchctl.store import open_store

            location = resolve_db(self.db)
            if not create and "://" not in location and not Path(location).expanduser().exists():
                location = ":memory:"
            self._store = open_store(location)
        return self._store

    def close(self) -> None:
        if self._store is not None:
            self._store.close()
            self._store = None


current = Session()


def reset(
    *, config_path: str | None, db: str | None, quiet: bool, verbose: bool, no_color: bool
) -> Session:
    global current
    current.close()
    current = Session(config_path, db, quiet, verbose, no_color)
    return current
