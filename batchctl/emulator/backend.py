"""Everything one emulator holds, shared by its HTTP handlers and its Python API."""

from __future__ import annotations

import threading
from typing import Any

from batchctl.emulator.clock import Clock
from batchctl.emulator.faults import Fault, FaultInjector
from batchctl.emulator.message_batches import MessageBatches
from batchctl.emulator.requestlog import RequestLog
from batchctl.emulator.settings import EmulatorSettings
from batchctl.emulator.state import State


class Backend:
    """Settings, clock, files and batches (OpenAI's and Anthropic's), faults and the log."""

    def __init__(self, settings: EmulatorSettings, faults: list[Fault] | None = None) -> None:
        self._lock = threading.Lock()
        self.clock = Clock(manual=settings.manual_clock, offset=settings.clock_offset)
        self.state = State(settings, self.clock)
        self.message_batches = MessageBatches(self.state.root / "message_batches", self.clock)
        self.faults = FaultInjector(faults, seed=settings.fault_seed)
        self.log = RequestLog()

    @property
    def settings(self) -> EmulatorSettings:
        """The settings in force (new batches use them)."""
        return self.state.settings

    def update_settings(self, settings: EmulatorSettings) -> None:
        """Replace the settings; running batches keep the timing they started with."""
        with self._lock:
            reseed = settings.fault_seed != self.state.settings.fault_seed
            self.state.settings = settings
            if reseed:
                self.faults.set(
                    [Fault.from_json(f) for f in self._fault_rules()], seed=settings.fault_seed
                )

    def _fault_rules(self) -> list[dict[str, object]]:
        rules = []
        for rule in self.faults.active():
            remaining = rule.pop("remaining")
            rule["count"] = remaining
            rules.append(rule)
        return rules

    def advance(self, seconds: float) -> float:
        """Move emulated time forward; returns the new emulated time."""
        return self.clock.advance(seconds)

    def reset(self) -> None:
        """Forget files, batches, faults and the request log (settings and clock stay)."""
        with self._lock:
            self.state.reset()
            self.message_batches.reset()
            self.faults.set([], seed=self.state.settings.fault_seed)
            self.log.clear()

    def summary(self) -> dict[str, Any]:
        """Counts of files by purpose, batches by status and Message Batches by status."""
        summary = self.state.summary()
        summary["message_batches"] = self.message_batches.summary()
        return summary

    def close(self) -> None:
        """Release the state directory, if the emulator created it."""
        self.state.close()
