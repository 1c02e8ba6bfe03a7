"""One diagnosis from trigger to outbox: probes, correlation, bundle, durable storage.

Shared by the daemon (error events and probe requests) so both make bundles the same way.
The bundle id is chosen by the caller: for error events it derives from the first event,
so redoing the work after a crash stores the same bundle, not a second one.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from agent import bundle
from agent.config import Config
from agent.diagnosis import Diagnosis, diagnose
from agent.history import ring_for
from agent.outbox import Outbox
from probes._serial_line import lock_holder

SHARED_DEVICE_PROBES = ("printer", "card_reader")
COMMAND_NAMESPACE = uuid.UUID("0b7c8a52-8d7e-4f57-b1a4-3c2f5e1e9a61")


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
            "fleet": doc["fleet"],
        }


def busy_devices(lock_files: list[str]) -> dict[str, str]:
    """Probes to skip while the payment app holds a lock file. A lock naming a pid that no
    longer runs (UUCP-style LCK.. files) is stale and ignored."""
    for name in lock_files:
        if lock_holder(Path(name)):
            return dict.fromkeys(SHARED_DEVICE_PROBES, f"payment app holds {Path(name).name}")
    return {}


def build_for(
    config: Config,
    diagnosis: dict[str, Any],
    trigger: bundle.Trigger,
    *,
    evicted: int = 0,
    bundle_id: str | None = None,
    events: list[dict[str, Any]] | None = None,
    history: list[dict[str, Any]] | None = None,
) -> bundle.Bundle:
    """The signed bundle for a diagnosis document; history defaults to the agent's ring."""
    if history is None:
        history = ring_for(config).read()
    inp = bundle.diagnosis_input(config, diagnosis, trigger, evicted=evicted, history=history, events=events or [])
    return bundle.build(inp, bundle.Limits.from_config(config), config.section("upload").token, bundle_id=bundle_id)


def store(
    config: Config,
    outbox: Outbox,
    diagnosis: dict[str, Any],
    trigger: bundle.Trigger,
    *,
    bundle_id: str | None = None,
    events: list[dict[str, Any]] | None = None,
    history: list[dict[str, Any]] | None = None,
) -> bundle.Bundle:
    """Bundle a diagnosis into the outbox durably; its manifest reports the evictions the
    outbox counted since the last bundle."""
    evicted = outbox.pending_evicted()
    built = build_for(config, diagnosis, trigger, evicted=evicted, bundle_id=bundle_id, events=events, history=history)
    outbox.put(built.data, built.bundle_id, reported_evicted=evicted)
    return built


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
    diagnosis = diagnose(config, trigger.code, trigger.scheme, only, skip=skip, remember=True)
    if any(entry.bundle_id == bundle_id for entry in outbox.entries()):
        return Outcome(diagnosis, bundle_id, stored=False)
    store(config, outbox, diagnosis.to_dict(), trigger, bundle_id=bundle_id, events=events, history=history)
    return Outcome(diagnosis, bundle_id, stored=True)


def run_command(config: Config, outbox: Outbox, command: dict[str, Any], history: list[dict[str, Any]]) -> Outcome:
    """Carry out a probe request from the support server: run the requested probes (all when
    none are named), diagnose the code if one was given, and put the bundle, which names the
    command, into the outbox. The bundle id derives from the command id, so a request
    redelivered after a crash yields the same bundle and the server closes it once."""
    command_id = command["command_id"]
    trigger = bundle.Trigger("remote", command.get("code") or None, None, command_id, 1)
    bundle_id = str(uuid.uuid5(COMMAND_NAMESPACE, command_id))
    return run(config, outbox, trigger, bundle_id, [], history, only=command.get("probes") or None)
