"""``batchctl results``, ``status`` of submissions, ``status --remote`` and ``adopt``.

batchctl talks to the project's OpenAI API emulator through the real ``openai`` SDK over HTTP;
the emulator shuffles each batch's output lines, so merging in input order is really tested.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import openai
import pytest

from batchctl.emulator import Emulator, EmulatorSettings
from tests.batches.jsonl import CHAT, read_jsonl, request, write_jsonl
from tests.conftest import run_exe, run_into_a_closed_pipe
from tests.waiting import scaled

FAILING = {4, 11, 23}  # positions whose model does not exist: model_not_found in the emulator


@dataclass
class Finished:
    run_id: int
    ids: list[str]  # in input order
    failed: set[str]
    api_lines: dict[str, dict[str, Any]]  # custom_id -> the line of the API's output/error file
    api_order: list[str]  # custom_ids in the order of the API's output files


@pytest.fixture
def finished(api: Emulator, ws: Any, cli: Any) -> Finished:
    """A submission of 30 requests (3 of them failing) that has ended."""
    ids = [f"req-{i:02d}" for i in range(30)]
    rows = [
        request(cid, model="nonexistent-model" if i in FAILING else "gpt-4o-mini")
        for i, cid in enumerate(ids)
    ]
    write_jsonl(ws.root / "in.jsonl", rows)
    submitted = cli("submit", "in.jsonl", "--wait", "--json")
    assert submitted.exit_code == 3, submitted.stderr
    run_id = submitted.json()["id"]
    api_lines: dict[str, dict[str, Any]] = {}
    api_order: list[str] = []
    for part in cli("status", str(run_id), "--json").json()["parts"]:
        for file_id in (part["output_file_id"], part["error_file_id"]):
            if file_id is None:
                continue
            for raw in api.file_content(file_id).decode().splitlines():
                line = json.loads(raw)
                api_lines[line["custom_id"]] = line
                api_order.append(line["custom_id"])
    failed = {ids[i] for i in FAILING}
    return Finished(run_id, ids, failed, api_lines, api_order)


# --- results ---------------------------------------------------------------------------------


def test_results_writes_one_line_per_request_in_input_order(finished: Finished, ws: Any, cli: Any):
    assert finished.api_order != finished.ids  # the API's lines really come shuffled
    out = ws.root / "out.jsonl"

    result = cli("results", str(finished.run_id), "-o", str(out))

    assert result.exit_code == 3
    assert f"results: {out}" in result.stdout
    lines = read_jsonl(out)
    assert [line["custom_id"] for line in lines] == finished.ids


def test_succeeded_lines_keep_the_api_response_exactly(finished: Finished, ws: Any, cli: Any):
    out = ws.root / "out.jsonl"
    cli("results", str(finished.run_id), "-o", str(out))

    succeeded = [line for line in read_jsonl(out) if line["custom_id"] not in finished.failed]

    assert len(succeeded) == 27
    for line in succeeded:
        api_line = finished.api_lines[line["custom_id"]]
        assert line["response"]["status_code"] == 200
        assert line["response"]["body"] == api_line["response"]["body"]
        assert line["response"] == api_line["response"]
        assert line == api_line  # the API's own line, as documented
        assert line["error"] is None


def test_failed_lines_have_error_code_failed_and_keep_the_api_response(
    finished: Finished, ws: Any, cli: Any
):
    out = ws.root / "out.jsonl"
    cli("results", str(finished.run_id), "-o", str(out))

    failed = [line for line in read_jsonl(out) if line["custom_id"] in finished.failed]

    assert len(failed) == 3
    for line in failed:
        assert line["error"]["code"] == "failed"
        assert line["error"]["type"] == "model_not_found"
        assert "nonexistent-model" in line["error"]["message"]
        assert line["response"] == finished.api_lines[line["custom_id"]]["response"]
        assert line["response"]["status_code"] == 404


def test_errors_file_gets_only_the_requests_that_did_not_succeed(
    finished: Finished, ws: Any, cli: Any
):
    out, errors = ws.root / "out.jsonl", ws.root / "errors.jsonl"

    result = cli("results", str(finished.run_id), "-o", str(out), "--errors", str(errors))

    assert result.exit_code == 3
    error_lines = read_jsonl(errors)
    assert [line["custom_id"] for line in error_lines] == [
        cid for cid in finished.ids if cid in finished.failed
    ]
    merged = {line["custom_id"]: line for line in read_jsonl(out)}
    assert all(line == merged[line["custom_id"]] for line in error_lines)


def test_errors_file_is_empty_when_every_request_succeeded(api: Emulator, ws: Any, cli: Any):
    write_jsonl(ws.root / "in.jsonl", [request("a"), request("b")])
    run_id = cli("submit", "in.jsonl", "--wait", "--json").json()["id"]
    out, errors = ws.root / "out.jsonl", ws.root / "errors.jsonl"

    result = cli("results", str(run_id), "-o", str(out), "--errors", str(errors))

    assert result.exit_code == 0
    assert [line["custom_id"] for line in read_jsonl(out)] == ["a", "b"]
    assert errors.read_text() == ""


def test_csv_format_has_a_header_and_one_row_per_request(finished: Finished, ws: Any, cli: Any):
    out = ws.root / "out.csv"

    result = cli("results", str(finished.run_id), "-o", str(out), "--format", "csv")

    assert result.exit_code == 3
    with out.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:3] == ["custom_id", "outcome", "status_code"]
    assert "content" in rows[0]
    body = [dict(zip(rows[0], row, strict=True)) for row in rows[1:]]
    assert [row["custom_id"] for row in body] == finished.ids
    for row in body:
        if row["custom_id"] in finished.failed:
            assert (row["outcome"], row["status_code"]) == ("failed", "404")
        else:
            assert (row["outcome"], row["status_code"]) == ("succeeded", "200")
            api_body = finished.api_lines[row["custom_id"]]["response"]["body"]
            assert row["content"] == api_body["choices"][0]["message"]["content"]


def test_completion_order_gives_the_same_requests(finished: Finished, ws: Any, cli: Any):
    out = ws.root / "out.jsonl"

    result = cli("results", str(finished.run_id), "-o", str(out), "--order", "completion")

    assert result.exit_code == 3
    ids = [line["custom_id"] for line in read_jsonl(out)]
    assert sorted(ids) == sorted(finished.ids)
    assert len(ids) == len(set(ids))


@pytest.mark.parametrize(
    "option", [["--format", "xml"], ["--order", "random"]], ids=["format", "order"]
)
def test_results_rejects_unknown_format_and_order(
    finished: Finished, ws: Any, cli: Any, option: list[str]
):
    result = cli("results", str(finished.run_id), "-o", "out.jsonl", *option)

    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {option[0]}: ")
    assert not (ws.root / "out.jsonl").exists()


def test_results_json_reports_counts_tokens_and_cost_at_batch_price(
    finished: Finished, ws: Any, cli: Any
):
    result = cli("results", str(finished.run_id), "-o", "out.jsonl", "--json")

    assert result.exit_code == 3
    summary = result.json()
    assert summary["id"] == finished.run_id
    assert summary["status"] == "partial"
    assert summary["requests"] == {"succeeded": 27, "failed": 3}
    usage = [
        finished.api_lines[cid]["response"]["body"]["usage"]
        for cid in finished.ids
        if cid not in finished.failed
    ]
    tokens_in = sum(u["prompt_tokens"] for u in usage)
    tokens_out = sum(u["completion_tokens"] for u in usage)
    assert (summary["input_tokens"], summary["output_tokens"]) == (tokens_in, tokens_out)
    synchronous = (tokens_in * 0.15 + tokens_out * 0.60) / 1e6
    assert summary["synchronous_cost"] == pytest.approx(synchronous, abs=1e-6)
    assert summary["cost"] == pytest.approx(synchronous / 2, abs=1e-6)
    assert ws.sql("SELECT total_tokens FROM runs WHERE id = ?", finished.run_id) == [
        (tokens_in + tokens_out,)
    ]
    (cost,) = ws.sql("SELECT total_cost FROM runs WHERE id = ?", finished.run_id)[0]
    assert cost == pytest.approx(synchronous / 2, rel=1e-6)


def test_wait_exits_1_when_no_request_succeeds(api: Emulator, ws: Any, cli: Any):
    write_jsonl(
        ws.root / "in.jsonl", [request(f"r{i}", model="nonexistent-model") for i in range(3)]
    )
    run_id = cli("submit", "in.jsonl", "--json").json()["id"]

    waited = cli("wait", str(run_id), "--json")

    assert waited.exit_code == 1
    assert waited.json()["status"] == "failed"
    assert waited.json()["requests"] == {"failed": 3}
    assert ws.sql("SELECT status, items_failed FROM runs") == [("failed", 3)]
    errors = ws.root / "errors.jsonl"
    merged = cli("results", str(run_id), "-o", "out.jsonl", "--errors", str(errors))
    assert merged.exit_code == 1
    assert [line["custom_id"] for line in read_jsonl(errors)] == ["r0", "r1", "r2"]


def test_results_of_a_run_still_in_progress_exits_2(
    ws: Any, cli: Any, monkeypatch: pytest.MonkeyPatch
):
    with Emulator(EmulatorSettings(manual_clock=True)) as emu:  # time stands still
        monkeypatch.setenv("OPENAI_BASE_URL", emu.base_url)
        monkeypatch.setenv("OPENAI_API_KEY", "test-key")
        ws.write_config("[openai]\npoll_interval = 0.05\n")
        write_jsonl(ws.root / "in.jsonl", [request("a")])
        run_id = cli("submit", "in.jsonl", "--json").json()["id"]

        result = cli("results", str(run_id), "-o", "out.jsonl")

    assert result.exit_code == 2
    assert f"error: run {run_id} is still in progress (0 of 1 parts finished)" in result.stderr
    assert f"batchctl wait {run_id}" in result.stderr
    assert not (ws.root / "out.jsonl").exists()


# --- status ----------------------------------------------------------------------------------


def test_status_json_of_a_submission_has_parts_and_request_counts(
    finished: Finished, api: Emulator, cli: Any
):
    result = cli("status", str(finished.run_id), "--json")

    assert result.exit_code == 0
    run = result.json()
    assert run["id"] == finished.run_id
    assert run["status"] == "partial"
    assert run["requests"] == {"succeeded": 27, "failed": 3}
    parts = {p["model"]: p for p in run["parts"]}
    assert set(parts) == {"gpt-4o-mini", "nonexistent-model"}
    for part in parts.values():
        assert part["batch_id"] in api.batches
        assert part["status"] == "completed"
    assert parts["gpt-4o-mini"]["request_counts"] == {"total": 27, "completed": 27, "failed": 0}
    assert parts["nonexistent-model"]["request_counts"] == {"total": 3, "completed": 0, "failed": 3}


def test_status_json_lists_submissions_with_parts_and_request_counts(finished: Finished, cli: Any):
    result = cli("status", "--json")

    assert result.exit_code == 0
    (run,) = result.json()
    assert run["id"] == finished.run_id
    assert len(run["parts"]) == 2
    assert run["requests"] == {"succeeded": 27, "failed": 3}


def _direct_batch(emu: Emulator, ids: list[str]) -> str:
    """A batch created with the openai SDK, without batchctl."""
    content = "".join(json.dumps(request(cid)) + "\n" for cid in ids).encode()
    with openai.OpenAI(base_url=emu.base_url, api_key="test-key") as sdk:
        uploaded = sdk.files.create(file=("direct.jsonl", content), purpose="batch")
        batch = sdk.batches.create(
            input_file_id=uploaded.id, endpoint=CHAT, completion_window="24h"
        )
    return batch.id


def test_status_remote_lists_the_accounts_batches_with_their_run(api: Emulator, ws: Any, cli: Any):
    direct = _direct_batch(api, ["d1", "d2"])
    write_jsonl(ws.root / "in.jsonl", [request("a")])
    submitted = cli("submit", "in.jsonl", "--json").json()
    ours = submitted["parts"][0]["batch_id"]

    result = cli("status", "--remote", "--json")

    assert result.exit_code == 0
    listed = {b["id"]: b for b in result.json()}
    assert set(listed) == {direct, ours}
    assert listed[ours]["run_id"] == submitted["id"]
    assert listed[direct]["run_id"] is None
    assert listed[direct]["endpoint"] == CHAT
    table = cli("status", "--remote")
    assert table.exit_code == 0
    assert direct in table.stdout
    assert ours in table.stdout


def test_adopted_batch_becomes_a_tracked_run_whose_results_work(api: Emulator, ws: Any, cli: Any):
    ids = [f"d{i}" for i in range(8)]
    batch_id = _direct_batch(api, ids)

    adopted = cli("adopt", batch_id, "--json")

    assert adopted.exit_code == 0, adopted.stderr
    (run,) = adopted.json()
    assert [p["batch_id"] for p in run["parts"]] == [batch_id]
    assert ws.sql("SELECT job FROM runs WHERE id = ?", run["id"]) == [("adopt",)]
    assert cli("wait", str(run["id"])).exit_code == 0
    out = ws.root / "out.jsonl"
    result = cli("results", str(run["id"]), "-o", str(out))
    assert result.exit_code == 0
    lines = read_jsonl(out)
    assert [line["custom_id"] for line in lines] == ids
    assert all(line["response"]["status_code"] == 200 for line in lines)
    remote = {b["id"]: b for b in cli("status", "--remote", "--json").json()}
    assert remote[batch_id]["run_id"] == run["id"]
    assert len([r for r in api.requests if r.method == "POST" and r.path == "/v1/batches"]) == 1


def test_adopting_a_tracked_batch_again_exits_2(api: Emulator, ws: Any, cli: Any):
    batch_id = _direct_batch(api, ["d1"])
    run_id = cli("adopt", batch_id, "--json").json()[0]["id"]

    again = cli("adopt", batch_id)

    assert again.exit_code == 2
    assert f"error: batch {batch_id} is already tracked as run {run_id}" in again.stderr
    assert ws.sql("SELECT count(*) FROM runs") == [(1,)]


def test_adopting_an_unknown_batch_is_one_error_line_exit_2(api: Emulator, ws: Any, cli: Any):
    result = cli("adopt", "batch_does_not_exist")

    assert result.exit_code == 2
    assert result.stderr.splitlines()[0] == "error: no batch batch_does_not_exist at the API"
    assert not ws.has_tables() or ws.sql("SELECT count(*) FROM runs") == [(0,)]


def test_a_download_that_no_longer_matches_its_checksum_is_fetched_again(
    finished: Finished, api: Emulator, ws: Any, cli: Any
):
    downloads = sorted(ws.root.glob("*-files/*/part-*.output.jsonl"))
    assert downloads and all(Path(f"{d}.sha256").exists() for d in downloads)
    damaged = downloads[0]
    damaged.write_bytes(damaged.read_bytes().replace(b"Echo", b"Ecno", 1))
    content_calls = len([r for r in api.requests if r.path.endswith("/content")])
    out = ws.root / "out.jsonl"

    # completion order needs a merge from the downloads (input order copies the merged file)
    result = cli("results", str(finished.run_id), "-o", str(out), "--order", "completion")

    assert result.exit_code == 3
    assert len([r for r in api.requests if r.path.endswith("/content")]) == content_calls + 1
    lines = {line["custom_id"]: line for line in read_jsonl(out)}
    for cid, line in finished.api_lines.items():
        if cid not in finished.failed:
            assert lines[cid]["response"] == line["response"]


# --- output files ------------------------------------------------------------------------------


def test_results_format_follows_the_output_files_extension(finished: Finished, ws: Any, cli: Any):
    out = ws.root / "answers.csv"

    result = cli("results", str(finished.run_id), "-o", str(out))

    assert result.exit_code == 3
    with out.open(newline="") as handle:
        rows = list(csv.reader(handle))
    assert rows[0][:2] == ["custom_id", "outcome"]
    assert [row[0] for row in rows[1:]] == finished.ids


def test_results_format_contradicting_the_extension_is_refused(
    finished: Finished, ws: Any, cli: Any
):
    result = cli("results", str(finished.run_id), "-o", "answers.csv", "--format", "jsonl")

    assert result.exit_code == 2
    assert result.stderr.startswith("error: -o answers.csv: the extension says csv, --format ")
    assert not (ws.root / "answers.csv").exists()


def test_errors_file_named_as_csv_is_refused(finished: Finished, ws: Any, cli: Any):
    result = cli("results", str(finished.run_id), "-o", "out.jsonl", "--errors", "bad.csv")

    assert result.exit_code == 2
    assert result.stderr.startswith("error: --errors bad.csv: the errors file is JSONL")
    assert not (ws.root / "out.jsonl").exists()


def test_results_to_dash_go_to_stdout_and_the_summary_to_stderr(
    finished: Finished, ws: Any, cli: Any
):
    result = cli("results", str(finished.run_id), "-o", "-")

    assert result.exit_code == 3
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["custom_id"] for line in lines] == finished.ids
    assert f"run {finished.run_id} " in result.stderr


def test_results_to_a_directory_are_refused_leaving_it_as_it_was(
    finished: Finished, ws: Any, cli: Any
):
    directory = ws.root / "somewhere"
    directory.mkdir()

    result = cli("results", str(finished.run_id), "-o", str(directory))

    assert result.exit_code == 2
    assert result.stderr.startswith(f"error: {directory} is a directory\n")
    assert list(directory.iterdir()) == []
    assert sorted(p.name for p in ws.root.iterdir() if p.name.startswith("somewhere")) == [
        "somewhere"
    ]


def test_results_through_a_symlink_replace_its_target_and_keep_the_link(
    finished: Finished, ws: Any, cli: Any
):
    target = ws.root / "real.jsonl"
    target.write_text("old\n")
    link = ws.root / "link.jsonl"
    link.symlink_to(target)

    result = cli("results", str(finished.run_id), "-o", str(link))

    assert result.exit_code == 3
    assert link.is_symlink()
    assert [line["custom_id"] for line in read_jsonl(target)] == finished.ids


def test_new_results_file_is_private_and_a_replaced_one_keeps_its_mode(
    finished: Finished, ws: Any, cli: Any
):
    new, shared = ws.root / "new.jsonl", ws.root / "shared.jsonl"
    shared.write_text("old\n")
    shared.chmod(0o644)

    cli("results", str(finished.run_id), "-o", str(new))
    cli("results", str(finished.run_id), "-o", str(shared))

    assert new.stat().st_mode & 0o777 == 0o600
    assert shared.stat().st_mode & 0o777 == 0o644
    assert len(read_jsonl(shared)) == len(finished.ids)


def test_results_take_over_the_part_file_a_killed_writer_left(
    finished: Finished, ws: Any, cli: Any
):
    out = ws.root / "out.jsonl"
    (ws.root / "out.jsonl.part").write_text("half a line from a killed results")

    result = cli("results", str(finished.run_id), "-o", str(out))

    assert result.exit_code == 3
    assert [line["custom_id"] for line in read_jsonl(out)] == finished.ids
    assert not (ws.root / "out.jsonl.part").exists()


def test_two_results_writing_one_file_at_once_leave_it_whole(
    finished: Finished, ws: Any, batchctl_exe: str
):
    import subprocess

    out = ws.root / "out.jsonl"
    args = [batchctl_exe, "results", str(finished.run_id), "-o", str(out)]
    writers = [
        subprocess.Popen(args, env=ws.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for _ in range(4)
    ]

    codes = [writer.wait(timeout=scaled(60)) for writer in writers]

    assert codes == [3, 3, 3, 3]
    assert [line["custom_id"] for line in read_jsonl(out)] == finished.ids
    assert sorted(p.name for p in ws.root.glob("out.jsonl*")) == ["out.jsonl"]


def test_results_stream_into_a_fifo(finished: Finished, ws: Any, cli: Any):
    import os
    import threading

    fifo = ws.root / "results.fifo"
    os.mkfifo(fifo)
    received: list[bytes] = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_bytes()), daemon=True)
    reader.start()

    result = cli("results", str(finished.run_id), "-o", str(fifo))
    reader.join(timeout=scaled(60))

    assert result.exit_code == 3
    lines = [json.loads(line) for line in received[0].decode().splitlines()]
    assert [line["custom_id"] for line in lines] == finished.ids
    assert fifo.is_fifo()


def test_results_to_a_full_device_are_one_error_line_and_the_device_stays(
    finished: Finished, ws: Any, cli: Any
):
    import os
    import stat

    full = ws.root / "full"  # a device node like /dev/full, of our own (mknod needs root)
    try:
        os.mknod(full, stat.S_IFCHR | 0o666, os.makedev(1, 7))
    except PermissionError:
        pytest.skip("creating a device node needs root")

    result = cli("results", str(finished.run_id), "-o", str(full))

    assert result.exit_code == 2
    assert result.stderr == f"error: cannot write {full}: No space left on device\n"
    assert stat.S_ISCHR(full.stat().st_mode)


def test_results_to_dev_stdout_stream_into_the_pipe(finished: Finished, ws: Any, batchctl_exe: str):
    result = run_exe(
        batchctl_exe, "results", str(finished.run_id), "-o", "/dev/stdout", env=ws.env()
    )

    assert result.returncode == 3, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["custom_id"] for line in lines] == finished.ids
    assert "results: /dev/stdout" in result.stderr


def test_results_failing_midway_leave_the_old_file_whole_and_no_temporary_file(
    api: Emulator, ws: Any, cli: Any, batchctl_exe: str
):
    import resource
    import subprocess

    write_jsonl(ws.root / "in.jsonl", [request(f"r{i}") for i in range(400)])
    run_id = cli("submit", "in.jsonl", "--wait", "--json").json()["id"]
    out = ws.root / "out.jsonl"
    out.write_text("old\n")
    before = sorted(p.name for p in ws.root.iterdir())
    # Writes past the database's size and some room fail (EFBIG), as on a disk that fills up:
    # the database goes on working and the results (~280 kB) cannot be written whole.
    limit = ws.db.stat().st_size + 32 * 1024

    result = subprocess.run(
        [batchctl_exe, "results", str(run_id), "-o", str(out)],
        env=ws.env(),
        capture_output=True,
        text=True,
        timeout=scaled(60),
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
    )

    assert result.returncode == 2, result.stderr
    assert result.stderr == f"error: cannot write {out}: File too large\n"
    assert out.read_text() == "old\n"
    assert sorted(p.name for p in ws.root.iterdir()) == before


def _content_calls(api: Emulator) -> int:
    return len([r for r in api.requests if r.path.endswith("/content")])


def test_results_copies_the_merged_file_without_reading_the_downloads(
    finished: Finished, api: Emulator, ws: Any, cli: Any
):
    (merged,) = ws.root.glob("*-files/*/results.jsonl")
    for download in ws.root.glob("*-files/*/part-*.output.jsonl*"):
        download.unlink()  # a merge would have to fetch them again
    calls = _content_calls(api)
    out = ws.root / "out.jsonl"

    result = cli("results", str(finished.run_id), "-o", str(out))

    assert result.exit_code == 3, result.stderr
    assert _content_calls(api) == calls
    assert out.read_bytes() == merged.read_bytes()
    assert [line["custom_id"] for line in read_jsonl(out)] == finished.ids


def test_results_merges_again_when_the_merged_file_was_changed(
    finished: Finished, ws: Any, cli: Any
):
    (merged,) = ws.root.glob("*-files/*/results.jsonl")
    merged.write_text(merged.read_text().replace("req-05", "req-99"))
    out = ws.root / "out.jsonl"

    result = cli("results", str(finished.run_id), "-o", str(out))

    assert result.exit_code == 3, result.stderr
    assert [line["custom_id"] for line in read_jsonl(out)] == finished.ids


def test_settling_deletes_the_part_files_that_no_retry_can_need(
    finished: Finished, ws: Any, cli: Any
):
    (directory,) = ws.root.glob("*-files/*")

    kept = sorted(p.name for p in directory.glob("part-???.jsonl"))

    # part 1 (gpt-4o-mini) all succeeded; part 2 holds the failed requests a retry may send
    assert kept == ["part-002.jsonl"]
    ids = [line["custom_id"] for line in read_jsonl(directory / "part-002.jsonl")]
    assert sorted(ids) == sorted(finished.failed)
    assert (directory / "results.jsonl").exists()
    assert list(directory.glob("part-001.output.jsonl"))


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_results_into_a_closed_pipe_ends_quietly_without_a_traceback(
    api: Emulator, ws: Any, cli: Any, batchctl_exe: str, fmt: str
):
    import os

    write_jsonl(ws.root / "in.jsonl", [request(f"r{i}") for i in range(500)])
    submitted = cli("submit", "in.jsonl", "--wait", "--json")
    assert submitted.exit_code == 0, submitted.stderr
    run_id = str(submitted.json()["id"])
    done = run_into_a_closed_pipe(
        batchctl_exe, "results", run_id, "-o", "-", "--format", fmt, env=dict(os.environ)
    )

    assert done == (141, "")
