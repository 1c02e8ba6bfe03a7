"""Who may open an outage and when it may hold dispatch (issue 21: a few hostile or stolen
terminals must not hold a whole acquirer's technicians).

- Terminals first seen less than `outage_new_terminal_hours` before a window, and the
  failing terminals of an outage a person dismissed (for `outage_baseline_days`), are not
  counted toward opening one. The fleet's founding terminals (first seen within that many
  hours of the fleet's first sighting) are not new: a fleet's first day may have outages too.
- An outage's failing terminals must be spread: over at least `outage_min_spread` values
  of one of `outage_spread_labels` (merchant, site) when they carry such labels.
- A wide scope (`outage_wide_scopes`: a link type, a carrier) opens only when its failures
  are not concentrated in one value of a narrower label (`outage_child_labels`: no value
  holds `outage_explain_fraction` of them, and `outage_wide_min_outside` lie outside it): a
  host outage at acquirer B is not `link=cellular`, a carrier outage in one region is not
  the whole carrier.
- A hold applies only while the failing share of the scope's active terminals is at least
  `outage_hold_min_share` (so the count needed grows with the scope), and past
  `outage_hold_max_bundles` held bundles only once a person acknowledged the outage.
"""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

import sqlalchemy as sa

from remote.server.fleet import inventory, timing
from remote.server.fleet.schema import dismissed_terminals, fleet_terminals, incidents, terminal_days, terminal_labels
from remote.server_settings import FleetSettings


def fill_first_seen(conn: sa.Connection) -> None:
    """A database made before first_seen_at: each terminal's first active day."""
    first = sa.select(sa.func.min(terminal_days.c.day)).where(terminal_days.c.terminal_id == fleet_terminals.c.id).scalar_subquery()
    conn.execute(fleet_terminals.update().values(first_seen_at=first + "T00:00:00.000000Z"))


fleet_terminals.c.first_seen_at.info["fill"] = fill_first_seen


def fleet_origin(conn: sa.Connection) -> str | None:
    """The fleet's oldest event time (its first sighting of any terminal), by index.

    Decision: an event time, not the UTC day it falls on. Counted from the first day's
    midnight, a fleet first seen at 23:58 UTC had two minutes of founding terminals (every
    shop opening the next morning was new for a day, and no outage opened) and 24 empty hours
    of baseline history (its young fleet looked old)."""
    return conn.execute(sa.select(sa.func.min(fleet_terminals.c.first_seen_at))).scalar()


class Trust:
    """The terminals of one detector pass that may open an outage, and their labels; each
    terminal read once."""

    def __init__(self, conn: sa.Connection, t: str, settings: FleetSettings) -> None:
        self.conn, self.t, self.settings = conn, t, settings
        self._eligible: dict[str, bool] = {}
        self._labels: dict[str, dict[str, str]] = {}
        self._dismissed: set[str] | None = None

    def eligible(self, failing: set[str], window_start: str) -> set[str]:
        unknown = failing - set(self._eligible)
        if unknown:
            hours = self.settings.outage_new_terminal_hours
            settled = timing.shift(window_start, hours=-hours)
            founding = timing.shift(fleet_origin(self.conn) or window_start, hours=hours)
            f = fleet_terminals.c
            old = {r[0] for r in self.conn.execute(sa.select(f.id).where(f.id.in_(unknown), sa.or_(f.first_seen_at <= settled, f.first_seen_at < founding)))}
            for tid in unknown:
                self._eligible[tid] = tid in old and tid not in self.dismissed()
        return {tid for tid in failing if self._eligible[tid]}

    def dismissed(self) -> set[str]:
        """Failing terminals of outages dismissed within the baseline days before t."""
        if self._dismissed is None:
            since = timing.shift(self.t, days=-self.settings.outage_baseline_days)
            d, i = dismissed_terminals.c, incidents.c
            self._dismissed = {
                r[0] for r in self.conn.execute(
                    sa.select(d.terminal_id).select_from(dismissed_terminals.join(incidents, i.id == d.incident_id))
                    .where(i.status == "dismissed", i.last_hit_at >= since)
                )
            }  # fmt: skip
        return self._dismissed

    def labels(self, terminal_ids: set[str]) -> dict[str, dict[str, str]]:
        unknown = terminal_ids - set(self._labels)
        if unknown:
            for tid in unknown:
                self._labels[tid] = {}
            for r in self.conn.execute(sa.select(terminal_labels).where(terminal_labels.c.terminal_id.in_(unknown))):
                self._labels[r.terminal_id][r.key] = r.value
        return {tid: self._labels[tid] for tid in terminal_ids}

    def spread(self, scope_key: str, failing: set[str]) -> bool:
        """Breadth and, for a wide scope, failures not concentrated in one child."""
        labels = self.labels(failing)
        return spread_enough(labels, self.settings) and (not is_wide(scope_key, self.settings) or not concentrated(scope_key, labels, self.settings))


def spread_enough(labels: dict[str, dict[str, str]], settings: FleetSettings) -> bool:
    """Over at least outage_min_spread values of a spread label the failing terminals carry
    (those without it count as one value); true when none carries any."""
    carried = [key for key in settings.outage_spread_labels if any(key in lab for lab in labels.values())]
    return not carried or any(len({lab.get(key) for lab in labels.values()}) >= settings.outage_min_spread for key in carried)


def is_wide(scope_key: str, settings: FleetSettings) -> bool:
    return sorted(inventory.parse_scope_key(scope_key)) in [sorted(keys) for keys in settings.outage_wide_scopes]


def concentrated(scope_key: str, labels: dict[str, dict[str, str]], settings: FleetSettings) -> bool:
    """outage_explain_fraction of the failing terminals share one value of a child label, or
    fewer than outage_wide_min_outside of them lie outside that value.

    The second rule is for small counts: five failures, three in carrier X and two elsewhere,
    are not "spread over the carriers" (60 % is under the fraction), they are a carrier's
    first late uploads beside two ordinary failures, and opened as `link=cellular` they went
    on to swallow the carrier's outage and an acquirer's beside it."""
    own = inventory.parse_scope_key(scope_key)
    for key in settings.outage_child_labels:
        if key in own:
            continue
        values = Counter(lab[key] for lab in labels.values() if key in lab)
        if not values:
            continue
        top = values.most_common(1)[0][1]
        if top >= settings.outage_explain_fraction * len(labels) or len(labels) - top < settings.outage_wide_min_outside:
            return True
    return False


def hold_floor(active: int, settings: FleetSettings) -> int:
    """Failing terminals a hold needs in a scope of `active` terminals."""
    return max(settings.outage_min_terminals, math.ceil(settings.outage_hold_min_share * active))


def hold_room(row: Any, settings: FleetSettings) -> int | None:
    """How many more bundles the incident may hold: None for any number (acknowledged)."""
    if row["acknowledged_at"]:
        return None
    return max(settings.outage_hold_max_bundles - row["bundles"], 0)
