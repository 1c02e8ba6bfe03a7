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

A trickle (a night DNS outage whose few awake terminals fail one by one over an hour, never
outage_min_terminals in one window) can be seen by a second, longer window of
outage_long_window_minutes (off as packaged: equal to the short one), tested the same way
but with the stricter outage_young_p_value (an hour holds five ordinary failures far more
often than ten minutes do, and at 1e-6 an acquirer's busy afternoon opened one), where the
short ones open nothing and the scope expects at most outage_min_terminals / outage_min_ratio failing terminals in it (small
scopes, quiet hours), has a day of history and no outage has failures within an hour of t:
above that, a long window opens only with more failing terminals than the minimum, a burst
the short windows see. An incident's `expected` is always per short window, whichever
window opened or grew it.

A window first loses the terminals that an outage of another scope, failing at the same
time and reaching beyond the window's scope, explains (the most significant explanation
first, the rest tested again). Of the scopes that still pass, the one that explains the
burst is kept: scope A is explained by B when at least outage_explain_fraction of A's
failing terminals are in B and B's failing terminals are not mostly in A (B's burst reaches
beyond A); when each holds the other's, the better fit wins (F1 over the failing terminals
of both, then the smaller tail, fewer active terminals, more labels). A window meets the
outages open or closed near it: explained by one, it joins it; one whose failures it holds
is re-scoped in place to the window's scope, wider when the window's failures reach beyond
it and a larger share of the window's scope fails, narrower when the window's scope fits
better.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
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
    long: bool = False  # a long window (a trickle): the stricter outage_young_p_value applies

    def expected_per_window(self, settings: FleetSettings) -> float:
        """μ scaled to outage_window_minutes (what an incident's `expected` is)."""
        minutes = timing.hours_between(self.start, self.end) * 60
        return self.expected * settings.outage_window_minutes / max(minutes, 1e-9)


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
    threshold = settings.outage_young_p_value if w.young or w.long else settings.outage_p_value
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
    """B explains A: A's failures lie in B, and B's reach beyond A; when each holds the
    other's, the better fit of the two (_preferred)."""
    if _share_in(a.failing, b.scope_key, scopes) < frac:
        return False
    if _share_in(b.failing, a.scope_key, scopes) < frac:
        return True
    return _preferred(b, a, scopes)


def _preferred(b: Window, a: Window, scopes: dict[str, set[str]]) -> bool:
    """Of two scopes that hold each other's failing terminals, B fits better: the higher F1
    over the failing terminals of both (precision: B's failing of its active terminals;
    recall: the failing terminals of both that lie in B), then the more surprising (smaller
    tail), then fewer active terminals, then more labels (one set of terminals is named by its
    most specific scope: an acquirer whose terminals all lie in one region is the acquirer in
    that region).

    Decision: fit before size (the explanatory power of multi-dimensional root-cause
    localization: Adtributor, HotSpot, RiskLoc). Fewer terminals first (the rule before) took
    the region of an acquirer's host outage where it held most of the acquirer (11 of 12
    failing against the acquirer's 13 of 14) and left two failing terminals unheld. Surprise
    alone took a region (9 failing of 12) over the carrier in it whose 8 of 8 were down: one
    ordinary failure beside them made the region's tail the smaller."""
    union = b.failing | a.failing
    return _fit(b, union, scopes) < _fit(a, union, scopes)


def _fit(w: Window, union: set[str], scopes: dict[str, set[str]]) -> tuple[float, float, int, int, str]:
    hit = sum(1 for t in union if w.scope_key in scopes.get(t, ()) or t in w.failing)
    f1 = 2 * hit / max(len(union) + max(w.active, hit), 1)
    return (-round(f1, 9), -surprise(w), w.active, -w.scope_key.count("&"), w.scope_key)


def surprise(w: Window) -> float:
    """-log of the window's tail, in log space where the tail itself underflows (a large
    burst over a small expectation)."""
    if w.p_value > 1e-300:
        return -math.log(w.p_value)
    k, mu = len(w.failing), max(w.expected, 1e-300)
    return -(k * math.log(mu) - mu - math.lgamma(k + 1))


def _overlaps(row: Any, w: Window) -> bool:
    """The outage had failures during the window."""
    return bool(row["started_at"] <= w.end and row["last_hit_at"] >= w.start)


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


