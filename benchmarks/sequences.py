"""Attention and recurrence: the generated NumPy module's forward + backward against PyTorch eager (issue 22).

- A transformer block (causal self-attention with 4 heads, skip connection, layer norm, dense ReLU, skip
  connection), T = 128 positions, model width 256, a batch of 8 sequences: the generated module takes the
  batch as (B, T, d) at once. PyTorch computes the same block with autograd. Goal: at most 1.0x PyTorch's time.
- An LSTM over T = 32 steps, N = 64, d = h = 256, its last state scored by a dense layer, half SSE. Goal:
  within 1.3x PyTorch's time.

Verification of every spec in ``tests/specs_sequence`` (and of the two benchmark networks) is timed too. Goal:
under 10 s each.

Both sides compute the same gradients: every parameter's and the input's (the generated backward returns dX, which a
block needs to pass back to the one before it; PyTorch is asked for it too). Both sides run one thread (threadpoolctl for NumPy's BLAS, ``torch.set_num_threads(1)``), in float32, on the same
parameters and data; the gradients are compared before timing. Without PyTorch the comparison is skipped and
only our times are printed. ``BENCH_REPEATS`` sets the number of runs a median is taken over.
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from benchmarks.batchnorm import one_blas_thread
from benchmarks.training import _median_ms, generated_module, torch_on_one_thread
from symbackprop import derive

BLOCK = {"T": 128, "d": 256, "heads": 4, "B": 8}
LSTM = {"T": 32, "N": 64, "d": 256, "h": 256}
TARGETS = {"block": 1.0, "lstm": 1.3}
VERIFY_TARGET_S = 10.0
CORPUS = Path(__file__).resolve().parent.parent / "tests" / "specs_sequence"


def block_spec() -> dict:
    return {"input": {"size": BLOCK["d"]},
            "layers": [{"kind": "attention", "heads": BLOCK["heads"], "causal": True}, {"kind": "add", "from": "X"},
                       {"kind": "layernorm"}, {"size": BLOCK["d"], "activation": "relu"},
                       {"kind": "add", "from": "a3"}],
            "loss": {"kind": "half_sse"}}


def lstm_spec() -> dict:
    return {"input": {"size": LSTM["d"], "steps": LSTM["T"]},
            "layers": [{"kind": "lstm", "size": LSTM["h"]}, {"size": 16, "activation": "identity"}],
            "loss": {"kind": "half_sse"}}


def _torch_block(torch, p, X, Y):
    """The block in PyTorch, from the module's parameters; returns the loss (autograd builds the graph)."""
    H, d = BLOCK["heads"], BLOCK["d"]
    k = d // H
    heads = []
    mask = torch.ones(X.shape[1], X.shape[1], dtype=torch.bool).tril()
    for h in range(H):
        cols = slice(h * k, (h + 1) * k)
        Q, K, V = X @ p["Wq1"][:, cols], X @ p["Wk1"][:, cols], X @ p["Wv1"][:, cols]
        S = (Q @ K.transpose(-1, -2)) / k ** 0.5
        heads.append(torch.softmax(S.masked_fill(~mask, float("-inf")), dim=-1) @ V)
    a2 = X + torch.cat(heads, dim=-1) @ p["Wo1"]
    a3 = torch.nn.functional.layer_norm(a2, (d,), eps=1e-5) * p["gamma3"][0] + p["beta3"][0]
    Y_pred = a3 + torch.relu(a3 @ p["W4"] + p["b4"])
    return 0.5 * ((Y_pred - Y) ** 2).sum()


def _torch_lstm(torch, p, X, Y):
    h = LSTM["h"]
    state = cell = torch.zeros(X.shape[0], h, dtype=X.dtype)
    for t in range(X.shape[1]):
        A = X[:, t] @ p["Wx1"] + state @ p["Wh1"] + p["b1"]
        i, f, o, g = torch.sigmoid(A[:, :h]), torch.sigmoid(A[:, h:2 * h]), torch.sigmoid(A[:, 2 * h:3 * h]), \
            torch.tanh(A[:, 3 * h:])
        cell = f * cell + i * g
        state = o * torch.tanh(cell)
    return 0.5 * ((state @ p["W2"] + p["b2"] - Y) ** 2).sum()


