"""OpenAI batch submissions: validating and splitting input, recording requests, merging results.

* ``batches: validate + split``: ``scan(...)`` with a ``PartWriter`` sink (what ``submit``
  does before it records anything) over a generated JSONL file of 50,000 chat-completion
  requests, ~200 MB (``--quick``: 10,000 requests, ~40 MB), two models, ``max_requests`` set
  so that the file is cut into several parts. Baseline: reading the same file line by line and
  calling ``json.loads`` on each line. Target ratio <= 2. ``PartWriter.close()`` (flush and
  fsync of the part files) is not in the figure: it is an informational row of its own.
* ``batches: peak memory of validate + split``: the same scan in a fresh subprocess, its peak
  RSS, target < 100 MB. The peak is the child's ``VmHWM`` (``/proc/self/status``), not
  ``ru_maxrss``: Linux carries the parent's high-water mark across fork + exec into the child's
  ``ru_maxrss``, so that would report this benchmark process's own RSS (``ru_maxrss`` is the
  fallback where ``/proc`` is missing). Baseline: a subprocess that only imports
  ``batchctl.batches.validation``. Without ``--quick`` a file twice as large (twice the
  requests, twice the bytes) is scanned too, to show how memory grows, and a ~100 MB file of
  400,000 small embedding requests (~250 bytes each): memory follows the request count.
* ``batches: record 50,000 request rows``: ``store.record_submission(...)`` of a submission with
  50,000 ``RequestRow``s into a fresh store. Baseline: one ``executemany`` of the same rows into
  a bare ``sqlite3`` table with the same columns and primary key, in one transaction, with
  batchctl's pragmas (WAL, synchronous=NORMAL). Target ratio <= 3.
* ``batches: merge 50,000 results``: ``Batches.write_results`` of a settled submission (no
  network): 50,000 recorded requests in several parts, downloaded output files whose lines are
  shuffled and shaped like the API's, recorded with ``store.record_results``. Target < 2 s.
  Baseline: the naive merge, reading the output files into a dict by custom_id and writing the
  lines out in input order. ``record_results`` of those files is an informational row.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import Row, Target, failed_row, median, workspace

FULL_REQUESTS = 50_000
FULL_BYTES = 200_000_000
QUICK_REQUESTS = 10_000
QUICK_BYTES = 40_000_000
PARTS_PER_FILE = 5  # max_requests = requests // 5: several parts per model
RECORD_ROWS = 50_000
MERGE_REQUESTS = 50_000
MERGE_PART_REQUESTS = 10_000
SMALL_REQUESTS = 400_000  # embedding requests of ~250 bytes: a ~100 MB file
MAX_REQUESTS_PER_BATCH = 50_000
MODELS = ("gpt-4o-mini", "gpt-4o")  # every fourth request uses the second one

SCAN_TARGET = Target("ratio_max", 2.0)
MEMORY_TARGET = Target("max", 100.0)
RECORD_TARGET = Target("ratio_max", 3.0)
MERGE_TARGET = Target("max", 2000.0)

_NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


def measures(quick: bool) -> list[Row]:
    rows: list[Row] = []
    with workspace("batches") as ws:
        requests = QUICK_REQUESTS if quick else FULL_REQUESTS
        size = QUICK_BYTES if quick else FULL_BYTES
        source = ws.root / "input.jsonl"
        generate_input(source, requests, size)
        rows.extend(
            _guard(
                f"batches: validate + split {_size(size)} / {requests:,} requests",
                lambda: _scan_rows(ws.root, source, requests, size, 2 if quick else 3),
            )
        )
        rows.extend(
            _guard(
                "batches: peak memory of validate + split",
                lambda: _memory_rows(ws.root, source, requests, size, quick),
            )
        )
        source.unlink()
        rows.extend(
            _guard(
                f"batches: record {RECORD_ROWS:,} request rows",
                lambda: _record_rows(ws.root, 2 if quick else 5),
            )
        )
        rows.extend(
            _guard(
                f"batches: merge {MERGE_REQUESTS:,} results",
                lambda: _merge_rows(ws.root, 1 if quick else 3),
            )
        )
    return rows


def _guard(measure: str, action: Callable[[], list[Row]]) -> list[Row]:
    """The rows of one measure; a measure that raises becomes one failed row."""
    try:
        return action()
    except Exception as exc:  # a benchmark reports, it never crashes the suite
        return [failed_row(measure, "ms", f"{type(exc).__name__}: {exc}")]


def _size(size: int) -> str:
    return f"{size / 1e6:,.0f} MB"


# --- input ---------------------------------------------------------------------------------------

_WORDS = [
    "the",
    "of",
    "summarise",
    "this",
    "paragraph",
    "about",
    "customer",
    "review",
    "delivery",
    "café",
    "naïve",
    "price",
    '"quoted"',
    "product",
    "quality",
    "support",
    "order",
    "refund",
    "weather",
    "model",
    "answer",
    "question",
    "résumé",
    "data",
    "analysis",
    "report",
    "line\nbreak",
    "tab\there",
    "shipping",
    "late",
    "arrived",
    "broken",
    "excellent",
    "would",
    "again",
]


def _text_pool(rng: random.Random, size: int = 1 << 20) -> str:
    words = [rng.choice(_WORDS) for _ in range(size // 6)]
    return " ".join(words)


def generate_input(path: Path, requests: int, total_bytes: int, seed: int = 7) -> None:
    """A JSONL file of ``requests`` chat-completion requests, about ``total_bytes`` in all.

    Each line is about the same size: a system message and a long user message (a slice of a
    pseudo-random text with quotes, newlines, tabs and non-ASCII letters, so escapes occur).
    """
    rng = random.Random(seed)
    text = _text_pool(rng)
    ratio = len(text.encode()) / len(text)  # UTF-8 bytes per character of the pool
    head = '{"custom_id": "request-%07d", "method": "POST", "url": "/v1/chat/completions", '
    skeleton = (
        head % 0 + '"body": {"model": "gpt-4o-mini", "messages": [{"role": "system", "content":'
        ' "You are a careful assistant. Answer in one paragraph."}, {"role": "user", "content":'
        ' ""}], "max_tokens": 512, "temperature": 0.2}}\n'
    )
    escapes = len(json.dumps(text[:100_000], ensure_ascii=False)) / 100_000
    content = max(16, int((total_bytes / requests - len(skeleton)) / ratio / escapes))
    span = len(text) - content - 1
    dumps = json.JSONEncoder(ensure_ascii=False).encode
    with path.open("wb") as out:
        chunk: list[str] = []
        for i in range(requests):
            start = (i * 7919) % span
            model = MODELS[1] if i % 4 == 3 else MODELS[0]
            chunk.append(
                head % i + '"body": {"model": "' + model + '", "messages": [{"role": "system",'
                ' "content": "You are a careful assistant. Answer in one paragraph."},'
                ' {"role": "user", "content": ' + dumps(text[start : start + content]) + "}],"
                ' "max_tokens": 512, "temperature": 0.2}}\n'
            )
            if len(chunk) >= 1000:
                out.write("".join(chunk).encode())
                chunk = []
        out.write("".join(chunk).encode())


# --- validate + split ----------------------------------------------------------------------------


def _scan_once(source: Path, directory: Path, max_requests: int) -> tuple[float, float, Any]:
    """Seconds of ``scan`` with a PartWriter sink, seconds of ``close``, and the plan."""
    from batchctl.batches.files import PartWriter
    from batchctl.batches.validation import scan

    shutil.rmtree(directory, ignore_errors=True)
    start = time.perf_counter()
    writer = PartWriter(directory)
    plan = scan([source], max_requests=max_requests, sink=writer)
    scanned = time.perf_counter()
    writer.close()
    closed = time.perf_counter()
    shutil.rmtree(directory, ignore_errors=True)
    return scanned - start, closed - scanned, plan


def _json_loads_once(source: Path) -> float:
    """Seconds to read ``source`` line by line and ``json.loads`` each line."""
    loads = json.loads
    start = time.perf_counter()
    with source.open("rb") as handle:
        for line in handle:
            loads(line)
    return time.perf_counter() - start


def _scan_rows(root: Path, source: Path, requests: int, size: int, repeats: int) -> list[Row]:
    max_requests = requests // PARTS_PER_FILE
    _json_loads_once(source)  # warm-up: the file is in the page cache for both
    scan_s: list[float] = []
    close_s: list[float] = []
    base_s: list[float] = []
    note = ""
    for _ in range(repeats):  # interleaved
        scanned, closed, plan = _scan_once(source, root / "parts", max_requests)
        scan_s.append(scanned)
        close_s.append(closed)
        base_s.append(_json_loads_once(source))
        if plan.problem_count or plan.requests != requests:
            note = f"scan found {plan.problem_count} problem(s), {plan.requests} requests"
        elif not note:
            note = f"{len(plan.parts)} parts, {source.stat().st_size / 1e6:,.0f} MB"
    measure = f"batches: validate + split {_size(size)} / {requests:,} requests"
    return [
        Row(
            measure,
            median(scan_s) * 1000,
            "ms",
            baseline=median(base_s) * 1000,
            baseline_label="readline + json.loads",
            target=SCAN_TARGET,
            samples=repeats,
            note=note,
        ),
        Row(
            "batches: PartWriter.close (flush + fsync parts)",
            median(close_s) * 1000,
            "ms",
            samples=repeats,
        ),
    ]


# --- peak memory ---------------------------------------------------------------------------------

_MEMORY_SCRIPT = """
import json, resource, sys
from pathlib import Path
import batchctl.batches.validation as validation
result = {}
if sys.argv[1] == "scan":
    from batchctl.batches.files import PartWriter
    writer = PartWriter(Path(sys.argv[3]))
    plan = validation.scan([Path(sys.argv[2])], max_requests=int(sys.argv[4]), sink=writer)
    writer.close()
    result = {"requests": plan.requests, "problems": plan.problem_count}