def _best_window(conn: sa.Connection, key: str, t: str, width: float, trust: breadth.Trust, settings: FleetSettings) -> tuple[Window | None, ScopeCounts]:
    """Of the windows of `width` minutes ending at t, t + width/2 and t + width, the most
    significant that opens one (None when none does), and the scope's counts around t: one
    read for the three windows (failures in (t - width, t + width], N at t, the baseline
    before t - width)."""
    best = None
    early, late = timing.shift(t, minutes=-width), timing.shift(t, minutes=width)
    base = ScopeCounts(conn, key, t, early, settings, span=(early, late))
    for end in (t, timing.shift(t, minutes=width / 2), late):
        w = _trusted(test_window(conn, key, timing.shift(end, minutes=-width), end, settings, settings.outage_min_terminals, base), trust, settings)
        if w and width > settings.outage_window_minutes:
            w = dataclasses.replace(w, long=True)
        if w and opens(w, settings) and (best is None or w.p_value < best.p_value):
            best = w
    return best, base


def _trickles(base: ScopeCounts, settings: FleetSettings) -> bool:
    """The scope has a day of history and expects few enough failing terminals in a long
    window for a trickle to stand out there (two small reads, cached for the short windows:
    N and the baseline). A young scope's baseline is a guess, the floor at first: stretched
    over an hour it opened outages from five ordinary failures in fleets' first evenings."""
    most = settings.outage_min_terminals / settings.outage_min_ratio
    hours = settings.outage_long_window_minutes / 60
    if base.active * settings.outage_baseline_floor_per_terminal_hour * hours > most:
        return False  # a large scope, known from N alone (λ is never below the floor): no baseline read
    if base.young:
        return False
    return base.rate(base.active) * max(base.active, 1) * hours <= most


def _quiet(conn: sa.Connection, t: str, settings: FleetSettings) -> bool:
    """No outage near t has failures within a long window of t: only then is the long window
    tested. Beside an outage, its last hour, failures thinning out, passed the long window of
    its own scope and of the scopes inside it for up to an hour after its end, the window
    joined the outage, and the span grown by it held that hour's ordinary failures (false
    holds 0.6 % -> 2.8 % over 20 generated seeds; 1.8 % on the suite's three)."""
    lo, hi = timing.shift(t, minutes=-settings.outage_long_window_minutes), timing.shift(t, minutes=settings.outage_long_window_minutes)
    return not any(row["started_at"] <= hi and row["last_hit_at"] >= lo for row in _near(conn, t, settings))


def evaluate(conn: sa.Connection, scope_keys: list[str], t: str, settings: FleetSettings, now: str) -> list[tuple[str, bool]]:
    """Test the windows around event time t for these scopes; open, join or widen outages.
    Returns (incident id, newly opened) of every outage touched."""
    trust = breadth.Trust(conn, t, settings)
    windows: list[Window] = []
    quiet: bool | None = None  # no outage's span within a long window of t, read once when first needed
    for key in scope_keys:
        best, base = _best_window(conn, key, t, settings.outage_window_minutes, trust, settings)
        if best is None and settings.outage_long_window_minutes > settings.outage_window_minutes and _trickles(base, settings):
            quiet = _quiet(conn, t, settings) if quiet is None else quiet
            if quiet:  # the long window finds trickles; it never drags an outage's tail on
                best, _ = _best_window(conn, key, t, settings.outage_long_window_minutes, trust, settings)
        if best and trust.spread(best.scope_key, best.failing):
            windows.append(best)
    if not windows:
        return []
    everyone = set().union(*(w.failing for w in windows))
    scopes = _scopes_of_terminals(conn, everyone, settings)
    rows = _near(conn, t, settings)
    windows = [left for w in windows if (left := _foreign_removed(conn, w, rows, scopes, trust, settings)) is not None]
    kept = [a for a in windows if not any(b is not a and _explains(b, a, scopes, settings.outage_explain_fraction) for b in windows)]
    touched: list[tuple[str, bool]] = []
    for w in kept:
        open_rows = _near(conn, t, settings)  # read again: the window before may have re-scoped one
        same = next((r for r in open_rows if r["scope_key"] == w.scope_key), None) or _related(conn, w, open_rows, scopes, trust, settings)
        if same is not None:
            _extend(conn, same, w, settings, trust)
            touched.append((same["id"], False))
            continue
        w = _explained_away(conn, w, open_rows, settings)
        if w is None:
            continue
        incident_id, new = incidents.open_incident(conn, "outage", w.scope_key, _values(w, now, settings))
        row = conn.execute(sa.select(incidents_t).where(incidents_t.c.id == incident_id)).mappings().one()
        _extend(conn, row, w, settings, trust)
        touched.append((incident_id, new))
    return touched


