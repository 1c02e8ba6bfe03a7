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
