"""Formulas of Wesselink et al. 2025 ("Batch matrix-form equations and implementation of multilayer
perceptrons": linear, softmax, log-softmax, batch-norm layers; dropout and layer norm beside them) and the losses
of Ng's course, Nielsen's book and CS231n, written as ``check`` claims for the corpus specs.

Every verdict is decided by an oracle that shares nothing with the derivation: a forward pass written here in
NumPy, step by step with every intermediate named as the network names it (``mu2``, ``xhat2``, ...), whose
loss is ``tests/oracles.py``'s (and equals that module's whole-network loss at each point), and central finite
differences for the gradient of every quantity, an input or an intermediate one. A claim's meaning is a NumPy
expression (the claim's own right side for NumPy-like claims, written by hand for LaTeX ones); the oracle's
verdict is ``correct`` where it agrees at two points with two batch sizes, ``shape`` where NumPy cannot make
it the gradient's shape, ``convention`` for a constant factor 2^a N^b k^c, else ``value``. The checker must
reach the same verdict, and name the mistake where the test says which it is.
"""

from __future__ import annotations

import itertools
import math
import re

import numpy as np
import pytest
from oracles import _loss, loss, targets

from symbackprop.claims import Checker
from symbackprop.spec import load_spec

H = 1e-5
SPECS = "tests/specs/{}.toml"


# -- the oracle: a staged forward pass, the shared loss, central differences ---------------------------------

def _activation(name, params, Z, alpha=None):
    if name == "prelu":
        return np.maximum(Z, 0) + alpha * np.minimum(Z, 0)
    erf = np.vectorize(math.erf)
    return {"identity": lambda z: z, "relu": lambda z: np.maximum(z, 0), "tanh": np.tanh,
            "sigmoid": lambda z: 1 / (1 + np.exp(-z)), "silu": lambda z: z / (1 + np.exp(-z)),
            "gelu": lambda z: z * (1 + erf(z / np.sqrt(2))) / 2,
            "leaky_relu": lambda z: np.where(z > 0, z, params.get("alpha", 0.01) * z)}[name](Z)


def _per_sample(M, log):
    shifted = M - M.max(axis=1, keepdims=True)
    logs = shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))
    return logs if log else np.exp(logs)


def _forward(spec, values, override):
    """Every quantity of the network, batch-first, with ``override`` replacing any of them; and the loss."""
    v = {**values, **override}

    def named(name, value):
        v[name] = override.get(name, value)
        return v[name]

    A = v[spec.input.name]
    weights = []
    for l, layer in enumerate(spec.layers, start=1):
        out = "Y_pred" if l == len(spec.layers) else f"a{l}"
        if layer.kind == "dense":
            weights.append(v[f"W{l}"])
            Z = named(f"Z{l}", A @ v[f"W{l}"] + (v[f"b{l}"] if layer.bias else 0))
            A = _activation(layer.activation, layer.params, Z, v.get(f"alpha{l}"))
        elif layer.kind == "activation":
            A = _activation(layer.activation, layer.params, A)
        elif layer.kind in ("batchnorm", "layernorm"):
            axis = 0 if layer.kind == "batchnorm" else 1
            mu = named(f"mu{l}", A.mean(axis=axis, keepdims=True))
            xc = named(f"xc{l}", A - mu)
            var = named(f"var{l}", (xc ** 2).mean(axis=axis, keepdims=True))
            rstd = named(f"rstd{l}", 1 / np.sqrt(var + layer.eps))
            A = named(f"xhat{l}", xc * rstd) * v[f"gamma{l}"] + v[f"beta{l}"]
        elif layer.kind == "dropout":
            A = A * v[f"M{l}"] / (1 - layer.p)
        elif layer.kind in ("softmax", "log_softmax"):
            A = _per_sample(A, layer.kind == "log_softmax")
        else:
            raise AssertionError(layer.kind)
        A = named(out, A)
    return v, float(_loss(spec, A.tolist(), v["Y_true"].tolist(), weights))


