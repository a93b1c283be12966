"""A local emulator of the OpenAI Files + Batches HTTP API, and of Anthropic's Message Batches.

It is a stand-in for the real API, for trying batchctl and for testing batch pipelines in
CI without an API key and without spending money: the real ``openai`` SDK talks to it over
HTTP (``OpenAI(base_url=emu.base_url, api_key="anything")``). It listens on loopback by
default. It follows the batchctl reference notes on the real API for paths, objects,
statuses, file formats, error shapes and limits::

    from batchctl.emulator import Emulator, EmulatorSettings, Fault

    with Emulator(settings=EmulatorSettings(manual_clock=True)) as emu:
        client = openai.OpenAI(base_url=emu.base_url, api_key="test-key")
        ...
        emu.advance(60)                      # move emulated time
        emu.set_faults([Fault(kind="lost_reply", method="POST", path="/v1/batches", count=1)])
        emu.requests                         # every HTTP request, with status and fault

``serve()`` runs one in the foreground (``batchctl emulator --port N``); the control API
under ``/_emulator`` (see ``batchctl.emulator.control``) drives it from another process.

What it does
    Files: upload (streamed to disk; ``.jsonl`` and 200 MB checks for ``purpose=batch``),
    list, retrieve, content, delete, expiry (``expires_after``; batch inputs after 30 days).
    Batches: create (parameter checks are synchronous), retrieve, list (newest first, cursor
    pages), cancel. Input validation is asynchronous, as in the real API: the batch turns
    ``failed`` with ``errors`` (``invalid_json_line``, ``duplicate_custom_id``,
    ``url_mismatch``, ``model_mismatch``, ``empty_file``, ``too_many_tasks``, and
    ``missing_required_parameter`` / ``invalid_custom_id`` / ``invalid_method`` /
    ``invalid_body`` for malformed lines; at most ``max_reported_errors`` are listed).
    Valid batches go ``in_progress`` -> ``finalizing`` -> ``completed`` over emulated time,
    with growing ``request_counts`` and ``usage``; outputs are shuffled (deterministically by
    ``shuffle_seed``); failed requests (model names starting with ``nonexistent`` give 404
    ``model_not_found``; ``request_failure_rate`` gives 400/500) go to the error file; an
    output or error file that would be empty is not created (its id is null). Batches not
    done within ``completion_window`` turn ``expired``: finished results are kept and each
    request that never ran gets a ``batch_expired`` error line (``expire_after_fraction``
    makes a batch stall part-way so that it expires). Cancel: ``cancelling`` for
    ``cancel_delay``, then ``cancelled`` with the results finished before the cancel call.
    Faults (``Fault``): 429 with Retry-After, 500, 503, dropped connections, slow replies,
    and ``lost_reply`` (the request takes effect but the reply is lost).

Anthropic's Message Batches (``/v1/messages/batches``, see ``batchctl.emulator.anthropic``)
    The ``anthropic`` SDK uses the root URL: ``Anthropic(base_url=emu.url, api_key=...)``.
    Create (requests inline; envelope errors and 413 at once), retrieve, list, cancel,
    delete, results (shuffled JSONL at an absolute ``results_url``). Batches follow the same
    timeline and settings as OpenAI's (``progress``), showing it as ``in_progress`` ->
    ``ended`` (or ``canceling`` -> ``ended``) with every request counted as ``processing``
    until the end; per-request outcomes, error markers and cache tokens are described in
    ``batchctl.emulator.messages``. ``emu.message_batches`` is a snapshot of them.

Choices where the real API is undocumented
    - Cancelled batches: requests that never ran get NO line in either file (the real API
      does not document them; some compatible servers write ``batch_cancelled`` lines).
    - Cancelling a batch already in a final status gives 400 ``invalid_request_error``
      ("Cannot cancel a batch with status 'completed'."); cancelling a ``cancelling`` batch
      returns it unchanged.
    - Expired batches count only the requests that ran in ``request_counts`` (as observed).
    - ``expires_at`` of a batch is always ``created_at`` + 24 h, whatever the emulated window.
    - Requests are executed when validation ends; the batch reveals their results over time.
    - ``/v1/batches`` list order is newest first; an unknown ``after`` cursor gives an empty
      page.

    Usage in chat and responses bodies reports cached and reasoning tokens by predictable
    rules (``prompt_cache_key`` on a long prompt; a reasoning effort or a reasoning model), so
    that costs can be tested end to end (``batchctl.emulator.responses``).

What it does not emulate
    Real models (bodies are synthetic echoes; token counts are length estimates), other
    endpoints than Files and Batches, organizations/projects and their permissions, rate
    limits and enqueued-token limits (``token_limit_exceeded``) other than injected faults,
    the 2,000 batches/hour creation limit, the 50,000-embedding-inputs limit, webhooks,
    ``output_expires_after`` beyond the output files' ``expires_at``, billing, and streaming
    or ``stream=true`` bodies (those requests fail with a 400 line). On the Anthropic side:
    the synchronous Messages API, workspaces (``anthropic-workspace-id`` is ignored), beta
    features, replies other than one text block (tools, thinking), the queued-request rate
    limits other than injected faults, and the spend limit.
"""

from batchctl.emulator.emulator import Emulator, serve
from batchctl.emulator.faults import Fault, FaultKind
from batchctl.emulator.requestlog import RequestRecord
from batchctl.emulator.settings import EmulatorSettings

__all__ = ["Emulator", "EmulatorSettings", "Fault", "FaultKind", "RequestRecord", "serve"]
