"""A fleet simulator: enrols labelled terminals on a real support server and sends hourly
heartbeats and bundles through its HTTP API, each stamped with its event time, with
injected fleet events on top of background noise. Used by test_server_fleet.py and
bench/fleet_sim.py; its Client (what a terminal sends, what support reads) also by
fleet_gen.py, the generator of random fleets.

The timeline ends at the real now (event times are never in the future) and starts
`days` before it. Arrival order is event time, except for terminals listed as late,
whose bundles arrive `late_hours` after they happened.
"""

from __future__ import annotations

import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from server_bundles import make_bundle
from server_harness import default_settings

from remote.server import db, fleet_queue, store

HOST = ("96", "host.unreachable", "host")
NETWORK = ("ConnectError", "network.no_data_session", "network")
BACKGROUND = [  # (code, top cause, category, weight)
    ("51", "card.insufficient_funds", "card", 5),
    ("E3", "printer.paper_out", "printer", 2),
    ("55", "card.wrong_pin", "card", 2),
    ("96", "host.unreachable", "host", 1),
    ("ConnectError", "network.no_data_session", "network", 1),
    ("3000", "reader.no_response", "reader", 1),
]
PRINTER_BUG = ("E3", "printer.driver_fault", "printer")


@dataclass
class Terminal:
    id: str
    token: str
    labels: dict[str, str]
    model: str
    firmware: str
    silent_after: datetime | None = None
    battery_wear: float = 0.9
    wear_per_hour: float = 0.0


@dataclass
class Injected:
    name: str
    kind: str
    scope: dict[str, str]
    start: datetime
    minutes: int


@dataclass
class Scenario:
    terminals: int = 36
    days: float = 1.5
    seed: int = 7
    background_per_hour: float = 0.04
    heartbeat_hours: float = 3.0
    late_terminals: int = 0
    late_hours: float = 3.0
    end: datetime = field(default_factory=lambda: datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1))

    @property
    def start(self) -> datetime:
        return self.end - timedelta(days=self.days)


@dataclass
class Sent:
    bundles: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> what it was
    open_at_checkpoint: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    heartbeats: int = 0
    errors: list[str] = field(default_factory=list)


