"""Ping URLs, healthchecks.io style: ``<url>/start`` when a run starts, ``<url>`` when it
succeeds, ``<url>/fail`` when it does not. A ping never fails a job: short timeouts, one retry,
and a failure is logged once."""

from __future__ import annotations

import logging
import urllib.request
import uuid

log = logging.getLogger("batchctl.pings")
TIMEOUT_S = 3.0
TRIES = 2


class Pinger:
    """The pings of one run; all of them carry the same ``rid`` so the monitor can pair them."""

    def __init__(self, url: str | None) -> None:
        self.url = url
        self.rid = uuid.uuid4().hex

    def start(self) -> None:
        self._ping("/start")

    def finish(self, succeeded: bool) -> None:
        self._ping("" if succeeded else "/fail")

    def _ping(self, suffix: str) -> None:
        if not self.url:
            return
        target = f"{self.url}{suffix}?rid={self.rid}"
        for attempt in range(1, TRIES + 1):
            try:
                with urllib.request.urlopen(target, timeout=TIMEOUT_S) as response:
                    if response.status < 500:
                        return
            except Exception as exc:  # a ping must never fail the job
                if attempt == TRIES:
                    log.warning("ping %s failed: %s", target, exc)
                continue
        log.warning("ping %s failed: the server answered with an error", target)
