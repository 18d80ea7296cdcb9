"""A student's backward pass for cnn.toml with loops over positions, as CS231n's conv_backward_naive and
max_pool_backward_naive are written. It is right; the grading tests change one of its lines at a time to make
each classic mistake."""

import numpy as np

STRIDE, PAD, POOL = 2, 1, 2


def backward(params, cache, Y_true):
    W1, W4 = params["W1"], params["W4"]
    dZ4 = cache["Y_pred"] - Y_true
    da2 = (dZ4 @ W4.T).reshape(cache["a2"].shape)
    dZ1 = pool_backward(da2, cache["a1"]) * (cache["Z1"] >= 0)
    dW1, db1, dX = conv_backward(dZ1, cache["X"], W1)
    return {"W4": cache["a3"].T @ dZ4, "b4": dZ4.sum(axis=0, keepdims=True), "W1": dW1, "b1": db1, "X": dX}


def gradients(params, X, Y_true):
    """A training step: its own forward pass (loops over positions, as conv_forward_naive), then backward."""
    W1, b1 = params["W1"], params["b1"]
    F, _, kh, kw = W1.shape
    x_pad = np.pad(X, ((0, 0), (0, 0), (PAD, PAD), (PAD, PAD)))
    size = (X.shape[2] + 2 * PAD - kh) // STRIDE + 1
    Z1 = np.zeros((len(X), F, size, size))
    for y in range(size):
        for x in range(size):
            patch = x_pad[:, None, :, y * STRIDE:y * STRIDE + kh, x * STRIDE:x * STRIDE + kw]
            Z1[:, :, y, x] = (patch * W1).sum(axis=(2, 3, 4)) + b1
    a1 = np.maximum(Z1, 0)
    a2 = a1.reshape(len(X), F, size // POOL, POOL, size // POOL, POOL).max(axis=(3, 5))
    a3 = a2.reshape(len(X), -1)
    Y_pred = a3 @ params["W4"] + params["b4"]
    return backward(params, {"X": X, "Z1": Z1, "a1": a1, "a2": a2, "a3": a3, "Y_pred": Y_pred}, Y_true)


def pool_backward(dout, a):
    da = np.zeros_like(a)
    N, C, Ho, Wo = dout.shape
    for n in range(N):
        for c in range(C):
            for y in range(Ho):
                for x in range(Wo):
                    rows, cols = slice(y * POOL, (y + 1) * POOL), slice(x * POOL, (x + 1) * POOL)
                    window = a[n, c, rows, cols]
                    mask = np.zeros_like(window)
                    mask.flat[np.argmax(window)] = 1
                    da[n, c, rows, cols] += mask * dout[n, c, y, x]
    return da


def conv_backward(dout, X, W):
    F, _, kh, kw = W.shape
    N, _, Ho, Wo = dout.shape
    x_pad = np.pad(X, ((0, 0), (0, 0), (PAD, PAD), (PAD, PAD)))
    dx_pad, dW = np.zeros_like(x_pad), np.zeros_like(W)
    for n in range(N):
        for f in range(F):
            for y in range(Ho):
                for x in range(Wo):
                    rows, cols = slice(y * STRIDE, y * STRIDE + kh), slice(x * STRIDE, x * STRIDE + kw)
                    dW[f] += x_pad[n, :, rows, cols] * dout[n, f, y, x]
                    dx_pad[n, :, rows, cols] += W[f] * dout[n, f, y, x]
    db = dout.sum(axis=(0, 2, 3))
    return dW, db, dx_pad[:, :, PAD:-PAD, PAD:-PAD]