# ru_maxrss survives fork + exec (Linux keeps the parent's high-water mark): it would report the
# benchmark process's own RSS. VmHWM is the peak RSS of this process's memory map alone.
try:
    status = Path("/proc/self/status").read_text()
    hwm = [line.split()[1] for line in status.splitlines() if line.startswith("VmHWM:")]
    result["peak_kib"], result["source"] = int(hwm[0]), "VmHWM"
except (OSError, IndexError, ValueError):
    result["peak_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["source"] = "ru_maxrss"
result["maxrss_kib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(result))
"""


def _peak_rss(mode: str, source: Path, directory: Path, max_requests: int) -> dict[str, Any]:
    """Run the scan (or only the import) in a fresh interpreter; its figures, RSS in MB."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHONTRACEMALLOC",))}
    argv = [sys.executable, "-c", _MEMORY_SCRIPT, mode, str(source), str(directory)]
    done = subprocess.run(
        [*argv, str(max_requests)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    shutil.rmtree(directory, ignore_errors=True)
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"memory subprocess exit {done.returncode}: {tail[0]}")
    result: dict[str, Any] = json.loads(done.stdout)
    result["mb"] = result["peak_kib"] / 1024  # Linux: both figures are in KiB
    return result


def _memory_rows(root: Path, source: Path, requests: int, size: int, quick: bool) -> list[Row]:
    max_requests = requests // PARTS_PER_FILE
    repeats = 1 if quick else 2
    scans = [_peak_rss("scan", source, root / "mem-parts", max_requests) for _ in range(repeats)]
    imports = [_peak_rss("import", source, root / "mem-parts", 0) for _ in range(repeats)]
    scan_mb = median([s["mb"] for s in scans])
    import_mb = median([s["mb"] for s in imports])
    bad = [s for s in scans if s["problems"] or s["requests"] != requests]
    rows = [
        Row(
            f"batches: peak memory of validate + split ({_size(size)})",
            scan_mb,
            "MB",
            baseline=import_mb,
            baseline_label="import validation only",
            target=MEMORY_TARGET,
            samples=repeats,
            note=f"scan went wrong: {bad[0]}" if bad else "",
        )
    ]
    if not quick:
        bigger = root / "input-2x.jsonl"
        generate_input(bigger, requests * 2, size * 2, seed=11)
        twice = _peak_rss("scan", bigger, root / "mem-parts", max_requests)
        bigger.unlink()
        rows.append(
            Row(
                f"batches: peak memory of validate + split ({_size(size * 2)})",
                twice["mb"],
                "MB",
                baseline=scan_mb,
                baseline_label=f"{_size(size)} file",
                target=MEMORY_TARGET,
                samples=1,
                note=(
                    f"{requests * 2:,} requests: {(twice['mb'] - scan_mb) * 1024 / requests:.2f}"
                    f" KiB more per extra request"
                ),
            )
        )
        rows.append(_small_requests_row(root))
    return rows


def generate_small_input(path: Path, requests: int) -> None:
    """A JSONL file of ``requests`` small embedding requests (~250 bytes a line)."""
    sentence = (
        "a short sentence to embed, about one hundred and fifty characters long, which is"
        " typical of one chunk of a document split for retrieval"
    )
    with path.open("w", encoding="utf-8") as out:
        for start in range(0, requests, 10_000):
            out.write(
                "".join(
                    f'{{"custom_id": "doc-{i:08d}", "method": "POST", "url": "/v1/embeddings",'
                    f' "body": {{"model": "text-embedding-3-small", "input": "{sentence} {i}"}}}}\n'
                    for i in range(start, min(start + 10_000, requests))
                )
            )


def _small_requests_row(root: Path) -> Row:
    """Peak memory of a scan of many small requests: memory grows with the request count."""
    source = root / "small.jsonl"
    generate_small_input(source, SMALL_REQUESTS)
    size = source.stat().st_size
    small = _peak_rss("scan", source, root / "mem-parts", MAX_REQUESTS_PER_BATCH)
    source.unlink()
    return Row(
        f"batches: peak memory of validate + split ({_size(size)},"
        f" {SMALL_REQUESTS:,} small requests)",
        small["mb"],
        "MB",
        target=MEMORY_TARGET,
        samples=1,
        note="memory grows with the number of requests (one custom_id each), not the bytes"
        if small["requests"] == SMALL_REQUESTS and not small["problems"]
        else f"scan went wrong: {small}",
    )


# --- recording request rows ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Layout:
    """Requests assigned to parts as ``scan`` would: one model per part, ``per_part`` each."""

    custom_ids: list[str]
    part_of: list[int]  # part number per request (input order)
    models: dict[int, str]  # part number -> model
    sizes: dict[int, int]  # part number -> requests


def _layout(requests: int, per_part: int) -> _Layout:
    open_part: dict[str, tuple[int, int]] = {}  # model -> (part number, requests so far)
    models: dict[int, str] = {}
    sizes: dict[int, int] = {}
    part_of: list[int] = []
    for i in range(requests):
        model = MODELS[1] if i % 4 == 3 else MODELS[0]
        number, count = open_part.get(model, (0, per_part))
        if count >= per_part:
            number, count = len(models) + 1, 0
            models[number] = model
        open_part[model] = (number, count + 1)
        sizes[number] = count + 1
        part_of.append(number)
    return _Layout([f"request-{i:07d}" for i in range(requests)], part_of, models, sizes)


def _submission_records(layout: _Layout, directory: Path) -> tuple[Any, list[Any], list[Any]]:
    """The Submission, PartPlanRows and RequestRows that ``submit`` would record."""
    from batchctl.records import PartPlanRow, RequestRow, Submission

    line = 4000
    offsets: dict[int, int] = {}
    requests = []
    for ordinal, (custom_id, part) in enumerate(
        zip(layout.custom_ids, layout.part_of, strict=True)
    ):
        offset = offsets.get(part, 0)
        requests.append(RequestRow(custom_id, ordinal, part, offset, line))
        offsets[part] = offset + line
    parts = [
        PartPlanRow(
            number,
            1,
            model,
            layout.sizes[number],
            offsets[number],
            str(directory / f"part-{number:03d}.jsonl"),
            f"batchctl-bench-part{number:03d}.jsonl",
        )
        for number, model in layout.models.items()
    ]
    submission = Submission(
        run_id=0,
        provider="openai",
        endpoint="/v1/chat/completions",
        completion_window="24h",
        metadata={},
        input_sha256="0" * 64,
        inputs=["input.jsonl"],
        directory=str(directory),
        token="bench",
        requests=len(requests),
        bytes=len(requests) * line,
        on_expired="keep",
        max_request_attempts=3,
        merged_at=None,
        results_path=None,
    )
    return submission, parts, requests


@contextmanager
def _store(path: Path) -> Iterator[Any]:
    from batchctl.store import open_store

    store = open_store(str(path))
    try:
        yield store
    finally:
        store.close()


def _record_once(path: Path, records: tuple[Any, list[Any], list[Any]]) -> float:
    submission, parts, requests = records
    with _store(path) as store:
        start = time.perf_counter()
        store.record_submission(
            job="submit",
            scope=None,
            trigger="submit",
            now=_NOW,
            submission=submission,
            parts=parts,
            requests=iter(requests),
        )
        return time.perf_counter() - start


_BARE_REQUESTS = """CREATE TABLE requests (
    run_id INTEGER NOT NULL, custom_id TEXT NOT NULL, ordinal INTEGER NOT NULL,
    part_id INTEGER NOT NULL, line_offset INTEGER NOT NULL, line_length INTEGER NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 1, outcome TEXT, status_code INTEGER, error_code TEXT,
    error_message TEXT, input_tokens INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0, result_part_id INTEGER, result_kind TEXT,
    result_offset INTEGER, result_length INTEGER, PRIMARY KEY (run_id, custom_id))"""


def _bare_executemany_once(path: Path, rows: list[tuple[Any, ...]]) -> float:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute(_BARE_REQUESTS)
        start = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO requests (run_id, custom_id, ordinal, part_id, line_offset, line_length)"
            " VALUES (?,?,?,?,?,?)",
            rows,
        )
        conn.execute("COMMIT")
        return time.perf_counter() - start
    finally:
        conn.close()