def _near(conn: sa.Connection, t: str, settings: FleetSettings) -> list[Any]:
    """Open outages, and closed ones near t: a late upload joins the incident it belongs to."""
    width = settings.outage_window_minutes
    near = timing.shift(t, minutes=-(settings.outage_close_after_minutes + 2 * width))
    return conn.execute(
        sa.select(incidents_t).where(
            incidents_t.c.kind == "outage", incidents_t.c.started_at <= timing.shift(t, minutes=2 * width),
            sa.or_(incidents_t.c.status == "open", sa.and_(incidents_t.c.status == "closed", incidents_t.c.ended_at >= near)),
        )
    ).mappings().all()  # fmt: skip


def _span_failing(conn: sa.Connection, scope_key: str, start: str, end: str) -> set[str]:
    e = outage_events.c
    return set(conn.execute(sa.select(e.terminal_id).distinct().where(e.scope_key == scope_key, e.event_at >= start, e.event_at <= end)).scalars())


def _known(conn: sa.Connection, scopes: dict[str, set[str]], terminal_ids: set[str], settings: FleetSettings) -> None:
    missing = terminal_ids - set(scopes)
    if missing:
        scopes.update(_scopes_of_terminals(conn, missing, settings))


def _foreign_removed(
    conn: sa.Connection, w: Window, rows: list[Any], scopes: dict[str, set[str]], trust: breadth.Trust, settings: FleetSettings,
) -> Window | None:  # fmt: skip
    """The window without the terminals that outages of other scopes explain: those failing
    in the window's time inside an outage whose failures reach beyond the window's scope
    while its scope fails about as much as the window's (not less than
    outage_widen_min_share of it), or lie inside the window's scope while that fails clearly
    less (one it cannot be widened into, _widens). None when what is left opens nothing (too
    few, not significant, not spread).

    The most significant explanation first, then the rest tested again: during an
    acquirer's host outage, its cellular terminals and a carrier's late uploads together
    looked like `link=cellular` spread over three carriers, and widened the carrier's outage
    into it. A scope that fails clearly more keeps its terminals: a carrier's late link
    outage (all ten of its terminals failing) lost the three of them that an acquirer's host
    outage at the same time (a third of that acquirer failing) also held, and opened only as
    fragments."""
    covered: set[str] = set()
    for row in rows:
        if row["scope_key"] == w.scope_key or not _overlaps(row, w) or not any(row["scope_key"] in scopes.get(t, ()) for t in w.failing):
            continue  # nothing of the window in it: its span is not read
        failing = _span_failing(conn, row["scope_key"], row["started_at"], row["last_hit_at"])
        _known(conn, scopes, failing, settings)
        now = test_window(conn, row["scope_key"], w.start, w.end, settings, 1)
        if failing and _share_in(failing, w.scope_key, scopes) >= settings.outage_explain_fraction:
            if now is None or _widens(w, now, settings):
                continue  # inside the window's scope, which fails about as much: the window may widen it
        elif now is None or not _widens(now, w, settings):
            continue  # reaching beyond, but the window's scope fails clearly more: its terminals are its own
        covered |= w.failing & _span_failing(conn, row["scope_key"], max(row["started_at"], w.start), min(row["last_hit_at"], w.end))
    if not covered:
        return w
    rest = w.failing - covered
    left = dataclasses.replace(w, failing=rest, p_value=poisson_sf(len(rest), w.expected))
    if len(rest) < settings.outage_min_terminals or not opens(left, settings) or not trust.spread(left.scope_key, rest):
        return None
    return left


def _explained_away(conn: sa.Connection, w: Window, rows: list[Any], settings: FleetSettings) -> Window | None:
    """The window without the terminals that outages failing at the same time already
    cover, if it still opens one: no outage opens from failing terminals another explains
    as well (an outage whose scope fails clearly less than the window's, _widens, explains
    none of them)."""
    covered: set[str] = set()
    for row in rows:
        if _overlaps(row, w):
            now = test_window(conn, row["scope_key"], w.start, w.end, settings, 1)
            if now is None or not _widens(now, w, settings):
                continue
            covered |= _span_failing(conn, row["scope_key"], row["started_at"], max(row["last_hit_at"], w.end)) & w.failing
    if not covered:
        return w
    rest = w.failing - covered
    left = dataclasses.replace(w, failing=rest, p_value=poisson_sf(len(rest), w.expected))
    return left if len(rest) >= settings.outage_min_terminals and opens(left, settings) else None


