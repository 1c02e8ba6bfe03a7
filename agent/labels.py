"""The labels a terminal reports for fleet grouping (acquirer, region, carrier, link, ...).

The operator's `[terminal] labels` come first. `carrier` and `link` are added from what the
probes saw (the modem's operator name, the kind of interface the default route uses)
unless the operator set them. What the probes saw last is remembered in the state
directory, so a heartbeat between diagnoses still names the carrier.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from agent.state import StateFile

# label -> (probe, metric) it is read from
SEEN_IN = {"carrier": ("modem", "operator"), "link": ("network", "link")}
MAX_LABEL_CHARS = 64


def seen_in(probes: list[dict[str, Any]]) -> dict[str, str]:
    """Labels the probe results (dicts as in probes.json) show."""
    metrics = {p.get("name"): p.get("metrics") or {} for p in probes}
    found = {}
    for label, (probe, metric) in SEEN_IN.items():
        value = metrics.get(probe, {}).get(metric)
        if isinstance(value, str) and value.strip():
            found[label] = value.strip()[:MAX_LABEL_CHARS]
    return found


class LabelMemory:
    """What the probes last saw, in `<state_dir>/labels.json`; written only when it changes."""

    def __init__(self, state_dir: str | Path) -> None:
        self.file = StateFile(Path(state_dir) / "labels.json")

    def remember(self, seen: dict[str, str]) -> dict[str, str]:
        known = {k: v for k, v in self.file.load().items() if isinstance(v, str)}
        merged = {**known, **seen}
        if merged != known:
            try:
                self.file.save(merged)
            except OSError:
                pass  # labels are a convenience: a read-only state dir must not stop a diagnosis
        return merged


def labels_for(config: Any, seen: dict[str, str] | None = None) -> dict[str, str]:
    """The labels to send: remembered and newly seen ones, overridden by the operator's."""
    remembered = LabelMemory(config.section("daemon").state_dir).remember(seen or {})
    return {**remembered, **config.section("terminal").labels}
