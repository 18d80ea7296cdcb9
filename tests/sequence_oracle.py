"""An independent forward pass for embeddings, attention and recurrent layers, written from the equations in
the issue and the courses (CS231n's LSTM, PyTorch's GRU), with plain loops over samples, steps and heads.

Nothing here reads symbackprop's derivation, layer registry or printers: arrays come in the generated module's
own shapes (X (N, T, d) or ids (N, k), parameters under the spec's names, gates as column blocks in the
documented order), and the loss is written out again. ``central_differences`` turns this forward pass into
gradients, the oracle the tests compare the generated backward() with.
"""

from __future__ import annotations

import numpy as np


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


def _softmax_rows(S, causal=False):
    out = np.zeros_like(S)
    for i in range(S.shape[0]):
        width = i + 1 if causal else S.shape[1]
        e = np.exp(S[i, :width] - S[i, :width].max())
        out[i, :width] = e / e.sum()
    return out


def _activation(name, z):
    return {"identity": z, "relu": np.maximum(z, 0), "tanh": np.tanh(z), "sigmoid": _sigmoid(z)}[name]


def _norm(A, gamma, beta, eps, axis):
    mu = A.mean(axis=axis, keepdims=True)
    var = ((A - mu) ** 2).mean(axis=axis, keepdims=True)
    return (A - mu) / np.sqrt(var + eps) * gamma + beta


def _attention(p, l, X, layer):
    H, dk = layer["heads"], layer["head_size"]
    bias = layer.get("bias", False)
    heads = []
    for h in range(H):
        cols = slice(h * dk, (h + 1) * dk)
        Q, K, V = (X @ p[f"W{n}{l}"][:, cols] + (p[f"b{n}{l}"][:, cols] if bias else 0) for n in "qkv")
        P = _softmax_rows(Q @ K.T / np.sqrt(dk), layer.get("causal", False))
        heads.append(P @ V)
    return np.concatenate(heads, axis=1) @ p[f"Wo{l}"] + (p[f"bo{l}"] if bias else 0)


def _recurrent(p, l, xs, layer):
    """``xs``: the list of T inputs (N x d); the list of T states."""
    kind, h = layer["kind"], layer["size"]
    N = xs[0].shape[0]
    state, cell, states = np.zeros((N, h)), np.zeros((N, h)), []
    for x in xs:
        if kind == "rnn":
            state = np.tanh(x @ p[f"Wx{l}"] + state @ p[f"Wh{l}"] + p[f"b{l}"])
        elif kind == "lstm":
            A = x @ p[f"Wx{l}"] + state @ p[f"Wh{l}"] + p[f"b{l}"]
            i, f, o, g = (A[:, j * h:(j + 1) * h] for j in range(4))
            cell = _sigmoid(f) * cell + _sigmoid(i) * np.tanh(g)
            state = _sigmoid(o) * np.tanh(cell)
        else:  # gru, PyTorch's equations
            ax, ah = x @ p[f"Wx{l}"] + p[f"bx{l}"], state @ p[f"Wh{l}"] + p[f"bh{l}"]
            r = _sigmoid(ax[:, :h] + ah[:, :h])
            z = _sigmoid(ax[:, h:2 * h] + ah[:, h:2 * h])
            n = np.tanh(ax[:, 2 * h:] + r * ah[:, 2 * h:])
            state = (1 - z) * n + z * state
        states.append(state)
    return states


def loss(spec: dict, p: dict, X, Y):
    """The loss of ``spec`` (a spec mapping) for parameters ``p``, input ``X`` and targets ``Y`` as the
    module takes them (one-hot targets; with steps and ``return = "all"``, (N, T, k))."""
    steps = spec["input"].get("steps")
    if steps:
        value = [X[:, t] for t in range(steps)]  # a list of steps while the value is a sequence
    else:
        value = X
    values = {"X": value}
    for l, layer in enumerate(spec["layers"], start=1):
        kind = layer.get("kind", "dense")
        each = value if isinstance(value, list) else [value]
        if kind == "embedding":
            C = p[f"C{l}"]
            out = [np.concatenate([C[ids[:, j]] for j in range(ids.shape[1])], axis=1) if ids.ndim == 2 else C[ids]
                   for ids in each]
        elif kind == "dense":
            out = [_activation(layer["activation"], A @ p[f"W{l}"] + (p[f"b{l}"] if layer.get("bias", True) else 0))
                   for A in each]
        elif kind == "activation":
            out = [_activation(layer["activation"], A) for A in each]
        elif kind in ("batchnorm", "layernorm"):
            out = [_norm(A, p[f"gamma{l}"], p[f"beta{l}"], 1e-5, 0 if kind == "batchnorm" else 1) for A in each]
        elif kind == "softmax":
            out = [_softmax_rows(A) for A in each]
        elif kind == "add":
            other = values[layer["from"]]
            out = [A + B for A, B in zip(each, other if isinstance(other, list) else [other])]
        elif kind == "attention":
            out = [_attention(p, l, A, layer) for A in each]
        else:
            states = _recurrent(p, l, each, layer)
            out = states if layer.get("return", "last") == "all" else [states[-1]]
        value = out if len(out) > 1 else out[0]
        values[f"a{l}"] = value
    predictions = value if isinstance(value, list) else [value]
    targets = [Y[:, t] for t in range(len(predictions))] if len(predictions) > 1 else [Y]
    kind = spec["loss"]["kind"]
    if kind == "half_sse":
        return sum(0.5 * np.sum((P - T) ** 2) for P, T in zip(predictions, targets))
    assert kind == "cross_entropy" and spec["loss"].get("reduction") == "batch_mean"
    rows = sum(P.shape[0] for P in predictions)
    return -sum(np.sum(T * np.log(P)) for P, T in zip(predictions, targets)) / rows


def central_differences(f, array, eps=1e-6):
    """d f / d array by central differences, entry by entry (``array`` is perturbed in place and restored)."""
    grad = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        saved = array[index]
        array[index] = saved + eps
        up = f()
        array[index] = saved - eps
        down = f()
        array[index] = saved
        grad[index] = (up - down) / (2 * eps)
    return grad
