"""A generator of simulated fleets, not one scenario: per seed a random fleet shape
(acquirers, carriers, regions, merchants and their sites, links, models, firmware) and a
timeline of diurnal traffic with injected events, sent to a real support server through
fleet_sim's Client (signed bundles and heartbeats over HTTP, stamped with event time).
What was injected is kept as the truth that fleet_score.py scores the server against
(bench/fleet_eval.py, test_fleet_eval.py).

Traffic: shops open at their own hours (local time: each region has a UTC offset) and are
off at night, a fifth of the merchants are open around the clock; activity peaks in the
morning and the evening. Background problems come at per-category rates per awake
terminal-hour times the activity, host and network ones times a per-terminal frailty.

Injected, per seed: outages drawn from host outage, certificate expiry at one host, slow
host degradation, a night DNS outage on a small scope and a link outage whose bundles
arrive 1–180 min late with the heartbeats of the outage lost; a staged firmware rollout
with a printer or reader regression; retry storms (3 terminals x 200 uploads, 1 x 120, in
ten minutes); a promotion day of declines (51/55/61) at a merchant chain; clocks days
ahead; an eMMC batch and a battery batch wearing out.

A clock days ahead is clamped by the server to the time of receipt. Receipt is the real
now, after the whole simulated timeline, so those terminals' stamped heartbeats and bundles
are sent last: sent in turn, each would move the fleet's newest event time (what closes
outages) to the real now, which no real fleet sees.
"""

from __future__ import annotations

import bisect
import threading
import dataclasses
import random
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from fleet_sim import Client, Sent, Terminal

from remote.server import store

# Activity by local hour (transactions relative to the day's mean of an open shop).
DIURNAL = [0.2, 0.15, 0.1, 0.1, 0.1, 0.2, 0.5, 0.9, 1.3, 1.6, 1.6, 1.4, 1.5, 1.2, 1.0, 1.0, 1.1, 1.3, 1.4, 1.2, 0.9, 0.6, 0.4, 0.3]
BACKGROUND = [  # (code, top cause, category, bundles per awake terminal-hour at activity 1)
    ("51", "card.insufficient_funds", "card", 0.02),
    ("55", "card.wrong_pin", "card", 0.008),
    ("61", "transaction.limit", "transaction", 0.004),
    ("E3", "printer.paper_out", "printer", 0.008),
    ("3000", "reader.no_response", "reader", 0.005),
    ("96", "host.switch_malfunction", "host", 0.01),
    ("ConnectError", "network.no_data_session", "network", 0.02),
]
OUTAGES = {  # kind: (code, top cause, category, right scope's label keys)
    "host outage": ("ConnectError", "host.unavailable", "host", ("acquirer",)),
    "certificate expiry": ("SSLError", "network.tls", "network", ("acquirer",)),
    "host degradation": ("ReadTimeout", "host.timeout", "host", ("acquirer",)),
    "night DNS outage": ("ConnectError", "network.dns", "network", ("carrier", "region")),
    "link outage": ("ConnectError", "network.no_link", "network", ("carrier", "region")),
}
FAULTS = {"printer": ("E3", "printer.driver_fault", "printer"), "reader": ("3000", "reader.firmware_fault", "reader")}
DECLINES = [("51", "card.insufficient_funds", "card"), ("55", "card.wrong_pin", "card"), ("61", "transaction.limit", "transaction")]
STORM = {"printer": ("E3", "printer.driver_fault", "printer"), "software": ("APP", "software.app_fault", "software")}
MODELS = {"A920": ["1.0", "1.1", "1.2"], "P2": ["2.0", "2.1"], "N910": ["3.4", "3.5"], "V240m": ["7.1", "7.2", "7.3"]}


@dataclass
class GenConfig:
    seed: int = 1
    terminals: int = 120
    hours: float = 48.0
    heartbeat_minutes: float = 60.0
    outages: int = 4
    storm_uploads: tuple[int, ...] = (200, 200, 200, 120)
    promotion_terminals: int = 40
    decline_per_hour: float = 0.4  # per chain terminal and hour at activity 1, on the promotion day
    fault_per_hour: float = 0.08  # the rollout's fault, per awake terminal-hour at activity 1
    end: datetime = field(default_factory=lambda: datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=1))

    @property
    def start(self) -> datetime:
        return self.end - timedelta(hours=self.hours)


