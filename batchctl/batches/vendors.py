"""What a provider's profile changes in a submission before anything is sent: the lines it
accepts (``LineRules`` for ``validation.scan``) and the completion windows it offers.

The profile carries plain data (``quirks``, ``windows``; ``batchctl.providers.profiles``);
this is where the core reads it, so validation stays one scanner with small parameters.
"""

from __future__ import annotations

from collections.abc import Iterable

from batchctl.batches.validation import LineRules
from batchctl.errors import UsageError
from batchctl.providers import quirks as q


def line_rules(quirks: Iterable[str]) -> LineRules:
    """The rules on lines of a provider with these quirks."""
    names = frozenset(quirks)
    return LineRules(
        endpoints=q.endpoints(names),
        one_model=q.ONE_DEPLOYMENT in names,
        mixed_endpoints=q.MIXED_ENDPOINTS in names,
        max_custom_id=q.max_custom_id(names),
    )


def check_window(window: str, windows: Iterable[str], *, provider: str) -> str:
    """``window`` if the provider offers it; a UsageError naming the ones it does otherwise."""
    offered = tuple(windows)
    if window in offered:
        return window
    raise UsageError(
        f"--completion-window: {provider} offers {', '.join(offered)}, not {window!r}",
        hint=f"choose one of {', '.join(offered)} (or set windows in [providers.{provider}])",
    )
