"""The outage detector.

For a scope (terminals sharing label values, e.g. acquirer=B or carrier=X&region=R) and a
window of W minutes ending at an event time t:

  X  = distinct terminals of the scope whose bundles in the window have a host or network
       top cause (one terminal counts once, however noisy);
  N  = the scope's active terminals (seen within missing_after_hours before t);
  λ  = the scope's own rate of such bundles per terminal-hour over the whole UTC hours of
       the baseline days before the window, bundles already held by an incident left out,
       never below a floor.
       The three windows tested around one event share N (at the event) and λ (before the
       earliest of them), counted from the rollups of baseline.py;
  μ  = λ · N · W.

Under "nothing happened" each terminal fails as a Poisson process of rate λ, so the number
of distinct failing terminals is at most a Poisson(μ) count: P(X' ≥ X) ≤ poisson_sf(X, μ).
A window opens an incident when that tail is below outage_p_value (small: many scopes and
windows are tested), X ≥ outage_min_terminals and X ≥ outage_min_ratio · μ.

Of the scopes that pass, the most specific one that explains the burst is kept: scope A
is explained by B when at least outage_explain_fraction of A's failing terminals are in B
and B's failing terminals are not mostly in A (B's burst reaches beyond A); when each
holds the other's, the one with fewer active terminals wins. A scope explained by an
open outage joins it; an open outage explained by a wider new one is widened in place.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from remote.server.fleet import baseline, breadth, incidents, inventory, seasonal, timing
from remote.server.fleet.schema import (
    incidents as incidents_t,
    outage_events,
    terminal_labels,
)
from remote.server.fleet.stats import poisson_sf
from remote.server_settings import FleetSettings


@dataclass
class Window:
    scope_key: str
    start: str
    end: str
    failing: set[str]
    first_at: str
    active: int
    expected: float
    p_value: float
    young: bool = False


def _failing(conn: sa.Connection, scope_key: str, start: str, end: str) -> tuple[set[str], str | None]:
    rows = conn.execute(
        sa.select(outage_events.c.terminal_id, sa.func.min(outage_events.c.event_at))
        .where(outage_events.c.scope_key == scope_key, outage_events.c.event_at > start, outage_events.c.event_at <= end)
        .group_by(outage_events.c.terminal_id)
    ).all()  # fmt: skip
    return {r[0] for r in rows}, min((r[1] for r in rows), default=None)


class ScopeCounts:
    """A scope's numbers around one event time, each read once, when first needed, and
    shared by the windows tested there (they end within W of each other): its failures in
    `span`, its active terminals at `at`, its baseline before `before`."""

    def __init__(
        self, conn: sa.Connection, scope_key: str, at: str, before: str, settings: FleetSettings, span: tuple[str, str] | None = None,
    ) -> None:  # fmt: skip
        self.conn, self.scope_key, self.at, self.before, self.settings, self.span = conn, scope_key, at, before, settings, span

    @functools.cached_property
    def _span_events(self) -> list[tuple[str, str]]:
        assert self.span is not None
        e = outage_events.c
        lo, hi = self.span
        return [tuple(r) for r in self.conn.execute(sa.select(e.terminal_id, e.event_at).where(e.scope_key == self.scope_key, e.event_at > lo, e.event_at <= hi))]

    def failing(self, start: str, end: str) -> tuple[set[str], str | None]:
        """Distinct terminals failing in (start, end], and the first failure's time."""
        if self.span is None or not (self.span[0] <= start and end <= self.span[1]):
            return _failing(self.conn, self.scope_key, start, end)
        inside = [(tid, at) for tid, at in self._span_events if start < at <= end]
        return {tid for tid, _ in inside}, min((at for _, at in inside), default=None)

    @functools.cached_property
    def active(self) -> int:
        return baseline.active(self.conn, self.scope_key, self.at, self.settings)

    @functools.cached_property
    def history(self) -> tuple[dict[str, int], list[str]]:
        """(failing terminal-hours by hour, the hours) over the whole UTC hours of the
        baseline days before `before`, or of the history there is: since the fleet's first
        sighting (read from scope_hours)."""
        begin = max(timing.shift(self.before, days=-self.settings.outage_baseline_days), breadth.fleet_origin(self.conn) or "")
        first, after, _hours = baseline.whole_hours(begin, self.before)
        return baseline.unheld_by_hour(self.conn, self.scope_key, first, after), baseline.hour_keys(first, after)

    @property
    def young(self) -> bool:
        """Less than a day of history: the stricter outage_young_p_value applies."""
        return len(self.history[1]) < 24

    def rate(self, active: int) -> float:
        """Failures per terminal-hour at the hour of `at` (seasonal.py), never below the floor."""
        counts, hours = self.history
        seasonal_rate = seasonal.shrunk_rate(counts, hours, baseline.hour(self.at), active) or 0.0
        return max(seasonal_rate, self.settings.outage_baseline_floor_per_terminal_hour)


