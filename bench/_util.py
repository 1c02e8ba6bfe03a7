"""Helpers shared by the benchmarks: the venv's own interpreter and console scripts."""

from __future__ import annotations

import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def row(label: str, *cells: object) -> None:
    print(f"  {label:<34}" + "  ".join(f"{c:>12}" for c in cells))
