"""Summary figures for benchmark samples: median, percentiles, min, max; and the rows of the report table."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["HEADER", "Row", "fmt", "percentile", "row", "summary"]


def percentile(samples: Sequence[float], q: float) -> float:
    """The sample at rank ``q`` (0 to 1) of the sorted samples, the nearest one: never interpolated."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(samples: Sequence[float]) -> dict[str, float]:
    ordered = sorted(samples)
    return {"n": len(ordered), "median": statistics.median(ordered), "p90": percentile(ordered, 0.9),
            "min": ordered[0], "max": ordered[-1]}


def fmt(value: float) -> str:
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.3g}" if abs(value) < 1 else f"{value:.1f}"


@dataclass
class Row:
    """One measure: its raw samples (seconds, bytes, calls/s...) and how to show them."""

    section: str
    name: str
    samples: list[float] = field(default_factory=list)
    unit: str = "ms"
    scale: float = 1000.0  # samples * scale are shown in `unit`
    note: str = ""  # shown instead of figures when there are no samples (why it could not be measured)
    runtime: str = "runc"  # the container runtime of the sandboxes measured

    @property
    def median(self) -> float | None:
        """The median in ``unit``, or None when nothing was measured."""
        return statistics.median(self.samples) * self.scale if self.samples else None

    def markdown(self) -> str:
        head = f"| {self.section} | {self.name} | {self.runtime}"
        if not self.samples:
            return f"{head} | 0 | — | — | — | — | {self.unit} | {self.note or 'no samples'} |"
        s = summary(self.samples)
        figures = " | ".join(fmt(s[k] * self.scale) for k in ("median", "p90", "min", "max"))
        return f"{head} | {s['n']:.0f} | {figures} | {self.unit} | {self.note} |"


HEADER = ("| # | measure | runtime | n | median | p90 | min | max | unit | note |\n"
          "|---|---|---|---|---|---|---|---|---|---|")


def row(name: str, samples: Sequence[float], unit: str = "ms", scale: float = 1000.0) -> str:
    """One table row for samples in seconds (kept for small ad-hoc scripts)."""
    return Row("", name, list(samples), unit, scale).markdown()