def test_window(
    conn: sa.Connection, scope_key: str, start: str, end: str, settings: FleetSettings, floor: int,
    base: ScopeCounts | None = None,
) -> Window | None:  # fmt: skip
    """The window's counts and tail, or None when fewer than `floor` terminals fail in it.
    Without `base`, N is counted at `end` and the baseline ends at `start`."""
    base = base or ScopeCounts(conn, scope_key, end, start, settings)
    failing, first_at = base.failing(start, end)
    if len(failing) < floor or first_at is None:
        return None
    active = max(base.active, len(failing))
    expected = base.rate(active) * active * timing.hours_between(start, end)
    return Window(scope_key, start, end, failing, first_at, active, expected, poisson_sf(len(failing), expected), base.young)


def opens(w: Window, settings: FleetSettings) -> bool:
    threshold = settings.outage_young_p_value if w.young else settings.outage_p_value
    return w.p_value < threshold and len(w.failing) >= settings.outage_min_ratio * w.expected


def _scopes_of_terminals(conn: sa.Connection, terminal_ids: set[str], settings: FleetSettings) -> dict[str, set[str]]:
    labels: dict[str, dict[str, str]] = {t: {} for t in terminal_ids}
    rows = conn.execute(sa.select(terminal_labels).where(terminal_labels.c.terminal_id.in_(terminal_ids))).all()
    for r in rows:
        labels[r.terminal_id][r.key] = r.value
    return {t: set(inventory.scopes_of(lab, settings)) for t, lab in labels.items()}


def _share_in(failing: set[str], scope_key: str, scopes: dict[str, set[str]]) -> float:
    return sum(1 for t in failing if scope_key in scopes.get(t, ())) / max(len(failing), 1)


def _explains(b: Window, a: Window, scopes: dict[str, set[str]], frac: float) -> bool:
    """B explains A: A's failures lie in B, and B's reach beyond A (or B is narrower)."""
    if _share_in(a.failing, b.scope_key, scopes) < frac:
        return False
    if _share_in(b.failing, a.scope_key, scopes) < frac:
        return True
    return (b.active, b.scope_key.count("&") * -1, b.scope_key) < (a.active, a.scope_key.count("&") * -1, a.scope_key)


def _trusted(w: Window | None, trust: breadth.Trust, settings: FleetSettings) -> Window | None:
    """The window counted over the terminals that may open an outage (breadth.py)."""
    if w is None:
        return None
    eligible = trust.eligible(w.failing, w.start)
    if len(eligible) < settings.outage_min_terminals:
        return None
    if eligible == w.failing:
        return w
    return dataclasses.replace(w, failing=eligible, p_value=poisson_sf(len(eligible), w.expected))


def repeats(conn: sa.Connection, terminal_id: str, t: str, settings: FleetSettings) -> bool:
    """The terminal has a host/network failure within half a window of t already: a new
    one adds no terminal to the windows around t, so they need no new test (and a terminal
    sending thousands costs a lookup each, not a detector pass)."""
    half = settings.outage_window_minutes / 2
    e = outage_events.c
    near = sa.select(e.bundle_id).where(e.terminal_id == terminal_id, e.event_at >= timing.shift(t, minutes=-half), e.event_at <= timing.shift(t, minutes=half))
    return conn.execute(near.limit(1)).first() is not None


