"""A crash harness: SIGKILL batchctl at randomised moments, restart it, check every invariant.

The installed ``batchctl`` executable runs against the project's API emulator (one emulator
per scenario, fast settings, some calls slowed down by ``slow`` faults so that the kill can
land inside an upload, a create or a download). Each scenario kills one kind of process at
moments drawn from a seeded ``random.Random`` and recovers the way a user would:

(a) ``submit --wait`` of a multi-part input, killed, then ``wait RUN_ID`` (or ``submit``
    again when the kill came before anything was recorded) — for OpenAI's Files + Batches, and
    for Anthropic's Message Batches (requests inline, no metadata on a batch: a part's batch is
    known by the part marker in the ids its results carry);
(b) ``results -o FILE`` killed mid-way (download, merge or write), then run again;
(c) ``retry --wait`` of a submission with failed requests, killed, then ``wait``;
(d) ``batchctl daemon`` firing an ``openai`` job and a ``command`` job on schedules and
    refreshing their submissions, killed, then ``wait`` for what it left in flight and a new
    daemon.

After every kill point the recovered state is checked: no remote batch created twice for a part
and no file uploaded twice (the emulator's files and batches, and its request log of effective
``POST /v1/files`` / ``POST /v1/batches`` / ``POST /v1/messages/batches``), every request with exactly one outcome, the merged
output of ``results -o`` with one line per request in input order, the database's own
integrity check clean, no run left ``queued``/``running``/``retrying``. The module prints how
many kill points it tried and how many invariants held.

Every test runs on both stores (the ``database`` fixture): a SQLite file, and a PostgreSQL
database on the test server (skipped, saying why, without one; required on CI).

Set ``BATCHCTL_CRASH_SEED`` to replay another sequence of kill moments.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from batchctl.batches.derived_ids import parse_derived
from batchctl.batches.submission import INTENT_SETTLE_S, PART_KEY
from batchctl.emulator import Emulator, EmulatorSettings, Fault
from tests.conftest import Workspace, run_exe
from tests.waiting import scaled, timeout_arg, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("database")]

SEED = int(os.environ.get("BATCHCTL_CRASH_SEED", "20250611"))
SLOW_S = 0.3  # how long a slowed call is held by the emulator: a window to kill inside it
# A dead process's unanswered upload/create is looked for only INTENT_SETTLE_S after it began.
# Once the harness has seen that call land on the emulator (or made sure it never can), it may
# move the intent back by this much so that the recovery does not sit out the settle time.
BACKDATE = timedelta(seconds=INTENT_SETTLE_S + 1)
ACTIVE = ("queued", "running", "retrying")
# A safety net per scenario, generous for a loaded machine; each takes about a minute on an
# idle 2-core one.
TIMEOUT_S = scaled(420)
# Kill points per scenario: each scenario asserts it reached its own count.
KILL_POINTS = {"submit": 18, "results": 12, "retry": 12, "daemon": 12, "anthropic": 8}
# Importing the anthropic SDK costs about 5 s of CPU (2.5x openai's): each Anthropic command
# that talks to the API pays it once, so that scenario gets fewer kill points and more time.
ANTHROPIC_TIMEOUT_S = scaled(600)
assert sum(KILL_POINTS.values()) >= 50  # the issue asks for at least 50 across the phases

CONFIG = """\
[openai]
poll_interval = 0.05
max_retries = 8

[providers.anthropic]
poll_interval = 0.05
max_retries = 8
"""
MESSAGE_BATCHES = "/v1/messages/batches"


# --- the tally that the module prints -------------------------------------------------------


@dataclass
class Scenario:
    name: str
    backend: str
    kill_points: int = 0
    invariants: int = 0
    phases: Counter[str] = field(default_factory=Counter)
    honest_settles: int = 0  # recoveries that sat out INTENT_SETTLE_S for real
    backdated: int = 0
    notes: list[str] = field(default_factory=list)

    def line(self) -> str:
        phases = ", ".join(f"{k} {v}" for k, v in sorted(self.phases.items()))
        return (
            f"crash harness [{self.name}, {self.backend}]: {self.kill_points} kill points, "
            f"{self.invariants} invariants held (killed during: {phases}; "
            f"honest settles {self.honest_settles}, backdated intents {self.backdated})"
        )


@dataclass
class Tally:
    scenarios: dict[tuple[str, str], Scenario] = field(default_factory=dict)

    def scenario(self, name: str, backend: str) -> Scenario:
        return self.scenarios.setdefault((name, backend), Scenario(name, backend))

    def line(self) -> str:
        kills = sum(s.kill_points for s in self.scenarios.values())
        held = sum(s.invariants for s in self.scenarios.values())
        return f"crash harness: {kills} kill points, {held} invariants held"


@pytest.fixture(scope="module")
def tally(request: pytest.FixtureRequest) -> Iterator[Tally]:
    found = Tally()
    yield found
    if not found.scenarios:
        return
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None:
        reporter.write_line(f"\n{found.line()}")
    else:  # pragma: no cover - pytest without its terminal reporter
        print(found.line(), file=sys.stderr)


def show(scenario: Scenario, capsys: pytest.CaptureFixture[str], extra: str = "") -> None:
    """Print the scenario's counts (past pytest's capture) and check that they add up."""
    with capsys.disabled():
        print(f"\n{scenario.line()}{extra}")
    assert scenario.kill_points >= KILL_POINTS[scenario.name]
    assert scenario.invariants >= 5 * scenario.kill_points


class Invariants:
    """Checks that count themselves: every check that holds adds one to the scenario's tally."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario

    def hold(self, name: str, ok: bool, detail: Any = "") -> None:
        assert ok, f"invariant broken: {name}: {detail}"
        self.scenario.invariants += 1


# --- the world: a workspace, an emulator and the installed executable -----------------------