def _related(
    conn: sa.Connection, w: Window, rows: list[Any], scopes: dict[str, set[str]], trust: breadth.Trust, settings: FleetSettings,
) -> Any | None:  # fmt: skip
    """The outage (open, or closed near t) that the window's failures belong to, re-scoped in
    place to the window's scope when that scope explains both better: wider when the window's
    failures reach beyond the outage's scope and a larger share of the window's scope fails,
    narrower when each holds the other's and the window's scope fits better
    (_preferred). None when the window meets no outage, or is a burst inside its scope that
    began after the outage's last failure.

    Closed ones count too (decision): late uploads of a link outage arrive after the fleet's
    newest event time has closed whatever the first few opened; the rest of them must still
    re-scope it, or the outage stays cut by whichever scope its first five happened to share."""
    frac = settings.outage_explain_fraction
    best: tuple[float, Any, Window] | None = None
    for row in rows:
        failing = _span_failing(conn, row["scope_key"], row["started_at"], row["last_hit_at"])
        _known(conn, scopes, failing, settings)
        theirs = Window(row["scope_key"], row["started_at"], row["last_hit_at"], failing, row["started_at"], row["terminals_in_scope"], row["expected"], row["p_value"])
        overlap = _share_in(w.failing, row["scope_key"], scopes) + (_share_in(failing, w.scope_key, scopes) if failing else 0.0)
        if (overlap >= frac) and (best is None or overlap > best[0]):
            best = (overlap, row, theirs)
    if best is None:
        return None
    _, row, theirs = best
    inside = _share_in(w.failing, row["scope_key"], scopes) >= frac
    holds_theirs = bool(theirs.failing) and _share_in(theirs.failing, w.scope_key, scopes) >= frac
    if not (inside or holds_theirs):
        return None
    if holds_theirs:
        now = test_window(conn, row["scope_key"], w.start, w.end, settings, 1)  # the outage's scope over the same minutes
        if inside:  # each holds the other's: the better fit
            better = now is None or _preferred(w, now, scopes)
        else:  # the window reaches beyond: wider, if the wider scope fails about as much
            better = now is None or _widens(w, now, settings)
        if better:
            taken = conn.execute(sa.select(incidents_t).where(incidents_t.c.open_key == f"outage:{w.scope_key}")).mappings().first()
            if taken is not None:
                return taken  # the window's scope is open already (an outage begun later than t): the window joins it
            _rescope(conn, row, w, settings)
            row = conn.execute(sa.select(incidents_t).where(incidents_t.c.id == row["id"])).mappings().one()
        return row
    if row["last_hit_at"] < w.start:
        return None  # a new burst inside its scope after its last failure: an outage of its own
    return row


def _widens(wide: Window, narrow: Window, settings: FleetSettings) -> bool:
    """The wider scope fails about as large a share as the narrower one (_precision)."""
    return _precision(wide) >= settings.outage_widen_min_share * _precision(narrow)


def _precision(w: Window) -> float:
    """The share of the scope's active terminals failing in the window.

    Decision: a wider scope takes an outage over only when about as large a share of it fails
    (outage_widen_min_share of the outage's scope's share, 0.8). A carrier's outage first
    opened as an acquirer (its first late uploads, a fifth of the acquirer) widens to the
    carrier, all of whose terminals fail; a host degradation that opened as one of its
    acquirer's two regions widens to the acquirer, which fails about as much (a strictly
    larger share left it split in two); an acquirer's certificate expiry (all of it failing)
    beside a carrier's outage, or beside a few ordinary failures, on cellular stays the
    acquirer's: `link=cellular` fails a third as much or less."""
    return len(w.failing) / max(w.active, len(w.failing), 1)


def _rescope(conn: sa.Connection, row: Any, w: Window, settings: FleetSettings) -> None:
    """Re-scope in place: the new scope's figures, and no hold its scope does not cover."""
    values = {
        "scope_key": w.scope_key, "scope": json.dumps(inventory.parse_scope_key(w.scope_key), sort_keys=True),
        "terminals_in_scope": w.active, "expected": w.expected_per_window(settings), "p_value": w.p_value,
    }  # fmt: skip
    if row["status"] == "open":
        values["open_key"] = f"outage:{w.scope_key}"
    conn.execute(incidents_t.update().where(incidents_t.c.id == row["id"]).values(**values))
    incidents.release_outside(conn, row["id"], w.scope_key, row["started_at"], row["last_hit_at"])


def _values(w: Window, now: str, settings: FleetSettings) -> dict[str, Any]:
    expected = w.expected_per_window(settings)
    return {
        "scope": json.dumps(inventory.parse_scope_key(w.scope_key), sort_keys=True), "categories": "[]", "codes": "[]",
        "started_at": w.first_at, "detected_at": now, "last_hit_at": w.end, "terminals_affected": len(w.failing),
        "terminals_in_scope": w.active, "bundles": 0, "expected": expected, "p_value": w.p_value,
        "summary": json.dumps(summary(w.scope_key, len(w.failing), w.active, expected, settings), ensure_ascii=False),
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
        values.update(p_value=w.p_value, expected=w.expected_per_window(settings))
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
