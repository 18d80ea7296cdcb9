"""Convolution: the backward pass of one conv2d layer in the generated NumPy module, against a hand-written
im2col NumPy implementation and PyTorch eager (issue 26).

The layer: N = 64 images of 16 x 32 x 32, F = 32 filters of 3 x 3, stride 1, padding 1, float32, one thread
(BLAS limited with threadpoolctl, ``torch.set_num_threads(1)``). The spec is that layer (identity activation),
then ``flatten`` and half the sum of squared errors, so the upstream gradient is ``dZ = Y_pred - Y_true``; every
variant starts from ``(Y_pred, Y_true)`` and the input and weights the forward pass saw, and returns dW, db
and dX:
- generated: ``backward`` of the module ``symbackprop derive`` writes, on the cache its ``forward`` keeps
  (the unfolded input ``Xcol1``); with 1,024 positions it reads δ's maps as they are, never copying them into
  unfold(δ): dW as each sample's maps times its rows of ``Xcol1``, summed, and dX as each kernel offset's slice
  of W times the maps, added into the image a few images at a time, so that they stay in cache;
- hand-written im2col: the CS231n "fast layers" backward as written here, on the unfolded input its own forward
  keeps: ``dW = dout_colᵀ X_col``, ``db`` the column sums, ``dX_col = dout_col W_col`` added back into the padded
  image one kernel offset at a time over the whole batch (col2im), the padding cropped;
- PyTorch eager: ``aten.convolution_backward``, the one call autograd makes for a ``conv2d``'s three gradients.
Target (issue 26): generated / hand-written <= 1.1. Each line of the two NumPy backward passes is then timed on its
own, so that a difference can be traced to the line that makes it. Last, a sweep over layers of 16 to 1,024 output
positions times the module's two ways of reading δ (copied into unfold(δ), or as it is), the evidence for the
number of positions from which the module reads it as it is; then a small CNN's training step (two conv + ReLU +
max-pool stages, a dense layer, softmax cross-entropy) against PyTorch eager. Run with ``python -m benchmarks.conv``;
``BENCH_REPEATS`` sets the number of interleaved runs a median is taken over.
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from benchmarks.batchnorm import _print_lines, line_costs, one_blas_thread
from benchmarks.training import _median_ms, generated_module, torch_on_one_thread
from symbackprop.codegen import UNFOLDED_POSITIONS

N, C, H, W, F, K, PAD = 64, 16, 32, 32, 32, 3, 1
DTYPE = np.float32
TARGET = 1.1


def layer_spec() -> dict:
    """One conv2d layer (identity activation), flattened, half SSE: its backward pass is the layer's."""
    return {"input": {"shape": [C, H, W]},
            "layers": [{"kind": "conv2d", "channels": F, "kernel": K, "padding": PAD, "activation": "identity"},
                       {"kind": "flatten"}],
            "loss": {"kind": "half_sse"}}


def hand_written_forward(weight, bias, X):
    """The layer's forward pass as CS231n's im2col layer writes it; returns the output and the unfolded input."""
    padded = np.pad(X, ((0, 0), (0, 0), (PAD, PAD), (PAD, PAD)))
    X_col = sliding_window_view(padded, (K, K), axis=(2, 3)).transpose(0, 2, 3, 1, 4, 5).reshape(-1, C * K * K)
    out = X_col @ weight.reshape(F, -1).T + bias
    return out.reshape(N, H, W, F).transpose(0, 3, 1, 2), X_col


def hand_written_backward(weight, X_col, Y_pred, Y_true):
    """dW, db, dX of the layer from its unfolded input, the upstream gradient being ``Y_pred - Y_true``."""
    dout = Y_pred - Y_true
    dout_col = dout.reshape(N, F, H * W).transpose(0, 2, 1).reshape(-1, F)
    dW = (dout_col.T @ X_col).reshape(weight.shape)
    db = dout_col.sum(axis=0)
    dX_col = (dout_col @ weight.reshape(F, -1)).reshape(N, H, W, C, K, K)
    dX = np.zeros((N, C, H + 2 * PAD, W + 2 * PAD), dtype=dX_col.dtype)
    for i in range(K):
        for j in range(K):
            dX[:, :, i:i + H, j:j + W] += dX_col[..., i, j].transpose(0, 3, 1, 2)
    return dW, db, dX[:, :, PAD:PAD + H, PAD:PAD + W]


def torch_backward(weight, X, Y_pred, Y_true):
    """PyTorch eager on one thread: the upstream gradient, then the convolution's backward (None without
    PyTorch)."""
    torch = torch_on_one_thread()
    if torch is None:
        return None
    tW, tX, tY, tT = (torch.from_numpy(a) for a in (weight, X, Y_pred, Y_true))
    shape = (N, F, H, W)

    def step():
        dout = (tY - tT).reshape(shape)
        return torch.ops.aten.convolution_backward(dout, tX, tW, [F], [1, 1], [PAD, PAD], [1, 1], False, [0, 0], 1,
                                                   [True, True, True])

    return step


