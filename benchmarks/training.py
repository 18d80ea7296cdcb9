"""One training step (forward + backward + SGD) of the generated NumPy module against its references.

For each network and dtype, in one interleaved run (every repeat times each variant once, so load on the
machine hits them alike), the median step time of:
- generated: the module ``symbackprop derive`` writes (``forward``, ``backward``, ``sgd_step``);
- hand-written: the same step as an expert writes it in NumPy (in-place bias, mask and SGD updates);
- hand-written, no dX: the same without the input gradient, which training does not need but the generated
  API returns (its cost is one matrix product);
- matmul bound: the step's matrix products alone, into preallocated arrays (the input gradient included);
- PyTorch CPU eager and JAX (jit), when installed, computing the same gradients (the input's included).
Ratios are printed against the generated step, with the target beside it where there is one. Run with
``python -m benchmarks.training``.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from symbackprop import derive

# OpenMP threads (PyTorch's) spin for a while after each call by default, taking the cores from whatever
# runs next; on a 2-core machine that would be charged to the next variant. Let them sleep instead.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("KMP_BLOCKTIME", "0")

N = 512
LR = 1e-6  # small: the hand-written step updates its parameters in place every repeat and must stay finite
NETWORKS = {
    "784-1024-1024-10 ReLU, half_sse": (784, [1024, 1024, 10]),
    "deep narrow 64 x 10 ReLU, half_sse": (64, [64] * 10),
}
# Targets for the ratio generated / this (issue 7), printed beside the measurement.
TARGETS = {"784-1024-1024-10 ReLU, half_sse": {"hand-written": 1.05, "matmul bound": 1.15}}


def spec(n_in: int, widths: list[int]) -> dict:
    """ReLU hidden layers (ReLU'(0) = 1), identity output, half sum of squared errors, batch-first."""
    layers = [{"size": w, "activation": "relu", "relu_grad_at_zero": 1} for w in widths[:-1]]
    return {"input": {"size": n_in}, "layers": [*layers, {"size": widths[-1], "activation": "identity"}],
            "loss": {"kind": "half_sse"}}


def generated_module(spec_dict: dict, directory: str):
    """Render, write and import the generated module for ``spec_dict``."""
    size = spec_dict["input"].get("size") or "x".join(map(str, spec_dict["input"]["shape"]))  # images: shape
    path = Path(directory) / f"backprop_{len(spec_dict['layers'])}_{size}.py"
    path.write_text(derive(spec_dict).render("numpy"), encoding="utf-8")
    module_spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def hand_written_step(Ws, bs, X, Y, lr, input_gradient=True):
    """An expert's NumPy step: ReLU layers, identity output, half SSE; updates Ws and bs in place."""
    depth = len(Ws)
    inputs, pre = [X], []
    for l in range(depth):
        Z = inputs[-1] @ Ws[l]
        Z += bs[l]
        pre.append(Z)
        inputs.append(np.maximum(Z, 0) if l < depth - 1 else Z)
    delta = inputs[-1] - Y
    grads = []
    for l in range(depth - 1, -1, -1):
        grads.append((inputs[l].T @ delta, delta.sum(axis=0, keepdims=True)))
        if l or input_gradient:
            upstream = delta @ Ws[l].T
            if l:
                upstream *= pre[l - 1] >= 0
                delta = upstream
    for l, (dW, db) in enumerate(reversed(grads)):
        Ws[l] -= lr * dW
        bs[l] -= lr * db
    return Ws, bs


def matmul_bound(Ws, bs, X):
    """The step's matrix products alone (forward, weight and input gradients) on the step's own operands,
    into preallocated arrays: what the step would cost if everything else were free."""
    depth = len(Ws)
    acts = [X]
    for l in range(depth):
        acts.append(np.maximum(acts[-1] @ Ws[l] + bs[l], 0))
    deltas = [np.ones_like(a) for a in acts[1:]]  # operands only: their values do not change the cost
    products = [(acts[l], Ws[l]) for l in range(depth)]
    products += [(acts[l].T, deltas[l]) for l in range(depth)] + [(deltas[l], Ws[l].T) for l in range(depth)]
    outs = [np.empty((a.shape[0], b.shape[1]), X.dtype) for a, b in products]

    def step():
        for (a, b), out in zip(products, outs):
            np.matmul(a, b, out=out)

    return step


def torch_step(params, X, Y, dtype):
    """PyTorch CPU eager: the same network, loss and gradients (the input's too), SGD under no_grad."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(_blas_threads())
    tdtype = torch.float32 if dtype == np.float32 else torch.float64
    depth = len(params) // 2
    Ws = [torch.tensor(params[f"W{l}"], dtype=tdtype, requires_grad=True) for l in range(1, depth + 1)]
    bs = [torch.tensor(params[f"b{l}"], dtype=tdtype, requires_grad=True) for l in range(1, depth + 1)]
    tX, tY = torch.tensor(X, requires_grad=True), torch.tensor(Y)

    def step():
        A = tX
        for l in range(depth):
            A = torch.addmm(bs[l], A, Ws[l])
            if l < depth - 1:
                A = torch.relu(A)
        loss = 0.5 * ((A - tY) ** 2).sum()
        loss.backward()
        with torch.no_grad():
            for p in (*Ws, *bs):
                p -= LR * p.grad
                p.grad = None
        tX.grad = None

    return step


def jax_step(params, X, Y, dtype):
    """JAX: the same step under jit (gradients w.r.t. parameters and input), if JAX is installed."""
    try:
        import jax
        import jax.numpy as jnp
    except ImportError:
        return None
    if dtype == np.float64:
        jax.config.update("jax_enable_x64", True)
    depth = len(params) // 2

    def loss(ps, x, y):
        A = x
        for l in range(1, depth + 1):
            A = A @ ps[f"W{l}"] + ps[f"b{l}"]
            if l < depth:
                A = jnp.maximum(A, 0)
        return 0.5 * jnp.sum((A - y) ** 2)

    @jax.jit
    def update(ps, x, y):
        gp, gx = jax.grad(loss, argnums=(0, 1))(ps, x, y)
        return {k: v - LR * gp[k] for k, v in ps.items()}, gx

    state = {"ps": {k: jnp.asarray(v) for k, v in params.items()}}
    x, y = jnp.asarray(X), jnp.asarray(Y)

    def step():
        state["ps"], gx = update(state["ps"], x, y)
        gx.block_until_ready()

    return step


def _blas_threads() -> int:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return os.cpu_count() or 1
    return max((pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"), default=1)


def blas_description() -> str:
    """Which BLAS NumPy calls, its kernel and threads (threadpoolctl), and the OpenBLAS variables set."""
    names = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_NUM_THREADS")
    env = ", ".join(f"{k}={os.environ[k]}" for k in names if k in os.environ)
    env = env or f"none of {', '.join(names)} set"
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return f"numpy {np.__version__}; threadpoolctl not installed (see numpy.show_config()); {env}"
    pools = [f"{p['internal_api']} {p.get('version')} (kernel {p.get('architecture')}, "
             f"{p['num_threads']} threads)" for p in threadpool_info() if p["user_api"] == "blas"]
    return f"numpy {np.__version__} with {'; '.join(pools) or 'unknown BLAS'}; {env}"


def torch_on_one_thread():
    """PyTorch set to one thread (the per-core comparison), or None where it is not installed."""
    try:
        import torch
    except ImportError:
        return None
    torch.set_num_threads(1)
    return torch


def interleaved_ms(variants: dict, repeats: int) -> dict:
    """Wall times per variant in ms, one per repeat, the variants interleaved in every repeat (after one warm-up).

    The order rotates from repeat to repeat, so no variant always runs right after the same other one (a
    library whose threads linger after its step would otherwise always slow the same neighbour).
    """
    for step in variants.values():
        step()
    times = {name: [] for name in variants}
    names = list(variants)
    for repeat in range(repeats):
        shift = repeat % len(names)
        for name in names[shift:] + names[:shift]:
            start = time.perf_counter()
            variants[name]()
            times[name].append(1e3 * (time.perf_counter() - start))
    return times


def _median_ms(variants: dict, repeats: int) -> dict:
    """Median wall time per variant in ms, interleaved as ``interleaved_ms`` runs them."""
    return {name: statistics.median(ts) for name, ts in interleaved_ms(variants, repeats).items()}


def _check_same_gradients(module, params, X, Y):
    """The generated and hand-written steps make the same update (so the timings compare like with like)."""
    depth = len(params) // 2
    grads = module.backward(params, module.forward(params, X)[1], Y)
    Ws, bs = ([params[f"{k}{l}"].copy() for l in range(1, depth + 1)] for k in "Wb")
    hand_written_step(Ws, bs, X, Y, 1.0)  # with lr = 1 the update is minus the gradient
    for l in range(1, depth + 1):
        for name, updated in ((f"W{l}", Ws[l - 1]), (f"b{l}", bs[l - 1])):
            scale = np.abs(grads[name]).max()
            np.testing.assert_allclose(params[name] - updated, grads[name], rtol=0, atol=1e-3 * scale + 1e-6)


def bench_network(name, n_in, widths, dtype, directory, repeats):
    module = generated_module(spec(n_in, widths), directory)
    rng = np.random.default_rng(0)
    params = module.init_params(0, dtype=dtype)
    X = rng.standard_normal((N, n_in)).astype(dtype)
    Y = rng.standard_normal((N, widths[-1])).astype(dtype)
    _check_same_gradients(module, params, X, Y)
    depth = len(widths)
    Ws, bs = ([params[f"{k}{l}"].copy() for l in range(1, depth + 1)] for k in "Wb")
    Ws2, bs2 = ([a.copy() for a in arrays] for arrays in (Ws, bs))

    def generated():
        module.sgd_step(params, module.backward(params, module.forward(params, X)[1], Y), LR)

    variants = {
        "generated": generated,
        "hand-written": lambda: hand_written_step(Ws, bs, X, Y, LR),
        "hand-written, no dX": lambda: hand_written_step(Ws2, bs2, X, Y, LR, input_gradient=False),
        "matmul bound": matmul_bound([W.copy() for W in Ws], bs, X),
    }
    for label, make in (("PyTorch CPU eager", torch_step), ("JAX jit", jax_step)):
        step = make(params, X, Y, dtype)
        if step is not None:
            variants[label] = step
    medians = _median_ms(variants, repeats)
    assert all(np.isfinite(a).all() for a in (*Ws, *bs, *Ws2, *bs2)), "the hand-written steps diverged"
    print(f"\n{name}, N = {N}, {np.dtype(dtype).name} (median of {repeats})")
    targets = TARGETS.get(name, {})
    for label, ms in medians.items():
        target = f"   target: <= {targets[label]:.2f}" if label in targets else ""
        print(f"  {label:<22} {ms:9.3f} ms   generated / this = {medians['generated'] / ms:5.2f}{target}")
    return medians


def main(repeats: int | None = None) -> dict:
    """Run every network in float32 and float64; print the timings and ratios; return them."""
    repeats = repeats or int(os.environ.get("BENCH_REPEATS", "15"))
    print("Training step (forward + backward + SGD):", blas_description())
    try:
        import torch

        print(f"PyTorch {torch.__version__}, {torch.get_num_threads()} threads; BLAS:",
              "MKL" if torch.backends.mkl.is_available() else "no MKL",
              "+ oneDNN" if torch.backends.mkldnn.is_available() else "")
    except ImportError:
        print("PyTorch not installed: skipped")
    results = {}
    with tempfile.TemporaryDirectory() as directory:
        sys.dont_write_bytecode = True
        for name, (n_in, widths) in NETWORKS.items():
            for dtype in (np.float32, np.float64):
                key = (name, np.dtype(dtype).name)
                results[key] = bench_network(name, n_in, widths, dtype, directory, repeats)
    return results


if __name__ == "__main__":
    main()