def evaluate(conn: sa.Connection, scope_keys: list[str], t: str, settings: FleetSettings, now: str) -> list[tuple[str, bool]]:
    """Test the windows around event time t for these scopes; open, join or widen outages.
    Returns (incident id, newly opened) of every outage touched."""
    width = settings.outage_window_minutes
    trust = breadth.Trust(conn, t, settings)
    windows: list[Window] = []
    for key in scope_keys:
        best = None
        # one read for the three windows: failures in (t - W, t + W], N at t, baseline before t - W
        early, late = timing.shift(t, minutes=-width), timing.shift(t, minutes=width)
        base = ScopeCounts(conn, key, t, early, settings, span=(early, late))
        for end in (t, timing.shift(t, minutes=width / 2), timing.shift(t, minutes=width)):
            w = _trusted(test_window(conn, key, timing.shift(end, minutes=-width), end, settings, settings.outage_min_terminals, base), trust, settings)
            if w and opens(w, settings) and (best is None or w.p_value < best.p_value):
                best = w
        if best and trust.spread(best.scope_key, best.failing):
            windows.append(best)
    if not windows:
        return []
    # Open outages, and closed ones near t: a late upload joins the incident it belongs to.
    near = timing.shift(t, minutes=-(settings.outage_close_after_minutes + 2 * width))
    open_rows = conn.execute(
        sa.select(incidents_t).where(
            incidents_t.c.kind == "outage", incidents_t.c.started_at <= timing.shift(t, minutes=2 * width),
            sa.or_(incidents_t.c.status == "open", sa.and_(incidents_t.c.status == "closed", incidents_t.c.ended_at >= near)),
        )
    ).mappings().all()  # fmt: skip
    everyone = set().union(*(w.failing for w in windows))
    scopes = _scopes_of_terminals(conn, everyone, settings)
    kept = [a for a in windows if not any(b is not a and _explains(b, a, scopes, settings.outage_explain_fraction) for b in windows)]
    touched: list[tuple[str, bool]] = []
    for w in kept:
        same = next((r for r in open_rows if r["scope_key"] == w.scope_key), None)
        inside = next((r for r in open_rows if r is not same and _share_in(w.failing, r["scope_key"], scopes) >= settings.outage_explain_fraction), None)
        if same is None and inside is not None:
            same = inside  # explained by an outage already open: it joins that one
        elif same is None:
            narrower = next((r for r in open_rows if r["status"] == "open" and _incident_inside(conn, r, w, scopes, settings)), None)
            if narrower is not None:
                _widen(conn, narrower, w)
                same = conn.execute(sa.select(incidents_t).where(incidents_t.c.id == narrower["id"])).mappings().one()
        if same is not None:
            _extend(conn, same, w, settings, trust)
            touched.append((same["id"], False))
            continue
        w = _explained_away(conn, w, [r for r in open_rows if r["status"] == "open"], settings)
        if w is None:
            continue
        incident_id, new = incidents.open_incident(conn, "outage", w.scope_key, _values(w, now, settings))
        row = conn.execute(sa.select(incidents_t).where(incidents_t.c.id == incident_id)).mappings().one()
        _extend(conn, row, w, settings, trust)
        touched.append((incident_id, new))
    return touched


def _span_failing(conn: sa.Connection, scope_key: str, start: str, end: str) -> set[str]:
    e = outage_events.c
    return set(conn.execute(sa.select(e.terminal_id).distinct().where(e.scope_key == scope_key, e.event_at >= start, e.event_at <= end)).scalars())


