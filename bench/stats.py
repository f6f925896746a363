"""Summary figures for benchmark samples: median, p90, min, max."""

from __future__ import annotations

import statistics
from collections.abc import Sequence

__all__ = ["row", "summary"]


def summary(samples: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples)
    p90 = ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
    return {"n": len(ordered), "median": statistics.median(ordered), "p90": p90,
            "min": ordered[0], "max": ordered[-1]}


def row(name: str, samples: Sequence[float], unit: str = "ms", scale: float = 1000.0) -> str:
    s = summary(samples)
    return (f"| {name} | {s['n']:.0f} | {s['median'] * scale:.2f} | {s['p90'] * scale:.2f} | "
            f"{s['min'] * scale:.2f} | {s['max'] * scale:.2f} | {unit} |")


HEADER = "| measure | n | median | p90 | min | max | unit |\n|---|---|---|---|---|---|---|"
