"""Who this process is, and whether another owner (a host and pid) is still alive."""

from __future__ import annotations

import os
import socket
from functools import cache

from batchctl.records import Owner


@cache
def hostname() -> str:
    return socket.gethostname()


def this_process() -> Owner:
    return Owner(hostname(), os.getpid())


def is_dead(owner: Owner) -> bool:
    """True only when ``owner`` is certainly gone: on this host, and its pid is not running.

    An owner on another host is never judged dead here; its lease expiring decides instead.
    """
    if owner.host != hostname():
        return False
    if owner.pid == os.getpid():
        return False
    try:
        os.kill(owner.pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return is_zombie(owner.pid)


def is_zombie(pid: int) -> bool:
    # A killed process that its parent has not reaped still answers kill(pid, 0).
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as handle:
            return handle.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False