class Point:
    """One random point of a spec's network: values and finite-difference gradients in the spec's layout."""

    def __init__(self, spec, N, seed):
        self.spec, self.N = spec, N
        self.column = spec.layout == "column"
        rng = np.random.default_rng(seed)
        widths, inputs = spec.sizes, {spec.input.name: rng.standard_normal((N, spec.sizes[0]))}
        for l, layer in enumerate(spec.layers, start=1):
            n_in, n_out = widths[l - 1], widths[l]
            if layer.kind == "dense":
                inputs[f"W{l}"] = rng.standard_normal((n_in, n_out)) / np.sqrt(n_in)
                if layer.bias:
                    inputs[f"b{l}"] = rng.standard_normal((1, n_out))
                if layer.activation == "prelu":
                    inputs[f"alpha{l}"] = rng.uniform(0.1, 0.3, (1, n_out))
            elif layer.kind in ("batchnorm", "layernorm"):
                inputs[f"gamma{l}"] = 1 + 0.3 * rng.standard_normal((1, n_out))
                inputs[f"beta{l}"] = rng.standard_normal((1, n_out))
            elif layer.kind == "dropout":
                inputs[f"M{l}"] = (rng.random((N, n_out)) > layer.p).astype(float)
        inputs["Y_true"] = targets(spec, rng, N)
        self.inputs = inputs
        self.values, self.loss = _forward(spec, inputs, {})
        shown = {name: self.layout(value) for name, value in inputs.items()}
        assert math.isclose(self.loss, float(loss(spec, shown)), rel_tol=1e-9)  # the whole-network oracle
        self._gradients = {}

    def layout(self, value):
        return value.T if self.column else value

    def gradient(self, name):
        """dL/d``name`` by central differences, in the spec's layout."""
        if name not in self._gradients:
            value = self.values[name]
            grad = np.zeros_like(value)
            for index in np.ndindex(value.shape):
                moved = []
                for step in (H, -H):
                    changed = value.copy()
                    changed[index] += step
                    if name in self.inputs:
                        moved.append(_forward(self.spec, {**self.inputs, name: changed}, {})[1])
                    else:
                        moved.append(_forward(self.spec, self.inputs, {name: changed})[1])
                grad[index] = (moved[0] - moved[1]) / (2 * H)
            self._gradients[name] = self.layout(grad)
        return self._gradients[name]

    def namespace(self, expression, scale=1.0):
        """Names for evaluating a claim's meaning: quantities, the gradients it uses, sizes, constants, helpers."""
        spec, column = self.spec, self.column
        axis = 0 if column else 1
        names = {name: self.layout(value) for name, value in self.values.items()}
        depth = len(spec.layers)
        for l in range(depth + 1):
            names[f"A{l}"] = names[spec.input.name if l == 0 else "Y_pred" if l == depth else f"a{l}"]
        names.update(AL=names["Y_pred"], Y=names["Y_true"], N=self.N, m=self.N, n=self.N,
                     **{f"n_{i}": w for i, w in enumerate(spec.sizes)})
        gradients = {"dAL": "Y_pred", **{f"dA{l}": ("Y_pred" if l == depth else f"a{l}") for l in range(1, depth + 1)},
                     **{f"delta{l}": f"Z{l}" for l in range(1, depth + 1)}}
        for word in set(re.findall(r"\b(d\w+|delta\d+)\b", expression)):
            target = gradients.get(word, word[1:])
            if target in self.values:
                names[word] = self.gradient(target) * scale
        for l, layer in enumerate(spec.layers, start=1):
            if layer.eps is not None:
                names.update(eps=layer.eps, epsilon=layer.eps)
            if layer.p is not None:
                names.update({"p": layer.p, f"p{l}": layer.p, "keep_prob": 1 - layer.p})
        names.update(lambd=spec.loss.l2, lmbda=spec.loss.l2, reg=spec.loss.l2)
        names.update(
            np=np, ones=lambda n: np.ones((n, 1)), sigmoid=lambda z: 1 / (1 + np.exp(-z)),
            softmax=lambda M: _per_sample(M.T, False).T if column else _per_sample(M, False),
            rows_sum=lambda M: M.sum(axis=1, keepdims=True), columns_sum=lambda M: M.sum(axis=0, keepdims=True),
            row_repeat=lambda x, n: np.ones((n, 1)) @ x, column_repeat=lambda x, n: x @ np.ones((1, n)),
            diag=lambda M: np.diag(M).reshape(-1, 1), Diag=lambda v: np.diag(np.ravel(v)),
            sample_sum=lambda M: M.sum(axis=axis, keepdims=True))
        names["sigmoid_prime"] = lambda z: names["sigmoid"](z) * (1 - names["sigmoid"](z))
        return names


