"""Batch norm: verification time of a network with batch norm after each dense layer, and the generated
module's batch-norm backward step against a hand-written compact NumPy one (issue 11).

- Verification: a 4-layer network (dense tanh, then batch norm, four times), at the witness sizes the tool
  chooses and at the spec's own widths with ``verify(batch=..., budget=...)``.
- Backward step: ``backward`` of the generated module for a dense layer without bias followed by batch norm at
  1024 features, N = 512 (the input is 4 wide, so batch norm dominates the cost), against the same gradients
  written as the textbook has them (``dxhat = dout * gamma``; ``dx = rstd / N * (N * dxhat - dxhat.sum(0) -
  xhat * (dxhat * xhat).sum(0))``), from the same cache. Target (issue 11): generated / hand-written <= 1.3.
  Each line of both is timed on its own as well, so a miss can be traced to the line that costs it.

Run with ``python -m benchmarks.batchnorm``; ``BENCH_REPEATS`` sets the number of runs a median is taken over.
"""

from __future__ import annotations

import ast
import contextlib
import inspect
import os
import statistics
import sys
import tempfile
import textwrap
import time

import numpy as np

from benchmarks.training import _median_ms, generated_module
from symbackprop import derive

N, FEATURES, INPUT = 512, 1024, 4
TARGET = 1.3
VERIFY_WIDTHS = (3, 4, 4, 4, 2)  # input, then the four dense layers (each followed by batch norm)
VERIFY_BATCH = 4
VERIFY_BUDGET = 60.0
# A step takes milliseconds and the machine may be shared: take the step's median over this many times as many
# runs as the verification's.
STEP_REPEATS_PER_REPEAT = 20


def batchnorm_net_spec(widths=VERIFY_WIDTHS) -> dict:
    """Dense (tanh) then batch norm, once per width after the input's; half the sum of squared errors."""
    layers = []
    for width in widths[1:]:
        layers += [{"size": width, "activation": "tanh"}, {"kind": "batchnorm"}]
    return {"input": {"size": widths[0]}, "layers": layers, "loss": {"kind": "half_sse"}}


def step_spec() -> dict:
    """A dense layer without bias, then batch norm at ``FEATURES`` features: the cost is batch norm's."""
    return {"input": {"size": INPUT},
            "layers": [{"size": FEATURES, "activation": "identity", "bias": False}, {"kind": "batchnorm"}],
            "loss": {"kind": "half_sse"}}


def hand_written_backward(params, cache, Y_true):
    """The same gradients as an expert writes them: the textbook's compact batch-norm backward."""
    W, gamma = params["W1"], params["gamma2"]
    X, rstd, xhat, Y_pred = cache["X"], cache["rstd2"], cache["xhat2"], cache["Y_pred"]
    n = X.shape[0]
    dout = Y_pred - Y_true
    dgamma = (dout * xhat).sum(0, keepdims=True)
    dbeta = dout.sum(0, keepdims=True)
    dxhat = dout * gamma
    dx = rstd / n * (n * dxhat - dxhat.sum(0) - xhat * (dxhat * xhat).sum(0))
    dW = X.T @ dx
    dX = dx @ W.T
    return {"W1": dW, "gamma2": dgamma, "beta2": dbeta, "X": dX}


def line_costs(function, namespace: dict, arguments: dict, repeats: int) -> list[tuple[str, float]]:
    """Median ms of each statement of ``function``'s body, run in order on ``arguments`` (docstring left out).

    Every repeat runs the body from the start, so a line that updates an array in place sees the same inputs
    each time."""
    body = ast.parse(textwrap.dedent(inspect.getsource(function))).body[0].body
    if isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
        body = body[1:]
    body = [ast.Expr(node.value) if isinstance(node, ast.Return) else node for node in body]
    statements = [(ast.unparse(node).split("\n")[0],
                   compile(ast.fix_missing_locations(ast.Module([node], [])), "<line>", "exec")) for node in body]
    times = [[] for _ in statements]
    for _ in range(repeats + 1):  # the first run warms up
        scope = {**namespace, **arguments}
        for index, (_, code) in enumerate(statements):
            start = time.perf_counter()
            exec(code, scope)  # noqa: S102 - our own benchmark runs the generated module's own lines
            times[index].append(time.perf_counter() - start)
    return [(source, 1e3 * statistics.median(ts[1:])) for (source, _), ts in zip(statements, times)]


