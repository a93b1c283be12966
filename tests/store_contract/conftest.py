"""The store contract: one suite that every back end passes, through the ``Store`` protocol only.

The ``store`` fixture is parametrized over ``sqlite`` (a file in a temporary directory) and
``postgres``: a database created for each test module on the test server (see
``tests/databases.py``; skipped, saying why, without one), emptied before each test and dropped
at the end.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from batchctl.store import open_store
from batchctl.store.base import Store
from tests.databases import BACKENDS, PgServer, require_pg
from tests.store_contract.support import TABLES, Backend


@pytest.fixture(scope="module")
def pg_module_db(pg_server: PgServer | str) -> Iterator[str | None]:
    """One database per test module (None when there is no server)."""
    if isinstance(pg_server, str):
        yield None
        return
    url = pg_server.create()
    yield url
    pg_server.drop(url)


@pytest.fixture(params=BACKENDS)
def backend(
    request: pytest.FixtureRequest, tmp_path: Path, pg_server: PgServer | str
) -> Iterator[Backend]:
    if request.param == "sqlite":
        found = Backend("sqlite", str(tmp_path / "contract.db"))
    else:
        require_pg(pg_server)
        url = request.getfixturevalue("pg_module_db")
        assert url is not None
        found = Backend("postgres", url)
        open_store(url).close()  # created and migrated on first use
        found.sql("; ".join(f"DELETE FROM {table}" for table in TABLES))
    yield found
    found.close()


@pytest.fixture
def store(backend: Backend) -> Store:
    return backend.open()


@pytest.fixture
def fresh_location(
    backend: Backend, tmp_path: Path, pg_server: PgServer | str
) -> Iterator[Callable[[], str]]:
    """Make locations of new, empty databases of the back end under test."""
    made: list[str] = []

    def make() -> str:
        if backend.name == "sqlite":
            location = str(tmp_path / f"fresh-{len(made)}.db")
        else:
            server = require_pg(pg_server)
            location = server.create()
        made.append(location)
        return location

    yield make
    if backend.name == "postgres":
        server = require_pg(pg_server)
        for location in made:
            server.drop(location)
