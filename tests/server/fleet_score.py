"""Scores what a server made of a generated fleet (fleet_gen.py) against what was injected:
outages found with the right scope, detection delay in event time, closing, false
incidents per 1,000 terminal-days, false and missing holds, the incidents' figures,
regressions and at-risk terminals. Scores of several seeds add up (Score.add); rates are
taken over the sum, never averaged per seed.

An injected outage counts (is detectable) when at least outage_min_terminals distinct
terminals failed inside it, spread as the detector's trust rule asks (over
outage_min_spread merchants or sites, docs/fleet.md "Breadth and holds"): a night outage
with three shops awake, or one whose only awake terminals are one merchant's, is not one
anyone could call apart from that merchant's own network. An outage incident matches an injected outage when its span meets the outage's
(from 10 minutes before to 30 after) and its scope holds a terminal that failed in it; it
is found with the right scope when its scope is the outage's, or another name of the same
terminals (an acquirer whose terminals all lie in one region is also that acquirer in that
region, and the detector names one set of terminals by its most specific scope). An incident that matches no
injected outage is false. A host or network bundle lies inside an outage when its terminal
is in the outage's scope and its event time in the outage's span.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from fleet_gen import FleetGen, GenConfig, Truth
from fleet_sim import Sent
from server_bundles import PASSWORD
from server_harness import start_server

from remote.server import db
from remote.server.fleet import breadth
from remote.server.fleet.schema import bundle_fleet

BEFORE, AFTER = timedelta(minutes=10), timedelta(minutes=30)


@dataclass
class Score:
    terminal_days: float = 0.0
    outages: Counter = field(default_factory=Counter)  # kind -> detectable injected outages
    found: Counter = field(default_factory=Counter)  # kind -> found with the right scope
    undetectable: int = 0  # fewer than outage_min_terminals failing
    narrow: list[str] = field(default_factory=list)  # enough failing, but not spread over outage_min_spread merchants or sites
    wrong_scope: list[str] = field(default_factory=list)  # injected outages found only with another scope
    missed: list[str] = field(default_factory=list)  # detectable injected outages no incident met
    slow: list[str] = field(default_factory=list)  # on-time outages found more than 10 minutes after they began
    hold_detail: list[str] = field(default_factory=list)  # where held-outside and unheld-inside bundles went
    delays: list[float] = field(default_factory=list)  # minutes of event time, on-time outages
    late_delays: list[float] = field(default_factory=list)  # minutes after the first late bundle arrived
    closed_in_time: int = 0
    false_incidents: list[str] = field(default_factory=list)
    false_first_day: int = 0
    outside: int = 0  # host/network bundles outside true outages
    held_outside: int = 0
    inside: int = 0
    held_inside: int = 0
    in_scope_errors: list[float] = field(default_factory=list)  # |terminals_in_scope - awake| / awake
    affected_shares: list[float] = field(default_factory=list)  # terminals_affected / failing
    rollouts: int = 0
    rollouts_small: int = 0
    rollouts_found: int = 0
    false_regressions: list[str] = field(default_factory=list)
    storm_regressions: int = 0
    promotion_regressions: int = 0
    at_risk_truth: int = 0
    at_risk_found: int = 0
    at_risk_extra: int = 0

    def add(self, other: Score) -> Score:
        for name, value in vars(other).items():
            setattr(self, name, getattr(self, name) + value)
        return self

    # -- rates ----------------------------------------------------------------------------

    @property
    def recall(self) -> float:
        return _share(sum(self.found.values()), sum(self.outages.values()))

    @property
    def false_per_1000_terminal_days(self) -> float:
        return 1000 * len(self.false_incidents) / self.terminal_days if self.terminal_days else 0.0

    @property
    def false_hold_rate(self) -> float:
        return _share(self.held_outside, self.outside, empty=0.0)

    @property
    def held_inside_rate(self) -> float:
        return _share(self.held_inside, self.inside)

    @property
    def regression_recall(self) -> float:
        return _share(self.rollouts_found, self.rollouts)

    def delay(self, q: float) -> float | None:
        return _quantile(self.delays, q)

    def in_scope_within(self, tolerance: float = 0.1) -> float:
        return _share(sum(1 for e in self.in_scope_errors if e <= tolerance), len(self.in_scope_errors))

    def affected_at_least(self, share: float = 0.9) -> float:
        return _share(sum(1 for s in self.affected_shares if s >= share), len(self.affected_shares))


    def summary(self) -> str:
        d50, d90 = (f"{d:.1f}" if d is not None else "-" for d in (self.delay(0.5), self.delay(0.9)))
        return (f"recall {self.recall:.2f} ({len(self.wrong_scope)} wrong scope), delay {d50}/{d90} min, "
                f"false {self.false_per_1000_terminal_days:.1f}/1k terminal-days, false holds {self.false_hold_rate:.1%}, "
                f"held inside {self.held_inside_rate:.0%}, in_scope ok {self.in_scope_within(0.1):.0%}, affected ok {self.affected_at_least(0.9):.0%}, "
                f"regressions {self.rollouts_found}/{self.rollouts} found, {len(self.false_regressions)} false ({self.storm_regressions} from storms, "
                f"{self.promotion_regressions} from promotions)")  # fmt: skip


def _share(part: int, whole: int, empty: float = 1.0) -> float:
    return part / whole if whole else empty


def _quantile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if q != 0.5 else statistics.median(ordered)


def run_seed(db_url: str, data_dir: Path, backend: str, cfg: GenConfig, settings: Any, workers: int = 1) -> tuple[Score, FleetGen, Sent]:
    """Generate one fleet on a fresh server, send it, sweep once, and score what came out."""
    servers = start_server(db_url, data_dir, backend, settings)
    server = next(servers)
    try:
        gen = FleetGen(server.url, server.service.engine, cfg, ("support", PASSWORD), server.service.settings.fleet)
        sent = gen.run(workers=workers, settle=server.counted)  # the fleet queue counts uploads after their answer
        server.service.fleet.sweep()  # the background sweep runs every sweep_seconds; no waiting here
        with server.service.engine.connect() as conn:
            held = dict(conn.execute(sa.select(bundle_fleet.c.bundle_id, bundle_fleet.c.hold_incident).where(bundle_fleet.c.hold_incident.is_not(None))).all())
        at_risk, cursor = set(), None
        while True:
            page = server.get("/api/v1/terminals", params={"status": "at_risk", "limit": 500} | ({"cursor": cursor} if cursor else {})).json()
            at_risk |= {t["id"] for t in page["items"]}
            cursor = page["next_cursor"]
            if not cursor:
                break
        return score(gen, sent, gen.client.incidents(), held, at_risk, settings.fleet), gen, sent
    finally:
        servers.close()


def score(gen: FleetGen, sent: Sent, incidents: list[dict[str, Any]], held: dict[str, str], at_risk: set[str], settings: Any) -> Score:
    """One run's score. `held`: the bundles some incident holds, each with its incident's id; `settings`: the
    server's FleetSettings (what is detectable is measured by its minimums)."""
    s = Score(terminal_days=len(gen.members) * gen.cfg.hours / 24)
    outages = [tr for tr in gen.truth if tr.kind == "outage"]
    members = {m.t.id: m for m in gen.members}
    found_outages = [i for i in incidents if i["kind"] == "outage"]
    matched: dict[int, list[dict[str, Any]]] = {id(tr): [] for tr in outages}
    first_day = gen.cfg.start + timedelta(days=1)
    for incident in found_outages:
        scope_ids = {m.t.id for m in gen.in_scope(incident["scope"])}
        start = db.parse_time(incident["started_at"])
        end = db.parse_time(incident["ended_at"]) if incident["ended_at"] else gen.cfg.end
        hits = [tr for tr in outages if start <= tr.end + AFTER and end >= tr.start - BEFORE and scope_ids & tr.failing]
        for tr in hits:
            matched[id(tr)].append(incident)
        if not hits:
            s.false_incidents.append(f"outage {incident['scope']} at {incident['started_at']} ({incident['terminals_affected']} terminals)")
            s.false_first_day += start < first_day
    for tr in outages:
        if len(tr.failing) < settings.outage_min_terminals:
            s.undetectable += 1
            continue
        if not breadth.spread_enough({t: members[t].t.labels for t in tr.failing}, settings):
            s.narrow.append(_outage(gen, tr))
            continue
        s.outages[tr.name] += 1
        right = sorted((i for i in matched[id(tr)] if _same_scope(gen, i["scope"], tr.scope)), key=lambda i: i["detected_at"])
        if not right:
            if matched[id(tr)]:
                s.wrong_scope.append(f"{_outage(gen, tr)} opened as {[_incident(i) for i in matched[id(tr)]]}")
            else:
                s.missed.append(_outage(gen, tr))
            continue
        s.found[tr.name] += 1
        first = right[0]
        seen = gen.event_time_at(db.parse_time(first["detected_at"]).timestamp())
        if tr.late and tr.first_arrival:
            s.late_delays.append(max(0.0, (seen - tr.first_arrival).total_seconds() / 60))
        else:
            s.delays.append(max(0.0, (seen - tr.start).total_seconds() / 60))
            if s.delays[-1] > 10:
                s.slow.append(f"{_outage(gen, tr)} found {s.delays[-1]:.0f} min after it began (at {seen:%H:%M}) as {_incident(first)}")
        if first["status"] == "closed" and db.parse_time(first["ended_at"]) <= tr.end + AFTER:
            s.closed_in_time += 1
        s.in_scope_errors.append(abs(first["terminals_in_scope"] - len(tr.awake)) / max(len(tr.awake), 1))
        s.affected_shares.append(first["terminals_affected"] / len(tr.failing))
    _holds(s, gen, sent, held, outages, members, settings, {i["id"]: i for i in incidents})
    _regressions(s, gen, incidents, settings)
    wear = set().union(*(tr.failing for tr in gen.truth if tr.kind == "wear"))
    s.at_risk_truth, s.at_risk_found, s.at_risk_extra = len(wear), len(wear & at_risk), len(at_risk - wear)
    return s


