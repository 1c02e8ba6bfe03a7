"""`posdiag-support demo-fleet`: a simulated fleet in a data directory, to look at the pages.

Terminals labelled by acquirer, region and carrier send heartbeats and bundles over the
last days of event time, ending now, through the server's own ingest (Service.ingest and
the fleet's heartbeat handling, as the API calls them), in event-time order. On top of a
background of card declines, paper, host and network failures (config/demo_fleet.toml): an
acquirer's host outage still going on, a firmware whose printer fails far more than the
model's other, batteries wearing towards at-risk, and terminals gone silent (missing).
"""

from __future__ import annotations

import random
import secrets
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib import resources
from pathlib import Path
from typing import Any

from remote.server import db, sim_bundle, store
from remote.server.fleet import incidents
from remote.server.fleet.models import Heartbeat
from remote.server.service import Service
from remote.server_settings import ServerSettings

LEAD = "lead"  # the sign-in printed: an admin, who may act on incidents and manage users


@dataclass
class Terminal:
    id: str
    token: str
    labels: dict[str, str]
    model: str
    firmware: str
    wear: float | None = None  # battery health falling from this (at risk), else steady
    silent_after: datetime | None = None

    def identity(self) -> dict[str, str]:
        return {"id": self.id, "model": self.model, "firmware": self.firmware, "app_version": "5.0"}


@dataclass
class Filled:
    terminals: int = 0
    heartbeats: int = 0
    bundles: int = 0
    incidents: list[dict[str, Any]] = field(default_factory=list)
    password: str = ""


def scenario() -> dict[str, Any]:
    return tomllib.loads(resources.files("config").joinpath("demo_fleet.toml").read_text(encoding="utf-8"))


