"""The payment app's state file ([app] state_file, posdiag.app_state/1), written as the app
would write it: keys signed in this morning, a batch open since the morning, a parameter
download three weeks ago, the TID and MID it was given, a PIN pad that answers.

Faults change what the app has (the device model decides the parts that are down upstream): a
tamper event wipes the master key, and with it no working key can be loaded; no parameter
download leaves the TID and MID empty; a payment app that is not running stops rewriting the
file, which then grows old.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from probes.emulators._model import TerminalState

FAULTS = frozenset(
    {
        "app.master_key_missing",
        "app.keys_out_of_step",
        "app.batch_unsettled",
        "app.trace_reset",
        "app.parameters_missing",
        "app.ids_mismatch",
        "app.pinpad_fault",
        "app.keys_stale",
        "app.parameters_stale",
        "app.state_unreadable",
    }
)
TID, MID = "20240601", "898310048160001"
HOUR = 3600.0


def iso(seconds_ago: float) -> str:
    return datetime.fromtimestamp(time.time() - seconds_ago, UTC).isoformat(timespec="seconds")


def app_state(state: TerminalState) -> dict[str, Any]:
    faults = state.faults
    kcv = {"pin": "8C2D41", "mac": "3F90A7"}
    doc: dict[str, Any] = {
        "schema": "posdiag.app_state/1",
        "updated_at": iso(3 * HOUR if state.is_down("app_state") else 30),
        "tid": TID,
        "mid": MID,
        "keys": {"master_key": True, "loaded_at": iso(2 * HOUR), "kcv": kcv, "kcv_host": dict(kcv)},
        "batch": {"number": "000123", "open_since": iso(5 * HOUR), "count": 12, "last_trace": 345},
        "trace_next": 346,
        "parameters": {"downloaded_at": iso(21 * 24 * HOUR), "tid": TID, "mid": MID, "version": "2024.05"},
        "pinpad": {"status": "ok"},
    }
    if state.is_down("master_key"):
        doc["keys"] = {"master_key": False}
    elif "app.keys_out_of_step" in faults:  # the host changed the MAC key; the terminal holds the old one
        doc["keys"]["kcv_host"] = {**kcv, "mac": "D15B02"}
        doc["keys"]["mac_failures"] = 3
    if "app.keys_stale" in faults and not state.is_down("master_key"):  # no sign-in since three days ago
        doc["keys"]["loaded_at"] = iso(74 * HOUR)
    if "app.batch_unsettled" in faults:
        doc["batch"].update(open_since=iso(30 * HOUR), count=57)
    if "app.trace_reset" in faults:
        doc["trace_next"] = 1
    if "app.parameters_stale" in faults:
        doc["parameters"]["downloaded_at"] = iso(400 * 24 * HOUR)
    if "app.parameters_missing" in faults:
        doc.update(parameters={}, tid="", mid="")
    elif "app.ids_mismatch" in faults:
        doc["mid"] = "898310048160009"  # edited by hand: not the MID the acquirer assigned
    if "app.pinpad_fault" in faults:
        doc["pinpad"] = {"status": "no_response", "detail": "no answer from the PIN pad in 3 s"}
    return doc


@contextlib.contextmanager
def start(state: TerminalState, workdir: Path) -> Iterator[dict[str, Any]]:
    path = workdir / "app_state.json"
    text = json.dumps(app_state(state), indent=2) + "\n"
    if "app.state_unreadable" in state.faults:  # the app died halfway through writing it
        text = text[: len(text) // 2]
    path.write_text(text, encoding="utf-8")
    yield {"app": {"state_file": str(path)}}
