"""An independent forward pass for every layer kind and loss, written with PyTorch and differentiated by autograd.

It reads the spec as the user wrote it (the TOML mapping, with the README's defaults filled in here) and takes
arrays as the generated NumPy module takes them (parameters under the spec's names, in the spec's layout);
nothing here imports symbackprop. Every activation, the built-in ones included, is a formula in the custom
activations' language (the built-in ones from ``tests/oracles.py``, which reads them with SymPy), evaluated
here with torch functions. ``gradients`` returns the loss, the prediction and
``dL/d(array)`` for every parameter and a real-valued input, in float64.
"""

from __future__ import annotations

import functools
import re

import numpy as np
import torch
from oracles import ACTIVATIONS

F = torch.nn.functional

def _tensor(value):
    return value if isinstance(value, torch.Tensor) else torch.tensor(value, dtype=torch.float64)


def _unary(function):
    return lambda u: function(_tensor(u))


# The functions of the formula language as torch computes them.
_TORCH = {
    "exp": _unary(torch.exp), "log": _unary(torch.log), "log1p": _unary(torch.log1p), "sqrt": _unary(torch.sqrt),
    "tanh": _unary(torch.tanh), "sigmoid": _unary(lambda u: 1 / (1 + torch.exp(-u))),
    "softplus": _unary(lambda u: torch.log(1 + torch.exp(u))), "erf": _unary(torch.erf), "abs": _unary(torch.abs),
    "sin": _unary(torch.sin), "cos": _unary(torch.cos),
    "min": lambda *args: functools.reduce(torch.minimum, map(_tensor, args)),
    "max": lambda *args: functools.reduce(torch.maximum, map(_tensor, args)),
    "where": lambda condition, a, b: torch.where(condition, _tensor(a), _tensor(b)),
}


def activation(spec: dict, table: dict):
    """The formula and parameters of a layer's activation: a built-in one (with the layer's own ``alpha``) or
    one of the spec's ``[activations.<name>]``."""
    name = table["activation"]
    if name in ACTIVATIONS:
        formula, defaults = ACTIVATIONS[name]
        return formula, {key: table.get(key, value) for key, value in defaults.items()}
    custom = spec["activations"][name]
    return custom["forward"], dict(custom.get("parameters", {}))


def _apply(spec: dict, table: dict, Z):
    formula, parameters = activation(spec, table)
    return eval(formula, {"__builtins__": {}}, {**_TORCH, **parameters, "z": Z})  # the corpus's own formulas


def _pair(value, default):
    value = default if value is None else value
    return tuple(value) if isinstance(value, list) else value


