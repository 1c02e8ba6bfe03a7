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


@dataclass(frozen=True)
class Band:
    """Counts per time slot as bars, against what was expected as a shaded band (low to
    high) or a line (low == high). Labels are UTC times; the template writes the SVG."""

    width: int
    height: int
    bars: list[tuple[float, float, float, float, str, int]]  # x, y, width, height, slot start, count
    band: str  # SVG polygon points of the expected band ("" without one)
    ticks: list[tuple[float, int]]  # y, count
    labels: list[tuple[float, str]]  # x, time under the axis
    base: float
    above: int  # slots above the band's top


def band_chart(slots: list[tuple[str, int, float, float]], width: int = 720, height: int = 180) -> Band:
    """slots: (start stamp, count, expected low, expected high), oldest first."""
    left, bottom, top = 36, 24, 8
    plot_h = height - bottom - top
    peak = max([s[1] for s in slots] + [s[3] for s in slots] + [1])
    step = (width - left) / max(len(slots), 1)
    y_of = lambda v: round(height - bottom - plot_h * v / peak, 1)  # noqa: E731
    bars = [(round(left + i * step + 1, 1), y_of(n), round(max(step - 2, 1), 1), round(plot_h * n / peak, 1), start, n) for i, (start, n, _, _) in enumerate(slots)]
    upper = [f"{left + (i + 0.5) * step:.1f},{y_of(hi)}" for i, (_, _, _, hi) in enumerate(slots)]
    lower = [f"{left + (i + 0.5) * step:.1f},{y_of(lo)}" for i, (_, _, lo, _) in reversed(list(enumerate(slots)))]
    every = max(1, len(slots) // 8)
    labels = [(round(left + (i + 0.5) * step, 1), start[5:10] if start[11:16] == "00:00" else start[11:16]) for i, (start, *_) in enumerate(slots) if i % every == 0]
    ticks = [(y_of(v), v) for v in sorted({0, int(peak) // 2, int(peak)})]
    above = sum(1 for _, n, _, hi in slots if n > hi)
    return Band(width, height, bars, " ".join(upper + lower) if slots else "", ticks, labels, height - bottom, above)