_POINTS = {}


def points(name):
    if name not in _POINTS:
        spec = SPEC_VARIANTS[name]() if name in SPEC_VARIANTS else load_spec(SPECS.format(name))
        N = max(spec.sizes) + 2
        _POINTS[name] = [Point(spec, N, 0), Point(spec, N + 1, 1)]
    return _POINTS[name]


def _value(expression, point, truth, scale=1.0):
    try:
        with np.errstate(all="ignore"):
            value = np.asarray(eval(expression, point.namespace(expression, scale)), dtype=float)  # the test's
    except ValueError:  # NumPy cannot combine the shapes                                              own reading
        return None
    if value.ndim == 1 and truth.shape == (1, value.size):
        value = value.reshape(truth.shape)
    return value if value.shape == truth.shape else None


def oracle(spec_name, expression, target):
    """(verdict, reason) for the claim whose meaning is ``expression``, about dL/d``target``."""
    ratios = []
    for point in points(spec_name):
        truth = point.gradient(target)
        value = _value(expression, point, truth)
        if value is None:
            return "wrong", "shape"
        if np.allclose(value, truth, rtol=1e-5, atol=1e-6 * np.abs(truth).max()):
            continue
        ratio = np.sum(value * truth) / np.sum(truth * truth)
        scaled = _value(expression, point, truth, scale=ratio)
        if not (np.allclose(value, ratio * truth, rtol=1e-5, atol=1e-6 * np.abs(value).max())
                and np.allclose(scaled, ratio * truth, rtol=1e-5, atol=1e-6 * np.abs(value).max())):
            return "wrong", "value"
        ratios.append((point.N, point.spec.sizes[-1], ratio))
    if not ratios:
        return "correct", ""
    for a, b, c in itertools.product((-1, 0, 1), repeat=3):
        if all(np.isclose(r, 2.0 ** a * N ** b * k ** c, rtol=1e-6) for N, k, r in ratios):
            return "wrong", "convention"
    return "wrong", "value"


def _numpy_meaning(claim: str) -> str:
    return re.sub(r"dL/d(\w+)", r"d\1", claim.split("=", 1)[1])


# Specs the corpus does not hold as files: Nielsen's cost in his own column layout, with and without his L2,
# and CS231n's two-layer net with its ReLU'(0) = 0 (dhidden[hidden <= 0] = 0).
def _nielsen(l2):
    spec = {"layout": "column", "input": {"size": 3}, "layers": [{"size": 4, "activation": "sigmoid"},
                                                                   {"size": 2, "activation": "sigmoid"}],
            "loss": {"kind": "squared_error", "reduction": "batch_mean", "scale": 0.5}}
    if l2:
        spec["regularization"] = {"l2": l2, "l2_scale": "batch_mean"}
    return load_spec(spec)


SPEC_VARIANTS = {"nielsen_column": lambda: _nielsen(0), "nielsen_column_l2": lambda: _nielsen(0.5)}


# -- the claims ----------------------------------------------------------------------------------------------
# (spec, claim, the quantity it differentiates, its NumPy meaning or None for the claim's own right side,
#  words the checker's reason must contain when the claim is wrong, or None)

BN_ROWWISE = ("row_repeat((var2 + eps)**-0.5 / N, N) * ((N * np.eye(N) - np.ones((N, N))) @ dxhat2 "
              "- xhat2 * row_repeat(diag(xhat2.T @ dxhat2).T, N))")