def _attention(p, l, A, table, width):
    heads = table.get("heads", 1)
    size = table.get("size", width)
    dk = table.get("head_size", size // heads)
    bias = table.get("bias", False)
    outputs = []
    for h in range(heads):
        cols = slice(h * dk, (h + 1) * dk)
        Q, K, V = (A @ p[f"W{n}{l}"][:, cols] + (p[f"b{n}{l}"][:, cols] if bias else 0) for n in "qkv")
        S = Q @ K.T / dk ** 0.5
        if table.get("causal", False):
            S = S.masked_fill(torch.ones_like(S, dtype=torch.bool).triu(1), float("-inf"))
        outputs.append(torch.softmax(S, dim=1) @ V)
    return torch.cat(outputs, dim=1) @ p[f"Wo{l}"] + (p[f"bo{l}"] if bias else 0)


def _recurrent(p, l, xs, kind, h):
    state = cell = torch.zeros(len(xs[0]), h, dtype=torch.float64)
    states = []
    for x in xs:
        if kind == "rnn":
            state = torch.tanh(x @ p[f"Wx{l}"] + state @ p[f"Wh{l}"] + p[f"b{l}"])
        elif kind == "lstm":  # gates i, f, o, g in column blocks (CS231n's order)
            i, f, o, g = (x @ p[f"Wx{l}"] + state @ p[f"Wh{l}"] + p[f"b{l}"]).split(h, dim=1)
            cell = torch.sigmoid(f) * cell + torch.sigmoid(i) * torch.tanh(g)
            state = torch.sigmoid(o) * torch.tanh(cell)
        else:  # gru, torch.nn.GRU's equations, gates r, z, n
            xr, xz, xn = (x @ p[f"Wx{l}"] + p[f"bx{l}"]).split(h, dim=1)
            hr, hz, hn = (state @ p[f"Wh{l}"] + p[f"bh{l}"]).split(h, dim=1)
            r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
            state = (1 - z) * torch.tanh(xn + r * hn) + z * state
        states.append(state)
    return states


def _layer(spec, p, l, table, A, values, masks, width):
    """Layer ``l``'s output for one input ``A`` (batch-first: samples, or positions, in rows)."""
    kind = table.get("kind", "dense")
    if kind == "dense":
        Z = A @ p[f"W{l}"] + (p[f"b{l}"] if table.get("bias", True) else 0)
    elif kind in ("conv2d", "conv1d"):
        conv = F.conv2d if kind == "conv2d" else F.conv1d
        bias = p[f"b{l}"].reshape(-1) if table.get("bias", True) else None
        Z = conv(A, p[f"W{l}"], bias, stride=_pair(table.get("stride"), 1), padding=_pair(table.get("padding"), 0))
    elif kind == "activation":
        Z = A
    elif kind in ("maxpool", "avgpool"):
        pool = getattr(F, f"{kind[:3]}_pool{A.dim() - 2}d")
        kernel = _pair(table["kernel"], None)
        return pool(A, kernel, _pair(table.get("stride"), kernel))
    elif kind == "flatten":
        return A.reshape(len(A), -1)
    elif kind in ("batchnorm", "layernorm"):
        axis = 0 if kind == "batchnorm" else 1
        mean = A.mean(dim=axis, keepdim=True)
        var = ((A - mean) ** 2).mean(dim=axis, keepdim=True)
        return p[f"gamma{l}"] * (A - mean) / torch.sqrt(var + table.get("eps", 1e-5)) + p[f"beta{l}"]
    elif kind == "dropout":  # inverted dropout: kept entries scaled by 1 / (1 - p)
        return A * masks[f"M{l}"] / (1 - table.get("p", 0.5))
    elif kind == "softmax":
        return torch.exp(A) / torch.exp(A).sum(dim=1, keepdim=True)
    elif kind == "log_softmax":
        return A - torch.log(torch.exp(A).sum(dim=1, keepdim=True))
    elif kind == "add":
        return A + values[table["from"]]
    elif kind == "embedding":  # one row of C per id, a sample's ids side by side
        C = p[f"C{l}"]
        return C[A] if A.dim() == 1 else torch.cat([C[A[:, j]] for j in range(A.shape[1])], dim=1)
    elif kind == "attention":
        return _attention(p, l, A, table, width)
    else:
        raise AssertionError(kind)
    if table["activation"] == "prelu":  # a trained slope per unit
        return torch.where(Z > 0, Z, p[f"alpha{l}"] * Z)
    return _apply(spec, table, Z)


def forward(spec: dict, p: dict, X, masks: dict):
    """The prediction: a tensor, or one per step where the last layer runs over a sequence."""
    name = spec["input"].get("name", "X")
    steps = spec["input"].get("steps")
    value = [X[:, t] for t in range(steps)] if steps else X
    values, width = {name: value}, spec["input"].get("size")
    for l, table in enumerate(spec["layers"], start=1):
        kind = table.get("kind", "dense")
        if kind in ("rnn", "lstm", "gru"):
            states = _recurrent(p, l, value, kind, table["size"])
            value = states if table.get("return", "last") == "all" else states[-1]
        elif isinstance(value, list):
            value = [_layer(spec, p, l, table, A, values, masks, width) for A in value]
        else:
            value = _layer(spec, p, l, table, value, values, masks, width)
        width = (value[0] if isinstance(value, list) else value).shape[-1]
        values[f"a{l}"] = value
    return value


LOSSES = {  # rule -> (the term summed over every entry, the default reduction)
    "squared_error": (lambda Y, T, margin: (Y - T) ** 2, "mean"),
    "bce_logits": (lambda Y, T, margin: torch.log(1 + torch.exp(Y)) - T * Y, "mean"),
    "bce": (lambda Y, T, margin: -(T * torch.log(Y) + (1 - T) * torch.log(1 - Y)), "mean"),
    "cross_entropy": (lambda Y, T, margin: -T * torch.log(Y), "batch_mean"),
    "nll": (lambda Y, T, margin: -T * Y, "batch_mean"),
    "softmax_cross_entropy": (lambda Y, T, margin: -T * torch.log_softmax(Y, dim=1), "batch_mean"),
    "hinge": (lambda Y, T, margin: (1 - T) * torch.relu(Y - (Y * T).sum(dim=1, keepdim=True) + margin),
              "batch_mean"),
}
SHORTCUTS = {"half_sse": ("squared_error", "sum", 0.5), "mse": ("squared_error", "mean", 1.0)}


def loss(spec: dict, p: dict, Y, T):
    """``scale / D * sum(term) + l2 / 2 * sum ||W||^2 (/ N)``, with D = 1, N or N k (README's table), the sum over
    every weight matrix (``W1``, a conv kernel, attention's ``Wq1`` .. ``Wo1``, recurrent ``Wx1``/``Wh1``)."""
    table = spec["loss"]
    rule, reduction, scale = SHORTCUTS.get(table["kind"], (table["kind"], None, table.get("scale", 1.0)))
    term, default = LOSSES[rule]
    reduction = reduction or table.get("reduction", default)
    N, k = Y.shape
    value = scale * term(Y, T, table.get("margin", 1.0)).sum() / {"sum": 1, "batch_mean": N, "mean": N * k}[reduction]
    l2 = spec.get("regularization", {})
    if l2:
        weights = [value for name, value in p.items() if re.fullmatch(r"W[a-z]?\d+", name)]
        penalty = l2["l2"] / 2 * sum((W ** 2).sum() for W in weights)
        value = value + penalty / (N if l2.get("l2_scale", "none") == "batch_mean" else 1)
    return value


def gradients(spec: dict, params: dict, X, Y, masks: dict | None = None):
    """(loss, prediction, gradients) for the module's arrays: ``dL/d`` every parameter, and ``"X"`` when the
    input is real-valued. Column-layout arrays are transposed to batch-first inside the graph."""
    column = spec.get("layout", "batch-first") == "column"
    turn = (lambda t: t.T) if column else (lambda t: t)
    leaves = {name: torch.tensor(np.asarray(value, dtype=np.float64), requires_grad=True)
              for name, value in params.items()}
    p = {name: turn(leaf) for name, leaf in leaves.items()}
    if np.issubdtype(np.asarray(X).dtype, np.integer):
        x = torch.tensor(X)
    else:
        x = leaves["X"] = torch.tensor(np.asarray(X, dtype=np.float64), requires_grad=True)
        x = turn(x)
    m = {name: turn(torch.tensor(np.asarray(value, dtype=np.float64))) for name, value in (masks or {}).items()}
    T = turn(torch.tensor(np.asarray(Y, dtype=np.float64)))
    prediction = forward(spec, p, x, m)
    if isinstance(prediction, list):  # an output at every step: the steps' rows stacked, targets (N, T, k)
        Y_pred, T = torch.cat(prediction), torch.cat([T[:, t] for t in range(len(prediction))])
    else:
        Y_pred = prediction
    value = loss(spec, p, Y_pred, T)
    value.backward()
    shown = torch.stack(prediction, dim=1) if isinstance(prediction, list) else turn(prediction)
    return value.item(), shown.detach().numpy(), {name: leaf.grad.numpy() for name, leaf in leaves.items()}
