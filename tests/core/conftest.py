"""Fixtures of the fast layer: the core in process, on a real SQLite store, against the emulator's
state machine (``emulated.EmulatedProvider``) and one fake clock that only the test moves.

Nothing here starts a process, opens a socket or sleeps: a test of this layer takes milliseconds.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from batchctl.batches.pricing import Price
from batchctl.batches.submission import Batches
from batchctl.config import BatchSettings, Config
from batchctl.providers.profiles import ProviderSettings
from batchctl.store import open_store
from batchctl.store.base import Store
from tests.core.emulated import EmulatedProvider, FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def provider(clock: FakeClock) -> Iterator[EmulatedProvider]:
    emulated = EmulatedProvider(clock)
    yield emulated
    emulated.discard()


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    opened = open_store(str(tmp_path / "batchctl.db"))
    yield opened
    opened.close()


@pytest.fixture
def config(tmp_path: Path) -> Config:
    """Parts of at most 2 requests (so that 5 requests make 3 parts), gpt-4o-mini priced."""
    return Config(
        path=tmp_path / "batchctl.toml",
        providers={"openai": ProviderSettings(poll_interval=5.0)},
        batches=BatchSettings(max_requests=2),
        prices={"gpt-4o-mini": Price(0.15, 0.60)},
    )


@pytest.fixture
def batches(
    store: Store, config: Config, provider: EmulatedProvider, clock: FakeClock
) -> Iterator[Batches]:
    """Submissions driven in process: waits advance the fake clock instead of sleeping."""
    driver = Batches(store, config, provider=provider, clock=clock, sleep=clock.sleep)
    yield driver
    driver.close()