def _explained_away(conn: sa.Connection, w: Window, open_rows: list[Any], settings: FleetSettings) -> Window | None:
    """The window without the terminals open outages already cover, if it still opens one:
    no two open outages cover the same failing terminals."""
    covered: set[str] = set()
    for row in open_rows:
        covered |= _span_failing(conn, row["scope_key"], row["started_at"], max(row["last_hit_at"], w.end)) & w.failing
    if not covered:
        return w
    rest = w.failing - covered
    left = dataclasses.replace(w, failing=rest, p_value=poisson_sf(len(rest), w.expected))
    return left if len(rest) >= settings.outage_min_terminals and opens(left, settings) else None


def _incident_inside(conn: sa.Connection, row: Any, w: Window, scopes: dict[str, set[str]], settings: FleetSettings) -> bool:
    """An open outage whose failing terminals lie within the new window's wider scope."""
    failing = _span_failing(conn, row["scope_key"], row["started_at"], row["last_hit_at"])
    if not failing:
        return False
    missing = failing - set(scopes)
    scopes.update(_scopes_of_terminals(conn, missing, settings) if missing else {})
    return _share_in(failing, w.scope_key, scopes) >= settings.outage_explain_fraction and _share_in(w.failing, row["scope_key"], scopes) < settings.outage_explain_fraction


def _widen(conn: sa.Connection, row: Any, w: Window) -> None:
    """Re-scope in place: the new scope's figures, and no hold its scope does not cover."""
    conn.execute(
        incidents_t.update().where(incidents_t.c.id == row["id"]).values(
            scope_key=w.scope_key, open_key=f"outage:{w.scope_key}", scope=json.dumps(inventory.parse_scope_key(w.scope_key), sort_keys=True),
            terminals_in_scope=w.active, expected=w.expected, p_value=w.p_value,
        )
    )  # fmt: skip
    incidents.release_outside(conn, row["id"], w.scope_key, row["started_at"], row["last_hit_at"])


def _values(w: Window, now: str, settings: FleetSettings) -> dict[str, Any]:
    return {
        "scope": json.dumps(inventory.parse_scope_key(w.scope_key), sort_keys=True), "categories": "[]", "codes": "[]",
        "started_at": w.first_at, "detected_at": now, "last_hit_at": w.end, "terminals_affected": len(w.failing),
        "terminals_in_scope": w.active, "bundles": 0, "expected": w.expected, "p_value": w.p_value,
        "summary": json.dumps(summary(w.scope_key, len(w.failing), w.active, w.expected, settings), ensure_ascii=False),
    }  # fmt: skip


def summary(scope_key: str, failing: int, active: int, expected: float, settings: FleetSettings) -> dict[str, str]:
    where = ", ".join(f"{k} {v}" for k, v in inventory.parse_scope_key(scope_key).items())
    minutes = f"{settings.outage_window_minutes:g}"
    return {
        "en": f"Host or network outage on {where}: {failing} of {active} terminals failing "
              f"(baseline {expected:.2f} per {minutes}-minute window).",
        "zh": f"{where} 主机或网络故障：{active} 台终端中 {failing} 台失败（基线每 {minutes} 分钟 {expected:.2f}）。",
    }


def _extend(conn: sa.Connection, row: Any, w: Window, settings: FleetSettings, trust: breadth.Trust) -> None:
    """Grow the incident's span to the window's failures and hold the bundles in it."""
    start = min(row["started_at"], w.first_at)
    last = max(row["last_hit_at"], max(_last_event(conn, w) or w.first_at, w.first_at))
    values: dict[str, Any] = {"started_at": start, "last_hit_at": last}
    if w.scope_key == row["scope_key"]:  # a window of another scope joining says nothing of this one's size
        values["terminals_in_scope"] = max(row["terminals_in_scope"], w.active)
    if row["status"] == "closed":
        values["ended_at"] = max(row["ended_at"], last)
    if w.p_value < row["p_value"]:
        values.update(p_value=w.p_value, expected=w.expected)
    conn.execute(incidents_t.update().where(incidents_t.c.id == row["id"]).values(**values))
    _hold(conn, row["id"], w.start, w.end, settings, trust)


