"""Upper tails of the Poisson and binomial distributions, in log space (no SciPy)."""

from __future__ import annotations

import math


def poisson_sf(k: int, mu: float) -> float:
    """P(X >= k) for X ~ Poisson(mu)."""
    if k <= 0:
        return 1.0
    if mu <= 0:
        return 0.0
    # Below the mean the complement is short and exact enough; above it, sum the tail.
    if k <= mu:
        return max(0.0, 1.0 - sum(_poisson_pmf(i, mu) for i in range(k)))
    total, i = 0.0, k
    while True:
        term = _poisson_pmf(i, mu)
        total += term
        if term < total * 1e-15 or i > k + 10000:
            return min(1.0, total)
        i += 1


def _poisson_pmf(i: int, mu: float) -> float:
    return math.exp(i * math.log(mu) - mu - math.lgamma(i + 1))


def binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0:
        return 1.0
    if k > n or p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    log_p, log_q = math.log(p), math.log1p(-p)
    head = math.lgamma(n + 1)
    return min(1.0, sum(math.exp(head - math.lgamma(i + 1) - math.lgamma(n - i + 1) + i * log_p + (n - i) * log_q) for i in range(k, n + 1)))


def hypergeom_sf(k: int, total: int, marked: int, drawn: int) -> float:
    """P(X >= k) for X ~ Hypergeometric: `drawn` items taken from `total`, of which `marked`
    are marked (Fisher's exact test of two proportions, one-sided)."""
    low, high = max(k, 0, drawn - (total - marked)), min(marked, drawn)
    if low > high:
        return 0.0
    head = math.lgamma(marked + 1) + math.lgamma(total - marked + 1) + math.lgamma(drawn + 1) + math.lgamma(total - drawn + 1) - math.lgamma(total + 1)
    out = 0.0
    for i in range(low, high + 1):
        term = math.exp(head - math.lgamma(i + 1) - math.lgamma(marked - i + 1) - math.lgamma(drawn - i + 1) - math.lgamma(total - marked - drawn + i + 1))
        out += term
        if term < out * 1e-15 and i > low + 1:  # terms only shrink past the mode
            break
    return min(1.0, out)
