"""The daemon under load: refreshing many batches in flight, memory over many ticks, many runs.

* ``daemon: refresh 1,000 in-flight parts``: 100 submissions of 10 parts each (``Batches.submit``
  in-process with ``max_requests = 1``, so each request is a part of its own) against the
  emulator, started as a **subprocess** with ``--manual-clock`` so that every batch stays
  ``validating`` (in flight) and the emulator's CPU is not this process's. Then one daemon pass
  (``Daemon.pass_once()``, ``once=True``, its refresh forced due) refreshes every part: the
  daemon's ``_refresh_batches`` -> ``batches.refresh.refresh``, which reads the list pages
  (``GET /v1/batches?limit=100``; how many, from the emulator's request log). Figure: ms per
  pass (median of several passes). Baseline: the same list pages with the raw ``openai`` SDK
  (``client.batches.list``), interleaved with the passes; the 1,000 sequential
  ``client.batches.retrieve(id)`` calls the pass replaces are timed too. ``--quick``: 20 x 10
  parts. Also reported: this process's CPU time per pass (``time.process_time`` deltas, every
  thread) over the raw SDK pages' CPU (target ratio <= 1.2), over the same requests read with
  ``with_raw_response`` + ``json.loads`` (the floor), and over the raw GETs' CPU; the emulator's
  CPU per pass (``/proc/PID/stat``), the process's RSS, and the most refresh threads alive at
  once, sampled in an extra, untimed pass (they must not exceed ``batches.refresh.MAX_WORKERS``;
  a row turns to ``error`` if they do).
* ``daemon: RSS over 1,000 ticks``: a daemon (``once=True``, so no lease to renew) driven by a
  pass loop with a fake clock moving 1 s per pass, one job ``* * * * * */1`` (every second) of
  the no-op python processor: each pass fires one tick on the daemon's pool and the loop waits
  for that run. After 50 warm-up ticks (20 with ``--quick``), ``gc.collect()`` and ``VmRSS``
  (``/proc/self/status``), then 1,000 ticks (200 with ``--quick``), then the same readings.
  Target: growth < 5 MB. Why 5 MB: the figure is RSS, not Python objects, so it includes
  SQLite's page cache of the daemon's connection (up to 2 MB with the default
  ``cache_size``, filling as the database grows by 1,000 runs) and allocator noise; 5 MB is
  above both and still catches a leak of ~5 KB per tick (an attempt's log, a connection, a
  thread's stack). The growth in live Python objects (``gc.get_objects()``) is in the note:
  a leak of one object per tick shows there long before it shows in RSS.
* ``daemon: 10,000 no-op runs in one go``: 10,000 ticks already due when the daemon starts (a
  frozen clock; the job's cursor set 10,000 s back; ``catchup = "all"``,
  ``max_catchup = 10000``; ``concurrency = "allow"`` so the pool's workers do not lock each
  other out), ``Daemon.run()`` on a thread until the database holds 10,000 completed runs
  (polled every 50 ms through a separate connection). Figure: runs per second, start of
  ``run()`` to the last completed run, planning and inserting the ticks included. Baseline:
  ``Engine.run`` called in a loop on one thread (as in ``engine_runs.py``), the same job, on a
  fresh database: 2,000 runs (a fraction, for the rate; 1,000 with ``--quick``, where the daemon
  does 1,000 runs too). Target ratio <= 1.5: a pool of ``max_workers`` (4) threads should cost
  at most half again a single thread's engine loop per run. The note says whether every run was
  recorded (completed runs, fired ticks, pending ticks), how many daemon passes it took, and
  the daemon's CPU per run over the loop's (the figure to compare on a busy machine).

Logging from ``batchctl`` is muted while these run (the daemon logs each run at INFO and would
print warnings through Python's last-resort handler); errors it logs are counted in the notes.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import gc
import json
import logging
import os
import resource
import selectors
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from bench.common import NOOP_MODULE, Row, Target, Workspace, failed_row, median, workspace

if TYPE_CHECKING:
    from openai import OpenAI

    from batchctl.config import Config
    from batchctl.daemon import Daemon

FULL_SUBMISSIONS = 100
QUICK_SUBMISSIONS = 20
PARTS_PER_SUBMISSION = 10
FULL_TICKS = 1_000
QUICK_TICKS = 200
FULL_RUNS = 10_000
QUICK_RUNS = 1_000
FULL_ENGINE_RUNS = 2_000
QUICK_ENGINE_RUNS = 1_000
KEY_ENV = "BATCHCTL_BENCH_OPENAI_KEY"

REFRESH_TARGET = Target("ratio_max", 1.2)  # CPU of a pass over the raw calls it makes
RSS_GROWTH_TARGET = Target("max", 5.0)
RUNS_TARGET = Target("ratio_max", 1.5)

_EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


def measures(quick: bool) -> list[Row]:
    rows: list[Row] = []
    with workspace("daemon") as ws, _quiet_batchctl() as logged, _importable(ws.root):
        submissions = QUICK_SUBMISSIONS if quick else FULL_SUBMISSIONS
        parts = submissions * PARTS_PER_SUBMISSION
        rows.extend(
            _guard(
                f"daemon: refresh {parts:,} in-flight parts",
                lambda: _refresh_rows(ws, submissions, 3, logged),
            )
        )
        ticks = QUICK_TICKS if quick else FULL_TICKS
        rows.extend(
            _guard(
                f"daemon: RSS over {ticks:,} ticks",
                lambda: _rss_rows(ws, ticks, 20 if quick else 50, logged),
            )
        )
        runs = QUICK_RUNS if quick else FULL_RUNS
        rows.extend(
            _guard(
                f"daemon: {runs:,} no-op runs in one go",
                lambda: _many_runs_rows(
                    ws, runs, QUICK_ENGINE_RUNS if quick else FULL_ENGINE_RUNS, logged
                ),
            )
        )
    return rows


def _guard(measure: str, action: Callable[[], list[Row]]) -> list[Row]:
    """The rows of one measure; a measure that raises becomes one failed row."""
    try:
        return action()
    except Exception as exc:  # a benchmark reports, it never crashes the suite
        return [failed_row(measure, "ms", f"{type(exc).__name__}: {exc}")]


# --- process figures -----------------------------------------------------------------------------


def rss_mb() -> float:
    """This process's resident set (``VmRSS``), in MB; ``ru_maxrss`` where /proc is missing."""
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _child_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of another process so far (Linux), or None."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text(encoding="ascii")
    except OSError:
        return None
    fields = text.rsplit(")", 1)[1].split()  # the command name may hold spaces
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass
class _Logged:
    """What batchctl logged at ERROR or above while muted."""

    errors: list[str] = field(default_factory=list)

    def take(self) -> list[str]:
        taken, self.errors = self.errors, []
        return taken