def _same_scope(gen: FleetGen, found: dict[str, str], injected: dict[str, str]) -> bool:
    return found == injected or {m.t.id for m in gen.in_scope(found)} == {m.t.id for m in gen.in_scope(injected)}


def _outage(gen: FleetGen, tr: Truth) -> str:
    """An injected outage in a line: what, where, when, how many failed of how many awake."""
    late = f", arriving from {tr.first_arrival:%H:%M}" if tr.late and tr.first_arrival else ""
    return (f"{tr.name} {tr.scope} {tr.start:%m-%d %H:%M}-{tr.end:%H:%M}{late}: {len(tr.failing)} failing of {len(tr.awake)} awake, "
            f"{len(gen.in_scope(tr.scope))} in scope")  # fmt: skip


def _incident(i: dict[str, Any]) -> str:
    return f"{i['scope']} {i['started_at'][5:16]}-{(i['ended_at'] or '')[11:16]} {i['terminals_affected']}/{i['terminals_in_scope']}"


def _holds(s: Score, gen: FleetGen, sent: Sent, held: dict[str, str], outages: list[Truth], members: dict, settings: Any,
           incidents: dict[str, dict[str, Any]] | None = None) -> None:  # fmt: skip
    """`held`: bundle id -> the incident holding it."""
    scopes = {id(tr): {m.t.id for m in gen.in_scope(tr.scope)} for tr in outages}
    wrong: Counter[str] = Counter()
    unheld: Counter[str] = Counter()
    for bundle_id, what in sent.bundles.items():
        if what["category"] not in settings.outage_categories:
            continue
        at: datetime = what["true_at"]
        inside = [tr for tr in outages if what["terminal"] in scopes[id(tr)] and tr.start <= at <= tr.end]
        if not inside:
            s.outside += 1
            s.held_outside += bundle_id in held
            if bundle_id in held:
                incident = (incidents or {}).get(held[bundle_id])
                wrong[_incident(incident) if incident else held[bundle_id]] += 1
        elif any(len(tr.failing) >= settings.outage_min_terminals for tr in inside):
            s.inside += 1
            s.held_inside += bundle_id in held
            if bundle_id not in held:
                unheld[_outage(gen, inside[0])] += 1
    s.hold_detail += [f"held outside by {k}: {n}" for k, n in sorted(wrong.items())]
    s.hold_detail += [f"not held inside {k}: {n}" for k, n in sorted(unheld.items())]


def _regressions(s: Score, gen: FleetGen, incidents: list[dict[str, Any]], settings: Any) -> None:
    rollout = next(tr for tr in gen.truth if tr.kind == "regression")
    storms = [tr.scope for tr in gen.truth if tr.kind == "storm"]
    big_enough = len(rollout.failing) >= settings.regression_min_terminals
    s.rollouts += big_enough
    s.rollouts_small += not big_enough
    found = False
    for incident in (i for i in incidents if i["kind"] == "regression"):
        if incident["scope"] == rollout.scope and rollout.category in incident["categories"]:
            found = True
            continue
        s.false_regressions.append(f"regression {incident['scope']} {incident['categories']}")
        s.storm_regressions += any(all(incident["scope"].get(k) == v for k, v in scope.items()) for scope in storms)
        s.promotion_regressions += bool({"card", "transaction"} & set(incident["categories"]))
    s.rollouts_found += found and big_enough