@dataclass
class Member:
    """A generated terminal: its Terminal (id, token, labels, model, firmware) and its habits."""

    t: Terminal
    merchant: str
    tz: float  # hours from UTC
    opens: float
    closes: float
    busy: float
    frailty: float
    emmc: float = 30.0
    emmc_per_hour: float = 0.0
    upgrade: tuple[datetime, str] | None = None
    clock: tuple[datetime, timedelta] | None = None

    def local_hour(self, at: datetime) -> float:
        return (at.hour + at.minute / 60 + self.tz) % 24

    def awake(self, at: datetime) -> bool:
        return self.opens <= self.local_hour(at) < self.closes

    def activity(self, at: datetime) -> float:
        return self.busy * DIURNAL[int(self.local_hour(at))] if self.awake(at) else 0.0

    def firmware(self, at: datetime) -> str:
        return self.upgrade[1] if self.upgrade and at >= self.upgrade[0] else self.t.firmware

    def view(self, at: datetime) -> Terminal:
        firmware = self.firmware(at)
        return self.t if firmware == self.t.firmware else dataclasses.replace(self.t, firmware=firmware)


@dataclass
class Truth:
    """An injected event. For an outage, `failing` are the members with a failure inside and
    `awake` the scope's members powered on during it; for the others, the members involved."""

    name: str
    kind: str  # outage, regression, storm, promotion, clock, wear
    scope: dict[str, str]
    start: datetime
    end: datetime
    category: str = ""
    failing: set[str] = field(default_factory=set)
    awake: set[str] = field(default_factory=set)
    late: bool = False
    first_arrival: datetime | None = None


@dataclass(order=True)
class Send:
    arrival: datetime
    at: datetime  # true event time
    terminal: str
    kind: str = field(compare=False)
    member: Member = field(compare=False)
    payload: dict[str, Any] = field(compare=False)
    stamp: datetime = field(compare=False)  # the time the terminal writes (its clock)


