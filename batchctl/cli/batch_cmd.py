"""``batchctl submit``, ``wait`` and ``results``: batch submissions, to any provider."""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from batchctl.cli import render, session
from batchctl.cli.complete import choices, job_names, on_expired_choices, run_ids
from batchctl.cli.options import JsonOption, ProviderOption

if TYPE_CHECKING:
    import threading

    from batchctl.batches.pricing import OutputEstimate
    from batchctl.batches.submission import Batches, ResultSummary, SubmitOptions
    from batchctl.batches.validation import Plan
    from batchctl.config import Config, JobConfig
    from batchctl.providers.profiles import ProviderSettings


def submit(
    files: Annotated[
        list[Path],
        typer.Argument(help="JSONL request files (- for standard input).", show_default=False),
    ],
    endpoint: Annotated[
        str | None,
        typer.Option(
            "--endpoint",
            "-e",
            help="The batch endpoint (default: the lines' url).",
            show_default=False,
        ),
    ] = None,
    job: Annotated[
        str | None,
        typer.Option(
            "--job", autocompletion=job_names, help="Record it as a run of this batch job."
        ),
    ] = None,
    provider: ProviderOption = None,
    metadata: Annotated[
        list[str] | None,
        typer.Option(
            "--metadata", "-m", help="KEY=VALUE put on each batch (repeatable).", show_default=False
        ),
    ] = None,
    completion_window: Annotated[
        str | None,
        typer.Option(
            "--completion-window",
            help="How long the provider may take (default 24h; which it offers: README).",
            show_default=False,
        ),
    ] = None,
    wait: Annotated[
        bool, typer.Option("--wait", help="Wait for the results, then merge them.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Validate and print the plan and its cost estimate.")
    ] = False,
    max_requests: Annotated[
        int | None,
        typer.Option(
            "--max-requests",
            help="Requests per part (default: the provider's limit).",
            show_default=False,
        ),
    ] = None,
    max_bytes: Annotated[
        int | None,
        typer.Option(
            "--max-bytes",
            help="Bytes per part (default: the provider's limit).",
            show_default=False,
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Submit even if this input was submitted before.")
    ] = False,
    on_expired: Annotated[
        str | None,
        typer.Option(
            "--on-expired",
            autocompletion=on_expired_choices,
            help="keep (default) or resubmit what an expired batch left undone.",
            show_default=False,
        ),
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Validate JSONL request files, split them into batches that fit, and submit them.

    Every request is recorded before anything is uploaded; a crash is picked up by
    ``batchctl wait`` or the daemon. Exit codes: 0 submitted (with --wait: all requests
    succeeded), 1 failed, 2 bad input (nothing uploaded), 3 with --wait: some requests did not
    succeed.
    """
    from batchctl.jobs.openai import submit_options

    config = session.current.config(required=False, check_host=False)
    job_config = None
    if job:
        from batchctl.runs import job_for_submission  # the engine's: imported only for a job

        job_config = job_for_submission(config, job)
    options = submit_options(
        job_config,
        config,
        provider=provider,
        endpoint=endpoint,
        completion_window=completion_window,
        metadata=_metadata(metadata),
        max_requests=max_requests,
        max_bytes=max_bytes,
        on_expired=on_expired,
        force=force,
    )
    if endpoint is not None:
        _check_endpoint(endpoint, config.provider(options.provider))
    if not dry_run:  # no key, or no URL: refused before anything, the database included, exists
        from batchctl.providers import check_settings

        check_settings(config.provider(options.provider))
    batches = open_batches(create=not dry_run)  # a dry run only reads
    if dry_run:
        history = batches.store.output_history(job) if job else {}
        _print_plan(batches.plan(files, options), options, config, json_output, history)
        return
    if job_config is not None:
        _refuse_overlap(batches, job_config, json_output)
    if wait:
        import threading

        from batchctl.cli.signals import stop_on_signals

        # A signal while the parts are sent lets the sending end, then stops the waiting.
        stop = threading.Event()
        with stop_on_signals(stop, second_interrupts=True):
            run_id = batches.submit(files, options, job=job or "submit")
            finish(batches, run_id, json_output=json_output, stop=stop)
        return
    run_id = batches.submit(files, options, job=job or "submit")
    if json_output:
        render.print_json(run_json(batches, run_id))
        return
    _print_submitted(batches, run_id)


def _refuse_overlap(batches: Batches, job: JobConfig, json_output: bool) -> None:
    """A job's concurrency policy holds for ``submit --job`` as for its other runs: under
    ``forbid``, a run of it still in flight makes this one a skipped run (exit 4)."""
    from batchctl.errors import ExitCode
    from batchctl.runs import Runs

    skipped = Runs(batches.store, batches.config, batches=lambda: batches).admit(job)
    if skipped is None:
        return
    if json_output:
        render.print_json(run_json(batches, skipped.id))
    else:
        render.note(
            f"run {skipped.id} {render.styled_status('skipped', stderr=True)}: {skipped.reason}"
        )
    raise typer.Exit(int(ExitCode.SKIPPED))


def wait(
    run_id: Annotated[
        int,
        typer.Argument(autocompletion=run_ids, help="The submission's run id.", show_default=False),
    ],
    timeout: Annotated[
        str | None, typer.Option("--timeout", help='Give up after this long, e.g. "2h" (exit 1).')
    ] = None,
    json_output: JsonOption = False,
) -> None:
    """Wait until a submission has finished and its results are merged, driving it forward.

    Exit codes as ``results``: 0 all requests succeeded, 1 the run failed or timed out,
    3 some requests did not succeed.
    """
    seconds = None
    if timeout is not None:
        from batchctl.durations import parse_duration
        from batchctl.errors import UsageError

        try:
            seconds = parse_duration(timeout)
        except ValueError as exc:
            raise UsageError(f"--timeout: {exc}") from None
    finish(open_batches(create=False), run_id, json_output=json_output, timeout=seconds)


def results(
    run_id: Annotated[
        int,
        typer.Argument(autocompletion=run_ids, help="The submission's run id.", show_default=False),
    ],
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            help="Write the merged results here; - for stdout "
            "(default: beside the database; the path is printed).",
            show_default=False,
        ),
    ] = None,
    errors: Annotated[
        Path | None,
        typer.Option(
            "--errors",
            help="Also write the requests that did not succeed here (JSONL).",
            show_default=False,
        ),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            autocompletion=choices(lambda: _FORMATS),
            help="jsonl or csv (default: from the -o file's extension, else jsonl).",
            show_default=False,
        ),
    ] = None,
    order: Annotated[
        str,
        typer.Option(
            "--order", autocompletion=choices(lambda: _ORDERS), help="input or completion."
        ),
    ] = "input",
    json_output: JsonOption = False,
) -> None:
    """Merge a finished submission's results: one line per request, in input order.

    Exit codes: 0 all requests succeeded, 1 the run failed, 3 some requests did not succeed.
    """
    from batchctl.errors import UsageError

    fmt = _output_format(output, errors, fmt)
    if order not in _ORDERS:
        raise UsageError(f"--order: expected input or completion, got {order!r}")
    batches = open_batches(create=False)
    if not batches.advance(run_id, send=False):  # reading results never spends
        parts = batches.store.parts(run_id)
        done = sum(1 for p in parts if p.downloaded_at is not None)
        raise UsageError(
            f"run {run_id} is still in progress ({done} of {len(parts)} parts finished)",
            hint=f"wait for it: batchctl wait {run_id}",
        )
    submission = batches.store.get_submission(run_id)
    assert submission is not None
    path = output or Path(submission.directory) / f"results.{fmt}"
    summary = batches.write_results(run_id, path, errors_path=errors, fmt=fmt, order=order)
    from batchctl.outputs import is_stdout

    if is_stdout(path):  # the results are on stdout: the summary goes beside them, to stderr
        with contextlib.redirect_stdout(sys.stderr):
            print_summary(summary, json_output)
    else:
        print_summary(summary, json_output)
    if summary.exit_code:
        raise typer.Exit(int(summary.exit_code))


_FORMATS = ("jsonl", "csv")
_ORDERS = ("input", "completion")
_EXTENSIONS = {".csv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl"}


def _output_format(output: Path | None, errors: Path | None, fmt: str | None) -> str:
    """The format of ``results``: --format, else the -o file's extension, else jsonl; a file
    whose extension says another format than the one it would get is refused."""
    from batchctl.errors import UsageError

    if fmt is not None and fmt not in _FORMATS:
        raise UsageError(f"--format: expected jsonl or csv, got {fmt!r}")
    named = None if output is None else _EXTENSIONS.get(output.suffix.lower())
    if output is not None and fmt is not None and named not in (None, fmt):
        raise UsageError(
            f"-o {output}: the extension says {named}, --format says {fmt}",
            hint=f"name the file {output.with_suffix('.' + fmt)}, or leave out --format",
        )
    if errors is not None and _EXTENSIONS.get(errors.suffix.lower(), "jsonl") != "jsonl":
        raise UsageError(
            f"--errors {errors}: the errors file is JSONL",
            hint=f"name it {errors.with_suffix('.jsonl')}",
        )
    return fmt or named or "jsonl"


def finish(
    batches: Batches,
    run_id: int,
    *,
    json_output: bool,
    timeout: float | None = None,
    stop: threading.Event | None = None,
) -> None:
    """Wait for a submission with progress bars, then print its results' summary.

    Ctrl-C, SIGTERM or SIGHUP stop the waiting, not the batches: exit 130, saying how to follow
    or cancel them (a second signal does not wait for the API call under way to end).
    """
    import threading

    from batchctl.batches.submission import WaitInterrupted
    from batchctl.cli.batch_display import PartsProgress
    from batchctl.cli.signals import stop_on_signals

    display = PartsProgress(stderr=json_output, enabled=not session.current.quiet)
    stop = stop or threading.Event()
    with stop_on_signals(stop, second_interrupts=True), display:
        try:
            batches.wait(run_id, timeout=timeout, on_progress=display.update, stop=stop)
        except KeyboardInterrupt:
            raise WaitInterrupted(run_id) from None
    submission = batches.store.get_submission(run_id)
    assert submission is not None and submission.results_path is not None
    summary = batches.summary(run_id, Path(submission.results_path))  # merged when it settled
    print_summary(summary, json_output)
    if summary.exit_code:
        raise typer.Exit(int(summary.exit_code))


def run_json(batches: Batches, run_id: int) -> dict[str, Any]:
    """A run's --json object with its ``parts`` and ``requests`` counts."""
    from batchctl.batches.failures import split

    run = batches.store.get_run(run_id)
    assert run is not None
    data = run.to_json()
    submission = batches.store.get_submission(run_id)
    if submission is not None:
        data["provider"] = submission.provider
    data["parts"] = [p.to_json() for p in batches.store.parts(run_id)]
    totals = batches.store.request_totals(run_id)
    data["requests"] = {k: v for k, v in totals.counts.items() if not k.endswith("_tokens")}
    data["failures"] = split(totals.failures).to_json()
    return data


def open_batches(*, create: bool = True) -> Batches:
    """The batches of this invocation's store, with its config (or defaults) for the API;
    ``create=False`` for a command about a run that exists (no database is created for it)."""
    from batchctl.batches.submission import Batches

    config = session.current.config(required=False, check_host=False)
    return Batches(session.current.store(create=create), config)


def _check_endpoint(endpoint: str, provider: ProviderSettings) -> None:
    """--endpoint is one the provider takes: one error line before any input is read."""
    from batchctl.config import accepted_endpoints
    from batchctl.errors import UsageError, quoted

    accepted = accepted_endpoints(provider)
    if endpoint not in accepted:
        raise UsageError(
            f"--endpoint: {provider.name} accepts {', '.join(accepted)}; got {quoted(endpoint)}"
        )


def _metadata(pairs: list[str] | None) -> dict[str, str]:
    from batchctl.errors import UsageError

    found: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--metadata: expected KEY=VALUE, got {pair!r}")
        found[key] = value
    return found


def _output_cell(requests: int, output: OutputEstimate) -> str:
    """A part's estimated output tokens as the plan's table shows them: requests that set no
    output limit are said to have none, never counted as "≤ 0"."""
    if output.basis == "history":
        return f"~{output.tokens:,}"
    if output.uncounted == requests:
        return "no limit"
    bounded = f"≤ {output.tokens:,}"
    return f"{bounded} + no limit" if output.uncounted else bounded


def _print_plan(
    plan: Plan,
    options: SubmitOptions,
    config: Config,
    json_output: bool,
    history: dict[str, tuple[int, int]],
) -> None:
    from batchctl.batches.pricing import cost_of, estimate_output
    from batchctl.records import ModelTokens

    outputs = [estimate_output(p, history) for p in plan.parts]
    cost = cost_of(
        [
            ModelTokens(p.model, p.estimated_input_tokens, o.tokens)
            for p, o in zip(plan.parts, outputs, strict=True)
        ],
        config.prices,
        config.batches.batch_discount,
        provider_id=config.provider(options.provider).published_prices,
    )
    tokens = sum(p.estimated_input_tokens for p in plan.parts)
    uncounted = sum(o.uncounted for o in outputs)
    priced = not cost.unpriced_models
    data = {
        "endpoint": plan.endpoint,
        "requests": plan.requests,
        "bytes": plan.bytes,
        "models": plan.models,
        "parts": [
            {
                "number": p.number,
                "model": p.model,
                "requests": p.requests,
                "bytes": p.bytes,
                "estimated_input_tokens": p.estimated_input_tokens,
                "estimated_output_tokens": o.tokens,
                "output_estimate": o.basis,
                "uncounted_output_requests": o.uncounted,
            }
            for p, o in zip(plan.parts, outputs, strict=True)
        ],
        "estimated_input_tokens": tokens,
        "estimated_output_tokens": sum(o.tokens for o in outputs),
        "uncounted_output_requests": uncounted,
        "estimated_cost": {
            "batch": round(cost.batch, 9) if priced else None,
            "synchronous": round(cost.synchronous, 9) if priced else None,
        },
        "unpriced_models": list(cost.unpriced_models),
        "sha256": plan.sha256,
    }
    if json_output:
        render.print_json(data)
        return
    from batchctl.cli.table import Column

    render.out(
        f"plan: {plan.requests:,} requests, {plan.bytes:,} bytes, endpoint {plan.endpoint}, "
        f"{len(plan.parts)} part(s)"
    )
    render.print_table(
        [
            Column("PART", right=True),
            Column("MODEL"),
            Column("REQUESTS", right=True),
            Column("BYTES", right=True),
            Column("EST. INPUT TOKENS", right=True),
            Column("EST. OUTPUT TOKENS", right=True),
        ],
        [
            [
                str(p.number),
                p.model,
                f"{p.requests:,}",
                f"{p.bytes:,}",
                f"{p.estimated_input_tokens:,}",
                _output_cell(p.requests, o),
            ]
            for p, o in zip(plan.parts, outputs, strict=True)
        ],
    )
    unpriced = cost.unpriced_models
    render.out(
        "estimated cost (an estimate, not a quote): "
        + (
            "unpriced"
            if render.nothing_priced(cost.synchronous, unpriced)
            else f"{render.cost(cost.batch, unpriced)} at batch price,"
            f" {render.cost(cost.synchronous, unpriced)} synchronous"
        )
    )
    bases = {o.basis for o in outputs}
    render.out(
        "  input tokens at ~4 bytes of JSON each; output "
        + (
            "from this job's earlier runs (average per request)"
            if bases == {"history"}
            else "at most each request's max_tokens / max_completion_tokens / max_output_tokens"
            if bases == {"limit"}
            else "from this job's earlier runs, else at most each request's output limit"
        )
    )
    if uncounted:
        render.out(
            f"  output not counted for {uncounted:,} request(s) that set no output limit: "
            "the cost can be higher"
        )
    if unpriced:
        render.out(f"unpriced (no price in [prices] or the published data): {', '.join(unpriced)}")


def _print_submitted(batches: Batches, run_id: int) -> None:
    parts = batches.store.parts(run_id)
    submission = batches.store.get_submission(run_id)
    assert submission is not None
    render.out(f"submitted run {run_id}: {submission.requests:,} requests in {len(parts)} part(s)")
    for part in parts:
        render.out(
            f"  part {part.number} ({part.model}, {part.requests:,} requests): "
            f"{part.batch_id} {render.styled_status(part.status)}"
        )
    render.out(render.paint(f"follow it with: batchctl wait {run_id}", "dim", render.colour()))


def print_summary(summary: ResultSummary, json_output: bool) -> None:
    if json_output:
        render.print_json(summary.to_json())
        return
    parts = render.request_counts(summary.counts, summary.failures)
    run = summary.run
    render.out(f"run {run.id} {render.styled_status(run.status.value)}: {parts}")
    written = summary.cache_write_tokens
    render.out(
        f"tokens: {summary.input_tokens:,} in ({summary.cached_tokens:,} cached"
        f"{f', {written:,} written to the cache' if written else ''}), "
        f"{summary.output_tokens:,} out ({summary.reasoning_tokens:,} reasoning)"
    )
    unpriced = summary.unpriced_models
    if render.nothing_priced(summary.cost_synchronous, unpriced):
        render.out("cost: unpriced")
    else:
        render.out(
            f"cost: {render.cost(summary.cost_batch, unpriced)} at batch price "
            f"(synchronous: {render.cost(summary.cost_synchronous, unpriced)}, saved "
            f"{render.cost(summary.cost_synchronous - summary.cost_batch, unpriced)})"
        )
    if unpriced:
        render.out(f"unpriced (no price in [prices] or the published data): {', '.join(unpriced)}")
    render.out(f"results: {summary.path}")
