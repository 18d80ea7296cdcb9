"""Time against depth (issues 15 and 29), one table per kind of stack, medians of one run:

- tanh layers of width 3, 1 to 200 layers: ``derive`` (the symbolic derivation), ``verify`` (at witness sizes),
  ``render("numpy")`` and ``render("markdown")``;
- the other kinds, 25 to 200 layers: batch norm (dense tanh layers of width 3, each followed by batch norm), layer
  norm (the same with layer norm) and attention (two causal heads, a skip connection around them, layer norm, in
  turn, on a width of 4): ``derive`` and ``verify``, against issue 29's targets for 200 layers (derive under 10 s,
  verify under 30 s).

A depth is the number of ``[[layers]]`` entries, the output layer included (a spec has at most 200). Each table
ends with the growth of the time per doubling of the depth (1.0 would be constant time, 2.0 linear, 4.0
quadratic). Every repeat runs each depth once, each stage from a fresh derivation with SymPy's cache emptied
first (as in a new process), so load on the machine hits the depths alike. Run with
``python -m benchmarks.depth``; ``BENCH_REPEATS`` sets the number of repeats (at most 3).
"""

from __future__ import annotations

import itertools
import math
import os
import statistics
import time

from sympy.core.cache import clear_cache

from symbackprop import derive

DEPTHS = (1, 10, 25, 50, 100, 200)
KIND_DEPTHS = (25, 50, 100, 200)
WIDTH = 3
ATTENTION_WIDTH = 4
STAGES = ("derive", "verify", "render numpy", "render markdown")
# Issue 29: 200 layers of any kind derive in under 10 s and verify in under 30 s.
TARGETS = {"derive": 10.0, "verify": 30.0}


def tanh_spec(depth: int, width: int = WIDTH) -> dict:
    """``depth`` layers: tanh hidden layers of ``width`` units, one linear output, half SSE."""
    hidden = [{"size": width, "activation": "tanh"}] * (depth - 1)
    return {"input": {"size": width}, "layers": [*hidden, {"size": 1, "activation": "identity"}],
            "loss": {"kind": "half_sse"}}


def normalization_spec(depth: int, kind: str, width: int = WIDTH) -> dict:
    """``depth`` layers: dense tanh layers of ``width`` units each followed by a ``kind`` layer (batchnorm or
    layernorm), one linear output, half SSE."""
    hidden = [{"size": width, "activation": "tanh"} if l % 2 == 0 else {"kind": kind} for l in range(depth - 1)]
    return {"input": {"size": width}, "layers": [*hidden, {"size": 1, "activation": "identity"}],
            "loss": {"kind": "half_sse"}}


def attention_spec(depth: int, width: int = ATTENTION_WIDTH) -> dict:
    """``depth`` layers: blocks of causal two-head attention, a skip connection from the block's input and layer
    norm, one linear output, half SSE; the rows are the positions of one sequence."""
    hidden, block_input = [], "X"
    while len(hidden) < depth - 1:
        hidden += [{"kind": "attention", "heads": 2, "causal": True}, {"kind": "add", "from": block_input},
                   {"kind": "layernorm"}]
        block_input = f"a{len(hidden)}"
    hidden = hidden[:depth - 1]
    return {"input": {"size": width}, "layers": [*hidden, {"size": 1, "activation": "identity"}],
            "loss": {"kind": "half_sse"}}


PAIR = ("derive", "verify")
# kind -> (its spec at a depth, the depths, the stages timed)
STACKS = {"tanh": (tanh_spec, DEPTHS, STAGES),
          "batch norm": (lambda depth: normalization_spec(depth, "batchnorm"), KIND_DEPTHS, PAIR),
          "layer norm": (lambda depth: normalization_spec(depth, "layernorm"), KIND_DEPTHS, PAIR),
          "attention": (attention_spec, KIND_DEPTHS, PAIR)}


def stage_seconds(spec: dict, stages=STAGES) -> dict:
    """Seconds of each of ``stages`` for one network, from scratch."""
    clear_cache()
    times = {}
    start = time.perf_counter()
    derivation = derive(spec)
    times["derive"] = time.perf_counter() - start
    start = time.perf_counter()
    report = derivation.verify()
    times["verify"] = time.perf_counter() - start
    assert report.ok, report.table()
    for stage, fmt in (("render numpy", "numpy"), ("render markdown", "markdown")):
        if stage in stages:
            start = time.perf_counter()
            derivation.render(fmt, report=report)
            times[stage] = time.perf_counter() - start
    return times


def growth_per_doubling(seconds: dict, low: int, high: int) -> float:
    """The factor by which the time grows each time the depth doubles, between depths ``low`` and ``high``."""
    return (seconds[high] / seconds[low]) ** (math.log(2) / math.log(high / low))


def table(title: str, medians: dict, depths, stages) -> None:
    """Print the medians of ``stages`` against ``depths``, then their growth per doubling of the depth."""
    print(title)
    print("  depth " + "".join(f"{stage:>17}" for stage in stages))
    for depth in depths:
        print(f"  {depth:5d} " + "".join(f"{medians[stage][depth]:17.3f}" for stage in stages))
    print("  growth per doubling of the depth (2.0 is linear), between two depths:")
    for low, high in [*itertools.pairwise(depths), (depths[0], depths[-1])]:
        print(f"  {low:>4} -> {high:<4}" + "".join(f"{growth_per_doubling(medians[stage], low, high):17.2f}"
                                               for stage in stages))


def main(repeats: int | None = None) -> dict:
    repeats = repeats or int(os.environ.get("BENCH_REPEATS", "5"))
    repeats = max(1, min(repeats, 3))  # the 200-layer verifications alone take seconds
    stage_seconds(tanh_spec(DEPTHS[0]))  # warm-up: imports, caches of the rule checks
    runs = {(kind, depth): [] for kind, (_, depths, _) in STACKS.items() for depth in depths}
    for _ in range(repeats):
        for kind, (spec, depths, stages) in STACKS.items():
            for depth in depths:
                runs[kind, depth].append(stage_seconds(spec(depth), stages))
    medians = {kind: {stage: {depth: statistics.median(run[stage] for run in runs[kind, depth]) for depth in depths}
                      for stage in stages}
               for kind, (_, depths, stages) in STACKS.items()}
    # (from 1 layer the times are too short to compare)
    table(f"Time (s, median of {repeats}) against depth: tanh layers of width {WIDTH}, half SSE, one run",
          medians["tanh"], DEPTHS[1:], STAGES)
    print("  200 layers, total of the four stages: "
          f"{sum(medians['tanh'][stage][DEPTHS[-1]] for stage in STAGES):.2f} s", flush=True)
    for kind, (_, depths, stages) in STACKS.items():
        if kind != "tanh":
            table(f"Time (s, median of {repeats}) against depth: {kind} stack (benchmarks/depth.py), one run",
                  medians[kind], depths, stages)
    print(f"  {KIND_DEPTHS[-1]} layers against issue 29's targets:")
    for kind in STACKS:
        print(f"  {kind:>12}: " + ", ".join(f"{stage} {medians[kind][stage][KIND_DEPTHS[-1]]:.2f} s (target: < "
                                            f"{target:g} s)" for stage, target in TARGETS.items()), flush=True)
    return medians


if __name__ == "__main__":
    main()