class FleetSim:
    def __init__(self, base_url: str, engine: Any, scenario: Scenario, user: tuple[str, str], fleet: Any = None) -> None:
        """`fleet`: the server's [server.fleet] (the packaged defaults when None), by which
        the operator's labels given at enrolment are cut into scopes."""
        self.url = base_url
        self.settings = fleet or default_settings().fleet
        self.engine = engine
        self.sc = scenario
        self.rng = random.Random(scenario.seed)
        self.client = Client(base_url, user)
        self.terminals = [self._enrol(engine, i) for i in range(scenario.terminals)]
        s = scenario.start
        self.injected = [
            Injected("acquirer host outage", "outage", {"acquirer": "B"}, s + timedelta(hours=22, minutes=7), 40),
            Injected("carrier outage in one region", "outage", {"carrier": "X", "region": "north"}, s + timedelta(hours=30, minutes=3), 40),
            Injected("firmware regression", "regression", {"model": "P2", "firmware": "2.1"}, s, 0),
        ]
        self.battery_batch = {t.id for t in self.terminals[:5]}
        self.silent = {t.id for t in self.terminals[-3:]}
        for t in self.terminals:
            if t.id in self.battery_batch:
                t.battery_wear, t.wear_per_hour = 0.72, 0.0025
            if t.id in self.silent:
                t.silent_after = s + timedelta(hours=2)
        late = [t for t in self.terminals if t.labels["acquirer"] == "B"][: scenario.late_terminals]
        self.late = {t.id for t in late}

    def _enrol(self, engine: Any, i: int) -> Terminal:
        terminal_id = f"SIM-{i:03d}-{uuid.uuid4().hex[:4]}"
        labels = {"acquirer": "ABC"[i % 3], "region": ("north", "south")[(i // 3) % 2], "merchant": f"m{i % 7}"}
        token = store.add_terminal(engine, terminal_id, labels, self.settings)  # the operator's; carrier and link observed
        if i % 4 != 3:
            labels.update(link="cellular", carrier=("X", "Y")[(i // 6) % 2])
        else:
            labels["link"] = "wifi"
        model = ("A920", "P2")[(i // 2) % 2]
        firmware = {"A920": ("1.0", "1.1"), "P2": ("2.0", "2.1")}[model][(i // 4) % 2]
        return Terminal(terminal_id, token, labels, model, firmware)

    # -- the timeline ---------------------------------------------------------------------

    def events(self) -> list[tuple[datetime, datetime, str, Terminal, Any]]:
        """(arrival, event time, kind, terminal, payload), in arrival order."""
        out = []
        step = timedelta(hours=self.sc.heartbeat_hours)
        for t in self.terminals:
            moment = self.sc.start + timedelta(minutes=self.rng.uniform(0, 59))
            while moment <= self.sc.end:
                if t.silent_after is None or moment < t.silent_after:
                    out.append((moment, moment, "heartbeat", t, self._health(t, moment)))
                    out += self._background(t, moment, step)
                moment += step
        for inj in self.injected[:2]:
            for t in self.terminals:
                if all(t.labels.get(k) == v for k, v in inj.scope.items()) and t.id not in self.silent:
                    out += self._burst(t, inj)
        return sorted(out, key=lambda e: (e[0], e[1], e[3].id))

    def _health(self, t: Terminal, moment: datetime) -> dict[str, Any]:
        hours = (moment - self.sc.start).total_seconds() / 3600
        wear = t.battery_wear - t.wear_per_hour * hours + self.rng.gauss(0, 0.004)
        return {
            "battery_pct": round(self.rng.uniform(20, 100), 1), "battery_wear_ratio": round(wear, 4),
            "battery_cycle_count": 300 + int(hours / 10), "emmc_life_used_pct": 20.0, "free_mib": round(self.rng.uniform(200, 900), 1),
            "signal_dbm": round(self.rng.uniform(-95, -60), 1) if t.labels.get("link") == "cellular" else None,
            "max_temp_c": round(self.rng.uniform(35, 55), 1), "memory_available_mib": 180.0,
        }  # fmt: skip

    def _background(self, t: Terminal, moment: datetime, step: timedelta) -> list[tuple[datetime, datetime, str, Terminal, Any]]:
        out = []
        hours = step.total_seconds() / 3600
        if self.rng.random() < self.sc.background_per_hour * hours:
            code, cause, category, _ = self.rng.choices(BACKGROUND, weights=[b[3] for b in BACKGROUND])[0]
            when = moment + timedelta(minutes=self.rng.uniform(0, 59))
            out.append(self._bundle(t, when, code, cause, category))
        if (t.model, t.firmware) == ("P2", "2.1") and self.rng.random() < 0.25 * hours:
            out.append(self._bundle(t, moment + timedelta(minutes=self.rng.uniform(0, 59)), *PRINTER_BUG))
        return [e for e in out if e[1] <= self.sc.end]

    def _burst(self, t: Terminal, inj: Injected) -> list[tuple[datetime, datetime, str, Terminal, Any]]:
        code, cause, category = HOST if inj.scope.get("acquirer") else NETWORK
        out, moment = [], inj.start + timedelta(minutes=self.rng.uniform(0, 6))
        while moment < inj.start + timedelta(minutes=inj.minutes):
            out.append(self._bundle(t, moment, code, cause, category, inj.name))
            moment += timedelta(minutes=self.rng.uniform(6, 12))
        return out

    def _bundle(self, t: Terminal, when: datetime, code: str, cause: str, category: str, injected: str = "") -> tuple[datetime, datetime, str, Terminal, Any]:
        arrival = when + timedelta(hours=self.sc.late_hours) if t.id in self.late else when
        return (arrival, when, "bundle", t, {"code": code, "cause": cause, "category": category, "injected": injected})

    # -- sending --------------------------------------------------------------------------

    def run(self) -> Sent:
        sent = Sent()
        checkpoints = sorted((inj.start + timedelta(minutes=10), inj.name) for inj in self.injected[:2])
        for arrival, when, kind, t, payload in self.events():
            while checkpoints and arrival > checkpoints[0][0]:
                sent.open_at_checkpoint[checkpoints.pop(0)[1]] = self.incidents("open")
            if kind == "heartbeat":
                self.client.heartbeat(t, when, payload, sent)
            else:
                self.client.bundle(t, when, payload, sent)
        return sent

    def counted(self) -> None:
        """Wait until the server's fleet queue has counted everything answered so far."""
        deadline = time.monotonic() + 60
        while fleet_queue.backlog(self.engine).depth:
            assert time.monotonic() < deadline, "the fleet queue did not drain"
            time.sleep(0.02)

    def incidents(self, status: str = "all") -> list[dict[str, Any]]:
        self.counted()
        return self.client.incidents(status)


class Client:
    """A simulated terminal's heartbeats and signed bundles, and support's reading of the
    incidents, through the server's HTTP API."""

    def __init__(self, base_url: str, user: tuple[str, str]) -> None:
        self.url = base_url
        self.http = requests.Session()
        self.user = user

    def heartbeat(self, t: Terminal, when: datetime, health: dict[str, Any], sent: Sent) -> dict[str, Any]:
        body = {
            "terminal_id": t.id, "sent_at": db.stamp(when), "model": t.model, "firmware": t.firmware,
            "app_version": "5.0", "agent_version": "0.1.0", "labels": t.labels, "health": health,
            "counters": {"errors": 0, "diagnoses": 0, "bundles_waiting": 0, "bundles_dead": 0, "uptime_s": 3600},
        }  # fmt: skip
        answer = self.http.post(f"{self.url}/api/v1/heartbeats", json=body, headers={"Authorization": f"Bearer {t.token}"}, timeout=30)
        if answer.status_code != 202:
            sent.errors.append(f"heartbeat {answer.status_code} {answer.text[:200]}")
        sent.heartbeats += 1
        return answer.json()

    def bundle(self, t: Terminal, when: datetime, p: dict[str, Any], sent: Sent) -> None:
        bundle_id, body = make_bundle(
            t.token, t.id, code=p["code"], cause=p["cause"], category=p["category"], verdict="remote",
            created_at=db.stamp(when), model=t.model, firmware=t.firmware, labels=t.labels,
        )  # fmt: skip
        headers = {"Authorization": f"Bearer {t.token}", "Content-Type": "application/gzip", "Idempotency-Key": bundle_id}
        answer = self.http.post(f"{self.url}/api/v1/bundles", data=body, headers=headers, timeout=30)
        if answer.status_code != 201:
            sent.errors.append(f"bundle {answer.status_code} {answer.text[:200]}")
        sent.bundles[bundle_id] = dict(p, terminal=t.id, at=when)

    def incidents(self, status: str = "all") -> list[dict[str, Any]]:
        answer = self.http.get(f"{self.url}/api/v1/incidents", params={"status": status}, auth=self.user, timeout=30)
        answer.raise_for_status()
        return answer.json()["items"]