class _Collect(logging.Handler):
    def __init__(self, logged: _Logged) -> None:
        super().__init__(logging.ERROR)
        self.logged = logged

    def emit(self, record: logging.LogRecord) -> None:
        self.logged.errors.append(record.getMessage())


@contextlib.contextmanager
def _quiet_batchctl() -> Iterator[_Logged]:
    """Mute batchctl's loggers (no last-resort printing) and collect what they log as errors."""
    logger = logging.getLogger("batchctl")
    logged = _Logged()
    handler = _Collect(logged)
    logger.addHandler(handler)
    propagate = logger.propagate
    logger.propagate = False
    try:
        yield logged
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


@contextlib.contextmanager
def _importable(directory: Path) -> Iterator[None]:
    """The no-op processor module importable in-process, as a config beside it makes it."""
    sys.path.insert(0, str(directory))
    try:
        yield
    finally:
        with contextlib.suppress(ValueError):
            sys.path.remove(str(directory))
        sys.modules.pop(NOOP_MODULE, None)


@contextlib.contextmanager
def _env(name: str, value: str) -> Iterator[None]:
    before = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if before is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = before


def _errors_note(errors: list[str]) -> str:
    return f"; batchctl logged {len(errors)} error(s), the first: {errors[0]}" if errors else ""


# --- 1. refreshing many parts in flight ----------------------------------------------------------