def fill(
    db_url: str, data_dir: Path, settings: ServerSettings, terminals: int = 300, days: float = 3.0,
    progress: Callable[[int, int], None] | None = None,
) -> Filled:  # fmt: skip
    """Fill an empty database and blob store; ValueError when the database holds bundles.
    progress(done, total) is told of every tenth of the events sent."""
    srv = Service(db_url, data_dir, settings)
    try:
        if store.list_bundles(srv.engine, store.BundleFilter(), 1)[0]:
            raise ValueError("the database holds bundles already: give demo-fleet an empty data directory")
        sc = scenario()
        end = datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=30)
        start = end - timedelta(days=days)
        rng = random.Random(sc["seed"])
        fleet = _enrol(srv, sc, terminals, start, end)
        done = Filled(terminals=len(fleet), password=_lead(srv))
        events = sorted(_events(sc, fleet, start, end, rng), key=lambda e: (e[0], e[2].id))
        step = max(1, len(events) // 10)
        for n, (when, kind, terminal, payload) in enumerate(events, 1):
            if progress is not None and n % step == 0:
                progress(n, len(events))
            if kind == "heartbeat":
                _heartbeat(srv, terminal, when, payload)
                done.heartbeats += 1
            else:
                _bundle(srv, terminal, when, payload)
                done.bundles += 1
        srv.fleet.sweep()  # regressions and missing terminals: what the server's sweep finds
        done.incidents = incidents.list_incidents(srv.engine, "open")
        return done
    finally:
        srv.close()


def _enrol(srv: Service, sc: dict[str, Any], count: int, start: datetime, end: datetime) -> list[Terminal]:
    fleet = []
    for i in range(count):
        terminal_id = f"POS-{i:04d}"
        model, firmwares = sc["models"][(i // 2) % len(sc["models"])]
        labels = {
            "acquirer": sc["acquirers"][i % len(sc["acquirers"])], "region": sc["regions"][(i // 3) % len(sc["regions"])],
            "carrier": sc["carriers"][(i // 9) % len(sc["carriers"])], "merchant": f"m{i % 40:02d}",
        }  # fmt: skip
        owned = {k: v for k, v in labels.items() if k not in srv.settings.fleet.observed_label_keys}  # enrolled with the operator's labels
        token = store.add_terminal(srv.engine, terminal_id, owned, srv.settings.fleet)
        fleet.append(Terminal(terminal_id, token, labels, model, firmwares[(i // 4) % len(firmwares)]))
    worn, silent = sc["worn"], sc["silent"]
    for t in fleet[: worn["terminals"]]:
        t.wear = worn["wear_start"]
    for t in fleet[len(fleet) - silent["terminals"] :]:
        t.silent_after = max(start + timedelta(hours=1), end - timedelta(hours=silent["hours_before_end"]))
    return fleet


def _lead(srv: Service) -> str:
    password = secrets.token_urlsafe(9)
    if any(u["name"] == LEAD for u in store.list_users(srv.engine)):
        srv.set_password(LEAD, password)
    else:
        store.add_user(srv.engine, LEAD, "admin", password)
    return password


def _events(sc: dict[str, Any], fleet: list[Terminal], start: datetime, end: datetime, rng: random.Random) -> list[tuple[datetime, str, Terminal, Any]]:
    out: list[tuple[datetime, str, Terminal, Any]] = []
    step = timedelta(hours=sc["heartbeat_hours"])
    hours = sc["heartbeat_hours"]
    background = [b["fault"] for b in sc["background"]]
    weights = [b["weight"] for b in sc["background"]]
    reg = sc["regression"]
    for t in fleet:
        moment = start + timedelta(minutes=rng.uniform(0, 59))
        while moment <= end and (t.silent_after is None or moment < t.silent_after):
            out.append((moment, "heartbeat", t, _health(t, (moment - start).total_seconds() / 3600, sc, rng)))
            if rng.random() < sc["background_per_hour"] * hours:
                out.append((moment + timedelta(minutes=rng.uniform(0, 59)), "bundle", t, rng.choices(background, weights)[0]))
            if (t.model, t.firmware) == (reg["model"], reg["firmware"]) and rng.random() < reg["per_hour"] * hours:
                out.append((moment + timedelta(minutes=rng.uniform(0, 59)), "bundle", t, reg["fault"]))
            moment += step
    outage = sc["outage"]
    first = end - timedelta(minutes=outage["minutes"])
    for t in fleet:
        if t.silent_after is None and all(t.labels.get(k) == v for k, v in outage["scope"].items()) and rng.random() < outage["share"]:
            moment = first + timedelta(minutes=rng.uniform(0, outage["every_minutes"][0]))
            while moment < end:
                out.append((moment, "bundle", t, outage["fault"]))
                moment += timedelta(minutes=rng.uniform(*outage["every_minutes"]))
    return [e for e in out if e[0] <= end]


def _health(t: Terminal, hours: float, sc: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    wear = (t.wear - sc["worn"]["wear_per_hour"] * hours) if t.wear is not None else 0.93
    return {
        "battery_pct": round(rng.uniform(20, 100), 1), "battery_wear_ratio": round(wear + rng.gauss(0, 0.004), 4),
        "emmc_life_used_pct": 20.0, "free_mib": round(rng.uniform(200, 900), 1), "signal_dbm": round(rng.uniform(-95, -60), 1),
        "max_temp_c": round(rng.uniform(35, 55), 1), "memory_available_mib": 180.0,
    }  # fmt: skip


def _heartbeat(srv: Service, t: Terminal, when: datetime, health: dict[str, Any]) -> None:
    beat = Heartbeat.model_validate({
        "terminal_id": t.id, "sent_at": db.stamp(when), "model": t.model, "firmware": t.firmware, "app_version": "5.0",
        "agent_version": "0.1.0", "labels": t.labels, "health": health,
        "counters": {"errors": 0, "diagnoses": 0, "bundles_waiting": 0, "bundles_dead": 0, "uptime_s": 3600},
    })  # fmt: skip
    received = db.now()
    event_at, clamped = srv.fleet.clamp(db.stamp(when), received)
    srv.fleet.on_heartbeat(beat, event_at, clamped, received)


def _bundle(srv: Service, t: Terminal, when: datetime, fault: dict[str, str]) -> None:
    bundle_id, body = sim_bundle.build(t.token, t.identity(), t.labels, db.stamp(when), fault)
    srv.ingest(body, srv.terminal_for_token(t.token), bundle_id)
    srv.fleet_queue.drain()  # counted now, in event-time order with the heartbeats (no worker runs here)
