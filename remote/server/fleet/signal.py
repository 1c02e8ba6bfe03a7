"""Which bundles the fleet detectors (outages, regressions) may count.

A business or issuer outcome says nothing about terminals, hosts or networks: a promotion
day of declines is busy shops, not a bad firmware; a decline is the host answering, not the
host down. Such a bundle is kept (problems, pages) but feeds no detector:

- its top cause's category is one of `ignored_categories` (card, business, transaction);
- its top cause dispatches `none` in the knowledge base (a cut-off, an operator's mistake);
- its code's meaning dispatches `none` (the code's leading cause: a decline, a referral, an
  approval) while its top cause is a host or network one: the host answered.

A category listed in `counted_categories` counts whatever the rules above say (an operator
who wants card-reader declines to show up as a regression lists `card`).
"""

from __future__ import annotations

from typing import Any

from remote.server.outcomes.knowledge import KnowledgeView
from remote.server_settings import FleetSettings


def excluded(record: dict[str, Any], knowledge: KnowledgeView, settings: FleetSettings) -> str | None:
    """Why the bundle feeds no detector ("category:card", "cause:host.cutoff",
    "code:iso8583:51"), or None when it does."""
    category, cause = record.get("top_category"), record.get("top_cause")
    if not category or category in settings.counted_categories:
        return None
    if category in settings.ignored_categories:
        return f"category:{category}"
    if cause and knowledge.dispatch.get(cause) == "none":
        return f"cause:{cause}"[:48]
    code = knowledge.code(record.get("scheme"), record.get("code"))
    if code and code.causes and category in settings.outage_categories:
        leading = max(code.causes, key=lambda c: (code.causes[c], c))
        if knowledge.dispatch.get(leading) == "none":
            return f"code:{code.key}"[:48]
    return None