def _record_rows(root: Path, repeats: int) -> list[Row]:
    layout = _layout(RECORD_ROWS, RECORD_ROWS // PARTS_PER_FILE)
    records = _submission_records(layout, root / "record-files")
    bare = [
        (1, r.custom_id, r.ordinal, r.part_number, r.line_offset, r.line_length) for r in records[2]
    ]
    ours_s: list[float] = []
    base_s: list[float] = []
    for index in range(repeats):  # interleaved, each on a fresh file
        ours_s.append(_record_once(root / f"record-{index}.db", records))
        base_s.append(_bare_executemany_once(root / f"bare-{index}.db", bare))
    for path in root.glob("record-*.db*"):
        path.unlink()
    for path in root.glob("bare-*.db*"):
        path.unlink()
    return [
        Row(
            f"batches: record {RECORD_ROWS:,} request rows",
            median(ours_s) * 1000,
            "ms",
            baseline=median(base_s) * 1000,
            baseline_label="sqlite3 executemany",
            target=RECORD_TARGET,
            samples=repeats,
        )
    ]


# --- merging results -----------------------------------------------------------------------------


def _output_line(rng: random.Random, custom_id: str, index: int, model: str) -> bytes:
    """One line of a downloaded output file, shaped like the API's (1 in 200 a server error)."""
    prompt, completion = 900 + index % 200, 120 + rng.randrange(200)
    if index % 200 == 199:
        body: dict[str, Any] = {
            "error": {
                "message": "The server had an error while processing your request.",
                "type": "server_error",
                "param": None,
                "code": None,
            }
        }
        status = 500
    else:
        words = [rng.choice(_WORDS) for _ in range(completion // 2)]
        body = {
            "id": f"chatcmpl-{index:024x}",
            "object": "chat.completion",
            "created": 1735732800 + index,
            "model": f"{model}-2024-07-18",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": " ".join(words), "refusal": None},
                    "logprobs": None,
                    "finish_reason": "stop",
                }
            ],
            "usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
                "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0, "audio_tokens": 0},
            },
            "system_fingerprint": "fp_0ba0d124f1",
        }
        status = 200
    line = {
        "id": f"batch_req_{index:032x}",
        "custom_id": custom_id,
        "response": {"status_code": status, "request_id": f"{index:032x}", "body": body},
        "error": None,
    }
    return (json.dumps(line) + "\n").encode()


