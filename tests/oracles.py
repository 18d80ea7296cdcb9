"""An independent reference for the tests: a network's loss written out entry by entry from the definitions.

Nothing here comes from symbackprop's derivation, layer registry, loss rules or printers: each layer kind and
each loss is written again, plainly, with explicit sums over samples and features, as the README defines it.
Only the spec reader is shared (the ``Spec`` these functions read). Every activation, the built-in ones
included, is a formula in the custom activations' language (``ACTIVATIONS`` below, or the spec's own
``[activations.<name>]``), read by SymPy here and by torch in ``tests/autograd_oracle.py``. Arrays are turned
batch-first first, so every formula is written once. ``symbolic_gradients`` differentiates this loss with
symengine, one entry at a time.
"""

from __future__ import annotations

import functools

import numpy as np
import symengine as se
import sympy as sp

# The built-in activations from their textbook definitions: (formula in z, default parameters).
ACTIVATIONS = {
    "identity": ("z", {}),
    "relu": ("where(z > 0, z, 0)", {}),
    "leaky_relu": ("where(z > 0, z, alpha * z)", {"alpha": 0.01}),
    "sigmoid": ("1 / (1 + exp(-z))", {}),
    "tanh": ("tanh(z)", {}),
    "softplus": ("log(1 + exp(z))", {}),
    "elu": ("where(z > 0, z, alpha * (exp(z) - 1))", {"alpha": 1.0}),
    "gelu": ("z * (1 + erf(z / sqrt(2))) / 2", {}),
    "silu": ("z / (1 + exp(-z))", {}),
}
# The functions of the formula language as SymPy writes them.
_SYMPY = {
    "exp": sp.exp, "log": sp.log, "log1p": lambda u: sp.log(1 + u), "sqrt": sp.sqrt, "tanh": sp.tanh,
    "sigmoid": lambda u: 1 / (1 + sp.exp(-u)), "softplus": lambda u: sp.log(1 + sp.exp(u)), "erf": sp.erf,
    "abs": sp.Abs, "sin": sp.sin, "cos": sp.cos, "min": sp.Min, "max": sp.Max,
    "where": lambda condition, a, b: sp.Piecewise((a, condition), (b, True)),
}


def _rows(value, batch_first):
    """A 2-D array (or nested list) as a list of rows, transposed to batch-first where needed."""
    rows = [list(row) for row in (value.tolist() if hasattr(value, "tolist") else value)]
    return rows if batch_first else [list(col) for col in zip(*rows)]


def activation(spec, layer) -> tuple[str, dict]:
    """A layer's activation as (formula, parameters): a built-in one with the layer's parameters, or the spec's
    custom one."""
    if layer.activation in ACTIVATIONS:
        formula, defaults = ACTIVATIONS[layer.activation]
        return formula, {name: layer.params.get(name, value) for name, value in defaults.items()}
    custom = next(definition for definition in spec.activations if definition.key == layer.activation)
    return custom.forward, dict(custom.parameters)


@functools.cache
def _formula(formula: str, parameters: tuple) -> se.Basic:
    """A formula as a symengine expression in ``x`` (piecewise functions as branches symengine derives)."""
    x = sp.Symbol("x", real=True)
    form = sp.sympify(formula, locals={**_SYMPY, **dict(parameters), "z": x}).rewrite(sp.Piecewise)
    return se.sympify(form)


def _activation(spec, layer, z):
    """f(z) for a layer's activation, as a symengine expression."""
    formula, parameters = activation(spec, layer)
    return _formula(formula, tuple(sorted(parameters.items()))).subs({se.Symbol("x"): z})


def _relu(z):
    return se.Piecewise((z, z > 0), (0, True))