@dataclass
class _EmulatorProcess:
    process: subprocess.Popen[str]
    base_url: str


@contextlib.contextmanager
def _emulator(root: Path) -> Iterator[_EmulatorProcess]:
    """``python -m batchctl.emulator --manual-clock`` on a free port, stopped afterwards."""
    stderr_path = root / "emulator.stderr"
    with stderr_path.open("w", encoding="utf-8") as stderr:
        process = subprocess.Popen(
            [sys.executable, "-m", "batchctl.emulator", "--port", "0", "--manual-clock"],
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            ready = selector.select(timeout=30)
        line = process.stdout.readline() if ready else ""
        if "OPENAI_BASE_URL=" not in line:
            process.kill()
            process.wait()
            tail = stderr_path.read_text(encoding="utf-8").strip().splitlines()[-1:]
            raise RuntimeError(f"the emulator did not start: {tail or line or 'no output'}")
        yield _EmulatorProcess(process, line.strip().split("OPENAI_BASE_URL=", 1)[1])
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _request_line(submission: int, index: int) -> str:
    return (
        json.dumps(
            {
                "custom_id": f"s{submission:04d}-r{index:02d}",
                "method": "POST",
                "url": "/v1/chat/completions",
                "body": {
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": f"say {submission} {index}"}],
                    "max_tokens": 16,
                },
            }
        )
        + "\n"
    )


def _submit_all(root: Path, db: Path, config: Config, submissions: int) -> None:
    """``submissions`` submissions of PARTS_PER_SUBMISSION one-request parts, all sent."""
    from batchctl.batches.submission import Batches, SubmitOptions
    from batchctl.store import open_store

    store = open_store(str(db))
    batches = Batches(store, config)
    options = SubmitOptions(max_requests=1)
    inputs = root / "inputs"
    inputs.mkdir(exist_ok=True)
    try:
        for number in range(submissions):
            path = inputs / f"input-{number:04d}.jsonl"
            path.write_text(
                "".join(_request_line(number, i) for i in range(PARTS_PER_SUBMISSION)),
                encoding="utf-8",
            )
            batches.submit([path], options)
    finally:
        batches.close()
        store.close()


def _in_flight(db: Path) -> tuple[int, list[str], dict[str, int]]:
    """Submissions in flight, their parts' batch ids, and the parts' statuses."""
    from batchctl.store import open_store

    store = open_store(str(db))
    try:
        run_ids = store.submissions_in_flight()
        parts = [part for run_id in run_ids for part in store.parts(run_id)]
    finally:
        store.close()
    statuses: dict[str, int] = {}
    for part in parts:
        statuses[part.status] = statuses.get(part.status, 0) + 1
    return len(run_ids), [p.batch_id for p in parts if p.batch_id], statuses


class _ThreadPeak:
    """The most refresh-pool threads alive at once, sampled every millisecond on a thread."""

    PREFIX = "ThreadPoolExecutor-"  # refresh()'s pool; the daemon's own is "batchctl-run"

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="bench-thread-sampler")

    def _sample(self) -> None:
        while not self._stop.wait(0.001):
            alive = sum(1 for t in threading.enumerate() if t.name.startswith(self.PREFIX))
            self.peak = max(self.peak, alive)

    def __enter__(self) -> _ThreadPeak:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def _list_requests(base_url: str) -> int:
    """How many ``GET /v1/batches`` (list pages) the emulator has answered so far."""
    from urllib.request import urlopen

    root = base_url.rstrip("/").removesuffix("/v1")
    with urlopen(f"{root}/_emulator/requests?method=GET&path=/v1/batches", timeout=30) as reply:
        return len(json.load(reply)["data"])