def _print_lines(title: str, costs: list[tuple[str, float]]) -> None:
    total = sum(ms for _, ms in costs)
    print(f"  {title}, each line on its own (ms; sum {total:.3f}):")
    for source, ms in costs:
        shown = source if len(source) <= 96 else source[:93] + "..."
        print(f"    {ms:8.3f}  {shown}")


def bench_verification(repeats: int) -> dict:
    spec = batchnorm_net_spec()
    results = {}
    times = []
    for _ in range(repeats):
        derivation = derive(spec)
        start = time.perf_counter()
        report = derivation.verify()
        times.append(time.perf_counter() - start)
        assert report.ok and report.sizes == "witness", report.table()
    results["witness_s"] = statistics.median(times)
    shape = " -> ".join(map(str, VERIFY_WIDTHS))
    print(f"4-layer network, dense (tanh) + batch norm after each dense layer, widths {shape}, half SSE")
    sizes = ", ".join(f"{k}={v}" for k, v in report.witness.items())
    print(f"  verify at witness sizes ({sizes}): {results['witness_s']:.3f} s (median of {repeats}, "
          f"{len(report.checks)} rows)")
    times = []
    for _ in range(repeats):
        derivation = derive(spec)
        start = time.perf_counter()
        report = derivation.verify(batch=VERIFY_BATCH, budget=VERIFY_BUDGET)
        times.append(time.perf_counter() - start)
        assert report.ok, report.table()
    results["spec_s"], results["spec_sizes"] = statistics.median(times), report.sizes
    print(f"  verify(batch={VERIFY_BATCH}, budget={VERIFY_BUDGET:g}) at the spec's widths: {results['spec_s']:.3f} s "
          f"(median of {repeats}; checked at {report.sizes} sizes){' ' + report.note if report.note else ''}",
          flush=True)
    return results


def bench_step(module, dtype, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    params = module.init_params(0, dtype=dtype)
    X = rng.standard_normal((N, INPUT)).astype(dtype)
    Y = rng.standard_normal((N, FEATURES)).astype(dtype)
    cache = module.forward(params, X)[1]
    generated, hand = module.backward(params, cache, Y), hand_written_backward(params, cache, Y)
    assert set(generated) == set(hand), (sorted(generated), sorted(hand))
    for name, value in hand.items():  # the two compute the same gradients, in the same dtype
        assert generated[name].dtype == value.dtype == dtype, (name, generated[name].dtype, value.dtype)
        np.testing.assert_allclose(generated[name], value, rtol=0, atol=1e-4 * np.abs(value).max())
    medians = _median_ms({"generated": lambda: module.backward(params, cache, Y),
                          "hand-written": lambda: hand_written_backward(params, cache, Y)}, repeats)
    ratio = medians["generated"] / medians["hand-written"]
    print(f"\nBatch-norm backward step (dense without bias, then batch norm), N = {N}, {FEATURES} features, "
          f"{np.dtype(dtype).name} (median of {repeats})")
    print(f"  generated backward()     {medians['generated']:9.3f} ms")
    print(f"  hand-written (textbook)  {medians['hand-written']:9.3f} ms")
    print(f"  generated / hand-written = {ratio:.2f}   target: <= {TARGET}")
    arguments = {"params": params, "cache": cache, "Y_true": Y}
    _print_lines("generated", line_costs(module.backward, vars(module), arguments, repeats))
    _print_lines("hand-written", line_costs(hand_written_backward, {"np": np}, arguments, repeats))
    return {**medians, "ratio": ratio}


def one_blas_thread():
    """A context in which BLAS runs one thread (with threadpoolctl; else no change).

    The step's matrix products are tiny (the input is 4 wide) and its elementwise work runs on one thread
    anyway; idle BLAS threads spinning on a shared 2-core machine would otherwise take the core from the
    step and make its time jump by scheduler ticks."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return contextlib.nullcontext("BLAS threads as configured (threadpoolctl not installed)")
    return threadpool_limits(1, user_api="blas")


def main(repeats: int | None = None) -> dict:
    repeats = repeats or int(os.environ.get("BENCH_REPEATS", "5"))
    results = {"verification": bench_verification(repeats)}
    with tempfile.TemporaryDirectory() as directory, one_blas_thread() as limits:
        sys.dont_write_bytecode = True
        module = generated_module(step_spec(), directory)
        print("\n" + (limits if isinstance(limits, str) else "BLAS limited to one thread (threadpoolctl)"))
        for dtype in (np.float32, np.float64):
            results[np.dtype(dtype).name] = bench_step(module, dtype, STEP_REPEATS_PER_REPEAT * repeats)
    return results


if __name__ == "__main__":
    main()
