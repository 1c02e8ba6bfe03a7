"""The home page's figures: what is wrong with the fleet today and what to do.

The open incidents with the bundles each holds; the last 24 hours' bundles by what they ask
for (dispatch on site or remote, none held; held by an incident), the missing and at-risk
terminals, the faults (problems above verdict none) first seen in the last 24 hours; and terminals failing per hour
(a bundle with a verdict above `none`) against the band the seven days before predict.
Each figure is one grouped query; the band is computed once an hour per process.
"""

from __future__ import annotations

import math
import threading
from collections import defaultdict
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from remote.server.db import bundles
from remote.server.fleet import incidents, inventory, timing
from remote.server.fleet.schema import bundle_fleet, problems
from remote.server_settings import FleetSettings

FAULTS = ("merchant", "remote", "onsite")  # verdicts above none
BASELINE_DAYS = 7
_bands: dict[tuple[int, str], dict[int, tuple[float, float]]] = {}
_bands_lock = threading.Lock()


def since_24h(now: str) -> str:
    return timing.shift(now, hours=-24)


def open_incidents(engine: Engine) -> list[dict[str, Any]]:
    """Open incidents, newest first, each with `held`: the bundles it holds now."""
    found = incidents.list_incidents(engine, "open", limit=50)
    if not found:
        return []
    bf = bundle_fleet.c
    with engine.connect() as conn:
        held = dict(conn.execute(
            sa.select(bf.hold_incident, sa.func.count()).where(bf.hold_incident.in_([i["id"] for i in found])).group_by(bf.hold_incident)
        ).all())  # fmt: skip
    return [dict(i, held=held.get(i["id"], 0)) for i in found]


def counts(engine: Engine, settings: FleetSettings, now: str) -> dict[str, int]:
    """The home's counts over the 24 hours before `now` (event time), each what its list
    shows. By verdict from the bundles' own index, less those held (few, by their index):
    a join of the day's bundles with their fleet rows made PostgreSQL read all of them."""
    since = since_24h(now)
    with engine.connect() as conn:
        by_verdict = dict(conn.execute(
            sa.select(bundles.c.verdict, sa.func.count()).where(bundles.c.created_at >= since).group_by(bundles.c.verdict)
        ).all())  # fmt: skip
        new_problems = conn.execute(sa.select(sa.func.count()).where(problems.c.first_seen >= since, problems.c.verdict_rank >= 1)).scalar_one()
    held = held_by_verdict(engine, since)
    status = inventory.status_counts(engine, settings, now)
    return {
        "onsite": by_verdict.get("onsite", 0) - held.get("onsite", 0), "remote": by_verdict.get("remote", 0) - held.get("remote", 0),
        "held": sum(held.values()), "bundles": sum(by_verdict.values()), "new_problems": new_problems,
        "missing": status["missing"], "at_risk": status["at_risk"], "terminals": status["total"],
    }  # fmt: skip


def failing_per_hour(engine: Engine, now: str) -> list[tuple[str, int, float, float]]:
    """The last 24 whole hours and the current one: (hour start, terminals failing, band low,
    band high); the band is the mean of that hour of the day over the days before, ± 2√mean."""
    first = timing.shift(now[:13] + ":00:00.000000Z", hours=-24)
    seen = _per_hour(engine, first, now)
    band = _band(engine, first)
    out = []
    for i in range(25):
        start = timing.shift(first, hours=i)
        low, high = band.get(int(start[11:13]), (0.0, 0.0))
        out.append((start, seen.get(start[:13], 0), low, high))
    return out


def _per_hour(engine: Engine, since: str, until: str) -> dict[str, int]:
    """Distinct terminals with a fault bundle per UTC hour of event time (bundles.created_at)."""
    b = bundles.c
    hour = sa.func.substr(b.created_at, 1, 13)
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(hour.label("hour"), sa.func.count(sa.distinct(b.terminal_id)))
            .where(b.created_at >= since, b.created_at < until, b.verdict.in_(FAULTS)).group_by(hour)
        ).all()  # fmt: skip
    return {h: n for h, n in rows}


def _band(engine: Engine, before: str) -> dict[int, tuple[float, float]]:
    """Hour of the day -> (low, high), from the BASELINE_DAYS before `before` (cached for the hour)."""
    key = (id(engine), before[:13])
    with _bands_lock:
        if key in _bands:
            return _bands[key]
    days = _per_hour(engine, timing.shift(before, days=-BASELINE_DAYS), before)
    by_hour: dict[int, list[int]] = defaultdict(list)
    for hour, n in days.items():
        by_hour[int(hour[11:13])].append(n)
    observed = max(1, min(BASELINE_DAYS, len({hour[:10] for hour in days})))  # a young fleet has fewer days
    band = {}
    for h in range(24):
        mean = sum(by_hour.get(h, [])) / observed
        band[h] = (max(0.0, mean - 2 * math.sqrt(mean)), mean + 2 * math.sqrt(mean))
    with _bands_lock:
        for old in [k for k in _bands if k[0] == key[0]]:
            del _bands[old]
        _bands[key] = band
    return band


def held_by_verdict(engine: Engine, since: str) -> dict[str | None, int]:
    """Bundles created since `since` that an incident holds, by the terminal's own verdict."""
    bf = bundle_fleet.c
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(bundles.c.verdict, sa.func.count()).select_from(bundle_fleet.join(bundles, bundles.c.id == bf.bundle_id))
            .where(bf.hold_incident.is_not(None), bundles.c.created_at >= since).group_by(bundles.c.verdict)
        ).all()  # fmt: skip
    return {v: n for v, n in rows}
