"""The figures every benchmark prints: median, p99 and the ratio to a baseline of the same run.

One definition of the percentile and one line format, so that figures from different
benchmarks (and the docs quoting them) mean the same thing. Samples are in seconds; the
unit is only a choice of display.

Imported by the scripts beside it as ``from scripts.bench.stats import ...`` (each script
puts the repository root on ``sys.path`` first).
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterable, Sequence

# display unit -> (factor from seconds, decimals shown)
UNITS: dict[str, tuple[float, int]] = {"s": (1.0, 3), "ms": (1e3, 3), "us": (1e6, 1)}


def percentile(values: Iterable[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values``, in any order: the nearest sample, never interpolated.

    Nearest-rank keeps p99 an observed latency; with fewer than 100 samples it is the slowest
    one or close to it, which is the honest reading of a small run.
    """
    ordered = sorted(values)
    if not ordered:
        raise ValueError("percentile of no samples")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"quantile {q} is not between 0 and 1")
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(samples: Sequence[float]) -> tuple[float, float]:
    """``(median, p99)`` of ``samples``, in their own unit."""
    return statistics.median(samples), percentile(samples, 0.99)


def report(label: str, samples: Sequence[float], baseline: float | None = None, *, base_name: str = "baseline",
           unit: str = "ms", width: int = 40, extra: str = "") -> float:
    """Print one line ``label  n=  median=  p99=  median/<base_name>=`` and return the median (seconds).

    ``samples`` and ``baseline`` (the baseline's median, usually the return value of an
    earlier ``report``) are in seconds; the ratio is left out when there is no baseline.
    ``extra`` is appended as is (a throughput, a named figure).
    """
    factor, decimals = UNITS[unit]
    median, p99 = summary(samples)
    ratio = f"  median/{base_name}={median / baseline:7.2f}x" if baseline else ""
    print(f"{label:<{width}} n={len(samples):<5} median={median * factor:9.{decimals}f} {unit}  "
          f"p99={p99 * factor:9.{decimals}f} {unit}{ratio}{extra}", flush=True)
    return median


def generation_table(legs: Sequence[tuple[str, Sequence[float], Sequence[float]]]) -> None:
    """Print time to first token and tokens/s per leg of a generation benchmark; the first leg is the baseline.

    Each leg is ``(name, TTFT samples in seconds, tokens/s samples)``. TTFT gets median, p99
    and the ratio to the baseline's median; tokens/s gets median, its slow tail (the
    slowest sample: the p99 of a rate) and the overhead, baseline tok/s over the leg's
    (>1 = slower than the baseline), the figure the inference goals are stated in.
    """
    base_name, base_ttft, base_tps = legs[0][0], statistics.median(legs[0][1]), statistics.median(legs[0][2])
    width = max(3, *(len(name) for name, _, _ in legs))
    print(f"{'leg':<{width}} {'n':>3}  {'TTFT median':>11} {'p99':>8} {'ratio':>6}   "
          f"{'tok/s median':>12} {'p99':>7} {'overhead':>8}")
    for name, ttft, tps in legs:
        ttft_median, ttft_p99 = summary(ttft)
        tps_median = statistics.median(tps)
        print(f"{name:<{width}} {len(ttft):>3}  {ttft_median * 1e3:9.1f}ms {ttft_p99 * 1e3:6.1f}ms "
              f"{ttft_median / base_ttft:6.3f}   {tps_median:12.1f} {min(tps):7.1f} {base_tps / tps_median:8.3f}")
    print(f"baseline: {base_name}; ratio = TTFT / baseline TTFT; overhead = baseline tok/s / tok/s "
          "(p99 of tok/s is the slowest 1%)")


def load_average() -> str:
    """The 1, 5 and 15 minute load averages: what the machine's other work was."""
    return " ".join(f"{x:.1f}" for x in os.getloadavg())
