"""Time against depth (issue 15): ``derive`` (the symbolic derivation), ``verify`` (at witness sizes),
``render("numpy")`` and ``render("markdown")`` of tanh networks of width 3, from 1 to 200 layers, with the
growth per doubling of the depth (1.0 would be constant time, 2.0 linear, 4.0 quadratic).

Every repeat runs each depth once, all four stages from a fresh derivation, so load on the machine hits the
depths alike. Run with ``python -m benchmarks.depth``; ``BENCH_REPEATS`` sets the number of repeats.
"""

from __future__ import annotations

import itertools
import math
import os
import statistics
import time

from symbackprop import derive

DEPTHS = (1, 10, 25, 50, 100, 200)
WIDTH = 3
STAGES = ("derive", "verify", "render numpy", "render markdown")


def tanh_spec(depth: int, width: int = WIDTH) -> dict:
    """``depth`` layers: tanh hidden layers of ``width`` units, one linear output, half SSE."""
    hidden = [{"size": width, "activation": "tanh"}] * (depth - 1)
    return {"input": {"size": width}, "layers": [*hidden, {"size": 1, "activation": "identity"}],
            "loss": {"kind": "half_sse"}}


def stage_seconds(depth: int) -> dict:
    """Seconds of each stage for one network of ``depth`` layers, from scratch."""
    spec = tanh_spec(depth)
    times = {}
    start = time.perf_counter()
    derivation = derive(spec)
    times["derive"] = time.perf_counter() - start
    start = time.perf_counter()
    report = derivation.verify()
    times["verify"] = time.perf_counter() - start
    assert report.ok, report.table()
    for stage, fmt in (("render numpy", "numpy"), ("render markdown", "markdown")):
        start = time.perf_counter()
        derivation.render(fmt, report=report)
        times[stage] = time.perf_counter() - start
    return times


def growth_per_doubling(seconds: dict, low: int, high: int) -> float:
    """The factor by which the time grows each time the depth doubles, between depths ``low`` and ``high``."""
    return (seconds[high] / seconds[low]) ** (math.log(2) / math.log(high / low))


def main(repeats: int | None = None) -> dict:
    repeats = repeats or int(os.environ.get("BENCH_REPEATS", "5"))
    repeats = max(1, min(repeats, 3))  # the 200-layer verification alone takes seconds
    stage_seconds(DEPTHS[0])  # warm-up: imports, caches of the rule checks
    runs = {depth: [] for depth in DEPTHS}
    for _ in range(repeats):
        for depth in DEPTHS:
            runs[depth].append(stage_seconds(depth))
    medians = {stage: {depth: statistics.median(run[stage] for run in runs[depth]) for depth in DEPTHS}
               for stage in STAGES}
    print(f"Time (s, median of {repeats}) against depth: tanh layers of width {WIDTH}, half SSE, one run")
    print("  depth " + "".join(f"{stage:>17}" for stage in STAGES))
    for depth in DEPTHS:
        print(f"  {depth:5d} " + "".join(f"{medians[stage][depth]:17.3f}" for stage in STAGES))
    print("  growth per doubling of the depth (2.0 is linear), between two depths (from 1 layer the times are"
          " too short to compare):")
    for low, high in [*itertools.pairwise(DEPTHS[1:]), (DEPTHS[1], DEPTHS[-1])]:
        print(f"  {low:>4} -> {high:<4}" + "".join(f"{growth_per_doubling(medians[stage], low, high):17.2f}"
                                               for stage in STAGES))
    print("  200 layers, total of the four stages: "
          f"{sum(medians[stage][DEPTHS[-1]] for stage in STAGES):.2f} s", flush=True)
    return medians


if __name__ == "__main__":
    main()
