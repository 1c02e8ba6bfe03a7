"""Geometry of the fleet pages' small charts (the templates draw the SVG, escaping labels)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from remote.server.fleet import timing


@dataclass(frozen=True)
class Line:
    title: str
    points: str  # SVG polyline points
    low: str
    high: str
    first: str
    last: str
    width: int
    height: int
    count: int


def sparkline(daily: list[dict[str, Any]], last_day: date, days: int = 14, width: int = 120, height: int = 24) -> str:
    """Polyline points of the last `days` daily counts (missing days are 0)."""
    counts = {d["key"]: d["count"] for d in daily}
    series = [counts.get((last_day - timedelta(days=days - 1 - i)).isoformat(), 0) for i in range(days)]
    peak = max(series) or 1
    step = width / max(days - 1, 1)
    return " ".join(f"{i * step:.1f},{height - 2 - (height - 4) * v / peak:.1f}" for i, v in enumerate(series))


def health_line(rows: list[dict[str, Any]], metric: str, title: str, width: int = 340, height: int = 90) -> Line | None:
    """One health metric over time, or None when the terminal never reported it."""
    points = [(timing.as_datetime(r["sent_at"]).timestamp(), float(r[metric])) for r in rows if r.get(metric) is not None]
    if not points:
        return None
    t0, t1 = points[0][0], points[-1][0]
    lo, hi = min(v for _, v in points), max(v for _, v in points)
    span_t, span_v = (t1 - t0) or 1.0, (hi - lo) or 1.0
    xy = " ".join(f"{4 + (width - 8) * (t - t0) / span_t:.1f},{height - 14 - (height - 24) * (v - lo) / span_v:.1f}" for t, v in points)
    return Line(title, xy, f"{lo:g}", f"{hi:g}", rows[0]["sent_at"][:16].replace("T", " "), rows[-1]["sent_at"][:16].replace("T", " "), width, height, len(points))
