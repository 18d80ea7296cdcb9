"""Verification speed: the naive SymPy baseline against ours, time against depth and width, and the CLI.

Targets (issue 4): at least 100x faster than the naive baseline on the (N, d, h1, h2, o) = (2, 3, 4, 3, 1)
sigmoid net; a 10-layer tanh net of width 4, batch 4, verified in under 10 s; ``symbackprop derive`` of the
seed network (all default formats) under 1.5 s wall and ``symbackprop --help`` under 0.3 s. Run with
``python -m benchmarks.verification``; ``BENCH_REPEATS`` sets the number of runs a median is taken over.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.naive_sympy import naive_verify_w1
from symbackprop import derive

BASELINE = (2, (3, 4, 3, 1))  # N, (d, h1, h2, o)
DEPTHS = range(1, 13)
WIDTHS = (2, 4, 8)
BATCH = 4
NAIVE_TIME_LIMIT = 600


def sigmoid_spec(sizes) -> dict:
    """Sigmoid hidden layers and a linear output with half the sum of squared errors, as the baseline has."""
    hidden = [{"size": n, "activation": "sigmoid"} for n in sizes[1:-1]]
    return {"input": {"size": sizes[0]}, "layers": [*hidden, {"size": sizes[-1], "activation": "identity"}],
            "loss": {"kind": "half_sse"}}


def tanh_spec(depth: int, width: int) -> dict:
    """``depth`` layers: tanh hidden layers of ``width`` units, a linear output of 2 (input of ``width``)."""
    hidden = [{"size": width, "activation": "tanh"}] * (depth - 1)
    return {"input": {"size": width}, "layers": [*hidden, {"size": 2, "activation": "identity"}],
            "loss": {"kind": "half_sse"}}


def verify_seconds(spec: dict, batch: int, repeats: int, with_derive: bool = False) -> float:
    """Median seconds of verify (or derive + verify) at the spec's widths and ``batch``, from scratch."""
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        derivation = derive(spec)
        if not with_derive:
            start = time.perf_counter()
        report = derivation.verify(batch=batch)
        times.append(time.perf_counter() - start)
        assert report.ok and report.sizes == "spec", report.table()
    return statistics.median(times)


def command_seconds(args: list[str], repeats: int, cwd: str) -> float:
    """Median wall seconds of ``symbackprop ARGS`` as a subprocess."""
    executable = Path(sys.executable).with_name("symbackprop")
    times = []
    for run in range(repeats):
        start = time.perf_counter()
        subprocess.run([str(executable), *[a.format(run=run) for a in args]], cwd=cwd, check=True,
                       stdout=subprocess.DEVNULL)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(repeats: int | None = None) -> dict:
    repeats = repeats or int(os.environ.get("BENCH_REPEATS", "5"))
    results = {}

    N, sizes = BASELINE
    shape = ", ".join(map(str, (N, *sizes)))
    rounds = int(os.environ.get("BENCH_NAIVE_ROUNDS", "3"))
    print(f"Naive SymPy baseline vs symbackprop, sigmoid net (N, d, h1, h2, o) = ({shape}); {rounds} rounds, "
          f"each: ours (median of {repeats}), ours with the derivation, the naive baseline once, interleaved")
    samples = []  # (ours, ours with derive, naive) per round: a slow spell of the machine hits both sides
    for _ in range(rounds):
        samples.append((verify_seconds(sigmoid_spec(sizes), N, repeats),
                        verify_seconds(sigmoid_spec(sizes), N, repeats, with_derive=True),
                        naive_verify_w1(N, sizes, "sigmoid", time_limit=NAIVE_TIME_LIMIT)))
    ours, with_derive, naive = (statistics.median(column) for column in zip(*samples))
    ratios = sorted(n / o for o, _, n in samples)
    print(f"  symbackprop verify --batch {N}, every formula: {ours:8.3f} s (median)")
    print(f"  the same, derivation included:               {with_derive:8.3f} s")
    shown = f"{naive:8.3f} s" if naive != float("inf") else f"> {NAIVE_TIME_LIMIT} s (stopped)"
    print(f"  naive SymPy, dW1 only:                       {shown}")
    ratio = naive / ours
    print(f"  ratio: {ratio:.0f}x (target: >= 100x), {ratios[0]:.0f}x to {ratios[-1]:.0f}x over the rounds; "
          f"derivation included: {naive / with_derive:.0f}x", flush=True)
    results["baseline"] = {"naive_s": naive, "ours_s": ours, "ours_with_derive_s": with_derive,
                           "ratio": ratio, "round_ratios": ratios}

    print(f"\nVerification time (s, median of {repeats}) of tanh nets at batch {BATCH}, at the spec's widths")
    print("  depth " + "".join(f"   width {w:<3}" for w in WIDTHS))
    table = {}
    for depth in DEPTHS:
        row = [verify_seconds(tanh_spec(depth, width), BATCH, repeats) for width in WIDTHS]
        table.update(((depth, width), t) for width, t in zip(WIDTHS, row))
        print(f"  {depth:5d} " + "".join(f"  {t:10.3f}" for t in row), flush=True)
    results["table"] = table

    deep = verify_seconds(tanh_spec(10, 4), BATCH, repeats)
    print(f"\n10-layer tanh net, width 4, batch {BATCH}: {deep:.3f} s (target: < 10 s)")
    results["deep_s"] = deep

    with tempfile.TemporaryDirectory() as directory:
        derive_s = command_seconds(["derive", "--out", "run{run}"], repeats, directory)
        help_s = command_seconds(["--help"], repeats, directory)
    print(f"symbackprop derive (seed, default formats): {derive_s:.3f} s wall (target: < 1.5 s)")
    print(f"symbackprop --help:                         {help_s:.3f} s wall (target: < 0.3 s)")
    results["derive_s"], results["help_s"] = derive_s, help_s
    return results


if __name__ == "__main__":
    main()