def _hold(conn: sa.Connection, incident_id: str, start: str, end: str, settings: FleetSettings, trust: breadth.Trust) -> None:
    """Hold the span's bundles while the scope's failing share in (start, end] is above
    the floor (and the hold within what needs no acknowledgement); then the figures."""
    row = conn.execute(sa.select(incidents_t).where(incidents_t.c.id == incident_id)).mappings().one()
    scope_key = row["scope_key"]
    base = ScopeCounts(conn, scope_key, end, start, settings)
    failing = trust.eligible(base.failing(start, end)[0], start)
    if len(failing) >= breadth.hold_floor(max(base.active, len(failing)), settings):
        incidents.mark_holds(conn, incident_id, scope_key, row["started_at"], row["last_hit_at"], breadth.hold_room(row, settings))
    affected = len(_span_failing(conn, scope_key, row["started_at"], row["last_hit_at"]))
    counts = incidents.refresh_counts(conn, incident_id, affected)
    text = summary(scope_key, counts["terminals_affected"], row["terminals_in_scope"], row["expected"], settings)
    conn.execute(incidents_t.update().where(incidents_t.c.id == incident_id).values(summary=json.dumps(text, ensure_ascii=False)))


def _last_event(conn: sa.Connection, w: Window) -> str | None:
    return conn.execute(
        sa.select(sa.func.max(outage_events.c.event_at)).where(
            outage_events.c.scope_key == w.scope_key, outage_events.c.event_at > w.start, outage_events.c.event_at <= w.end
        )
    ).scalar()  # fmt: skip


def follow(conn: sa.Connection, scope_keys: list[str], t: str, settings: FleetSettings) -> list[str]:
    """A host/network failure at t on these scopes joins an outage it falls in: a closed
    one's span (held if the outage held), or near an open one's span while the scope is
    still above baseline (tail below outage_close_p_value over the window either side of t)."""
    if not scope_keys:
        return []
    width = settings.outage_window_minutes
    rows = conn.execute(
        sa.select(incidents_t).where(
            incidents_t.c.kind == "outage", incidents_t.c.scope_key.in_(scope_keys), incidents_t.c.status != "dismissed",
            incidents_t.c.started_at <= timing.shift(t, minutes=width),
            sa.or_(incidents_t.c.ended_at.is_(None), incidents_t.c.ended_at >= t),
        )
    ).mappings().all()  # fmt: skip
    touched = []
    trust = breadth.Trust(conn, t, settings)
    for row in rows:
        if row["status"] == "closed":
            if row["started_at"] <= t <= row["ended_at"]:
                if row["bundles"]:
                    incidents.mark_holds(conn, row["id"], row["scope_key"], t, t, breadth.hold_room(row, settings))
                incidents.refresh_counts(conn, row["id"], row["terminals_affected"])
                touched.append(row["id"])
            continue
        if t > timing.shift(row["last_hit_at"], minutes=width):
            continue
        early, late = timing.shift(t, minutes=-width), timing.shift(t, minutes=width)
        w = test_window(conn, row["scope_key"], early, late, settings, 1)
        if w is not None and w.p_value < settings.outage_close_p_value:
            start, last = min(row["started_at"], t), max(row["last_hit_at"], t)
            conn.execute(incidents_t.update().where(incidents_t.c.id == row["id"]).values(started_at=start, last_hit_at=last))
            _hold(conn, row["id"], early, late, settings, trust)
            touched.append(row["id"])
    return touched


def close_quiet(conn: sa.Connection, watermark: str, settings: FleetSettings) -> list[str]:
    """Close open outages with no significant failure for outage_close_after_minutes of event time."""
    quiet = timing.shift(watermark, minutes=-settings.outage_close_after_minutes)
    rows = conn.execute(
        sa.select(incidents_t.c.id, incidents_t.c.last_hit_at).where(
            incidents_t.c.status == "open", incidents_t.c.kind == "outage", incidents_t.c.last_hit_at < quiet
        )
    ).all()  # fmt: skip
    return [r.id for r in rows if incidents.close(conn, r.id, r.last_hit_at)]
