"""Fleet incidents the support server says cover this terminal (an acquirer host or a
carrier outage), as told in the answers to heartbeats and polls. Kept in the state
directory so `posdiag diagnose` on the same terminal knows them too."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from agent.state import StateFile
from probes.contract import catalogue

MAX_INCIDENTS = 20


class IncidentMemory:
    def __init__(self, state_dir: str | Path) -> None:
        self.file = StateFile(Path(state_dir) / "incidents.json")

    def replace(self, incidents: Any) -> None:
        """Keep what the server said now (written only when it changed)."""
        clean = [i for i in incidents if isinstance(i, dict) and isinstance(i.get("id"), str)][:MAX_INCIDENTS] if isinstance(incidents, list) else []
        known = self.file.load()
        value = {"incidents": clean}
        if known.get("incidents") != clean:
            self.file.save({**value, "told_at": datetime.now(UTC).isoformat(timespec="seconds")})

    def open(self) -> list[dict[str, Any]]:
        incidents = self.file.load().get("incidents")
        return [i for i in incidents if isinstance(i, dict)] if isinstance(incidents, list) else []


def advice(incidents: list[dict[str, Any]], top_category: str | None) -> dict[str, Any] | None:
    """The first open outage whose categories include the diagnosis' own top cause's: the
    fleet sees what this terminal sees, so nobody should be sent to it. (A firmware
    regression is the vendor's to fix; it does not change what the terminal advises.)"""
    if top_category is None:
        return None
    for incident in incidents:
        categories = incident.get("categories") or []
        if incident.get("kind") == "outage" and top_category in categories:
            summary = incident.get("summary") if isinstance(incident.get("summary"), dict) else {}
            return {
                "incident_id": incident["id"],
                "kind": incident.get("kind"),
                "message": {lang: hold_message(summary.get(lang), lang) for lang in ("zh", "en")},
            }
    return None


def hold_message(summary: str | None, lang: str) -> str:
    """What a terminal under a fleet outage says about dispatch, in `lang`."""
    words = catalogue.words("explain", lang)
    return words["outage_hold"].format(summary=summary or words["fleet_outage"])