WESSELINK = [
    # Linear layer, rowwise: DW = DY^T X, Db = columns_sum(DY), DX = DY W (their W is K x D, ours D x K).
    ("batchnorm_after_dense", "dW3 = (dZ3.T @ a2).T", "W3", None, None),
    ("batchnorm_after_dense", "dW3 = dZ3.T @ a2", "W3", None, None),
    ("batchnorm_after_dense", "db3 = columns_sum(dZ3)", "b3", None, None),
    ("batchnorm_after_dense", "dL/da2 = dL/dZ3 @ W3.T", "a2", None, None),
    ("batchnorm_after_dense", (r"\frac{\partial L}{\partial W^{[3]}} = \left(\frac{\partial L}{\partial Z^{[3]}}^\top "
     r"a^{[2]}\right)^\top"), "W3", "(dZ3.T @ a2).T", None),
    # Linear layer, colwise: DW = DY X^T, Db = rows_sum(DY), DX = W^T DY.
    ("batchnorm_after_dense_column", "dW3 = dZ3 @ a2.T", "W3", None, None),
    ("batchnorm_after_dense_column", "db3 = rows_sum(dZ3)", "b3", None, None),
    ("batchnorm_after_dense_column", (r"\frac{\partial L}{\partial b^{[3]}} = \operatorname{rowsum}"
     r"\left(\frac{\partial L}{\partial Z^{[3]}}\right)"), "b3", "rows_sum(dZ3)", None),
    ("batchnorm_after_dense_column", "dL/da2 = W3.T @ dL/dZ3", "a2", None, None),
    # Batch norm, rowwise: DZ = (1_N gamma) . DY, Dbeta = 1^T DY, Dgamma = 1^T (Z . DY), and the compact DX.
    ("batchnorm_after_dense", "dxhat2 = row_repeat(gamma2, N) * da2", "xhat2", None, None),
    ("batchnorm_after_dense", "dbeta2 = columns_sum(da2)", "beta2", None, None),
    ("batchnorm_after_dense", "dgamma2 = columns_sum(xhat2 * da2)", "gamma2", None, None),
    ("batchnorm_after_dense", "da1 = " + BN_ROWWISE, "a1", None, None),
    ("batchnorm_after_dense", ("dL/da1 = rstd2 / N * ((N * np.identity(N) - ones(N) @ ones(N).T) @ dL/dxhat2 "
     "- xhat2 * np.diag(xhat2.T @ dL/dxhat2))"), "a1", None, None),
    ("batchnorm_after_dense", (r"\frac{\partial L}{\partial a^{[1]}} = \frac{1}{N} \left(\mathbf{1}_N "
     r"(\sigma^{2[2]} + \epsilon)^{-1/2}\right) \odot \left((N I_N - \mathbf{1}_N \mathbf{1}_N^\top) "
     r"\frac{\partial L}{\partial \hat{X}^{[2]}} - \hat{X}^{[2]} \odot \left(\mathbf{1}_N \operatorname{diag}"
     r"\left(\hat{X}^{[2]\top} \frac{\partial L}{\partial \hat{X}^{[2]}}\right)^\top\right)\right)"), "a1",
     BN_ROWWISE, None),
    ("batchnorm_after_dense", (r"\frac{\partial L}{\partial \hat{X}^{[2]}} = (\mathbf{1}_N \gamma^{[2]}) \odot "
     r"\frac{\partial L}{\partial a^{[2]}}"), "xhat2", "row_repeat(gamma2, N) * da2", None),
    ("batchnorm_after_dense", (r"\frac{\partial L}{\partial \gamma^{[2]}} = \mathbf{1}_N^\top (\hat{X}^{[2]} \odot "
     r"\frac{\partial L}{\partial a^{[2]}})"), "gamma2", "columns_sum(xhat2 * da2)", None),
    # ... its typical mistakes: the mean and variance treated as constants, the count of the other axis.
    ("batchnorm_after_dense", "da1 = dxhat2 * (var2 + eps)**-0.5", "a1", None, "mu2 (the mean) and var2"),
    ("batchnorm_after_dense", (r"\frac{\partial L}{\partial a^{[1]}} = \frac{\partial L}{\partial \hat{x}} "
     r"\oslash \sqrt{\sigma_B^2 + \varepsilon}"), "a1", "dxhat2 / np.sqrt(var2 + eps)", "as constants"),
    ("batchnorm_after_dense", ("da1 = 1/n_1 * rstd2 * (n_1 * dxhat2 - np.sum(dxhat2, axis=0) "
     "- xhat2 * np.sum(dxhat2 * xhat2, axis=0))"), "a1", None, "N in place of n_1"),
    # Batch norm, colwise: DX = (1/N) Sigma^(-1/2) 1^T . (Z . (-diag(DZ Z^T) 1^T) + DZ (N I - 1 1^T)).
    ("batchnorm_after_dense_column", "dxhat2 = column_repeat(gamma2, N) * da2", "xhat2", None, None),
    ("batchnorm_after_dense_column", "dbeta2 = rows_sum(da2)", "beta2", None, None),
    ("batchnorm_after_dense_column", "dgamma2 = rows_sum(da2 * xhat2)", "gamma2", None, None),
    ("batchnorm_after_dense_column", ("da1 = column_repeat(rstd2 / N, N) * (xhat2 * column_repeat(-diag(dxhat2 "
     "@ xhat2.T), N) + dxhat2 @ (N * np.eye(N) - np.ones((N, N))))"), "a1", None, None),
    ("batchnorm_after_dense_column", (r"\frac{\partial L}{\partial a^{[1]}} = \frac{1}{N} \operatorname{Diag}"
     r"(\Sigma^{[2]} + \epsilon)^{-1/2} \left(-\operatorname{Diag}(\operatorname{diag}(\frac{\partial L}"
     r"{\partial \hat{X}^{[2]}} \hat{X}^{[2]\top})) \hat{X}^{[2]} + \frac{\partial L}{\partial \hat{X}^{[2]}} "
     r"(N I_N - \mathbf{1}_N \mathbf{1}_N^\top)\right)"), "a1",
     ("np.diag(np.ravel(var2 + eps) ** -0.5) @ (-np.diag(np.diag(dxhat2 @ xhat2.T)) @ xhat2 + dxhat2 @ "
     "(N * np.eye(N) - np.ones((N, N)))) / N"), None),
    # The same layer in the courses' staged form (CS231n), and the compact form with (var + eps)^(-1).
    ("linear_batchnorm_relu", "dvar2 = np.sum(dxhat2 * xc2, axis=0) * -0.5 * (var2 + eps)**-1.5", "var2", None, None),
    ("linear_batchnorm_relu", ("dmu2 = np.sum(-dxhat2 / np.sqrt(var2 + eps), axis=0) + dvar2 * np.mean(-2 * xc2, "
     "axis=0)"), "mu2", None, None),
    ("linear_batchnorm_relu", "da1 = dxhat2 / np.sqrt(var2 + eps) + dvar2 * 2 * xc2 / N + dmu2 / N", "a1", None,
     None),
    ("linear_batchnorm_relu", ("da1 = (1. / N) * gamma2 * (var2 + eps)**(-1. / 2.) * (N * da2 - np.sum(da2, "
     "axis=0) - (a1 - mu2) * (var2 + eps)**(-1.0) * np.sum(da2 * (a1 - mu2), axis=0))"), "a1", None, None),
    ("linear_batchnorm_relu", "dW1 = X.T @ da1", "W1", None, None),
    ("linear_batchnorm_relu_column", ("da1 = column_repeat(rstd2 / N, N) * (N * dxhat2 - rows_sum(dxhat2) "
     "@ np.ones((1, N)) - xhat2 * (rows_sum(dxhat2 * xhat2) @ np.ones((1, N))))"), "a1", None, None),
    # Softmax layer: DZ = Y . (DY - diag(DY Y^T) 1^T) rowwise, Y . (DY - 1 diag(Y^T DY)^T) colwise.
    ("softmax_layer_cross_entropy", "da2 = Y_pred * (dY_pred - column_repeat(diag(dY_pred @ Y_pred.T), n_2))",
     "a2", None, None),
    ("softmax_layer_cross_entropy", (r"\frac{\partial L}{\partial a^{[2]}} = Y_{pred} \odot \left("
     r"\frac{\partial L}{\partial Y_{pred}} - \operatorname{diag}\left(\frac{\partial L}{\partial Y_{pred}} "
     r"Y_{pred}^\top\right) \mathbf{1}_{n_2}^\top\right)"), "a2",
     "Y_pred * (dY_pred - column_repeat(diag(dY_pred @ Y_pred.T), n_2))", None),
    ("softmax_layer_cross_entropy", "da2 = dY_pred * Y_pred * (1 - Y_pred)", "a2", None, "entry by entry"),
    ("softmax_layer_column", "da1 = Y_pred * (dY_pred - row_repeat(diag(Y_pred.T @ dY_pred).T, n_1))", "a1",
     None, None),
    ("softmax_layer_column", "dL/da1 = (Y_pred - Y)", "a1", None, None),
    # Log-softmax layer: DZ = DY - softmax(Z) . (rows_sum(DY) 1^T) rowwise, (1 columns_sum(DY)) colwise.
    ("log_softmax_nll", "da2 = dY_pred - softmax(a2) * column_repeat(rows_sum(dY_pred), n_2)", "a2", None, None),
    ("log_softmax_nll", (r"\frac{\partial L}{\partial a^{[2]}} = \frac{\partial L}{\partial Y_{pred}} - "
     r"\operatorname{softmax}(a^{[2]}) \odot \operatorname{rows\_sum}\left(\frac{\partial L}{\partial Y_{pred}}"
     r"\right) \mathbf{1}_{n_2}^\top"), "a2", "dY_pred - softmax(a2) * column_repeat(rows_sum(dY_pred), n_2)", None),
    ("log_softmax_nll", "da2 = dY_pred * (1 - softmax(a2))", "a2", None, "entry by entry"),
    ("log_softmax_nll_column", "da1 = dY_pred - softmax(a1) * row_repeat(columns_sum(dY_pred), n_1)", "a1", None,
     None),
    ("log_softmax_nll_column", "da1 = softmax(a1) - Y", "a1", None, None),
    # Dropout (inverted, the mask M given): DX = DY . M / (1 - p); and without the 1/(1 - p).
    ("dropout_hidden", "da1 = da2 * M2 / (1 - p)", "a1", None, None),
    ("dropout_hidden", "dA1 = dA2 * D2 / keep_prob", "a1", "dA2 * M2 / keep_prob", None),
    ("dropout_hidden", (r"\frac{\partial L}{\partial a^{[1]}} = \frac{1}{1 - p} \frac{\partial L}{\partial a^{[2]}}"
     r" \odot M^{[2]}"), "a1", "da2 * M2 / (1 - p)", None),
    ("dropout_hidden", "da1 = da2 * M2", "a1", None, "1/(1 - p) = 2 of layer 2"),
    ("dropout_column", "da3 = da4 * M4 / (1 - p4)", "a3", None, None),
    ("dropout_column", "da1 = da2 * M2", "a1", None, "1/(1 - p) = 5/4 of layer 2"),
    # Layer norm: the same compact form with the statistics over each sample's n_1 features.
    ("layernorm_after_dense", ("da1 = rstd2 / n_1 * (n_1 * dxhat2 - np.sum(dxhat2, axis=1, keepdims=True) "
     "- xhat2 * np.sum(dxhat2 * xhat2, axis=1, keepdims=True))"), "a1", None, None),
    ("layernorm_after_dense", ("da1 = column_repeat(rstd2 / n_1, n_1) * (dxhat2 @ (n_1 * np.eye(n_1) - "
     "np.ones((n_1, n_1))) - xhat2 * column_repeat(diag(dxhat2 @ xhat2.T), n_1))"), "a1", None, None),
    ("layernorm_after_dense", ("da1 = rstd2 / N * (N * dxhat2 - np.sum(dxhat2, axis=0) "
     "- xhat2 * np.sum(dxhat2 * xhat2, axis=0))"), "a1", None, "other axis"),
    ("layernorm_after_dense", ("da1 = rstd2 / N * (N * dxhat2 - np.sum(dxhat2, axis=1, keepdims=True) "
     "- xhat2 * np.sum(dxhat2 * xhat2, axis=1, keepdims=True))"), "a1", None, "n_1 in place of N"),
    ("layernorm_column", ("da1 = rstd2 / n_1 * (n_1 * dxhat2 - np.sum(dxhat2, axis=0, keepdims=True) "
     "- xhat2 * np.sum(dxhat2 * xhat2, axis=0, keepdims=True))"), "a1", None, None),
    # PReLU's slope: dalpha = 1^T (DY . min(0, Z)).
    ("prelu_hidden", "dalpha1 = np.sum(dA1 * np.minimum(Z1, 0), axis=0, keepdims=True)", "alpha1", None, None),
    ("prelu_hidden", "dZ1 = dA1 * np.where(Z1 > 0, 1, alpha1)", "Z1", None, None),
]

