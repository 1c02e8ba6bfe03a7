"""ModemManager through its command-line client, `mmcli -J` (JSON output, ModemManager >= 1.10).

    mmcli -J -L                  {"modem-list": ["/org/freedesktop/ModemManager1/Modem/0", ...]}
    mmcli -J -m 0                {"modem": {"generic": {...}, "3gpp": {...}}}
    mmcli -J -m 0 --signal-get   {"modem": {"signal": {"lte": {"rsrp": "-95.00", ...}, ...}}}
    mmcli -J -b 1                {"bearer": {"status": {"connected": "yes"}, "properties": {"apn": ...}}}

Key names follow ModemManager's cli/mmcli-output.c. Every call is a subprocess bounded by the
probe's deadline; not installed, no daemon, a hang or output that is not JSON is MmcliError.
"""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

from probes._modem_facts import ModemFacts, from_mmcli, mm_value


class MmcliError(Exception):
    pass


def call(mmcli: str, args: list[str], deadline: float) -> dict[str, Any]:
    argv = [mmcli, "-J", *args]
    shown = " ".join(argv)
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=max(0.01, deadline - time.monotonic()))
    except FileNotFoundError:
        raise MmcliError(f"{mmcli} not found (ModemManager is not installed)") from None
    except subprocess.TimeoutExpired:
        raise MmcliError(f"{shown} did not answer in time") from None
    except OSError as exc:
        raise MmcliError(f"{shown} cannot run: {exc}") from None
    if done.returncode != 0:
        why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
        raise MmcliError(f"{shown} failed: {why[:200]}")
    try:
        parsed = json.loads(done.stdout)
    except json.JSONDecodeError as exc:
        raise MmcliError(f"{shown} printed no JSON ({exc.msg})") from None
    if not isinstance(parsed, dict):
        raise MmcliError(f"{shown} printed JSON that is not an object")
    return parsed


def index(path: str) -> str:
    """/org/freedesktop/ModemManager1/Modem/3 -> "3" (mmcli takes either)."""
    return path.rstrip("/").rsplit("/", 1)[-1]


def listed_modems(mmcli: str, deadline: float) -> list[str]:
    modems = call(mmcli, ["-L"], deadline).get("modem-list") or []
    return [index(m) for m in modems if isinstance(m, str)]


def read_facts(mmcli: str, modem: str, deadline: float) -> ModemFacts:
    tree = call(mmcli, ["-m", modem], deadline)
    try:
        signal = call(mmcli, ["-m", modem, "--signal-get"], deadline)
    except MmcliError:
        signal = {}  # signal polling not set up (mmcli --signal-setup): percent quality only
    bearers = [call(mmcli, ["-b", index(b)], deadline) for b in mm_value(tree, "modem", "generic", "bearers") or []]
    return from_mmcli(tree, signal, bearers)