def loss(spec, values: dict):
    """The scalar loss of ``spec`` with every input's entries from ``values`` (numbers or symengine symbols)."""
    bf = spec.layout == "batch-first"
    A = _rows(values[spec.input.name], bf)
    outputs = {spec.input.name: A}
    N = len(A)
    weights = []
    for l, layer in enumerate(spec.layers, start=1):
        width = len(A[0])
        if layer.kind in ("dense", "activation"):
            Z = A
            if layer.kind == "dense":
                W = _rows(values[f"W{l}"], bf)  # n_in x n_out after the transpose of the column layout
                b = _rows(values[f"b{l}"], bf)[0] if layer.bias else [0] * len(W[0])
                weights.append(W)
                Z = [[sum((a[k] * W[k][j] for k in range(width)), 0) + b[j] for j in range(len(W[0]))] for a in A]
            if layer.activation == "prelu":
                alpha = _rows(values[f"alpha{l}"], bf)[0]
                A = [[_relu(z) - alpha[j] * _relu(-z) for j, z in enumerate(row)] for row in Z]
            else:
                A = [[_activation(spec, layer, z) for z in row] for row in Z]
        elif layer.kind in ("batchnorm", "layernorm"):
            gamma, beta = _rows(values[f"gamma{l}"], bf)[0], _rows(values[f"beta{l}"], bf)[0]
            if layer.kind == "batchnorm":
                columns = list(zip(*A))
                mean = [sum(c, 0) / N for c in columns]
                var = [sum(((x - m) ** 2 for x in c), 0) / N for c, m in zip(columns, mean)]
                A = [[gamma[j] * (row[j] - mean[j]) / se.sqrt(var[j] + layer.eps) + beta[j] for j in range(width)]
                     for row in A]
            else:
                out = []
                for row in A:
                    m = sum(row, 0) / width
                    v = sum(((x - m) ** 2 for x in row), 0) / width
                    out.append([gamma[j] * (row[j] - m) / se.sqrt(v + layer.eps) + beta[j] for j in range(width)])
                A = out
        elif layer.kind == "dropout":
            M = _rows(values[f"M{l}"], bf)
            A = [[a * m / (1 - layer.p) for a, m in zip(row, mrow)] for row, mrow in zip(A, M)]
        elif layer.kind in ("softmax", "log_softmax"):
            out = []
            for row in A:
                total = sum((se.exp(z) for z in row), 0)
                out.append([se.exp(z) / total if layer.kind == "softmax" else z - se.log(total) for z in row])
            A = out
        elif layer.kind == "add":
            A = [[a + f for a, f in zip(row, frow)] for row, frow in zip(A, outputs[layer.source])]
        else:
            raise ValueError(layer.kind)
        outputs[f"a{l}"] = A
    return _loss(spec, A, _rows(values["Y_true"], bf), weights)


def _loss(spec, Y, T, weights):
    settings = spec.loss
    N, k = len(Y), len(Y[0])
    rule = settings.rule
    total = 0
    for y, t in zip(Y, T):
        if rule == "squared_error":
            total += sum(((a - b) ** 2 for a, b in zip(y, t)), 0)
        elif rule == "bce_logits":
            total += sum((se.log(1 + se.exp(a)) - b * a for a, b in zip(y, t)), 0)
        elif rule == "bce":
            total += sum((-(b * se.log(a) + (1 - b) * se.log(1 - a)) for a, b in zip(y, t)), 0)
        elif rule == "cross_entropy":
            total += sum((-b * se.log(a) for a, b in zip(y, t)), 0)
        elif rule == "nll":
            total += sum((-b * a for a, b in zip(y, t)), 0)
        elif rule == "softmax_cross_entropy":
            norm = se.log(sum((se.exp(a) for a in y), 0))
            total += sum((-b * (a - norm) for a, b in zip(y, t)), 0)
        elif rule == "hinge":
            params = dict(settings.params)
            true_score = sum((a * b for a, b in zip(y, t)), 0)
            total += sum(((1 - b) * _relu(a - true_score + params["margin"]) for a, b in zip(y, t)), 0)
        else:
            raise ValueError(rule)
    divisor = {"sum": 1, "batch_mean": N, "mean": N * k}[settings.reduction]
    value = settings.scale * total / divisor
    if settings.l2:
        squares = sum((w ** 2 for W in weights for row in W for w in row), 0)
        value += settings.l2 / 2 * squares / (N if settings.l2_scale == "batch_mean" else 1)
    return value


def symbolic_gradients(spec, values: dict, names) -> dict:
    """dL/d(entry) for every entry of the inputs ``names``, by symengine differentiation of ``loss``.

    Each entry in turn becomes a symbol ``t`` while every other entry is a number; the derivative is
    evaluated at ``t`` = the entry's value."""
    t = se.Symbol("t")
    numbers = {name: np.asarray(value, dtype=float).tolist() for name, value in values.items()}
    gradients = {}
    for name in names:
        array = np.asarray(values[name], dtype=float)
        gradients[name] = np.zeros_like(array)
        for i, j in np.ndindex(array.shape):
            entry = [row.copy() for row in numbers[name]]
            entry[i][j] = t
            L = loss(spec, {**numbers, name: entry})
            gradients[name][i, j] = float(se.diff(L, t).subs({t: array[i, j]}))
    return gradients


def targets(spec, rng, N: int) -> np.ndarray:
    """Targets a spec's loss accepts (batch-first N x k): probabilities, one-hot rows, or any reals."""
    k = spec.sizes[-1]
    rule = spec.loss.rule
    if rule in ("cross_entropy", "nll", "softmax_cross_entropy"):
        T = rng.random((N, k)) + 0.1
        return T / T.sum(axis=1, keepdims=True)
    if rule == "hinge":
        return np.eye(k)[rng.integers(0, k, N)]
    if rule in ("bce", "bce_logits"):
        return rng.random((N, k))
    return rng.standard_normal((N, k))