SVM_GRADIENT = ("((1 - Y) * (Y_pred - np.sum(Y_pred * Y, axis=1, keepdims=True) + 1 > 0) - Y * np.sum((1 - Y) * "
                "(Y_pred - np.sum(Y_pred * Y, axis=1, keepdims=True) + 1 > 0), axis=1, keepdims=True)) / N")
COURSES = [
    # Ng: sigmoid output, binary cross-entropy over m samples, L2 lambd/(2m) sum ||W||^2. His dAL carries no
    # 1/m (he puts it in dW and db); stated as the gradient of his cost, it has one.
    ("loss_ng_bce_l2_column", "dAL = -(np.divide(Y, AL) - np.divide(1 - Y, 1 - AL)) / m", "Y_pred", None, None),
    ("loss_ng_bce_l2_column", "dAL = -(np.divide(Y, AL) - np.divide(1 - Y, 1 - AL))", "Y_pred", None, "summed over the samples"),
    ("loss_ng_bce_l2_column", "dZ3 = dAL * AL * (1 - AL)", "Z3", None, None),
    ("loss_ng_bce_l2_column", "dZ3 = (AL - Y) / m", "Z3", None, None),
    ("loss_ng_bce_l2_column", "dW3 = 1/m * np.dot(AL - Y, A2.T) + lambd / m * W3", "W3", None, None),
    ("loss_ng_bce_l2_column", "dW3 = 1/m * np.dot(AL - Y, A2.T)", "W3", None, "L2 penalty"),
    ("loss_ng_bce_l2_column", "db3 = 1/m * np.sum(AL - Y, axis=1, keepdims=True)", "b3", None, None),
    ("loss_ng_bce_l2_column", "dA2 = np.dot(W3.T, dZ3)", "a2", None, None),
    ("loss_ng_bce_l2_column", "dW2 = np.dot(dZ2, A1.T) + lambd / m * W2", "W2", None, None),
    ("loss_ng_bce_l2_column", r"dW^{[1]} = dZ^{[1]} A^{[0]T} + \frac{\lambda}{m} W^{[1]}", "W1",
     "np.dot(dZ1, X.T) + lambd / m * W1", None),
    ("loss_ng_bce_l2", "dW2 = np.dot(A1.T, dZ2) + lambd / m * W2", "W2", None, None),
    ("loss_ng_bce_l2", "dAL = -(Y / AL - (1 - Y) / (1 - AL)) / m", "Y_pred", None, None),
    # Nielsen: C = 1/(2n) sum ||y - a||^2 (+ lambda/(2n) sum w^2), columns are samples.
    ("nielsen_column", r"\delta^L = \frac{1}{n} (a^L - y) \odot \sigma'(z^L)", "Z2",
     "(A2 - Y) / n * sigmoid_prime(Z2)", None),
    ("nielsen_column", r"\nabla_a C = \frac{1}{n} (a^L - y)", "Y_pred", "(A2 - Y) / n", None),
    ("nielsen_column", r"\frac{\partial C}{\partial w^2} = \delta^2 (a^1)^T", "W2", "np.dot(dZ2, A1.T)", None),
    ("nielsen_column", r"\frac{\partial C}{\partial b^2} = \delta^2 \mathbf{1}_n", "b2", "dZ2 @ np.ones((n, 1))",
     None),
    ("nielsen_column", "delta1 = np.dot(W2.transpose(), delta2) * sigmoid_prime(Z1)", "Z1", None, None),
    ("nielsen_column_l2", r"\frac{\partial C}{\partial w^2} = \delta^2 (a^1)^T + \frac{\lambda}{n} w^2", "W2",
     "np.dot(dZ2, A1.T) + lmbda / n * W2", None),
    ("nielsen_column_l2", "dW1 = np.dot(delta1, X.transpose()) + lmbda / n * W1", "W1", None, None),
    ("nielsen_column_l2", r"\frac{\partial C}{\partial b^1} = \delta^1 \mathbf{1}_n", "b1", "dZ1 @ np.ones((n, 1))",
     None),
    ("loss_nielsen_quadratic_l2", "dW2 = np.dot(A1.T, delta2) + lmbda / n * W2", "W2", None, None),
    ("loss_nielsen_quadratic_l2", "delta2 = (A2 - Y) / n * sigmoid_prime(Z2)", "Z2", None, None),
    # CS231n: softmax loss and the multiclass SVM, both averaged over N, with 0.5 * reg * sum W^2 (dW += reg * W).
    ("loss_cs231n_softmax_l2", "dL/dY_pred = (np.exp(Y_pred) / np.sum(np.exp(Y_pred), axis=1, keepdims=True) - Y) / N",
     "Y_pred", None, None),
    ("loss_cs231n_softmax_l2", "dW2 = np.dot(A1.T, dZ2) + reg * W2", "W2", None, None),
    ("loss_cs231n_softmax_l2", "dW2 = np.dot(A1.T, dZ2) + 2 * reg * W2", "W2", None, None),
    ("loss_cs231n_softmax_l2", "db2 = np.sum(dZ2, axis=0, keepdims=True)", "b2", None, None),
    ("loss_cs231n_softmax_l2", "dW1 = np.dot(X.T, dZ1) + reg * W1", "W1", None, None),
    ("loss_cs231n_softmax_l2", "dW1 = np.dot(X.T, dZ1)", "W1", None, "L2 penalty"),
    ("loss_cs231n_svm_l2", "dL/dY_pred = " + SVM_GRADIENT, "Y_pred", None, None),
    ("loss_cs231n_svm_l2", "dW1 = X.T.dot(" + SVM_GRADIENT + ") + reg * W1", "W1", None, None),
    ("loss_cs231n_svm_l2", ("dW1 = X.T.dot((Y_pred - np.sum(Y_pred * Y, axis=1, keepdims=True) + 1 > 0) / N) "
     "+ reg * W1"), "W1", None, None),
]
CLAIMS = WESSELINK + COURSES


