"""The outcome part of the bundle page (templates/_outcome_form.html): what a visit found,
recorded by the roles that may (docs/outcomes.md). Kept apart from outcomes_web so that the
bundle page (web.py) and the outcome pages, which build on web.py, do not import each other."""

from __future__ import annotations

import uuid
from typing import Any

from probes.contract import catalogue
from remote.server.outcomes import records
from remote.server.outcomes_api import knowledge_of
from remote.server.service import Service

WORDS = catalogue.area("outcomes")
RECORDERS = ("support", "technician", "admin")  # who may record an outcome, as for the API


def bundle_outcome(srv: Service, bundle: dict[str, Any], diagnosis: Any) -> dict[str, Any]:
    """What the bundle page's outcome part shows (templates/_outcome_form.html): the current
    outcome and the earlier ones, the form's choices (the bundle's own causes first) and a
    fresh outcome id for the form."""
    shown = records.of_bundle(srv.engine, bundle["id"])
    causes = diagnosis.get("causes") if isinstance(diagnosis, dict) and isinstance(diagnosis.get("causes"), list) else []
    listed = [c["id"] for c in causes if isinstance(c, dict) and isinstance(c.get("id"), str)]
    known = knowledge_of(srv).dispatch
    return {
        "current": shown["current"],
        "history": shown["history"],
        "listed": [c for c in listed if c in known],
        "others": sorted(c for c in known if c not in listed),
        "recorders": RECORDERS,
        "outcome_id": str(uuid.uuid4()),
        "words": WORDS,
    }
