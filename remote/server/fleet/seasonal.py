"""A scope's expected failure rate for one hour of the day: seasonal, shrunk (issue 20).

Shops are closed at night and busy in the morning; a whole-day rate is several times too low
for business hours (false outages) and too high at night (a night outage among the few awake
terminals goes unseen). The baseline's hours fall into classes j = (UTC hour of day, weekday
or weekend): 48 classes. Class j has c_j failing terminal-hours over exposure e_j = N · H_j
terminal-hours (H_j hours of that class in the baseline, N the scope's active terminals).

Each class's own rate c_j / e_j rests on 5 weekday or 2 weekend hours of a week: too few. It is
shrunk toward the scope's overall rate r = Σc / Σe by empirical Bayes (Marshall 1991, the
Gamma-Poisson global estimator): the class rates are taken to vary around r with variance

    τ² = max(0, s² − r / ē),   s² = Σ e_j (c_j/e_j − r)² / Σ e_j,   ē = Σ e_j / J

(the observed spread less what Poisson noise alone gives), and class j's rate is the
posterior mean under a Gamma(mean r, variance τ²) prior:

    λ_j = (c_j + b · r) / (e_j + b),   b = r / τ²   (b = ∞, λ_j = r, when τ² = 0).

A class seen often, in a scope whose hours really differ, keeps its own rate; a thin or
homogeneous history falls back to the scope's overall rate.
"""

from __future__ import annotations

from datetime import datetime


def hour_class(hour_key: str) -> tuple[int, bool]:
    """(hour of day, weekend) of a "YYYY-MM-DDTHH" key."""
    moment = datetime.strptime(hour_key, "%Y-%m-%dT%H")
    return moment.hour, moment.weekday() >= 5


def shrunk_rate(counts: dict[str, int], hours: list[str], target: str, active: int) -> float | None:
    """Failures per terminal-hour expected in the target hour's class, from the failing
    terminal-hours `counts` over the baseline `hours` (keys); None without history."""
    if not hours:
        return None
    n = max(active, 1)
    c: dict[tuple[int, bool], int] = {}
    h: dict[tuple[int, bool], int] = {}
    for key in hours:
        j = hour_class(key)
        h[j] = h.get(j, 0) + 1
        c[j] = c.get(j, 0) + counts.get(key, 0)
    exposure = {j: n * hours_j for j, hours_j in h.items()}
    total_e = sum(exposure.values())
    r = sum(c.values()) / total_e
    target_j = hour_class(target)
    if r <= 0 or target_j not in exposure:
        return r
    s2 = sum(e * (c[j] / e - r) ** 2 for j, e in exposure.items()) / total_e
    tau2 = s2 - r / (total_e / len(exposure))
    if tau2 <= 0:
        return r
    b = r / tau2
    return (c[target_j] + b * r) / (exposure[target_j] + b)
