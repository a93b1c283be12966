"""Stopping a command's process group that outlived its runner: only ever the group recorded.

Real processes: each test starts ``sleep`` in a session of its own (as a command job's
process is) and asks ``process_groups`` to stop it.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from batchctl import process_groups
from batchctl.owners import hostname
from tests.waiting import scaled, wait_for


@pytest.fixture
def group() -> Iterator[subprocess.Popen[bytes]]:
    proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    yield proc
    proc.kill()
    proc.wait(timeout=scaled(5))


def test_a_group_recorded_on_this_host_is_stopped(group: subprocess.Popen[bytes]) -> None:
    started = process_groups.start_time(group.pid)
    assert started is not None

    done = process_groups.stop_leftover(hostname(), group.pid, started)

    assert done == f"stopped its leftover process group {group.pid} with SIGTERM"
    assert group.wait(timeout=scaled(5)) == -15


def test_a_group_whose_leader_started_at_another_time_is_left_alone(
    group: subprocess.Popen[bytes],
) -> None:
    started = process_groups.start_time(group.pid)
    assert started is not None
    reused = str(int(started) - 1)  # the recorded process, since gone; its id now reused

    assert process_groups.stop_leftover(hostname(), group.pid, reused) is None
    assert group.poll() is None


def test_a_group_on_another_host_is_left_alone(group: subprocess.Popen[bytes]) -> None:
    started = process_groups.start_time(group.pid)
    assert started is not None

    assert process_groups.stop_leftover("another-host", group.pid, started) is None
    assert group.poll() is None


def test_a_group_that_ignores_sigterm_is_killed_after_the_grace(tmp_path: Path) -> None:
    ready = tmp_path / "ready"
    script = f"trap '' TERM; sleep 30 & touch {ready}; wait; wait"
    proc = subprocess.Popen(["sh", "-c", script], start_new_session=True)
    try:
        wait_for(ready.exists, "the shell to start")  # SIGTERM is ignored from here on
        started = process_groups.start_time(proc.pid)
        assert started is not None

        done = process_groups.stop_leftover(hostname(), proc.pid, started, grace=0.5)

        assert done == f"killed its leftover process group {proc.pid} (SIGKILL after 0.5s)"
        assert proc.wait(timeout=scaled(5)) == -9
    finally:
        proc.kill()
        proc.wait(timeout=scaled(5))


def test_a_group_that_has_ended_is_not_signalled() -> None:
    proc = subprocess.Popen(["true"], start_new_session=True)
    started = process_groups.start_time(proc.pid) or "0"
    proc.wait(timeout=scaled(5))

    assert process_groups.stop_leftover(hostname(), proc.pid, started) is None
