"""The regression detector: a version whose incident rate stands out from its model's others.

It counts terminals, never bundles: the unit is the terminal-day. For each model, version v
(firmware, and separately app version) and top-cause category c over the last
regression_window_days of event time:

  x_v = terminal-days on v with at least one bundle of category c not held by an outage
        (a terminal that uploads 200 bundles in ten minutes adds one, as one failing
        terminal does),
  e_v = active terminal-days on v (a terminal that sent a heartbeat or bundle that day);
  x_o, e_o the same for the model's other versions.

Each terminal-day is a trial that has c or not; under "same share" and given x_v + x_o, x_v is
hypergeometric (e_v + e_o terminal-days, x_v + x_o of them with c, e_v drawn): Fisher's
exact test of two proportions, one-sided. A regression opens when that upper tail is below
regression_p_value, the rate ratio is at least regression_min_ratio, v has at least
regression_min_terminals active terminals and regression_min_affected distinct terminals
have c (so that a few noisy terminals never make a regression).
Once open, it stays open while its version still stands out at the looser
regression_close_p_value (and a ratio above 1): near the opening threshold a regression
would otherwise close and open again from one sweep to the next. It closes when a sweep no
longer finds it so.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from typing import Any

import sqlalchemy as sa

from remote.server.fleet import incidents, inventory, timing
from remote.server.fleet.schema import bundle_fleet, incidents as incidents_t, terminal_days
from remote.server.fleet.stats import hypergeom_sf
from remote.server_settings import FleetSettings

VERSIONS = ("firmware", "app_version")


def detect(conn: sa.Connection, watermark: str, settings: FleetSettings, now: str) -> list[tuple[str, bool]]:
    since = timing.shift(watermark, days=-settings.regression_window_days)
    opened = conn.execute(sa.select(incidents_t.c.id, incidents_t.c.scope_key).where(incidents_t.c.status == "open", incidents_t.c.kind == "regression")).all()
    found = _found(conn, since, settings)
    fading = {r.scope_key for r in opened} - {inventory.scope_key(h["scope"]) for h in found.values()}
    if fading:  # an open regression stays while its version still stands out, at the looser close threshold
        keeping = dataclasses.replace(settings, regression_p_value=settings.regression_close_p_value, regression_min_ratio=1.0)
        for key, hit in _found(conn, since, keeping).items():
            if inventory.scope_key(hit["scope"]) in fading:
                found.setdefault(key, hit)
    touched = []
    for hit in found.values():
        key = inventory.scope_key(hit["scope"])
        incident_id, new = incidents.open_incident(conn, "regression", key, _values(hit, now))
        if not new:
            conn.execute(incidents_t.update().where(incidents_t.c.id == incident_id).values(
                last_hit_at=watermark, terminals_affected=hit["affected"], terminals_in_scope=hit["terminals"],
                bundles=hit["bundles"], expected=hit["expected"], p_value=hit["p_value"],
            ))  # fmt: skip
        touched.append((incident_id, new))
    still = {inventory.scope_key(h["scope"]) for h in found.values()}
    for row in opened:
        if row.scope_key not in still:
            incidents.close(conn, row.id, watermark)
    return touched


def _found(conn: sa.Connection, since: str, settings: FleetSettings) -> dict[str, dict[str, Any]]:
    """Hits by scope and category ("firmware=2.1&model=P2#printer")."""
    return {inventory.scope_key(hit["scope"]) + "#" + hit["category"]: hit for dim in VERSIONS for hit in _hits(conn, dim, since, settings)}


def _hits(conn: sa.Connection, dim: str, since: str, settings: FleetSettings) -> list[dict[str, Any]]:
    b = bundle_fleet.c
    day = sa.func.substr(b.event_at, 1, 10)
    exposure = _exposure(conn, dim, since)
    days_hit = (
        sa.select(b.model, b[dim].label("version"), b.top_category.label("category"), b.terminal_id,
                  sa.func.count().label("bundles"), sa.func.min(b.event_at).label("first"))
        .where(b.event_at >= since, b.top_category.is_not(None), b.hold_incident.is_(None), b.excluded.is_(None))
        .group_by(b.model, b[dim], b.top_category, b.terminal_id, day)
        .subquery()
    )  # fmt: skip
    h = days_hit.c
    counts: dict[tuple[str, str], dict[str, tuple[int, int, int, str]]] = defaultdict(dict)
    for r in conn.execute(
        sa.select(h.model, h.version, h.category, sa.func.count().label("x"), sa.func.count(sa.distinct(h.terminal_id)).label("affected"),
                  sa.func.sum(h.bundles).label("bundles"), sa.func.min(h.first).label("first"))
        .group_by(h.model, h.version, h.category)
    ):  # fmt: skip
        counts[(r.model, r.category)][r.version] = (r.x, r.affected, int(r.bundles), r.first)
    out = []
    for (model, category), by_version in counts.items():
        versions = {v for (m, v) in exposure if m == model}
        for version in versions:
            e_v, terminals = exposure[(model, version)]
            x_v, affected, bundles, first = by_version.get(version, (0, 0, 0, since))
            e_o = sum(exposure[(model, o)][0] for o in versions if o != version)
            x_o = sum(by_version.get(o, (0,))[0] for o in versions if o != version)
            if not e_o or terminals < settings.regression_min_terminals or affected < settings.regression_min_affected:
                continue
            expected = max(x_o, 0.5) / e_o * e_v
            p_value = hypergeom_sf(x_v, e_v + e_o, x_v + x_o, e_v)
            if x_v >= settings.regression_min_ratio * expected and p_value < settings.regression_p_value:
                out.append({"scope": {"model": model, dim: version}, "category": category, "affected": affected,
                            "terminals": terminals, "bundles": bundles, "expected": expected, "p_value": p_value,
                            "x": x_v, "rate": x_v / e_v, "other_rate": x_o / e_o, "first": first})  # fmt: skip
    return out


def _exposure(conn: sa.Connection, dim: str, since: str) -> dict[tuple[str, str], tuple[int, int]]:
    """(terminal-days, terminals) per model and version: a terminal's day counts on each
    version it was seen on that day. terminal_days keeps the day's first sighting, so a
    terminal updated during the day shows its new version only in its bundles: without them
    the day's faults on the new version would have no exposure beside them."""
    days, b = terminal_days.c, bundle_fleet.c
    both = sa.union(
        sa.select(days.model, days[dim].label("version"), days.terminal_id, days.day).where(days.day >= since[:10]),
        sa.select(b.model, b[dim].label("version"), b.terminal_id, sa.func.substr(b.event_at, 1, 10).label("day")).where(b.event_at >= since),
    ).subquery()  # fmt: skip
    u = both.c
    rows = conn.execute(
        sa.select(u.model, u.version, sa.func.count().label("days"), sa.func.count(sa.distinct(u.terminal_id)).label("terminals"))
        .group_by(u.model, u.version)
    )  # fmt: skip
    return {(r.model, r.version): (r.days, r.terminals) for r in rows}


def _values(hit: dict[str, Any], now: str) -> dict[str, Any]:
    scope = hit["scope"]
    dim = "firmware" if "firmware" in scope else "app_version"
    what = f"{scope['model']} {dim.replace('_', ' ')} {scope[dim]}"
    text = {
        "en": f"Regression on {what}: {hit['category']} problems on {hit['rate']:.0%} of its terminal-days "
              f"against {hit['other_rate']:.0%} on the model's other versions ({hit['affected']} of {hit['terminals']} terminals).",
        "zh": f"{what} 版本回退：{hit['rate']:.0%} 的终端日出现 {hit['category']} 类问题，同型号其他版本 {hit['other_rate']:.0%}"
              f"（{hit['terminals']} 台终端中 {hit['affected']} 台）。",
    }  # fmt: skip
    return {
        "scope": json.dumps(scope, sort_keys=True), "categories": json.dumps([hit["category"]]), "codes": "[]",
        "started_at": hit["first"], "detected_at": now, "last_hit_at": now, "terminals_affected": hit["affected"],
        "terminals_in_scope": hit["terminals"], "bundles": hit["bundles"], "expected": hit["expected"],
        "p_value": hit["p_value"], "summary": json.dumps(text, ensure_ascii=False),
    }  # fmt: skip
