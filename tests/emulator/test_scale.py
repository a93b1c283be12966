"""Large inputs: 120,000 requests as three 40,000-request batches."""

from __future__ import annotations

import json
import re

import openai
import pytest
from emulator_helpers import run_to_end

from batchctl.emulator import Emulator

TOTAL = 120_000
PER_BATCH = 40_000
# Parsing 40,000 full result lines costs the test more than the emulator takes to make them.
CUSTOM_ID = re.compile(r'"custom_id":"([^"]*)"')


@pytest.mark.slow
def test_120k_requests_in_three_batches_complete(emulator: Emulator, client: openai.OpenAI) -> None:
    batch_ids = []
    for part in range(TOTAL // PER_BATCH):
        lines = "".join(
            json.dumps(
                {
                    "custom_id": f"req-{i}",
                    "method": "POST",
                    "url": "/v1/chat/completions",
                    "body": {
                        "model": "gpt-4o-mini",
                        "messages": [{"role": "user", "content": f"Classify item {i}"}],
                    },
                }
            )
            + "\n"
            for i in range(part * PER_BATCH, (part + 1) * PER_BATCH)
        )
        uploaded = client.files.create(file=(f"part-{part}.jsonl", lines.encode()), purpose="batch")
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        batch_ids.append(batch.id)

    seen: set[str] = set()
    for batch_id in batch_ids:
        batch = run_to_end(emulator, client, batch_id, step=5.0)
        assert batch.status == "completed"
        assert batch.request_counts is not None
        assert batch.request_counts.completed == PER_BATCH
        assert batch.output_file_id is not None
        text = client.files.content(batch.output_file_id).text
        ids = CUSTOM_ID.findall(text)
        assert len(ids) == len(text.splitlines()) == PER_BATCH
        seen.update(ids)
    assert len(seen) == TOTAL