def torch_forward(weight, bias, X):
    """PyTorch eager's conv2d on one thread (None without PyTorch)."""
    torch = torch_on_one_thread()
    if torch is None:
        return None
    tW, tb, tX = (torch.from_numpy(a) for a in (weight, bias, X))
    return lambda: torch.nn.functional.conv2d(tX, tW, tb, padding=PAD)


def bench(module, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    params = module.init_params(0, dtype=DTYPE)
    X = rng.standard_normal((N, C, H, W)).astype(DTYPE)
    Y_true = rng.standard_normal((N, F * H * W)).astype(DTYPE)
    Y_pred, cache = module.forward(params, X)
    weight, bias = params["W1"], params["b1"]
    out, X_col = hand_written_forward(weight, bias, X)
    np.testing.assert_allclose(out.reshape(N, -1), Y_pred, rtol=0, atol=1e-4 * np.abs(Y_pred).max())
    expected = dict(zip(("W1", "b1", "X"), hand_written_backward(weight, X_col, Y_pred, Y_true)))
    variants = {"generated": lambda: module.backward(params, cache, Y_true),
                "hand-written im2col": lambda: hand_written_backward(weight, X_col, Y_pred, Y_true)}
    compared = {"generated": module.backward(params, cache, Y_true)}
    step = torch_backward(weight, X, Y_pred, Y_true)
    if step is not None:
        variants["PyTorch eager"] = step
        compared["PyTorch eager"] = {name: value.numpy() for name, value in zip(("X", "W1", "b1"), step())}
    for label, grads in compared.items():  # every variant computes the same gradients, in float32
        for name, value in expected.items():
            got = grads[name]
            assert got.dtype == value.dtype == DTYPE, (label, name, got.dtype, value.dtype)
            np.testing.assert_allclose(got.reshape(value.shape), value, rtol=0, atol=1e-4 * np.abs(value).max(),
                                       err_msg=f"{label}: {name}")
    medians = _median_ms(variants, repeats)
    print(f"conv2d backward (dW, db, dX from dZ = Y_pred - Y_true): N = {N}, C = {C}, {H}x{W}, F = {F}, "
          f"{K}x{K}, padding {PAD}, stride 1, {np.dtype(DTYPE).name}, one thread (median of {repeats})")
    for label, ms in medians.items():
        print(f"  {label:<20} {ms:9.3f} ms   generated / this = {medians['generated'] / ms:5.2f}")
    ratio = medians["generated"] / medians["hand-written im2col"]
    print(f"  generated / hand-written im2col = {ratio:.2f}   target: <= {TARGET}")
    _print_lines("generated", line_costs(module.backward, vars(module),
                                         {"params": params, "cache": cache, "Y_true": Y_true}, repeats))
    _print_lines("hand-written im2col", line_costs(hand_written_backward, globals(), {
        "weight": weight, "X_col": X_col, "Y_pred": Y_pred, "Y_true": Y_true}, repeats))
    forwards = {"generated": lambda: module.forward(params, X),
                "hand-written im2col": lambda: hand_written_forward(weight, bias, X)}
    conv = torch_forward(weight, bias, X)
    if conv is not None:
        forwards["PyTorch eager"] = conv
    forward_ms = _median_ms(forwards, repeats)
    print("  forward pass (the output and the unfolded input the backward reads; PyTorch's output alone): "
          + ", ".join(f"{label} {ms:.2f} ms" for label, ms in forward_ms.items()))
    return {**medians, "ratio": ratio, "forward": forward_ms}


def cnn_spec() -> dict:
    """A small CNN on the benchmark's images: [conv 3x3 padding 1 -> ReLU -> max pool 2] x 2 (32, then 64 maps),
    flatten, dense 10, softmax cross-entropy."""
    conv = {"kind": "conv2d", "kernel": K, "padding": PAD, "activation": "relu"}
    pool = {"kind": "maxpool", "kernel": 2}
    return {"input": {"shape": [C, H, W]},
            "layers": [{**conv, "channels": 32}, pool, {**conv, "channels": 64}, pool, {"kind": "flatten"},
                       {"size": 10, "activation": "identity"}],
            "loss": {"kind": "softmax_cross_entropy"}}


def cnn_step(module, repeats: int) -> None:
    """The small CNN's training step (forward + backward, the input's gradient included) in the generated module
    against PyTorch eager on one thread, on the same parameters and data, the gradients compared first."""
    rng = np.random.default_rng(0)
    params = module.init_params(0, dtype=DTYPE)
    X = rng.standard_normal((N, C, H, W)).astype(DTYPE)
    Y = np.eye(10, dtype=DTYPE)[rng.integers(0, 10, N)]
    variants = {"generated": lambda: module.backward(params, module.forward(params, X)[1], Y)}
    torch = torch_on_one_thread()
    if torch is not None:
        F_ = torch.nn.functional
        tp = {name: torch.tensor(value, requires_grad=True) for name, value in params.items()}
        tX, tY = torch.tensor(X, requires_grad=True), torch.tensor(Y)

        def step():
            A = F_.max_pool2d(F_.relu(F_.conv2d(tX, tp["W1"], tp["b1"], padding=PAD)), 2)
            A = F_.max_pool2d(F_.relu(F_.conv2d(A, tp["W3"], tp["b3"], padding=PAD)), 2)
            logits = A.flatten(1) @ tp["W6"] + tp["b6"]
            loss = F_.cross_entropy(logits, tY.argmax(dim=1))
            return dict(zip([*tp, "X"], torch.autograd.grad(loss, [*tp.values(), tX])))

        ours = variants["generated"]()
        for name, value in step().items():
            np.testing.assert_allclose(ours[name], value.numpy(), rtol=0, atol=1e-4 * float(value.abs().max()),
                                       err_msg=name)
        variants["PyTorch eager"] = step
    ms = _median_ms(variants, repeats)
    print(f"\nsmall CNN training step (forward + backward, the input's gradient included): N = {N}, {C}x{H}x{W}, "
          f"[conv {K}x{K} -> ReLU -> max pool 2] x 2 (32, 64 maps) -> dense 10, softmax CE, float32, one thread "
          f"(median of {repeats}): " + ", ".join(f"{label} {value:.1f} ms" for label, value in ms.items())
          + (f" (generated / PyTorch = {ms['generated'] / ms['PyTorch eager']:.2f})" if len(ms) > 1 else ""))


# Layers for the positions sweep, N = 64, float32: (C, H = W, F, kernel, stride, padding), 16 to 1024 positions.
SWEEP = ((128, 4, 128, 3, 1, 1), (64, 8, 128, 3, 1, 1), (16, 11, 32, 3, 1, 1), (64, 12, 64, 3, 1, 1),
         (64, 16, 64, 3, 1, 1), (16, 32, 32, 3, 2, 1), (16, 32, 32, 3, 1, 1))


def positions_sweep(unfolded, copied, repeats: int) -> None:
    """A convolution's dW, db and dX from δ both ways the module writes them, per layer of ``SWEEP``: the maps
    copied into unfold(δ) (``copied``'s helpers: below UNFOLDED_POSITIONS) and read as they are (``unfolded``'s);
    the evidence for the threshold."""
    print(f"\nconv2d backward by output positions (N = {N}, float32, one thread, median of {repeats}; the module "
          f"reads the maps as they are from {UNFOLDED_POSITIONS} positions)")
    rng = np.random.default_rng(0)
    for layer in SWEEP:
        _sweep_layer(unfolded, copied, layer, rng, repeats)


def _sweep_layer(unfolded, copied, layer, rng, repeats: int) -> None:
    c, size, f, k, stride, pad = layer
    window = {"shape": (c, size, size), "kernel": (k, k), "stride": (stride, stride), "padding": (pad, pad)}
    positions = ((size + 2 * pad - k) // stride + 1) ** 2
    G = rng.standard_normal((N, f * positions)).astype(DTYPE)
    weight = rng.standard_normal((f, c * k * k)).astype(DTYPE)
    X_col = copied.im2col(rng.standard_normal((N, c * size * size)).astype(DTYPE), **window)

    def copy_first():
        cols = copied.unfold(G, positions)
        return cols.T @ X_col, cols.sum(axis=0, keepdims=True), copied.col2im(cols @ weight, **window)

    def as_they_are():
        return (unfolded.unfold_t_dot(G, X_col, positions), unfolded.unfold_sums(G, positions),
                unfolded.col2im_unfold_dot(G, weight, **window))

    for a, b in zip(copy_first(), as_they_are()):
        np.testing.assert_allclose(b, a, rtol=0, atol=1e-4 * np.abs(a).max())
    ms = _median_ms({"copied": copy_first, "as they are": as_they_are}, repeats)
    print(f"  C {c:3d}, {size:2d}x{size:<2d}, F {f:3d}, stride {stride}: {positions:4d} positions   unfold(δ) copied "
          f"{ms['copied']:7.2f} ms, maps as they are {ms['as they are']:7.2f} ms "
          f"({ms['as they are'] / ms['copied']:.2f}x)")


def main(repeats: int | None = None) -> dict:
    repeats = repeats or int(os.environ.get("BENCH_REPEATS", "15"))
    with tempfile.TemporaryDirectory() as directory, one_blas_thread() as limits:
        sys.dont_write_bytecode = True
        module = generated_module(layer_spec(), directory)
        small = layer_spec()
        small["input"]["shape"] = [C, 8, 8]  # 64 positions: the module copies the maps into unfold(δ)
        copied = generated_module(small, directory)
        print(limits if isinstance(limits, str) else "BLAS limited to one thread (threadpoolctl)")
        results = bench(module, repeats)
        positions_sweep(module, copied, repeats)
        cnn_step(generated_module(cnn_spec(), directory), repeats)
        return results


if __name__ == "__main__":
    main()
