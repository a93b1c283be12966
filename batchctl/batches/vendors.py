"""What a provider's profile changes in the lines a submission may send: ``LineRules`` for
``validation.scan``, read from the profile's ``quirks`` (``batchctl.providers.quirks``), so
validation stays one scanner with small parameters. (Its windows and limits are checked with
the submit options, ``jobs/openai.py``.)
"""

from __future__ import annotations

from collections.abc import Iterable

from batchctl.batches.validation import LineRules
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
