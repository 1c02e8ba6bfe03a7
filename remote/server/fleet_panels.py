"""The fleet's pieces on the other pages: the open-outage banner of every page, a
terminal's health and the incidents covering it, a bundle's fleet view (hold, problem)."""

from __future__ import annotations

from typing import Any

from remote.server import db, quotas
from remote.server.fleet import charts, incidents, inventory
from remote.server.service import Service

HEALTH_CHARTS = ("battery_pct", "battery_wear_ratio", "max_temp_c", "free_mib", "signal_dbm", "emmc_life_used_pct")  # titles: config/catalogue/pages.toml health_titles


def open_outages(srv: Service) -> list[dict[str, Any]]:
    """For the banner on every page."""
    return [i for i in incidents.list_incidents(srv.engine, "open", limit=20) if i["kind"] == "outage"]


def terminal_health(srv: Service, terminal_id: str) -> dict[str, Any]:
    fleet = inventory.get_terminal(srv.engine, srv.settings.fleet, terminal_id, db.now())
    rows = inventory.health_series(srv.engine, terminal_id)
    lines = [line for metric in HEALTH_CHARTS if (line := charts.health_line(rows, metric, metric))]
    usage = quotas.usage(srv.engine, terminal_id, srv.quota_limits)
    return {"fleet": fleet, "health_charts": lines, "covering": srv.fleet.notices(terminal_id), "usage": usage}


def bundle_fleet(srv: Service, bundle_id: str) -> dict[str, Any]:
    links = incidents.bundle_links(srv.engine, bundle_id) or {}
    hold = incidents.dispatch_for(srv.engine, [bundle_id]).get(bundle_id)
    return {"problem_id": links.get("problem_id"), "fleet_dispatch": hold, "clock_clamped": links.get("clock_clamped")}