def _write_outputs(directory: Path, layout: _Layout) -> dict[int, Path]:
    """Each part's downloaded output file, its lines in a shuffled order; part -> path."""
    from batchctl.batches.files import download_path

    rng = random.Random(3)
    lines: dict[int, list[bytes]] = {}
    for index, (custom_id, part) in enumerate(zip(layout.custom_ids, layout.part_of, strict=True)):
        lines.setdefault(part, []).append(_output_line(rng, custom_id, index, layout.models[part]))
    paths: dict[int, Path] = {}
    directory.mkdir(parents=True, exist_ok=True)
    for number, part_lines in lines.items():
        rng.shuffle(part_lines)
        path = paths[number] = download_path(directory, number, "output")
        path.write_bytes(b"".join(part_lines))
    return paths


def _naive_merge_once(custom_ids: list[str], outputs: list[Path], out: Path) -> float:
    """Seconds to read every output line into a dict by custom_id and write them in order."""
    loads = json.loads
    start = time.perf_counter()
    by_id: dict[str, bytes] = {}
    for path in outputs:
        with path.open("rb") as handle:
            for raw in handle:
                by_id[loads(raw)["custom_id"]] = raw
    with out.open("wb") as handle:
        for custom_id in custom_ids:
            handle.write(by_id[custom_id])
    return time.perf_counter() - start


