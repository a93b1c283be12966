"""``batchctl demo``: the config's jobs and real batches, against the built-in API emulator."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from batchctl.cli import render, session


def demo() -> None:
    """Run every enabled job of the config — local jobs with progress bars, batch jobs as real
    batches through a LOCAL EMULATOR of their provider's batch API (no key, no cost) — then print
    each batch's results and cost, and the history.

    Without --db, the history goes to a new temporary database, so the demo can be run again.
    """
    from batchctl.cli import batch_cmd, run_cmd
    from batchctl.emulator import Emulator, EmulatorSettings
    from batchctl.providers.profiles import DEFAULT_PROVIDER

    if session.current.db is None:
        session.current.db = str(Path(tempfile.mkdtemp(prefix="batchctl-demo-")) / "demo.db")
    from dataclasses import replace

    config = session.current.config()
    targets = [
        (job, scope) for job in config.jobs.values() if job.enabled for scope in job.run_scopes()
    ]
    with Emulator(EmulatorSettings(processing_rate=40.0, validation_delay=0.5)) as emulator:
        os.environ["BATCHCTL_DEMO_KEY"] = "emulator"
        # Every provider the jobs use goes to the emulator, polled often: its batches finish
        # in seconds, not hours.
        emulated = {
            name: replace(
                config.provider(name),
                # The anthropic SDK adds /v1 itself: its base is the emulator's root.
                base_url=emulator.url
                if config.provider(name).api == "anthropic"
                else emulator.base_url,
                api_key_env="BATCHCTL_DEMO_KEY",
                poll_interval=0.5,
            )
            for name in {DEFAULT_PROVIDER, *(job.provider for job in config.jobs.values())}
        }
        config = replace(config, providers={**config.providers, **emulated})
        session.current.use_config(config)
        render.out(
            "the batch API emulator (a local stand-in for OpenAI's and Anthropic's batch APIs)"
            f" listens on {emulator.url}"
        )
        render.out(f"history goes to {session.current.db}\n")
        runs = run_cmd.run_targets(config, targets, wait=True, json_output=False)
        batches = batch_cmd.open_batches()
        for run in runs:
            submission = batches.store.get_submission(run.id)
            if submission is not None and submission.results_path:
                render.out()
                summary = batches.summary(run.id, Path(submission.results_path))
                batch_cmd.print_summary(summary, json_output=False)
    render.out(f"\nsee the history again with: batchctl --db {session.current.db} status")
