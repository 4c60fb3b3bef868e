"""Latency summaries shared by the benchmarks that time requests (nearest-rank percentiles, in ms)."""

from __future__ import annotations

import statistics


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


def summary(values: list[float], digits: int = 2) -> dict[str, float]:
    """n, p50, p95, mean and max of durations given in seconds, reported in milliseconds."""
    if not values:
        return {"n": 0}
    ms = [v * 1000 for v in values]
    return {"n": len(ms), "p50_ms": round(percentile(ms, 0.50), digits),
            "p95_ms": round(percentile(ms, 0.95), digits), "mean_ms": round(statistics.fmean(ms), digits),
            "max_ms": round(max(ms), digits)}
