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
from remote import wire

# label -> (probe, metric) it is read from
SEEN_IN = {"carrier": ("modem", "operator"), "link": ("network", "link")}
# `&` and `=` join scope keys on the server (`carrier=X&region=north`): "AT&T" is sent as "AT+T".
SCOPE_SAFE = str.maketrans({"&": "+", "=": "-"})


def seen_in(probes: list[dict[str, Any]]) -> dict[str, str]:
    """Labels the probe results (dicts as in probes.json) show, as the server takes them
    (wire.label_problem): a device's answer may hold control, bidi or zero-width characters,
    which are dropped, and `&` or `=`, which are replaced."""
    metrics = {p.get("name"): p.get("metrics") or {} for p in probes}
    found = {}
    for label, (probe, metric) in SEEN_IN.items():
        value = metrics.get(probe, {}).get(metric)
        if isinstance(value, str):
            value = wire.printable(value).translate(SCOPE_SAFE).strip()[: wire.MAX_LABEL_CHARS]
            if value:
                found[label] = value
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
