"""One diagnosis from trigger to outbox: probes, correlation, bundle, durable storage.

Shared by the daemon (error events and probe requests) so both make bundles the same way.
The bundle id is chosen by the caller: for error events it derives from the first event,
so redoing the work after a crash stores the same bundle, not a second one.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import bundle
from agent.config import Config
from agent.diagnosis import Diagnosis, diagnose
from agent.outbox import Outbox

SHARED_DEVICE_PROBES = ("printer", "card_reader")


@dataclass(frozen=True)
class Outcome:
    diagnosis: Diagnosis
    bundle_id: str
    stored: bool  # False when the outbox already held this bundle

    def summary(self, events: int) -> dict[str, Any]:
        doc = self.diagnosis.to_dict()
        top = doc["causes"][0] if doc["causes"] else None
        return {
            "bundle_id": self.bundle_id,
            "events": events,
            "code": doc["error"]["code"],
            "scheme": doc["error"]["scheme"],
            "meaning": doc["error"]["meaning"],
            "top_cause": None if top is None else {k: top[k] for k in ("id", "category", "title", "confidence")},
            "dispatch": doc["dispatch"],
        }


def busy_devices(lock_files: list[str]) -> dict[str, str]:
    """Probes to skip while the payment app holds a lock file. A lock naming a pid that no
    longer runs (UUCP-style LCK.. files) is stale and ignored."""
    for name in lock_files:
        path = Path(name)
        try:
            text = path.read_text(errors="replace").strip()
        except FileNotFoundError:
            continue
        except OSError:
            text = ""
        first = text.split()[0] if text else ""
        if first.isdigit() and not os.path.exists(f"/proc/{int(first)}"):
            continue
        reason = f"payment app holds {path.name}"
        return dict.fromkeys(SHARED_DEVICE_PROBES, reason)
    return {}


def run(
    config: Config,
    outbox: Outbox,
    trigger: bundle.Trigger,
    bundle_id: str,
    events: list[dict[str, Any]],
    history: list[dict[str, Any]],
    only: list[str] | None = None,
) -> Outcome:
    skip = busy_devices(config.section("daemon").busy_lock_files)
    diagnosis = diagnose(config, trigger.code, trigger.scheme, only, skip=skip)
    if any(entry.bundle_id == bundle_id for entry in outbox.entries()):
        return Outcome(diagnosis, bundle_id, stored=False)
    evicted = outbox.pending_evicted()
    inp = bundle.diagnosis_input(config, diagnosis.to_dict(), trigger, evicted=evicted, history=history, events=events)
    built = bundle.build(inp, bundle.Limits.from_config(config), config.section("upload").token, bundle_id=bundle_id)
    outbox.put(built.data, built.bundle_id, reported_evicted=evicted)
    return Outcome(diagnosis, bundle_id, stored=True)
