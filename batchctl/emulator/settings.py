"""Settings of the emulator: timing, limits, determinism and authentication."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The real API's completion window, in seconds (24 h).
DAY = 86_400.0

# Fields that only make sense when the emulator starts; the control API refuses to change them.
_START_ONLY = frozenset({"state_dir", "clock_offset"})


@dataclass(frozen=True)
class EmulatorSettings:
    """How the emulator behaves. The defaults are fast, for demos and tests.

    Durations are in emulated seconds. A batch uses the settings in force when it is
    created, so changing them at run time never makes a running batch jump backwards.
    """

    #: Time a batch stays ``validating`` before its input file is checked.
    validation_delay: float = 0.2
    #: Requests completed per emulated second while ``in_progress``.
    processing_rate: float = 10_000.0
    #: Time a batch stays ``finalizing`` after its last request finished.
    finalizing_delay: float = 0.2
    #: Time a batch stays ``cancelling`` before it turns ``cancelled``.
    cancel_delay: float = 0.2
    #: Length of the completion window; a batch still running after it turns ``expired``.
    completion_window: float = DAY
    #: If set, processing stalls after this fraction of the requests, so the batch expires
    #: at the end of the window with partial results.
    expire_after_fraction: float | None = None
    #: Fraction of requests (chosen by a hash of custom_id) that fail with a 400 or 500 line.
    request_failure_rate: float = 0.0
    #: Seed of the output shuffle and of the per-request failure choice.
    shuffle_seed: int = 0
    #: Seed of the fault injector's random draws.
    fault_seed: int = 0
    #: If True, emulated time only moves with ``advance()``; else it follows the wall clock too.
    manual_clock: bool = False
    #: Seconds between the emulator's clock and this host's at the start (negative: the server
    #: is behind), to test a client whose clock is wrong.
    clock_offset: float = 0.0
    #: If set, only this API key is accepted (others get 401 ``invalid_api_key``).
    api_key: str | None = None
    #: Largest upload accepted for ``purpose=batch`` (the real limit is 200 MB).
    max_batch_file_bytes: int = 200 * 1024 * 1024
    #: Largest upload accepted for other purposes (the real limit is 512 MB).
    max_file_bytes: int = 512 * 1024 * 1024
    #: Most requests in one batch (the real limit is 50,000).
    max_requests_per_batch: int = 50_000
    #: Most entries in a failed batch's ``errors.data``.
    max_reported_errors: int = 10
    #: Most requests in one Anthropic Message Batch (the real limit is 100,000).
    max_message_batch_requests: int = 100_000
    #: Largest Message Batch create body (the real limit is 256 MB; over it: 413).
    max_message_batch_bytes: int = 256 * 1024 * 1024
    #: Where files live on disk; a fresh temporary directory (deleted on stop) if None. The
    #: emulator never reloads state from it: every start begins empty.
    state_dir: Path | None = None

    def __post_init__(self) -> None:
        for name in ("validation_delay", "finalizing_delay", "cancel_delay"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.processing_rate <= 0:
            raise ValueError("processing_rate must be > 0")
        if self.completion_window <= 0:
            raise ValueError("completion_window must be > 0")
        if self.expire_after_fraction is not None and not 0 <= self.expire_after_fraction <= 1:
            raise ValueError("expire_after_fraction must be between 0 and 1")
        if not 0 <= self.request_failure_rate <= 1:
            raise ValueError("request_failure_rate must be between 0 and 1")
        for name in (
            "max_batch_file_bytes",
            "max_file_bytes",
            "max_requests_per_batch",
            "max_message_batch_requests",
            "max_message_batch_bytes",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if self.max_reported_errors < 1:
            raise ValueError("max_reported_errors must be >= 1")

    def to_json(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        data = dataclasses.asdict(self)
        data["state_dir"] = None if self.state_dir is None else str(self.state_dir)
        return data

    def updated(self, changes: dict[str, Any]) -> EmulatorSettings:
        """A copy with ``changes`` applied, as sent to the control API.

        Raises ValueError for unknown fields, wrong types and fields fixed at start.
        """
        fields = {f.name: f for f in dataclasses.fields(self)}
        clean: dict[str, Any] = {}
        for name, value in changes.items():
            if name not in fields:
                raise ValueError(f"unknown setting {name!r}")
            if name in _START_ONLY:
                raise ValueError(f"setting {name!r} can only be set when the emulator starts")
            current = getattr(self, name)
            clean[name] = _coerce(name, value, current)
        return dataclasses.replace(self, **clean)


def _coerce(name: str, value: Any, current: Any) -> Any:
    """Check a JSON value against the type of the current value of the setting."""
    if name in ("expire_after_fraction", "api_key") and value is None:
        return None
    if name == "api_key":
        if not isinstance(value, str):
            raise ValueError("api_key must be a string or null")
        return value
    if name == "manual_clock":
        if not isinstance(value, bool):
            raise ValueError("manual_clock must be true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{name} must be a number")
    if (
        isinstance(current, int)
        and not isinstance(current, bool)
        and name != "expire_after_fraction"
    ):
        if not float(value).is_integer():
            raise ValueError(f"{name} must be an integer")
        return int(value)
    return float(value)
