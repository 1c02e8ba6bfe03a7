"""Incidents per day by cause category, laid out as SVG rectangles for a template to draw.

Only geometry is computed here; the template writes the SVG, so every label passes through
Jinja2's escaping like everything else on the page.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

PALETTE = (
    "#4e79a7", "#f28e2b", "#e15759", "#76b7b2", "#59a14f", "#edc948",
    "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac", "#86bcb6", "#d37295", "#8cd17d",
)  # fmt: skip
WIDTH, HEIGHT, LEFT, BOTTOM, TOP = 720, 220, 36, 28, 10


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    color: str
    title: str


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bars: list[Bar]
    labels: list[tuple[float, str]]  # x, day label under the axis
    ticks: list[tuple[float, int]]  # y, count on the axis
    legend: list[tuple[str, str]]  # color, category
    baseline: float


def build(per_day: list[dict[str, Any]], first_day: date, days: int) -> Chart:
    totals: dict[str, dict[str, int]] = {}
    categories: list[str] = []
    for row in per_day:
        category = row["category"] or "unknown"
        totals.setdefault(row["day"], {})[category] = row["count"]
        if category not in categories:
            categories.append(category)
    categories.sort()
    colors = {c: PALETTE[i % len(PALETTE)] for i, c in enumerate(categories)}
    peak = max((sum(v.values()) for v in totals.values()), default=0) or 1
    plot_h = HEIGHT - BOTTOM - TOP
    slot = (WIDTH - LEFT) / days
    bars: list[Bar] = []
    labels: list[tuple[float, str]] = []
    for i in range(days):
        day = (first_day + timedelta(days=i)).isoformat()
        x = LEFT + i * slot
        y = HEIGHT - BOTTOM
        for category in categories:
            count = totals.get(day, {}).get(category, 0)
            if count:
                h = plot_h * count / peak
                y -= h
                bars.append(Bar(round(x + 2, 1), round(y, 1), round(slot - 4, 1), round(h, 1), colors[category], f"{day} {category}: {count}"))
        if days <= 16 or i % max(1, days // 8) == 0:
            labels.append((round(x + slot / 2, 1), day[5:]))
    ticks = [(round(HEIGHT - BOTTOM - plot_h * v / peak, 1), v) for v in sorted({0, peak // 2, peak})]
    return Chart(WIDTH, HEIGHT, bars, labels, ticks, [(colors[c], c) for c in categories], HEIGHT - BOTTOM)