@pytest.fixture(scope="module")
def checkers():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = Checker(SPEC_VARIANTS[name]() if name in SPEC_VARIANTS else SPECS.format(name))
        return cache[name]
    return get


@pytest.mark.parametrize("spec, claim, target, meaning, reason", CLAIMS, ids=[c[1][:70] for c in CLAIMS])
def test_claim_gets_the_oracles_verdict(checkers, spec, claim, target, meaning, reason):
    checker = checkers(spec)
    assert checker.parse(claim).wrt == target
    verdict = checker.check(claim)
    expected = oracle(spec, meaning or _numpy_meaning(claim), target)
    assert (verdict.verdict, verdict.reason) == expected, verdict.text()
    if reason:
        assert reason in verdict.detail, verdict.text()


def test_the_paper_and_the_courses_are_covered():
    verdicts = {(spec, oracle(spec, meaning or _numpy_meaning(claim), target)) for spec, claim, target, meaning, _ in
                CLAIMS}
    right = {spec for spec, verdict in verdicts if verdict == ("correct", "")}
    assert {"batchnorm_after_dense", "batchnorm_after_dense_column", "softmax_layer_cross_entropy",
            "softmax_layer_column", "log_softmax_nll", "log_softmax_nll_column", "dropout_hidden",
            "layernorm_after_dense", "loss_ng_bce_l2_column", "nielsen_column", "nielsen_column_l2",
            "loss_cs231n_softmax_l2", "loss_cs231n_svm_l2"} <= right
    assert sum(1 for *_, reason in CLAIMS if reason) >= 10