def _merge_rows(root: Path, repeats: int) -> list[Row]:
    from batchctl.batches.results import read_results
    from batchctl.batches.submission import Batches
    from batchctl.config import Config

    layout = _layout(MERGE_REQUESTS, MERGE_PART_REQUESTS)
    directory = root / "merge-files"
    submission, parts, requests = _submission_records(layout, directory)
    outputs = _write_outputs(directory, layout)
    merged = root / "merged.jsonl"
    naive = root / "naive.jsonl"
    record_s: list[float] = []
    merge_s: list[float] = []
    base_s: list[float] = []
    note = ""
    with _store(root / "merge.db") as store:
        run_id = store.record_submission(
            job="submit",
            scope=None,
            trigger="submit",
            now=_NOW,
            submission=submission,
            parts=parts,
            requests=iter(requests),
        )
        part_ids = {p.number: p.id for p in store.parts(run_id)}
        batches = Batches(store, Config(path=None))
        for _ in range(repeats):  # interleaved; recording the same results again is idempotent
            start = time.perf_counter()
            for number, path in outputs.items():
                store.record_results(part_ids[number], read_results(path, "output"), _NOW)
            record_s.append(time.perf_counter() - start)
            start = time.perf_counter()
            summary = batches.write_results(run_id, merged)
            merge_s.append(time.perf_counter() - start)
            base_s.append(_naive_merge_once(layout.custom_ids, list(outputs.values()), naive))
        counts = {k: v for k, v in summary.counts.items() if not k.endswith("_tokens")}
        with merged.open("rb") as handle:
            written = sum(1 for _ in handle)
        if written != MERGE_REQUESTS or counts.get("pending"):
            note = f"merge wrote {written} lines; outcomes {counts}"
        else:
            note = f"{len(parts)} parts; outcomes {counts}"
    return [
        Row(
            f"batches: merge {MERGE_REQUESTS:,} results",
            median(merge_s) * 1000,
            "ms",
            baseline=median(base_s) * 1000,
            baseline_label="naive dict merge",
            target=MERGE_TARGET,
            samples=repeats,
            note=note,
        ),
        Row(
            f"batches: record_results of {MERGE_REQUESTS:,} output lines",
            median(record_s) * 1000,
            "ms",
            samples=repeats,
        ),
    ]