class FleetGen:
    def __init__(self, base_url: str, engine: Any, cfg: GenConfig, user: tuple[str, str], fleet: Any) -> None:
        """`fleet`: the server's [server.fleet] settings; terminals are enrolled with the
        operator's labels (all but the observed ones, which they report)."""
        self.cfg = cfg
        self.fleet = fleet
        self.rng = random.Random(cfg.seed)
        self.client = Client(base_url, user)
        self.members: list[Member] = []
        self.truth: list[Truth] = []
        self.wall: list[tuple[float, datetime]] = []  # (wall clock, arrival) as sending went
        self._shape(engine)
        self.events = self._timeline()

    # -- the fleet ------------------------------------------------------------------------

    def _shape(self, engine: Any) -> None:
        rng, cfg = self.rng, self.cfg
        acquirers = [f"acq{c}" for c in "ABCDE"[: rng.randint(2, 4)]]
        carriers = [f"car{c}" for c in "XYZ"[: rng.randint(2, 3)]]
        # UTC offsets such that the local time at the end is the seed's: a seed makes the same
        # timeline whenever it runs (the timeline itself ends at the real now)
        end_hour = cfg.end.hour + cfg.end.minute / 60
        base_tz = rng.uniform(0, 24) - end_hour
        regions = {f"r{i}": base_tz + rng.choice((-1, 0, 0, 1)) for i in range(rng.randint(2, 5))}
        models = dict(rng.sample(sorted(MODELS.items()), rng.randint(2, 3)))
        model_weights = sorted((rng.uniform(1, 3) for _ in models), reverse=True)
        cellular = rng.uniform(0.4, 0.8)
        chain = min(cfg.promotion_terminals, cfg.terminals // 4)
        n, merchant_no = 0, 0
        while n < cfg.terminals:
            merchant_no += 1
            size = chain if merchant_no == 1 else min(cfg.terminals - n, max(1, int(rng.paretovariate(1.3))))
            size = min(size, cfg.terminals - n)
            acquirer = rng.choice(acquirers)
            always = merchant_no != 1 and rng.random() < 0.2
            opens, closes = (0.0, 24.0) if always else (rng.uniform(6, 9), rng.uniform(18, 23))
            model = rng.choices(list(models), weights=model_weights)[0]
            chain_firmware = models[model][0]
            site_no = 0
            for k in range(size):
                if k % rng.randint(1, 4) == 0:
                    site_no += 1
                    region = rng.choice(list(regions))
                    link = "cellular" if rng.random() < cellular else rng.choice(("wifi", "ethernet"))
                    carrier = rng.choice(carriers)
                labels = {"acquirer": acquirer, "region": region, "merchant": f"m{merchant_no}", "site": f"m{merchant_no}-s{site_no}", "link": link}
                if link == "cellular":
                    labels["carrier"] = carrier
                if merchant_no == 1:
                    t_model, firmware = model, chain_firmware
                else:
                    t_model = rng.choices(list(models), weights=model_weights)[0]
                    firmware = rng.choices(models[t_model], weights=[3, 2, 1][: len(models[t_model])])[0]
                terminal_id = f"GEN{cfg.seed}-{n:04d}-{uuid.uuid4().hex[:4]}"
                owned = {k: v for k, v in labels.items() if k not in self.fleet.observed_label_keys}
                token = store.add_terminal(engine, terminal_id, owned, self.fleet)
                t = Terminal(terminal_id, token, labels, t_model, firmware, battery_wear=rng.uniform(0.85, 0.97))
                self.members.append(Member(
                    t, f"m{merchant_no}", regions[region], opens, closes, rng.uniform(0.5, 1.8),
                    rng.lognormvariate(0, 0.7), emmc=rng.uniform(5, 60),
                ))  # fmt: skip
                n += 1
        self.chain = [m for m in self.members if m.merchant == "m1"]
        self.models = models

    def in_scope(self, scope: dict[str, str]) -> list[Member]:
        return [m for m in self.members if all(m.t.labels.get(k) == v for k, v in scope.items())]

    # -- the timeline ---------------------------------------------------------------------

    def _timeline(self) -> list[Send]:
        cfg = self.cfg
        self._rollout()
        self._batches()
        out: list[Send] = []
        for m in self.members:
            out += self._background(m)
        out += self._outages()
        out += self._storms()
        out += self._promotion()
        lost = [(tr, {m.t.id for m in self.in_scope(tr.scope)}) for tr in self.truth if tr.late]
        out = [e for e in out if not (e.kind == "heartbeat" and any(e.terminal in ids and tr.start <= e.at < tr.end for tr, ids in lost))]
        self._clocks(out)
        out = [e for e in out if e.at <= cfg.end]
        return sorted(out)

    def _send(self, m: Member, at: datetime, kind: str, payload: dict[str, Any], arrival: datetime | None = None) -> Send:
        return Send(arrival or at, at, m.t.id, kind, m, payload, at)

    def _bundle(self, m: Member, at: datetime, what: tuple[str, str, str], injected: str = "", arrival: datetime | None = None) -> Send:
        code, cause, category = what
        return self._send(m, at, "bundle", {"code": code, "cause": cause, "category": category, "injected": injected, "true_at": at}, arrival)

    def _background(self, m: Member) -> list[Send]:
        rng, cfg = self.rng, self.cfg
        out: list[Send] = []
        step = timedelta(minutes=5)
        beat = timedelta(minutes=cfg.heartbeat_minutes)
        moment = cfg.start + timedelta(minutes=rng.uniform(0, 5))
        last_beat: datetime | None = None
        was_awake = False
        while moment <= cfg.end:
            awake = m.awake(moment)
            if awake and (not was_awake or last_beat is None or moment - last_beat >= beat):
                out.append(self._send(m, moment, "heartbeat", self.health(m, moment)))
                last_beat = moment
            was_awake = awake
            if awake:
                hours = m.activity(moment) * step.total_seconds() / 3600  # activity-weighted hours of this step
                for code, cause, category, rate in BACKGROUND:
                    weight = m.frailty if category in ("host", "network") else 1.0
                    if rng.random() < rate * hours * weight:
                        out.append(self._bundle(m, moment + timedelta(minutes=rng.uniform(0, 5)), (code, cause, category)))
                if m.upgrade and moment >= m.upgrade[0] and rng.random() < cfg.fault_per_hour * hours:
                    out.append(self._bundle(m, moment + timedelta(minutes=rng.uniform(0, 5)), FAULTS[self.fault], "rollout"))
            moment += step
        return out

    def _rollout(self) -> None:
        """20–30 % of the biggest model's terminals move to a new firmware in three waves
        over the first 12 hours; the new firmware breaks the printer or the reader."""
        rng, cfg = self.rng, self.cfg
        model = max(self.models, key=lambda k: sum(1 for m in self.members if m.t.model == k))
        on_model = [m for m in self.members if m.t.model == model]
        new = self.models[model][-1][:-1] + str(int(self.models[model][-1][-1]) + 1)
        self.fault = rng.choice(sorted(FAULTS))
        chosen = rng.sample(on_model, max(1, round(len(on_model) * rng.uniform(0.2, 0.3))))
        for i, m in enumerate(chosen):
            m.upgrade = (cfg.start + timedelta(hours=4 * (i % 3) + rng.uniform(0, 1)), new)
        self.truth.append(Truth("staged rollout", "regression", {"model": model, "firmware": new}, cfg.start, cfg.end, self.fault, {m.t.id for m in chosen}))

    def _batches(self) -> None:
        rng = self.rng
        pool = rng.sample(self.members, min(len(self.members), 10))
        emmc, battery = pool[:5], pool[5:10]
        for m in emmc:
            m.emmc, m.emmc_per_hour = rng.uniform(84, 87), 0.03
        for m in battery:
            m.t.battery_wear, m.t.wear_per_hour = rng.uniform(0.7, 0.74), 0.0025
        cfg = self.cfg
        self.truth.append(Truth("eMMC batch", "wear", {}, cfg.start, cfg.end, "emmc_life_used_pct", {m.t.id for m in emmc}))
        self.truth.append(Truth("battery batch", "wear", {}, cfg.start, cfg.end, "battery_wear_ratio", {m.t.id for m in battery}))

    def health(self, m: Member, at: datetime) -> dict[str, Any]:
        hours = (at - self.cfg.start).total_seconds() / 3600
        rng = self.rng
        return {
            "battery_pct": round(rng.uniform(20, 100), 1), "battery_wear_ratio": round(m.t.battery_wear - m.t.wear_per_hour * hours + rng.gauss(0, 0.004), 4),
            "battery_cycle_count": 300 + int(hours / 10), "emmc_life_used_pct": round(m.emmc + m.emmc_per_hour * hours, 2),
            "free_mib": round(rng.uniform(200, 900), 1), "max_temp_c": round(rng.uniform(35, 55), 1), "memory_available_mib": 180.0,
            "signal_dbm": round(rng.uniform(-95, -60), 1) if m.t.labels.get("link") == "cellular" else None,
        }  # fmt: skip

    # -- outages --------------------------------------------------------------------------

    def _outages(self) -> list[Send]:
        rng, cfg = self.rng, self.cfg
        kinds = list(OUTAGES)
        rng.shuffle(kinds)
        kinds = (kinds * 2)[: cfg.outages]
        slots = self._slots(len(kinds))
        out: list[Send] = []
        for kind, slot in zip(kinds, slots, strict=False):
            out += self._outage(kind, slot)
        return out

    def _slots(self, count: int) -> list[datetime]:
        """Start times at least 3 h apart, from hour 6 to 3 h before the end."""
        cfg = self.cfg
        first, last = 6.0, cfg.hours - 3
        span = max(last - first, 0.1)
        gap = span / max(count, 1)
        return [cfg.start + timedelta(hours=first + gap * i + self.rng.uniform(0, max(gap - 3, 0.01))) for i in range(count)]

    def _outage(self, kind: str, around: datetime) -> list[Send]:
        rng = self.rng
        code, cause, category, keys = OUTAGES[kind]
        if kind == "link outage":  # a carrier's whole network, or one region's
            keys = rng.choice((("carrier",), keys))
        night = kind == "night DNS outage"
        scope = self._pick_scope(keys, around, night)
        if scope is None:
            return []
        members = self.in_scope(scope)
        start = self._local_time(members[0], around, night)
        minutes = {"host outage": rng.uniform(20, 60), "certificate expiry": rng.uniform(60, 150), "host degradation": rng.uniform(60, 100),
                   "night DNS outage": rng.uniform(30, 90), "link outage": rng.uniform(20, 50)}[kind]  # fmt: skip
        if kind == "certificate expiry":  # a certificate runs out on the (local) hour
            start -= timedelta(hours=members[0].local_hour(start) % 1)
        end = start + timedelta(minutes=minutes)
        truth = Truth(kind, "outage", scope, start, end, category, late=kind == "link outage")
        truth.awake = {m.t.id for m in members if any(m.awake(start + timedelta(minutes=k)) for k in range(0, int(minutes) + 1, 5))}
        out: list[Send] = []
        for m in members:
            lag = timedelta(minutes=rng.uniform(1, 180 - minutes))
            at = start + timedelta(minutes=rng.expovariate(1 / 4))
            while at < end:
                rate = max(8 * m.activity(at), 0.5 if m.awake(at) else 0.0)  # attempts per hour
                if m.awake(at) and rng.random() < self._severity(kind, start, end, at):
                    arrival = end + lag if truth.late else None
                    out.append(self._bundle(m, at, (code, cause, category), kind, arrival))
                    truth.failing.add(m.t.id)
                    at += timedelta(minutes=rng.uniform(5, 10))  # the agent's pause between two bundles of one fault
                at += timedelta(minutes=rng.expovariate(rate / 60) if rate else 10)
        truth.first_arrival = min((e.arrival for e in out), default=None)
        self.truth.append(truth)
        return out

    @staticmethod
    def _severity(kind: str, start: datetime, end: datetime, at: datetime) -> float:
        if kind == "host degradation":  # slow onset: timeouts ramp up over the first 40 minutes
            return 0.1 + 0.8 * min(1.0, (at - start).total_seconds() / 2400)
        return 1.0

    def _pick_scope(self, keys: tuple[str, ...], around: datetime, night: bool) -> dict[str, str] | None:
        """A scope of these keys with at least 6 members awake (at night: the one with the
        most terminals awake at 02:00 local, a small scope)."""
        options: dict[tuple[str, ...], list[Member]] = {}
        for m in self.members:
            if all(k in m.t.labels for k in keys):
                options.setdefault(tuple(m.t.labels[k] for k in keys), []).append(m)
        ranked = []
        for values, members in options.items():
            at = self._local_time(members[0], around, night)
            awake = sum(1 for m in members if m.awake(at))
            ranked.append((awake, values))
        ranked.sort(reverse=True)
        if not ranked or ranked[0][0] < (1 if night else 6):
            return None
        fit = [v for a, v in ranked if a >= 6] or [ranked[0][1]]
        return dict(zip(keys, self.rng.choice(fit), strict=True))

    def _local_time(self, m: Member, around: datetime, night: bool) -> datetime:
        """`around`, moved to the nearest 02:00 (night) or 10:00–17:00 local of the member's region."""
        local = m.local_hour(around)
        if night:
            shift = (2 - local + 12) % 24 - 12
        else:
            shift = 0 if 10 <= local < 17 else (10 - local + 12) % 24 - 12 + self.rng.uniform(0, 6)
        at = around + timedelta(hours=shift)
        if at < self.cfg.start + timedelta(hours=5):
            at += timedelta(days=1)
        if at > self.cfg.end - timedelta(hours=3):
            at -= timedelta(days=1)
        return at

    # -- storms, promotions, clocks -------------------------------------------------------

    def _storms(self) -> list[Send]:
        """A few terminals on one version re-upload one failure hundreds of times in ten minutes."""
        rng, cfg = self.rng, self.cfg
        groups: dict[tuple[str, str], list[Member]] = {}
        for m in self.members:
            if m.upgrade is None and m.merchant != "m1":
                groups.setdefault((m.t.model, m.t.firmware), []).append(m)
        fit = [g for g in groups.values() if len(g) >= len(cfg.storm_uploads)]
        if not fit:
            return []
        group = rng.choice(fit)
        stormers = rng.sample(group, len(cfg.storm_uploads))
        category = rng.choice(sorted(STORM))
        at = self._local_time(stormers[0], cfg.start + timedelta(hours=rng.uniform(6, cfg.hours - 3)), False)
        out: list[Send] = []
        for m, uploads in zip(stormers, cfg.storm_uploads, strict=True):
            for i in range(uploads):
                out.append(self._bundle(m, at + timedelta(seconds=600 * i / uploads), STORM[category], "storm"))
        model, firmware = stormers[0].t.model, stormers[0].t.firmware
        self.truth.append(Truth("retry storm", "storm", {"model": model, "firmware": firmware}, at, at + timedelta(minutes=10),
                                STORM[category][2], {m.t.id for m in stormers}))  # fmt: skip
        return out

    def _promotion(self) -> list[Send]:
        """A day of issuer declines at the chain: many 51/55/61, no fault anywhere."""
        rng, cfg = self.rng, self.cfg
        if not self.chain:
            return []
        day = cfg.start + timedelta(hours=rng.uniform(0, max(cfg.hours - 24, 0)))
        end = min(day + timedelta(hours=24), cfg.end)
        out: list[Send] = []
        for m in self.chain:
            moment = day
            while moment < end:
                if rng.random() < cfg.decline_per_hour * m.activity(moment) / 6:
                    out.append(self._bundle(m, moment + timedelta(minutes=rng.uniform(0, 10)), rng.choice(DECLINES), "promotion"))
                moment += timedelta(minutes=10)
        self.truth.append(Truth("promotion day", "promotion", {"merchant": "m1"}, day, end, "card", {m.t.id for m in self.chain}))
        return out

    def _clocks(self, events: list[Send]) -> None:
        """Two terminals' clocks jump days ahead a few hours before the end: what they send
        from then on carries that time, and goes last (see the module's note)."""
        rng, cfg = self.rng, self.cfg
        busy = set().union(*(tr.failing for tr in self.truth if tr.kind in ("storm", "outage")))
        pool = [m for m in self.members if m.t.id not in busy and m.merchant != "m1"]
        if not pool:
            return
        chosen = rng.sample(pool, min(2, len(pool)))
        jump = cfg.end - timedelta(hours=rng.uniform(2, 6))
        ahead = timedelta(days=rng.uniform(2, 5))
        ids = {m.t.id for m in chosen}
        for e in events:
            if e.terminal in ids and e.at >= jump:
                e.stamp = e.at + ahead
                e.arrival = cfg.end + (e.at - jump) / 1000
        for m in chosen:
            m.clock = (jump, ahead)
        self.truth.append(Truth("clocks ahead", "clock", {}, jump, cfg.end, "", ids))

    # -- sending --------------------------------------------------------------------------

    def run(
        self, progress: Callable[[int, int], None] | None = None, workers: int = 1, bucket_minutes: float = 5.0,
        settle: Callable[[], None] | None = None,
    ) -> Sent:  # fmt: skip
        """Send every event in arrival order: with several workers, the events of one bucket of
        arrival time at once (terminals do not queue behind each other), bucket after bucket.
        Which arrival was sent at which wall time is kept, to turn an incident's detected_at
        into event time. `settle`, called after each bucket, stands for the minutes of real
        time between two buckets (the server's fleet queue drains in them): without it a
        busy machine's queue lag, an hour of event time per second, would be measured as the
        detectors' delay."""
        sents: list[Sent] = []
        local = threading.local()
        lock = threading.Lock()

        def send(e: Send) -> None:
            if not hasattr(local, "client"):
                local.client, local.sent = Client(self.client.url, self.client.user), Sent()
                with lock:
                    sents.append(local.sent)
            view = e.member.view(e.at)
            if e.kind == "heartbeat":
                local.client.heartbeat(view, e.stamp, e.payload, local.sent)
            else:
                local.client.bundle(view, e.stamp, e.payload, local.sent)

        done = 0
        with ThreadPoolExecutor(workers) as pool:
            for bucket in self._buckets(timedelta(minutes=bucket_minutes)):
                self.wall.append((time.time(), bucket[0].arrival))
                list(pool.map(send, bucket))
                if settle:
                    settle()
                done += len(bucket)
                if progress:
                    progress(done, len(self.events))
        self.wall.append((time.time(), self.cfg.end))
        sent = Sent()
        for part in sents:
            sent.bundles.update(part.bundles)
            sent.heartbeats += part.heartbeats
            sent.errors += part.errors
        return sent

    def _buckets(self, width: timedelta) -> list[list[Send]]:
        out: list[list[Send]] = []
        for e in self.events:
            if out and e.arrival < out[-1][0].arrival + width:
                out[-1].append(e)
            else:
                out.append([e])
        return out

    def event_time_at(self, wall: float) -> datetime:
        """The newest arrival whose sending had begun by this wall time."""
        i = bisect.bisect_right([w for w, _ in self.wall], wall) - 1
        return self.wall[max(i, 0)][1]