def write_requests(path: Path, count: int, salt: str, *, model: str = "gpt-4o-mini") -> list[str]:
    """A JSONL input of ``count`` chat requests whose content is unique to ``salt``."""
    ids = [f"req-{i:04d}" for i in range(count)]
    with path.open("w") as out:
        for custom_id in ids:
            body = {
                "model": model,
                "messages": [{"role": "user", "content": f"{salt} {custom_id}"}],
            }
            line = {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions"}
            out.write(json.dumps({**line, "body": body}) + "\n")
    return ids


def write_anthropic_requests(path: Path, count: int, salt: str) -> list[str]:
    """A JSONL input of ``count`` Message Batches requests, under ids Anthropic would refuse
    (``/``, ``.``): batchctl sends derived ids and shows only these."""
    ids = [f"doc/{salt.replace(' ', '-')}/req.{i:04d}" for i in range(count)]
    with path.open("w") as out:
        for custom_id in ids:
            params = {
                "model": "claude-haiku-4-5",
                "max_tokens": 32,
                "messages": [{"role": "user", "content": f"{salt} {custom_id}"}],
            }
            out.write(json.dumps({"custom_id": custom_id, "params": params}) + "\n")
    return ids


@dataclass
class World:
    ws: Workspace
    emu: Emulator
    exe: str
    rng: random.Random
    scenario: Scenario
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    api: str = "openai"  # or "anthropic": Message Batches (no uploads, no metadata)
    first_create_seen: float = 0.0  # time.monotonic() when a killed submit's first create was seen
    _markers: dict[str, set[str | None]] = field(default_factory=dict)

    @property
    def check(self) -> Invariants:
        return Invariants(self.scenario)

    def spawn(self, *args: str, log: str = "proc") -> subprocess.Popen[bytes]:
        # Output goes to files: a pipe nobody reads could block the process before the kill.
        out = (self.ws.root / f"{log}-{len(self.procs)}.log").open("wb")
        with out:
            proc = subprocess.Popen(
                [self.exe, *args],
                env=self.ws.env(),
                cwd=self.ws.root,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        self.procs.append(proc)
        return proc

    def run(self, *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
        done = run_exe(self.exe, *args, env=self.ws.env(), timeout=timeout)
        assert "Traceback" not in done.stderr, done.stderr
        return done

    def kill_after(self, proc: subprocess.Popen[bytes], delay: float) -> bool:
        """SIGKILL ``proc`` ``delay`` seconds after it started; False if it had ended by then."""
        deadline = time.monotonic() + delay
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                return False
            time.sleep(min(0.01, max(0.0, deadline - time.monotonic())))
        if proc.poll() is not None:
            return False
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=scaled(10))
        if proc.returncode != -signal.SIGKILL:
            return False  # it exited on its own just before the kill: no kill point
        self.scenario.kill_points += 1
        return True

    def kill_after_first_create(
        self, proc: subprocess.Popen[bytes], after: int | None, delay: float
    ) -> bool:
        """SIGKILL ``proc`` ``delay`` seconds after a run newer than ``after`` recorded its first
        create intent: past start-up and the SDK's import (seconds for anthropic's), so that the
        kill lands among the creates, the polls and the downloads. False if it ended first."""
        deadline = time.monotonic() + scaled(120)
        query = "SELECT 1 FROM parts WHERE run_id > ? AND create_started_at IS NOT NULL LIMIT 1"
        while time.monotonic() < deadline and proc.poll() is None:
            if self.ws.has_tables() and self.ws.sql(query, after or 0):
                break
            time.sleep(0.02)
        self.first_create_seen = time.monotonic()
        return self.kill_after(proc, delay)

    def close(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=scaled(10))

    # --- what the database says ---------------------------------------------------------------
    def parts(self, run_ids: list[int] | None = None) -> list[dict[str, Any]]:
        names = (
            "id",
            "run_id",
            "number",
            "filename",
            "upload_started_at",
            "input_file_id",
            "create_started_at",
            "batch_id",
            "status",
            "downloaded_at",
            "token",
        )
        rows = self.ws.sql(
            "SELECT p.id, p.run_id, p.number, p.filename, p.upload_started_at, p.input_file_id,"
            " p.create_started_at, p.batch_id, p.status, p.downloaded_at, s.token"
            " FROM parts p JOIN submissions s ON s.run_id = p.run_id ORDER BY p.run_id, p.number",
        )
        found = [dict(zip(names, row, strict=True)) for row in rows]
        return found if run_ids is None else [p for p in found if p["run_id"] in run_ids]

    def instance(self) -> str:
        return str(self.ws.sql("SELECT value FROM meta WHERE key = 'instance'")[0][0])

    def unmerged(self) -> list[int]:
        rows = self.ws.sql("SELECT run_id FROM submissions WHERE merged_at IS NULL")
        return [int(r[0]) for r in rows]

    def phase(self, run_id: int | None) -> str:
        """Where a submission was when its process died (for the report)."""
        if run_id is None:
            return "before-record"
        parts = self.parts([run_id])
        merged = self.ws.sql("SELECT merged_at FROM submissions WHERE run_id = ?", run_id)
        if any(p["upload_started_at"] and not p["input_file_id"] for p in parts):
            return "upload"
        if any(p["create_started_at"] and not p["batch_id"] for p in parts):
            return "create"
        if any(not p["batch_id"] for p in parts):
            return "between-calls"
        ended = ("completed", "failed", "expired", "cancelled")
        if any(p["status"] in ended and not p["downloaded_at"] for p in parts):
            return "download"
        if any(p["status"] not in ended for p in parts):
            return "in-flight"
        if merged and merged[0][0] is None:
            return "merge"
        return "after-merge"

    # --- after a kill: let the cut-off call land, then stand in for the settle time ----------
    def land_in_flight(self, *, honest: bool = False) -> int:
        """Wait until each upload/create that a killed process had begun has landed on the
        emulator (or can no longer land), then, unless ``honest``, move its intent back by
        INTENT_SETTLE_S + 1 s so that the recovery looks for it at once instead of waiting.

        A call whose request had left is still handled by the server after the kill (the real
        API does the same): it lands within the emulator's slow-fault delay. A call killed
        before its request left never arrives. Either way, once SLOW_S + 0.5 s have passed
        since the kill, nothing more can land, which is what INTENT_SETTLE_S waits for.
        Returns how many intents were moved back.
        """
        deadline = time.monotonic() + scaled(SLOW_S + 0.5)
        instance = self.instance()
        while True:
            open_calls = self._unanswered()
            if self.api == "anthropic":
                # No metadata to look for, and no ids to read before a batch ends: a part's
                # create has landed when the emulator holds one batch more than are recorded.
                recorded = sum(1 for p in self.parts() if p["batch_id"])
                landed = len(self.emu.message_batches) >= recorded + len(open_calls)
            else:
                files = {f["filename"] for f in self.emu.files.values() if f["purpose"] == "batch"}
                keys = {b["metadata"].get(PART_KEY) for b in self.emu.batches.values()}
                landed = all(
                    (p["filename"] in files)
                    if p["upload_started_at"] and not p["input_file_id"]
                    else (f"{instance}:{p['token']}:{p['number']}" in keys)
                    for p in open_calls
                )
            if landed or time.monotonic() >= deadline:
                break
            time.sleep(0.02)
        if honest or not open_calls:
            return 0
        for p in open_calls:
            column = (
                "upload_started_at"
                if p["upload_started_at"] and not p["input_file_id"]
                else "create_started_at"
            )
            began = p[column]  # ISO text in SQLite, a datetime from PostgreSQL
            if isinstance(began, str):
                moment: Any = (datetime.fromisoformat(began) - BACKDATE).isoformat(
                    timespec="microseconds"
                )
            else:
                moment = began - BACKDATE
            self.ws.sql(f"UPDATE parts SET {column} = ? WHERE id = ?", moment, p["id"])
        self.scenario.backdated += len(open_calls)
        return len(open_calls)

    def _unanswered(self) -> list[dict[str, Any]]:
        return [
            p
            for p in self.parts()
            if (p["upload_started_at"] and not p["input_file_id"])
            or (p["create_started_at"] and not p["batch_id"])
        ]

    # --- the invariants -------------------------------------------------------------------------
    def sent(self) -> int:
        """What the emulator holds of what batchctl sends first: input files, or (Message
        Batches) batches."""
        if self.api == "anthropic":
            return len(self.emu.message_batches)
        return len([f for f in self.emu.files.values() if f["purpose"] == "batch"])

    def markers(self, batch_id: str) -> set[str | None]:
        """The part markers the ids in an ended batch's results carry (read once over HTTP:
        an ended batch's results never change)."""
        if batch_id not in self._markers:
            url = f"{self.emu.url}{MESSAGE_BATCHES}/{batch_id}/results"
            headers = {"x-api-key": "test-key", "anthropic-version": "2023-06-01"}
            request = urllib.request.Request(url, headers=headers)
            with urllib.request.urlopen(request, timeout=scaled(10)) as response:
                lines = [json.loads(x) for x in response.read().splitlines() if x.strip()]
            parsed = (parse_derived(str(line["custom_id"])) for line in lines)
            self._markers[batch_id] = {None if p is None else p[0] for p in parsed}
        return self._markers[batch_id]

    def check_remote_message_batches(self) -> None:
        """Each part created once (its batch's results carry its marker, and no other batch's
        do); nothing created besides."""
        check = self.check
        parts = self.parts()
        batches = self.emu.message_batches
        owners = Counter(m for batch_id in batches for m in self.markers(batch_id))
        twice = {marker: n for marker, n in owners.items() if n > 1}
        check.hold("no remote batch created twice for a part", not twice, twice)
        creates = [r for r in self.emu.requests if (r.method, r.path) == ("POST", MESSAGE_BATCHES)]
        effective_creates = [r for r in creates if r.succeeded]
        check.hold(
            "one effective create per part",
            len(effective_creates) == len(batches) == len(parts)
            and all(
                p["batch_id"] in batches
                and self.markers(p["batch_id"]) == {f"{p['token']}-p{p['number']}"}
                for p in parts
            ),
            (len(effective_creates), len(batches), len(parts)),
        )

    def check_remote(self) -> None:
        """Each part uploaded once and created once; nothing uploaded or created besides."""
        if self.api == "anthropic":
            self.check_remote_message_batches()
            return
        check = self.check
        parts = self.parts()
        instance = self.instance()
        inputs = {i: f for i, f in self.emu.files.items() if f["purpose"] == "batch"}
        by_name = Counter(f["filename"] for f in inputs.values())
        twice = {name: n for name, n in by_name.items() if n > 1}
        check.hold("no file uploaded twice", not twice, twice)
        uploads = [r for r in self.emu.requests if (r.method, r.path) == ("POST", "/v1/files")]
        effective_uploads = [r for r in uploads if r.succeeded]
        check.hold(
            "one effective upload per part",
            len(effective_uploads) == len(inputs) == len(parts)
            and all(
                p["input_file_id"] in inputs
                and inputs[p["input_file_id"]]["filename"] == p["filename"]
                for p in parts
            ),
            (len(effective_uploads), len(inputs), len(parts)),
        )
        batches = self.emu.batches
        by_key = Counter(b["metadata"].get(PART_KEY) for b in batches.values())
        twice = {key: n for key, n in by_key.items() if n > 1}
        check.hold("no remote batch created twice for a part", not twice, twice)
        creates = [r for r in self.emu.requests if (r.method, r.path) == ("POST", "/v1/batches")]
        effective_creates = [r for r in creates if r.succeeded]
        check.hold(
            "one effective create per part",
            len(effective_creates) == len(batches) == len(parts)
            and all(
                p["batch_id"] in batches
                and batches[p["batch_id"]]["metadata"][PART_KEY]
                == f"{instance}:{p['token']}:{p['number']}"
                and batches[p["batch_id"]]["input_file_id"] == p["input_file_id"]
                for p in parts
            ),
            (len(effective_creates), len(batches), len(parts)),
        )

    def check_store(self, *, jobs: tuple[str, ...] | None = None) -> None:
        check = self.check
        problems = self.ws.integrity_problems()
        check.hold("the database's integrity check finds nothing", problems == [], problems)
        pending = self.ws.sql(
            "SELECT r.run_id, r.custom_id FROM requests r JOIN submissions s"
            " ON s.run_id = r.run_id WHERE r.outcome IS NULL LIMIT 5",
        )
        check.hold("every request has exactly one outcome", pending == [], pending)
        marks = ",".join("?" * len(ACTIVE))
        where = f"status IN ({marks})"
        params: list[Any] = list(ACTIVE)
        if jobs is not None:
            where += f" AND job IN ({','.join('?' * len(jobs))})"
            params += list(jobs)
        stuck = self.ws.sql(f"SELECT id, job, status FROM runs WHERE {where}", *params)
        check.hold("no run stuck queued/running/retrying after recovery", stuck == [], stuck)

    def check_results(self, run_id: int, ids: list[str], *, codes: tuple[int, ...] = (0,)) -> None:
        """``results -o`` writes one line per request, in input order."""
        target = self.ws.root / "checked" / f"results-{run_id}.jsonl"
        done = self.run("results", str(run_id), "-o", str(target), "--json")
        self.check.hold(
            "results -o exits as the outcomes say", done.returncode in codes, done.stderr
        )
        lines = [json.loads(line) for line in target.read_text().splitlines()]
        self.check.hold(
            "results -o has one line per request, in input order",
            [line["custom_id"] for line in lines] == ids,
            (len(lines), len(ids)),
        )


@pytest.fixture
def world(
    ws: Workspace,
    batchctl_exe: str,
    monkeypatch: pytest.MonkeyPatch,
    tally: Tally,
    request: pytest.FixtureRequest,
) -> Iterator[Callable[..., World]]:
    made: list[World] = []

    def make(
        name: str, settings: EmulatorSettings, *, config: str = CONFIG, api: str = "openai"
    ) -> World:
        emu = Emulator(settings)
        quiet_resets(emu)
        monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", emu.url)
        monkeypatch.setenv("ANTHROPIC_API_KEY", "test-key")
        ws.write_config(config)
        index = list(KILL_POINTS).index(name)
        made.append(
            World(
                ws,
                emu,
                batchctl_exe,
                random.Random(SEED + index),
                tally.scenario(name, ws.backend),
                api=api,
            )
        )
        return made[-1]

    yield make
    for each in made:
        each.close()
        each.emu.stop()


def quiet_resets(emu: Emulator) -> None:
    """Killing a client mid-request makes the emulator's socketserver print a traceback for
    the reset connection; that is the point of this harness, so those are not printed."""
    server = getattr(emu, "_server", None)
    if server is None:
        return
    report = server.handle_error

    def handle_error(request: Any, client_address: Any) -> None:
        if not isinstance(sys.exc_info()[1], ConnectionError):
            report(request, client_address)

    server.handle_error = handle_error


def slow_posts(rate: float) -> list[Fault]:
    return [
        Fault(kind="slow", method="POST", path="/v1/files", delay=SLOW_S, rate=rate),
        Fault(kind="slow", method="POST", path="/v1/batches", delay=SLOW_S, rate=rate),
    ]


SLOW_DOWNLOADS = Fault(kind="slow", method="GET", path="/v1/files/*/content", delay=0.15, rate=0.5)
SLOW_MESSAGE_BATCHES = [
    Fault(kind="slow", method="POST", path=MESSAGE_BATCHES, delay=SLOW_S, rate=0.3),
    Fault(kind="slow", method="GET", path=f"{MESSAGE_BATCHES}/*/results", delay=0.15, rate=0.5),
]


# --- (a) submit --wait ----------------------------------------------------------------------


@pytest.mark.timeout(TIMEOUT_S)
def test_submit_wait_killed_at_random_points_then_wait_recovers(
    world: Callable[..., World], capsys: pytest.CaptureFixture[str]
) -> None:
    w = world("submit", EmulatorSettings(fault_seed=SEED))
    kill_submits(w, capsys, write_requests, [*slow_posts(0.3), SLOW_DOWNLOADS], [])


@pytest.mark.timeout(ANTHROPIC_TIMEOUT_S)
def test_anthropic_submit_wait_killed_at_random_points_then_wait_recovers(
    world: Callable[..., World], capsys: pytest.CaptureFixture[str]
) -> None:
    # Six parts of 20 requests each: every part has the same request count, so a lost create is
    # told from its siblings' batches only by what the store records and the ids in results.
    w = world("anthropic", EmulatorSettings(fault_seed=SEED), api="anthropic")
    # Most kills wait for the first create: start-up with the SDK's import is most of a run.
    options = ["--provider", "anthropic"]
    kill_submits(w, capsys, write_anthropic_requests, SLOW_MESSAGE_BATCHES, options, late=0.75)


def kill_submits(
    w: World,
    capsys: pytest.CaptureFixture[str],
    write: Callable[[Path, int, str], list[str]],
    faults: list[Fault],
    options: list[str],
    *,
    late: float = 0.0,
) -> None:
    """Kill ``submit --wait`` at random moments until the scenario has its kill points; after
    each, recover as a user would and check every invariant. A fraction ``late`` of the kills
    come after the first create intent (``World.kill_after_first_create``) rather than at a
    moment of the whole run."""
    check = w.check
    name_ = w.scenario.name
    honest_done = False
    attempts = 0
    # Kill moments are drawn within the time an uninterrupted submit takes, learnt from the last
    # one that ran to its end: on a loaded machine start-up alone can take seconds, and kills
    # drawn from a fixed span would all land before the first upload (or, with a scaled span on
    # a quick machine, after the end).
    span = scaled(3.0)
    # Likewise the kills after the first create intent: drawn within the time a run went on
    # after it, learnt from those that ended first (a few seconds, or under one when quiet).
    late_span = scaled(3.0)
    while w.scenario.kill_points < KILL_POINTS[name_]:
        attempts += 1
        assert attempts <= 3 * KILL_POINTS[name_], "the kills keep missing the process"
        name = f"in-{attempts}.jsonl"
        ids = write(w.ws.root / name, 120, f"submit {attempts}")  # 6 parts of 20
        sent_before = w.sent()
        newest = w.ws.sql("SELECT max(id) FROM runs") if w.ws.has_tables() else [(None,)]
        # Slowed calls while the process under test runs, so that kills land inside them;
        # none while it recovers.
        w.emu.set_faults(faults)
        started = time.monotonic()
        submit = ["submit", name, *options, "--max-requests", "20", "--wait", "--json"]
        proc = w.spawn(*submit, log="submit")
        if late and w.rng.random() < late:  # no draw otherwise: the OpenAI seed replays
            delay = w.rng.uniform(0.0, late_span)
            killed = w.kill_after_first_create(proc, newest[0][0], delay)
            if not killed:
                late_span = max(0.1, min(late_span, time.monotonic() - w.first_create_seen))
        else:
            killed = w.kill_after(proc, w.rng.uniform(0.0, span))
        if not killed:  # it ran to its end within this: later kills are drawn within it
            span = time.monotonic() - started
        w.emu.clear_faults()
        listed = json.loads(w.run("status", "--json", "--no-refresh", "--limit", "1").stdout)
        run_id = listed[0]["id"] if listed and listed[0]["id"] != newest[0][0] else None
        if not killed:
            assert proc.returncode == 0, (w.ws.root / f"submit-{len(w.procs) - 1}.log").read_text()
            assert run_id is not None
        else:
            w.scenario.phases[w.phase(run_id)] += 1
        if run_id is None:
            # Killed before the submission was recorded: nothing may have been uploaded for it,
            # and submitting again is the recovery.
            check.hold("nothing sent for an unrecorded submit", w.sent() == sent_before)
            started = time.monotonic()
            done = w.run(*submit)
            span = max(span, time.monotonic() - started)
            assert done.returncode == 0, done.stderr
            run_id = json.loads(done.stdout)["id"]
        elif killed:
            # The first kill that leaves an unanswered call is recovered honestly: `wait` sits
            # out INTENT_SETTLE_S itself. The others stand in for that wait (see land_in_flight).
            honest = not honest_done and bool(w._unanswered())
            w.land_in_flight(honest=honest)
            began = time.monotonic()
            done = w.run("wait", str(run_id), "--json", "--timeout", timeout_arg(60))
            assert done.returncode == 0, done.stderr
            assert json.loads(done.stdout)["status"] == "completed"
            if honest:
                honest_done = True
                w.scenario.honest_settles += 1
                took = time.monotonic() - began
                check.hold(
                    "an unanswered call is looked for after the settle time", took < scaled(30)
                )
        assert run_id is not None
        w.check_remote()
        w.check_store()
        w.check_results(run_id, ids)
    assert len(w.scenario.phases) >= 3, w.scenario.phases  # the kills fell in several phases
    show(w.scenario, capsys)


# --- (b) results -o -------------------------------------------------------------------------


def whole_or_absent(path: Path, ids: list[str]) -> bool:
    """The file is absent or holds exactly one complete JSON line per request, in order."""
    if not path.exists():
        return True
    text = path.read_text()
    if not text.endswith("\n"):
        return False
    try:
        lines = [json.loads(line) for line in text.splitlines()]
    except json.JSONDecodeError:
        return False
    return [line["custom_id"] for line in lines] == ids


@pytest.mark.timeout(TIMEOUT_S)
def test_results_killed_mid_way_leaves_a_whole_file_or_none(
    world: Callable[..., World], capsys: pytest.CaptureFixture[str]
) -> None:
    # No failed requests here: a part with failed requests also has an error file, and a kill
    # between recording its output file and its error file loses outcomes for good (a bug,
    # shown by test_results_killed_between_a_parts_output_and_error_files_loses_no_outcome).
    w = world("results", EmulatorSettings(fault_seed=SEED + 1))
    check = w.check
    rounds = 3
    per_round = KILL_POINTS["results"] // rounds
    half_written_parts = 0
    for number in range(1, rounds + 1):
        name = f"big-{number}.jsonl"
        ids = write_requests(w.ws.root / name, 2400, salt=f"results {number}")
        done = w.run("submit", name, "--max-requests", "400", "--json")
        assert done.returncode == 0, done.stderr
        run_id = json.loads(done.stdout)["id"]
        wait_for(
            lambda: all(b["status"] == "completed" for b in w.emu.batches.values()),
            "the emulator to finish the batches",
            timeout=30,
        )
        # The first `results` of a round also refreshes and downloads the six parts (slowed)
        # and records every outcome; later ones only write the merged file again. The kill
        # moments of those are drawn within the time an uninterrupted run took.
        w.emu.set_faults([Fault(kind="slow", path="/v1/files/*/content", delay=0.15)])
        output = w.ws.root / f"out-{number}.jsonl"
        errors = w.ws.root / f"errors-{number}.jsonl"
        took: float | None = None
        kills = tries = 0
        while kills < per_round:
            tries += 1
            assert tries <= 4 * per_round, "the kills keep missing the process"
            had_file = output.exists()
            first = took is None
            delay = w.rng.uniform(0.4, 2.4) if took is None else w.rng.uniform(0.4, 1.0) * took
            proc = w.spawn(
                "results", str(run_id), "-o", str(output), "--errors", str(errors), log="results"
            )
            killed = w.kill_after(proc, delay)
            if killed:
                kills += 1
                w.scenario.phases[w.phase(run_id) if first else "rewrite"] += 1
                check.hold(
                    "a killed results leaves its -o file whole or absent",
                    whole_or_absent(output, ids),
                )
                if had_file:  # an earlier whole file is never lost nor half-replaced
                    check.hold("a killed results keeps the earlier file", output.exists())
                if Path(str(output) + ".part").exists():
                    half_written_parts += 1  # the kill fell while it wrote the temporary file
            else:
                assert proc.returncode == 0
            w.emu.clear_faults()
            began = time.monotonic()
            again = w.run("results", str(run_id), "-o", str(output), "--errors", str(errors))
            took = time.monotonic() - began
            check.hold("results again exits 0", again.returncode == 0, again.stderr)
            check.hold("re-run results -o is whole", whole_or_absent(output, ids))
            leftovers = list(w.ws.root.glob("*.part"))
            check.hold("results leaves no .part behind", not leftovers, leftovers)
            check.hold("--errors is written (empty: nothing failed)", errors.read_text() == "")
        w.check_remote()
        w.check_store()
        w.check_results(run_id, ids)
    w.scenario.notes.append(f"kills that left a partial .part file: {half_written_parts}")
    show(w.scenario, capsys, f"; partial .part files seen: {half_written_parts}")


# --- (c) retry --wait -----------------------------------------------------------------------


@pytest.mark.timeout(TIMEOUT_S)
def test_retry_wait_killed_at_random_points_then_wait_recovers(
    world: Callable[..., World], cli: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    w = world("retry", EmulatorSettings(fault_seed=SEED + 2))
    check = w.check
    attempts = 0
    while w.scenario.kill_points < KILL_POINTS["retry"]:
        attempts += 1
        assert attempts <= 2 * KILL_POINTS["retry"], "the kills keep missing the process"
        # Preparation (not under test, in-process): a submission with failed requests.
        name = f"retry-{attempts}.jsonl"
        ids = write_requests(w.ws.root / name, 30, salt=f"retry {attempts}")
        w.emu.update_settings(request_failure_rate=0.3, request_failure_status=500)
        prepared = cli("submit", name, "--max-requests", "10", "--wait", "--json")
        assert prepared.exit_code == 3, prepared.stderr
        run_id = prepared.json()["id"]
        w.emu.update_settings(request_failure_rate=0.0)
        parts_before = len(w.parts([run_id]))
        w.emu.set_faults(slow_posts(0.5))
        proc = w.spawn("retry", str(run_id), "--wait", "--json", log="retry")
        killed = w.kill_after(proc, w.rng.uniform(0.0, 2.0))
        w.emu.clear_faults()
        if not killed:
            assert proc.returncode == 0
        else:
            resent = len(w.parts([run_id])) > parts_before
            status = w.ws.sql("SELECT status FROM runs WHERE id = ?", run_id)[0][0]
            reopened = not resent and status == "running"
            phase = "reopened" if reopened else "before-resend"
            w.scenario.phases[w.phase(run_id) if resent else phase] += 1
            if reopened:
                # Killed between reopening the submission and recording its re-sent part (two
                # transactions): `wait` settles it again, with its failures standing.
                waited = w.run("wait", str(run_id), "--json", "--timeout", timeout_arg(60))
                check.hold("wait settles a reopened retry again", waited.returncode == 3)
                status = w.ws.sql("SELECT status FROM runs WHERE id = ?", run_id)[0][0]
            if not resent:
                check.hold(
                    "a retry killed before it re-sent leaves the run as it was",
                    status == "partial",
                    status,
                )
                done = w.run("retry", str(run_id), "--wait", "--json")
            else:
                w.land_in_flight()
                done = w.run("wait", str(run_id), "--json", "--timeout", timeout_arg(60))
            assert done.returncode == 0, done.stdout + done.stderr
        final = w.ws.sql("SELECT status FROM runs WHERE id = ?", run_id)[0][0]
        check.hold("the retried run completed", final == "completed", final)
        w.check_remote()
        w.check_store()
        w.check_results(run_id, ids)
    show(w.scenario, capsys)


# --- (d) the daemon -------------------------------------------------------------------------

GENERATOR = """\
import json, sys, uuid
salt = uuid.uuid4().hex  # unique content: each tick submits something new
for i in range(12):
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"{salt} {i}"}]}
    line = {"custom_id": f"req-{i:04d}", "method": "POST", "url": "/v1/chat/completions"}
    print(json.dumps({**line, "body": body}))
"""


def daemon_config() -> str:
    # poll_interval = "1h": each daemon refreshes the submissions in flight once, when it
    # starts (which is where it picks up what a killed daemon left), and not again while it
    # lives. A refresh pass while the daemon's own worker is still submitting drives the same
    # submission from two threads of one process, whose lease does not tell them apart: parts
    # get uploaded twice. That bug is shown by test_concurrency.py::
    # test_the_daemons_refresh_never_drives_a_submission_its_worker_is_sending (xfail); this
    # harness keeps clear of it so that it can look at what happens around kills.
    return f"""\
[openai]
poll_interval = 0.05
max_retries = 8

[batches]
max_requests = 4

[daemon]
lease = "3s"
grace = "1s"
poll_interval = "1h"

[jobs.feed]
kind = "openai"
input = {{ command = "{sys.executable} gen.py" }}
schedule = "* * * * * */2"
timezone = "UTC"

[jobs.tick]
kind = "command"
command = "true"
schedule = "* * * * * */1"
timezone = "UTC"
"""


@pytest.mark.timeout(TIMEOUT_S)
def test_daemon_killed_at_random_points_then_restarted(
    world: Callable[..., World], capsys: pytest.CaptureFixture[str]
) -> None:
    w = world("daemon", EmulatorSettings(fault_seed=SEED + 3), config=daemon_config())
    (w.ws.root / "gen.py").write_text(GENERATOR)
    ids = [f"req-{i:04d}" for i in range(12)]
    checked: set[int] = set()

    def submissions() -> set[int]:
        return {int(row[0]) for row in w.ws.sql("SELECT run_id FROM submissions")}

    attempts = 0
    while w.scenario.kill_points < KILL_POINTS["daemon"]:
        attempts += 1
        assert attempts <= 2 * KILL_POINTS["daemon"]
        w.emu.set_faults([*slow_posts(0.5), SLOW_DOWNLOADS])
        daemon = w.spawn("daemon", log="daemon")
        unmerged_before = set(w.unmerged()) if w.ws.has_tables() else set()
        if not w.kill_after(daemon, w.rng.uniform(0.5, 3.5)):
            pytest.fail(f"the daemon exited with {daemon.returncode}")
        w.emu.clear_faults()
        if not w.ws.has_tables():  # killed before it created its tables: nothing to recover
            continue
        left = [r for r in w.unmerged() if r not in unmerged_before] or w.unmerged()
        w.scenario.phases[w.phase(left[-1]) if left else "no-submission-in-flight"] += 1
        # Recovery of what it left in flight: `wait` for each unmerged submission.
        w.land_in_flight()
        for run_id in w.unmerged():
            done = w.run("wait", str(run_id), "--json", "--timeout", timeout_arg(60))
            assert done.returncode == 0, done.stdout + done.stderr
        w.check_remote()
        w.check_store(jobs=("feed",))  # the command job's runs are checked at the end
        for run_id in submissions() - checked:  # the merged output of each new submission
            w.check_results(run_id, ids)
            checked.add(run_id)
    # A last daemon finds the runs the killed ones left `running` and records them abandoned;
    # then it is stopped cleanly.
    left_active = w.ws.sql(f"SELECT id FROM runs WHERE status IN {ACTIVE}")
    daemon = w.spawn("daemon", log="daemon")
    # Its SIGTERM handler is in place once it has registered: signalled before that (when the
    # killed daemons left no run active, nothing below waits), it would die of the signal.
    wait_for(
        lambda: (daemon.pid,) in w.ws.sql("SELECT pid FROM daemons WHERE stopped_at IS NULL"),
        "the last daemon to start",
        timeout=20,
    )
    wait_for(
        lambda: (
            not [
                row
                for row in w.ws.sql(f"SELECT id FROM runs WHERE status IN {ACTIVE}")
                if row in left_active
            ]
        ),
        "the runs the killed daemons left to be abandoned",
        timeout=20,
    )
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(timeout=scaled(15)) == 0
    for run_id in w.unmerged():
        done = w.run("wait", str(run_id), "--json", "--timeout", timeout_arg(60))
        assert done.returncode == 0, done.stdout + done.stderr
    w.check_remote()
    w.check_store()
    for run_id in submissions() - checked:
        w.check_results(run_id, ids)
    lost = w.ws.sql(
        "SELECT t.job, t.scheduled_for FROM ticks t WHERE t.status = 'fired' AND t.run_id IS NULL"
        " AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.job = t.job AND r.scheduled_for ="
        " t.scheduled_for)",
    )
    submitted = w.ws.sql("SELECT count(*) FROM submissions")[0][0]
    abandoned = w.ws.sql("SELECT count(*) FROM runs WHERE status = 'abandoned'")[0][0]
    assert submitted >= 3, "the daemon hardly submitted anything"
    extra = f"; {submitted} submissions, {abandoned} runs abandoned,"
    show(w.scenario, capsys, extra + f" {len(lost)} fired ticks without a run")


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid``."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


STORE_CLASSES = {
    "sqlite": ("batchctl.store.sqlite", "SQLiteStore"),
    "postgres": ("batchctl.store.postgres", "PostgresStore"),
}


def patched(script: str, ws: Workspace) -> str:
    """The script, patching the store class of the workspace's back end."""
    module, name = STORE_CLASSES[ws.backend]
    return script.format(store_module=module, store_class=name)


# --- a kill point the random harness rarely hits: between reopening and recording a retry ----

# Runs batchctl's own CLI in a process that SIGKILLs itself at one chosen line: right after
# `retry` has reopened the submission, before it records the re-sent requests' new part(s)
# (two separate transactions in Batches.retry).
KILL_BEFORE_RESEND = """\
import os, signal, sys
from {store_module} import {store_class} as Store
def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)
Store.record_resend_part = die
from batchctl.cli import main
sys.argv = ["batchctl", *sys.argv[1:]]
main()
"""


def test_retry_killed_between_reopening_and_recording_its_parts_is_recovered(
    ws: Workspace, batchctl_exe: str, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Failures with a 500: a retry sends every one of them again.
    failing = EmulatorSettings(request_failure_rate=0.3, request_failure_status=500)
    with Emulator(failing) as emu:
        monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        ws.write_config(CONFIG)
        ids = write_requests(ws.root / "in.jsonl", 30, salt="reopen")
        submitted = cli("submit", "in.jsonl", "--max-requests", "10", "--wait", "--json")
        assert submitted.exit_code == 3, submitted.stderr
        run_id = submitted.json()["id"]
        emu.update_settings(request_failure_rate=0.0)

        killed = subprocess.run(
            [sys.executable, "-c", patched(KILL_BEFORE_RESEND, ws), "retry", str(run_id), "--wait"],
            env=ws.env(),
            capture_output=True,
            timeout=scaled(60),
        )
        assert killed.returncode == -signal.SIGKILL
        [(parts,)] = ws.sql("SELECT count(*) FROM parts WHERE run_id = ?", run_id)
        assert parts == 3  # reopened, but no re-send part recorded before the kill

        # wait settles the reopened submission again (nothing was re-sent: the failures stand)
        waited = run_exe(
            batchctl_exe, "wait", str(run_id), "--json", "--timeout", timeout_arg(30), env=ws.env()
        )
        pending = ws.sql("SELECT count(*) FROM requests WHERE outcome IS NULL")
        stuck = ws.sql("SELECT number, status FROM parts WHERE status = 'planned'")
        assert (waited.returncode, pending, stuck) == (3, [(0,)], []), waited.stderr
        # and the retry can simply be run again
        again = run_exe(batchctl_exe, "retry", str(run_id), "--wait", "--json", env=ws.env())
        assert again.returncode == 0, again.stderr
        assert json.loads(again.stdout)["requests"] == {"succeeded": len(ids)}


# Runs batchctl's CLI in a process that SIGKILLs itself when it goes to record the second
# result file of a download (a part with failed requests has an output and an error file).
KILL_BEFORE_SECOND_RECORD = """\
import os, signal, sys
from {store_module} import {store_class} as Store
record = Store.record_results
calls = []
def record_then_die(self, *args, **kwargs):
    calls.append(1)
    if len(calls) == 2:
        os.kill(os.getpid(), signal.SIGKILL)
    return record(self, *args, **kwargs)
Store.record_results = record_then_die
from batchctl.cli import main
sys.argv = ["batchctl", *sys.argv[1:]]
main()
"""


def test_results_killed_between_a_parts_output_and_error_files_loses_no_outcome(
    ws: Workspace, batchctl_exe: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Emulator(EmulatorSettings(request_failure_rate=0.3)) as emu:
        monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        ws.write_config(CONFIG)
        ids = write_requests(ws.root / "in.jsonl", 20, salt="two files")
        done = run_exe(batchctl_exe, "submit", "in.jsonl", "--json", env=ws.env())
        assert done.returncode == 0, done.stderr
        run_id = json.loads(done.stdout)["id"]
        wait_for(
            lambda: [b["status"] for b in emu.batches.values()] == ["completed"],
            "the emulator to finish the batch",
            timeout=20,
        )

        killed = subprocess.run(
            [sys.executable, "-c", patched(KILL_BEFORE_SECOND_RECORD, ws), "results", str(run_id)],
            env=ws.env(),
            capture_output=True,
            timeout=scaled(60),
        )
        assert killed.returncode == -signal.SIGKILL, killed.stderr

        again = run_exe(batchctl_exe, "results", str(run_id), "-o", "out.jsonl", env=ws.env())
        assert again.returncode == 3, again.stderr  # some requests failed
        pending = ws.sql("SELECT custom_id FROM requests WHERE outcome IS NULL")
        lines = [json.loads(x) for x in (ws.root / "out.jsonl").read_text().splitlines()]
        assert [line["custom_id"] for line in lines] == ids
        assert pending == []


@pytest.mark.timeout(scaled(90))
def test_a_tick_claimed_by_a_killed_daemon_is_not_silently_lost(
    ws: Workspace, batchctl_exe: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    with Emulator(EmulatorSettings()) as emu:
        monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        write_requests(ws.root / "in.jsonl", 4, salt="claimed")
        due = datetime.now(UTC) + timedelta(seconds=scaled(8))
        # One tick, a few seconds from now (after the daemon first sees the job, however slowly
        # it starts); its input takes 3 s to produce, the window in which the daemon has claimed
        # the tick but not yet recorded a run.
        ws.write_config(
            CONFIG + '\n[daemon]\nlease = "3s"\ngrace = "1s"\npoll_interval = "0.2s"\n\n'
            '[jobs.feed]\nkind = "openai"\ninput = { command = "sleep 3; cat in.jsonl" }\n'
            f'schedule = "{due.minute} {due.hour} * * * {due.second}"\ntimezone = "UTC"\n'
        )
        logs = ws.root / "daemon.log"
        procs: list[subprocess.Popen[bytes]] = []

        def start() -> subprocess.Popen[bytes]:
            with logs.open("ab") as err:
                procs.append(
                    subprocess.Popen(
                        [batchctl_exe, "daemon"], env=ws.env(), cwd=ws.root, stderr=err
                    )
                )
            return procs[-1]

        first = start()
        try:
            wait_for(  # it has claimed the tick
                lambda: "firing feed" in logs.read_text(), lambda: logs.read_text(), timeout=30
            )
            wait_for(lambda: children(first.pid), "the input command to run")
            first.kill()
            first.wait(timeout=scaled(10))
            assert ws.sql("SELECT count(*) FROM runs") == [(0,)]
            second = start()
            # Past the dead daemon's 3 s lease, and the input command's 3 s: the tick has run,
            # or is closed saying why not.
            wait_for(
                lambda: ws.sql(
                    "SELECT 1 FROM ticks WHERE run_id IS NOT NULL OR status IN ('missed', 'skipped')"
                ),
                lambda: f"the claimed tick to be fired again or closed\n{logs.read_text()}",
                timeout=30,
            )
            second.send_signal(signal.SIGTERM)
            assert second.wait(timeout=scaled(30)) == 0, logs.read_text()
        finally:
            for proc in procs:
                if proc.poll() is None:
                    proc.kill()
        [(status, run_id, reason)] = ws.sql("SELECT status, run_id, reason FROM ticks")
        ran = ws.sql("SELECT count(*) FROM runs")
        assert run_id is not None or (status in ("missed", "skipped") and reason), (
            status,
            run_id,
            reason,
            ran,
        )