def _compare(name, module, torch_loss, X, Y, repeats) -> dict:
    params = module.init_params(0, dtype=np.float32)

    def ours():
        return module.backward(params, module.forward(params, X)[1], Y)

    grads = ours()
    medians = {"generated NumPy": None}
    timed = {"generated NumPy": ours}
    torch = torch_on_one_thread()
    if torch is not None:
        tp = {key: torch.tensor(value, requires_grad=True) for key, value in params.items()}
        tX, tY = torch.tensor(X, requires_grad=True), torch.tensor(Y)

        def theirs():
            loss = torch_loss(torch, tp, tX, tY)
            return torch.autograd.grad(loss, [*tp.values(), tX])

        for key, grad in zip([*tp, "X"], theirs()):
            reference = grad.numpy()
            error = np.linalg.norm(grads[key] - reference) / np.linalg.norm(reference)
            assert error < 1e-3, (name, key, error)
        timed["PyTorch eager"] = theirs
    medians = _median_ms(timed, repeats)
    for label, ms in medians.items():
        print(f"  {label:<16} {ms:9.2f} ms")
    if torch is not None:
        ratio = medians["generated NumPy"] / medians["PyTorch eager"]
        print(f"  generated / PyTorch = {ratio:.2f}   goal: <= {TARGETS[name]}")
        medians["ratio"] = ratio
    else:
        print("  PyTorch not installed: no comparison")
    return medians


def bench_verification(repeats: int) -> dict:
    """Median seconds of ``derive`` and ``verify`` (witness sizes) for each corpus spec and benchmark net."""
    specs = {path.stem: path for path in sorted(CORPUS.glob("*.toml"))}
    specs.update({"benchmark block": block_spec(), "benchmark LSTM": lstm_spec()})
    print(f"Derive and verify at witness sizes (median of {repeats}; goal: under {VERIFY_TARGET_S:g} s each)")
    results = {}
    for name, spec in specs.items():
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            report = derive(spec).verify()
            times.append(time.perf_counter() - start)
            assert report.ok, report.table()
        results[name] = statistics.median(times)
        print(f"  {name:<22} {results[name]:6.2f} s  ({len(report.checks)} rows)")
    return results


def main(repeats: int | None = None) -> dict:
    repeats = repeats or int(os.environ.get("BENCH_REPEATS", "5"))
    rng = np.random.default_rng(0)
    results = {"verification": bench_verification(repeats)}
    with tempfile.TemporaryDirectory() as directory, one_blas_thread() as limits:
        sys.dont_write_bytecode = True
        print("\n" + (limits if isinstance(limits, str) else "BLAS limited to one thread (threadpoolctl)"))
        block = generated_module(block_spec(), directory)
        X = rng.standard_normal((BLOCK["B"], BLOCK["T"], BLOCK["d"])).astype(np.float32)
        Y = rng.standard_normal(X.shape).astype(np.float32)
        print(f"\nTransformer block, B = {BLOCK['B']} sequences of T = {BLOCK['T']}, width {BLOCK['d']}, "
              f"{BLOCK['heads']} heads, causal; forward + backward, float32 (median of {repeats})")
        results["block"] = _compare("block", block, _torch_block, X, Y, repeats)
    with tempfile.TemporaryDirectory() as directory, one_blas_thread():
        lstm = generated_module(lstm_spec(), directory)
        X = rng.standard_normal((LSTM["N"], LSTM["T"], LSTM["d"])).astype(np.float32)
        Y = rng.standard_normal((LSTM["N"], 16)).astype(np.float32)
        print(f"\nLSTM, N = {LSTM['N']}, T = {LSTM['T']}, d = h = {LSTM['h']}, last state -> dense 16, half SSE; "
              f"forward + backward, float32 (median of {repeats})")
        results["lstm"] = _compare("lstm", lstm, _torch_lstm, X, Y, repeats)
    return results


if __name__ == "__main__":
    main()