def _oldest_created(db: Path) -> int:
    """The API's ``created_at`` of the oldest part in flight, as the store recorded it."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(db)) as conn:
        return int(conn.execute("SELECT MIN(remote_created_at) FROM parts").fetchone()[0])


def _raw_pages(client: OpenAI, batch_ids: set[str], oldest: int, *, models: bool = True) -> int:
    """The list pages a refresh of ``batch_ids`` reads, with the raw SDK: ``limit=100``, newest
    first, until every id was seen or a page reaches a batch older than ``oldest``; how many.
    ``models``: as a script would (the SDK's ``Batch`` models); else the same requests through
    ``with_raw_response`` and ``json.loads`` (what batchctl's provider does)."""
    import openai

    after: str | openai.Omit = openai.omit
    seen = pages = 0
    while True:
        if models:
            page = client.batches.list(limit=100, after=after)
            data, has_more = [(b.id, b.created_at) for b in page.data], page.has_more
        else:
            raw = client.batches.with_raw_response.list(limit=100, after=after)
            body = json.loads(raw.content)
            data, has_more = [(b["id"], b["created_at"]) for b in body["data"]], body["has_more"]
        pages += 1
        seen += sum(1 for batch_id, _ in data if batch_id in batch_ids)
        if not data or not has_more or seen == len(batch_ids) or data[-1][1] < oldest:
            return pages
        after = data[-1][0]


def _refresh_rows(ws: Workspace, submissions: int, repeats: int, logged: _Logged) -> list[Row]:
    from openai import OpenAI

    from batchctl.batches.refresh import MAX_WORKERS
    from batchctl.config import load_config
    from batchctl.daemon import Daemon

    parts = submissions * PARTS_PER_SUBMISSION
    measure = f"daemon: refresh {parts:,} in-flight parts"
    db = ws.root / "refresh.db"
    with _emulator(ws.root) as emulator, _env(KEY_ENV, "sk-bench"):
        config_path = ws.root / "refresh.toml"
        config_path.write_text(
            f'[openai]\nbase_url = "{emulator.base_url}"\napi_key_env = "{KEY_ENV}"\n'
            "max_retries = 0\n",
            encoding="utf-8",
        )
        config = load_config(config_path)
        started = time.perf_counter()
        _submit_all(ws.root, db, config, submissions)
        setup_s = time.perf_counter() - started
        count, batch_ids, statuses = _in_flight(db)
        if count != submissions or len(batch_ids) != parts or set(statuses) != {"validating"}:
            return [
                failed_row(
                    measure,
                    "ms",
                    f"setup made {count} submissions, {len(batch_ids)} batches, {statuses}",
                )
            ]
        client = OpenAI(base_url=emulator.base_url, api_key="sk-bench", max_retries=0)
        oldest = _oldest_created(db)
        wanted = set(batch_ids)
        daemon = Daemon(str(db), lambda: load_config(config_path), once=True)
        try:
            passes: list[float] = []
            cpu: list[float] = []
            emulator_cpu: list[float] = []
            pages_cost: list[float] = []
            pages_cpu: list[float] = []
            gets_cost: list[float] = []
            json_cpu: list[float] = []
            gets_cpu: list[float] = []
            retrieve = client.batches.retrieve
            for batch_id in batch_ids[:20]:  # warm the SDK's and the server's connections
                retrieve(batch_id)
            raw_pages = _raw_pages(client, wanted, oldest)
            daemon.next_refresh = 0.0
            daemon.pass_once()  # warm-up: opens the daemon's provider
            listed_before = _list_requests(emulator.base_url)
            daemon.next_refresh = 0.0
            daemon.pass_once()
            pass_pages = _list_requests(emulator.base_url) - listed_before
            rss_before = rss_mb()
            for _ in range(repeats):  # interleaved: a pass, the raw pages, the raw GETs
                daemon.next_refresh = 0.0  # the refresh is due at every pass
                emu_start = _child_cpu_s(emulator.process.pid)
                cpu_start, start = time.process_time(), time.perf_counter()
                daemon.pass_once()
                passes.append(time.perf_counter() - start)
                cpu.append(time.process_time() - cpu_start)
                emu_end = _child_cpu_s(emulator.process.pid)
                if emu_start is not None and emu_end is not None:
                    emulator_cpu.append(emu_end - emu_start)
                cpu_start, start = time.process_time(), time.perf_counter()
                _raw_pages(client, wanted, oldest)
                pages_cost.append(time.perf_counter() - start)
                pages_cpu.append(time.process_time() - cpu_start)
                cpu_start = time.process_time()
                _raw_pages(client, wanted, oldest, models=False)
                json_cpu.append(time.process_time() - cpu_start)
                cpu_start, start = time.process_time(), time.perf_counter()
                for batch_id in batch_ids:
                    retrieve(batch_id)
                gets_cost.append(time.perf_counter() - start)
                gets_cpu.append(time.process_time() - cpu_start)
            rss_after = rss_mb()
            daemon.next_refresh = 0.0
            with _ThreadPeak() as threads:  # untimed: the sampler would disturb the figure
                daemon.pass_once()
            _, _, after = _in_flight(db)
        finally:
            daemon._shutdown()
            client.close()
    errors = logged.take()
    per_pass = median(passes)
    parts_per_s = parts / per_pass
    emu_note = f", the emulator {median(emulator_cpu) * 1000:,.0f} ms" if emulator_cpu else ""
    still = "all still in flight" if set(after) == {"validating"} else f"parts now {after}"
    bound = threads.peak <= MAX_WORKERS
    thread_note = f"at most {threads.peak} refresh threads at once (MAX_WORKERS {MAX_WORKERS})"
    same = "" if pass_pages == raw_pages else f"; NOTE the pass read {pass_pages} pages"
    pages_label = f"{raw_pages} GET /v1/batches?limit=100 pages, raw SDK"
    extra = {
        "parts": parts,
        "submissions": submissions,
        "parts_per_s": round(parts_per_s, 1),
        "setup_s": round(setup_s, 2),
        "max_refresh_threads": threads.peak,
        "max_workers": MAX_WORKERS,
        "list_pages_per_pass": pass_pages,
        "raw_gets_ms": round(median(gets_cost) * 1000, 1),
        "raw_gets_cpu_ms": round(median(gets_cpu) * 1000, 1),
    }
    return [
        Row(
            measure,
            per_pass * 1000,
            "ms",
            baseline=median(pages_cost) * 1000,
            baseline_label=pages_label,
            samples=repeats,
            note=(
                f"{parts_per_s:,.0f} parts/s in one daemon pass ({submissions} submissions x"
                f" {PARTS_PER_SUBMISSION} parts, {still}; the pass read {pass_pages} list"
                f" pages{same}); the {parts:,} GETs it replaces take"
                f" {median(gets_cost) * 1000:,.0f} ms; {thread_note}; setup"
                f" {setup_s:.1f}s{_errors_note(errors)}"
            ),
            extra=extra,
        ),
        Row(
            "daemon: CPU per refresh pass (this process)",
            median(cpu) * 1000,
            "ms",
            baseline=median(pages_cpu) * 1000,
            baseline_label=f"CPU of the {pages_label}",
            target=REFRESH_TARGET,
            samples=repeats,
            note=f"per pass{emu_note} (its own process)",
        ),
        Row(
            "daemon: CPU per refresh pass vs the same requests' JSON",
            median(cpu) * 1000,
            "ms",
            baseline=median(json_cpu) * 1000,
            baseline_label=f"CPU of the {raw_pages} pages via with_raw_response + json.loads",
            samples=repeats,
            note="the floor: the requests the pass sends, read as the provider reads them",
        ),
        Row(
            "daemon: CPU per refresh pass vs one GET per part",
            median(cpu) * 1000,
            "ms",
            baseline=median(gets_cpu) * 1000,
            baseline_label=f"CPU of {parts:,} GET /v1/batches/{{id}}, raw SDK (the old way)",
            samples=repeats,
            note="the baseline the refresh was measured against before it listed pages",
        ),
        Row(
            "daemon: RSS while refreshing",
            rss_after,
            "MB",
            baseline=rss_before,
            baseline_label="before the passes",
            samples=1,
            error="" if bound else thread_note,
            note=thread_note,
        ),
    ]


# --- 2. memory over many ticks -------------------------------------------------------------------

_TICK_JOB = "tick"


def _tick_config(path: Path, *, catchup: int | None = None) -> Path:
    """A config with one every-second job of the no-op python processor."""
    text = (
        f"[jobs.{_TICK_JOB}]\n"
        'kind = "python"\n'
        f'processor = "{NOOP_MODULE}:process"\n'
        'schedule = "* * * * * */1"\n'
        'concurrency = "allow"\n'
    )
    if catchup is not None:
        text += f'catchup = "all"\nmax_catchup = {catchup}\n'
    path.write_text(text, encoding="utf-8")
    return path


class _FakeClock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now


def _tick_once(daemon: Daemon, clock: _FakeClock) -> None:
    clock.now += timedelta(seconds=1)
    daemon.pass_once()
    concurrent.futures.wait(list(daemon.running))  # the next pass reaps them


def _rss_rows(ws: Workspace, ticks: int, warm_up: int, logged: _Logged) -> list[Row]:
    from batchctl.config import load_config
    from batchctl.daemon import Daemon
    from batchctl.records import RunFilter, RunStatus

    config_path = _tick_config(ws.root / "ticks.toml")
    clock = _FakeClock(_EPOCH)
    daemon = Daemon(
        str(ws.root / "ticks.db"), lambda: load_config(config_path), once=True, clock=clock
    )
    try:
        for _ in range(warm_up + 1):  # the first pass only sets the job's cursor
            _tick_once(daemon, clock)
        gc.collect()
        objects_start, rss_start = len(gc.get_objects()), rss_mb()
        trend: list[float] = []
        start = time.perf_counter()
        for index in range(ticks):
            _tick_once(daemon, clock)
            if (index + 1) % max(1, ticks // 10) == 0:
                trend.append(round(rss_mb(), 2))
        seconds = time.perf_counter() - start
        gc.collect()
        objects_end, rss_end = len(gc.get_objects()), rss_mb()
        daemon.pass_once(schedule=False)  # reap the last run
        completed = daemon.store.count_runs(RunFilter(status=(RunStatus.COMPLETED.value,)))
    finally:
        daemon._shutdown()
    errors = logged.take()
    growth = rss_end - rss_start
    expected = ticks + warm_up
    recorded = "" if completed == expected else f"; only {completed} of {expected} runs completed"
    return [
        Row(
            f"daemon: RSS growth over {ticks:,} ticks",
            growth,
            "MB",
            target=RSS_GROWTH_TARGET,
            samples=1,
            note=(
                f"RSS {rss_start:.1f} MB at start (after {warm_up} warm-up ticks) ->"
                f" {rss_end:.1f} MB; Python objects {objects_end - objects_start:+,};"
                f" {seconds / ticks * 1000:.1f} ms per tick (pass + run){recorded}"
                f"{_errors_note(errors)}"
            ),
            extra={
                "rss_start_mb": round(rss_start, 2),
                "rss_end_mb": round(rss_end, 2),
                "rss_every_tenth": trend,
                "objects_growth": objects_end - objects_start,
                "ms_per_tick": round(seconds / ticks * 1000, 3),
            },
        ),
        Row(
            f"daemon: RSS after {ticks:,} ticks",
            rss_end,
            "MB",
            baseline=rss_start,
            baseline_label="RSS at start",
            samples=1,
        ),
    ]


# --- 3. many runs in one go ----------------------------------------------------------------------


def _many_runs_rows(ws: Workspace, runs: int, engine_runs: int, logged: _Logged) -> list[Row]:
    measure = f"daemon: {runs:,} no-op runs in one go"
    daemon_s, cpu_s, passes, counts = _daemon_runs(ws, runs)
    errors = logged.take()
    engine_s, engine_cpu_s = _engine_runs(ws, engine_runs)
    rate = runs / daemon_s if daemon_s else None
    # CPU per run over the loop's: the figure to compare on a busy machine, where the daemon's
    # threads get more of the cores than one thread does.
    cpu_ratio = (cpu_s / runs) / (engine_cpu_s / engine_runs) if engine_cpu_s else 0.0
    all_recorded = (
        counts["completed"] == runs
        and counts["runs"] == runs
        and counts["fired"] == runs
        and counts["pending"] == 0
    )
    recorded = (
        f"all {runs:,} runs recorded completed, {counts['fired']:,} ticks fired, none pending"
        if all_recorded
        else f"recorded: {counts}"
    )
    return [
        Row(
            measure,
            rate,
            "runs/s",
            baseline=engine_runs / engine_s,
            baseline_label=f"Engine.run loop, one thread, {engine_runs:,} runs",
            target=RUNS_TARGET,
            samples=1,
            error="" if daemon_s else f"timed out; {recorded}",
            note=(
                f"{recorded}; {passes:,} daemon passes; CPU {cpu_s:.1f}s in"
                f" {daemon_s:.1f}s; CPU per run {cpu_ratio:.2f}x the loop's"
                f" ({engine_cpu_s:.1f}s for {engine_runs:,}){_errors_note(errors)}"
            ),
            extra={
                "counts": counts,
                "passes": passes,
                "cpu_s": round(cpu_s, 2),
                "engine_cpu_s": round(engine_cpu_s, 2),
                "cpu_ratio": round(cpu_ratio, 3),
            },
        )
    ]


def _daemon_runs(ws: Workspace, runs: int) -> tuple[float, float, int, dict[str, int]]:
    """Seconds for the daemon to run ``runs`` due ticks (0 on time-out), CPU s, passes, counts."""
    from batchctl.config import load_config
    from batchctl.daemon import Daemon
    from batchctl.records import RunFilter, RunStatus
    from batchctl.store import open_store

    config_path = _tick_config(ws.root / "runs.toml", catchup=runs)
    db = str(ws.root / "runs.db")
    now = _EPOCH + timedelta(days=1)
    watch = open_store(db)
    watch.set_cursor(_TICK_JOB, None, now - timedelta(seconds=runs))
    daemon = Daemon(db, lambda: load_config(config_path), clock=lambda: now)
    pass_once = daemon.pass_once
    passes = 0

    def counted(*, schedule: bool = True, housekeeping: bool = True) -> None:
        nonlocal passes
        passes += 1
        pass_once(schedule=schedule, housekeeping=housekeeping)

    setattr(daemon, "pass_once", counted)  # noqa: B010 -- an instance attribute, seen by run()
    failure: list[BaseException] = []

    def run() -> None:
        try:
            daemon.run()
        except BaseException as exc:  # reported below, not lost on the thread
            failure.append(exc)

    completed = RunFilter(status=(RunStatus.COMPLETED.value,))
    deadline = time.monotonic() + max(60.0, runs / 50)
    thread = threading.Thread(target=run, name="bench-daemon")
    try:
        cpu_start, start = time.process_time(), time.perf_counter()
        thread.start()
        seconds = 0.0
        while thread.is_alive() and time.monotonic() < deadline:
            if watch.count_runs(completed) >= runs:
                seconds = time.perf_counter() - start
                break
            time.sleep(0.05)
        cpu = time.process_time() - cpu_start
        daemon.stop()
        thread.join()
        if failure:
            raise failure[0]
        ticks = watch.tick_counts(now - timedelta(days=2))
        counts = {
            "runs": watch.count_runs(RunFilter()),
            "completed": watch.count_runs(completed),
            "fired": ticks.get((_TICK_JOB, "fired"), 0),
            "pending": watch.pending_tick_count(),
        }
    finally:
        watch.close()
    return seconds, cpu, passes, counts


def _engine_runs(ws: Workspace, runs: int) -> tuple[float, float]:
    """Seconds and CPU seconds for ``runs`` sequential ``Engine.run`` of the same job on a
    fresh database."""
    from batchctl.config import load_config
    from batchctl.engine import Engine
    from batchctl.store import open_store

    config = load_config(_tick_config(ws.root / "engine.toml"))
    job = config.job(_TICK_JOB)
    store = open_store(str(ws.root / "engine.db"))
    try:
        engine = Engine(store, config)
        for _ in range(20):  # warm-up
            engine.run(job, trigger="schedule")
        cpu_start, start = time.process_time(), time.perf_counter()
        for _ in range(runs):
            engine.run(job, trigger="schedule")
        return time.perf_counter() - start, time.process_time() - cpu_start
    finally:
        store.close()
