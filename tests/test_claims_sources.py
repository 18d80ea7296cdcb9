"""Claims copied from five sources (Ng's course, CS231n, Nielsen's book, d2l, Goodfellow et al.), in their
notation and in ours, each judged against an oracle that shares nothing with the package.

The oracle runs its own NumPy forward pass and takes every gradient by central finite differences; the
claim's meaning is a NumPy expression written by hand for the test (for NumPy-like claims, the claim's right
side itself, evaluated by Python). Its verdict: ``shape`` when NumPy cannot evaluate the expression or gets
another shape; ``correct`` when the values agree at two random points (with two batch sizes); ``convention``
when the claim is a constant multiple of the gradient that a loss scaling (2^a N^b k^c) explains, also with
its upstream gradients rescaled; otherwise ``value``. The checker must reach the same verdict.
"""

import itertools

import numpy as np
import pytest

from symbackprop.claims import Checker

H = 1e-5  # finite-difference step

SPECS = {
    # Ng, Course 1 week 3: tanh hidden layer, sigmoid output with cross-entropy (as logits here), column layout.
    "ng": {"layout": "column", "input": {"size": 2}, "loss": {"kind": "bce_logits"},
           "layers": [{"size": 4, "activation": "tanh"}, {"size": 1, "activation": "identity"}]},
    # Ng, Course 1 week 4: relu_backward (dZ[Z <= 0] = 0, so ReLU'(0) = 0) and sigmoid_backward.
    "ng_deep": {"layout": "column", "input": {"size": 2}, "loss": {"kind": "bce_logits"},
                "layers": [{"size": 3, "activation": "relu", "relu_grad_at_zero": 0},
                           {"size": 4, "activation": "sigmoid"}, {"size": 1, "activation": "identity"}]},
    # CS231n's two-layer net: rows are samples, ReLU (dhidden[hidden <= 0] = 0), softmax cross-entropy.
    "cs231n": {"input": {"size": 2}, "loss": {"kind": "softmax_cross_entropy"},
               "layers": [{"size": 4, "activation": "relu", "relu_grad_at_zero": 0},
                          {"size": 3, "activation": "identity"}]},
    # Nielsen, chapter 2: sigmoid layers, quadratic cost, columns are samples.
    "nielsen": {"layout": "column", "input": {"size": 3}, "loss": {"kind": "half_sse"},
                "layers": [{"size": 4, "activation": "sigmoid"}, {"size": 2, "activation": "sigmoid"}]},
    # d2l 5.3 (column vectors, phi a tanh here), with a mean squared error.
    "d2l": {"layout": "column", "input": {"size": 3}, "loss": {"kind": "mse"},
            "layers": [{"size": 4, "activation": "tanh"}, {"size": 2, "activation": "identity"}]},
    # Goodfellow et al., algorithm 6.4 (f a tanh here), squared error.
    "goodfellow": {"layout": "column", "input": {"size": 3}, "loss": {"kind": "half_sse"},
                   "layers": [{"size": 4, "activation": "tanh"}, {"size": 2, "activation": "identity"}]},
}

# (source, spec, claim, the quantity it differentiates, its meaning in NumPy or None for the claim's own
# right side). Names in the oracle: X, W1, b1, Z1, A1, ..., Y (targets), N = m, and the gradients dX, dW1,
# db1, dZ1, dA1, ... (dA<L> is the gradient of the prediction).
CORPUS = [
    ("ng", "ng", "dZ2 = sigmoid(Z2) - Y", "Z2", None),
    ("ng", "ng", "dL/dZ2 = (sigmoid(Z2) - Y) / m", "Z2", None),
    ("ng", "ng", "dZ2 = 1 / (1 + np.exp(-Z2)) - Y", "Z2", None),
    ("ng", "ng", "dW2 = np.dot(dZ2, A1.T)", "W2", None),
    ("ng", "ng", "dW2 = 1/m * np.dot(dZ2, A1.T)", "W2", None),
    ("ng", "ng", "db2 = np.sum(dZ2, axis=1, keepdims=True)", "b2", None),
    ("ng", "ng", "db2 = 1 / m * np.sum(dZ2, axis=1, keepdims=True)", "b2", None),
    ("ng", "ng", "dZ1 = np.multiply(np.dot(W2.T, dZ2), 1 - np.power(A1, 2))", "Z1", None),
    ("ng", "ng", "dZ1 = np.dot(W2.T, dZ2) * (1 - np.tanh(Z1) ** 2)", "Z1", None),
    ("ng", "ng", "dZ1 = np.dot(W2.T, dZ2) * (1 - A1)", "Z1", None),
    ("ng", "ng", "dZ1 = np.dot(dZ2, W2.T) * (1 - np.power(A1, 2))", "Z1", None),
    ("ng", "ng", "dW1 = np.dot(dZ1, X.T)", "W1", None),
    ("ng", "ng", "dW1 = np.dot(X.T, dZ1)", "W1", None),
    ("ng", "ng", "db1 = np.sum(dZ1, axis=1, keepdims=True)", "b1", None),
    ("ng", "ng", "db1 = np.sum(dZ1, axis=0, keepdims=True)", "b1", None),
    ("ng", "ng", r"dZ^{[1]} = W^{[2]T} dZ^{[2]} * g^{[1]\prime}(Z^{[1]})", "Z1",
     "np.dot(W2.T, dZ2) * (1 - np.tanh(Z1) ** 2)"),
    ("ng", "ng", r"dW^{[1]} = \frac{1}{m} dZ^{[1]} X^T", "W1", "np.dot(dZ1, X.T) / m"),
    ("ng", "ng", r"db^{[2]} = \frac{1}{m} \sum_{i=1}^{m} dZ^{[2](i)}", "b2", "np.sum(dZ2, axis=1, keepdims=True) / m"),
    ("ng", "ng_deep", "dZ1 = dA1 * (Z1 > 0)", "Z1", None),
    ("ng", "ng_deep", "dZ2 = dA2 * (1 / (1 + np.exp(-Z2))) * (1 - 1 / (1 + np.exp(-Z2)))", "Z2", None),
    ("ng", "ng_deep", "dZ2 = dA2 * A2 * (1 - A2)", "Z2", None),
    ("ng", "ng_deep", "dZ2 = dA2 * A2 * (1 - A2) / m", "Z2", None),
    ("ng", "ng_deep", "dA1 = np.dot(W2.T, dZ2)", "a1", None),
    ("cs231n", "cs231n", "dL/dY_pred = (softmax(Y_pred) - Y) / N", "Y_pred", "(softmax(A2) - Y) / N"),
    ("cs231n", "cs231n", "dL/dY_pred = softmax(Y_pred) - Y", "Y_pred", "softmax(A2) - Y"),
    ("cs231n", "cs231n", "dL/dY_pred = (np.exp(Y_pred) / np.sum(np.exp(Y_pred), axis=1, keepdims=True) - Y) / N",
     "Y_pred", "(np.exp(A2) / np.sum(np.exp(A2), axis=1, keepdims=True) - Y) / N"),
    ("cs231n", "cs231n", "dL/dY_pred = (softmax(Y_pred, axis=0) - Y) / N", "Y_pred", "(softmax(A2, 0) - Y) / N"),
    ("cs231n", "cs231n", "dW2 = np.dot(A1.T, dZ2)", "W2", None),
    ("cs231n", "cs231n", "dW2 = np.dot(dZ2.T, A1)", "W2", None),
    ("cs231n", "cs231n", "db2 = np.sum(dZ2, axis=0, keepdims=True)", "b2", None),
    ("cs231n", "cs231n", "db2 = np.sum(dZ2, axis=0)", "b2", None),
    ("cs231n", "cs231n", "db2 = np.sum(dZ2, axis=1, keepdims=True)", "b2", None),
    ("cs231n", "cs231n", "dA1 = np.dot(dZ2, W2.T)", "a1", None),
    ("cs231n", "cs231n", "dZ1 = np.where(Z1 > 0, dA1, 0)", "Z1", None),
    ("cs231n", "cs231n", "dZ1 = dA1 * (A1 > 0)", "Z1", None),
    ("cs231n", "cs231n", "dW1 = np.dot(X.T, dZ1)", "W1", None),
    ("cs231n", "cs231n", "dW1 = X.T.dot(dZ1)", "W1", None),
    ("cs231n", "cs231n", "dW1 = np.dot(X, dZ1)", "W1", None),
    ("cs231n", "cs231n", "dW1 = np.dot(X.T, dA1)", "W1", None),
    ("cs231n", "cs231n", "dX = np.dot(dZ1, W1.T)", "X", None),
    ("nielsen", "nielsen", r"\delta^L = \nabla_a C \odot \sigma'(z^L)", "Z2", "dA2 * sigmoid(Z2) * (1 - sigmoid(Z2))"),
    ("nielsen", "nielsen", r"\delta^L = (a^L - y) \odot \sigma'(z^L)", "Z2", "(A2 - Y) * sigmoid(Z2) * (1 - sigmoid(Z2))"),
    ("nielsen", "nielsen", r"\delta^1 = ((w^{2})^T \delta^{2}) \odot \sigma'(z^1)", "Z1",
     "np.dot(W2.T, dZ2) * sigmoid(Z1) * (1 - sigmoid(Z1))"),
    ("nielsen", "nielsen", r"\delta^1 = (w^2 \delta^2) \odot \sigma'(z^1)", "Z1",
     "np.dot(W2, dZ2) * sigmoid(Z1) * (1 - sigmoid(Z1))"),
    ("nielsen", "nielsen", r"\frac{\partial C}{\partial b^2} = \delta^2", "b2", "dZ2"),
    ("nielsen", "nielsen", r"\frac{\partial C}{\partial w^2} = \delta^2 (a^1)^T", "W2", "np.dot(dZ2, A1.T)"),
    ("nielsen", "nielsen", r"\frac{\partial C}{\partial w^2} = a^1 \delta^2", "W2", "np.dot(A1, dZ2)"),
    ("nielsen", "nielsen", "delta2 = (A2 - Y) * sigmoid_prime(Z2)", "Z2", "(A2 - Y) * sigmoid(Z2) * (1 - sigmoid(Z2))"),
    ("nielsen", "nielsen", "delta2 = A2 - Y", "Z2", None),
    ("nielsen", "nielsen", "dW1 = np.dot(delta1, X.transpose())", "W1", "np.dot(dZ1, X.T)"),
    ("nielsen", "nielsen", "delta1 = np.dot(W2.transpose(), delta2) * A1 * (1 - A1)", "Z1",
     "np.dot(W2.T, dZ2) * A1 * (1 - A1)"),
    ("d2l", "d2l", (r"\frac{\partial J}{\partial \mathbf{W}^{(2)}} = \frac{\partial J}{\partial \mathbf{z}^{(2)}} "
     r"\mathbf{h}^{(1)\top}"), "W2", "np.dot(dZ2, A1.T)"),
    ("d2l", "d2l", (r"\frac{\partial J}{\partial \mathbf{h}^{(1)}} = \mathbf{W}^{(2)\top} "
     r"\frac{\partial J}{\partial \mathbf{z}^{(2)}}"), "a1", "np.dot(W2.T, dZ2)"),
    ("d2l", "d2l", (r"\frac{\partial J}{\partial \mathbf{z}^{(1)}} = \frac{\partial J}{\partial \mathbf{h}^{(1)}} "
     r"\odot \phi'(\mathbf{z}^{(1)})"), "Z1", "dA1 * (1 - np.tanh(Z1) ** 2)"),
    ("d2l", "d2l", (r"\frac{\partial J}{\partial \mathbf{z}^{(1)}} = \frac{\partial J}{\partial \mathbf{h}^{(1)}} "
     r"\odot (1 - \tanh^2(\mathbf{z}^{(1)}))"), "Z1", "dA1 * (1 - np.tanh(Z1) ** 2)"),
    ("d2l", "d2l", (r"\frac{\partial J}{\partial \mathbf{W}^{(1)}} = \frac{\partial J}{\partial \mathbf{z}^{(1)}} "
     r"\mathbf{x}^\top"), "W1", "np.dot(dZ1, X.T)"),
    ("d2l", "d2l", (r"\frac{\partial J}{\partial \mathbf{W}^{(1)}} = \mathbf{x}^\top "
     r"\frac{\partial J}{\partial \mathbf{z}^{(1)}}"), "W1", "np.dot(X.T, dZ1)"),
    ("d2l", "d2l", r"\frac{\partial J}{\partial \mathbf{z}^{(2)}} = \mathbf{z}^{(2)} - \mathbf{y}", "Z2", "Z2 - Y"),
    ("d2l", "d2l", r"\frac{\partial J}{\partial \mathbf{z}^{(2)}} = \frac{2}{N n_2} (\mathbf{z}^{(2)} - \mathbf{y})",
     "Z2", "2 / (N * 2) * (Z2 - Y)"),
    ("goodfellow", "goodfellow", r"\nabla_{\hat{y}} J = \hat{y} - y", "Y_pred", "A2 - Y"),
    ("goodfellow", "goodfellow", r"\nabla_{\hat{y}} J = 2 (\hat{y} - y)", "Y_pred", "2 * (A2 - Y)"),
    ("goodfellow", "goodfellow", r"\nabla_{z^{(2)}} J = \nabla_{\hat{y}} J \odot f'(z^{(2)})", "Z2", "dA2"),
    ("goodfellow", "goodfellow", r"\nabla_{W^{(2)}} J = \nabla_{z^{(2)}} J \, h^{(1)\top}", "W2", "np.dot(dZ2, A1.T)"),
    ("goodfellow", "goodfellow", r"\nabla_{b^{(2)}} J = \nabla_{z^{(2)}} J", "b2", "dZ2"),
    ("goodfellow", "goodfellow", r"\nabla_{h^{(1)}} J = W^{(2)\top} \nabla_{z^{(2)}} J", "a1", "np.dot(W2.T, dZ2)"),
    ("goodfellow", "goodfellow", r"\nabla_{h^{(1)}} J = W^{(2)} \nabla_{z^{(2)}} J", "a1", "np.dot(W2, dZ2)"),
    ("goodfellow", "goodfellow", r"\nabla_{z^{(1)}} J = \nabla_{h^{(1)}} J \odot (1 - h^{(1)} \odot h^{(1)})", "Z1",
     "dA1 * (1 - A1 * A1)"),
    ("goodfellow", "goodfellow", r"\nabla_{W^{(1)}} J = \nabla_{z^{(1)}} J \, x^\top", "W1", "np.dot(dZ1, X.T)"),
    ("goodfellow", "goodfellow", r"\nabla_{W^{(1)}} J = 2 \nabla_{z^{(1)}} J \, x^\top", "W1", "2 * np.dot(dZ1, X.T)"),
]


# -- the oracle: an independent forward pass and central finite differences ----------------------------------

def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def _softmax(M, axis=1):
    e = np.exp(M - M.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


ACTIVATIONS = {"tanh": np.tanh, "sigmoid": _sigmoid, "relu": lambda z: np.maximum(z, 0), "identity": lambda z: z}


def _loss(kind, Y_pred, Y, column):
    if column:
        Y_pred, Y = Y_pred.T, Y.T
    if kind == "half_sse":
        return 0.5 * np.sum((Y_pred - Y) ** 2)
    if kind == "mse":
        return np.mean((Y_pred - Y) ** 2)
    if kind == "bce_logits":
        return np.mean(np.logaddexp(0, Y_pred) - Y * Y_pred)
    if kind == "softmax_cross_entropy":
        return -np.sum(Y * np.log(_softmax(Y_pred))) / len(Y)
    raise AssertionError(kind)


def _forward(spec, values, override=None):
    """Every quantity of the spec's network (``A<l>``: layer outputs), with ``override`` replacing some."""
    column = spec.get("layout") == "column"
    values = {**values, **(override or {})}
    A = values["X"]
    for l, layer in enumerate(spec["layers"], start=1):
        W, b = values[f"W{l}"], values[f"b{l}"]
        Z = (W @ A + b) if column else (A @ W + b)
        Z = values[f"Z{l}"] = override.get(f"Z{l}", Z) if override else Z
        A = ACTIVATIONS[layer["activation"]](Z)
        A = values[f"A{l}"] = override.get(f"A{l}", A) if override else A
    values["L"] = _loss(spec["loss"]["kind"], A, values["Y"], column)
    return values


def _point(spec, N, seed):
    """Random inputs and targets, the forward values and every gradient by central differences."""
    rng = np.random.default_rng(seed)
    column = spec.get("layout") == "column"
    widths = [spec["input"]["size"], *(layer["size"] for layer in spec["layers"])]
    shape = (lambda n: (n, N)) if column else (lambda n: (N, n))
    values = {"X": rng.standard_normal(shape(widths[0]))}
    for l in range(1, len(widths)):
        values[f"W{l}"] = rng.standard_normal((widths[l], widths[l - 1]) if column else (widths[l - 1], widths[l]))
        values[f"b{l}"] = rng.standard_normal((widths[l], 1) if column else (1, widths[l]))
    Y = rng.standard_normal(shape(widths[-1]))
    if spec["loss"]["kind"] == "softmax_cross_entropy":
        Y = _softmax(Y, axis=0 if column else 1)
    elif spec["loss"]["kind"] == "bce_logits":
        Y = rng.uniform(0, 1, Y.shape)
    values["Y"] = Y
    values = _forward(spec, values)
    gradients = {}
    for name in [n for n in values if n not in ("Y", "L")]:
        grad = np.zeros_like(values[name])
        for index in np.ndindex(grad.shape):
            moved = []
            for step in (H, -H):
                value = values[name].copy()
                value[index] += step
                inputs = name[0] in "XWb"
                moved.append(_forward(spec, {**values, name: value} if inputs else values,
                                      None if inputs else {name: value})["L"])
            grad[index] = (moved[0] - moved[1]) / (2 * H)
        gradients["d" + name] = grad
    return values, gradients


def _namespace(values, gradients, N, scale=1.0):
    names = {"np": np, "sigmoid": _sigmoid, "softmax": _softmax, "sigmoid_prime": lambda z: _sigmoid(z) * (1 - _sigmoid(z)),
             "N": N, "m": N, **values, **{k: v * scale for k, v in gradients.items()}}
    names.update({f"delta{k[2:]}": v for k, v in names.items() if k.startswith("dZ")})
    return names


_ORACLE_POINTS = {}


def _points(spec_name):
    if spec_name not in _ORACLE_POINTS:
        _ORACLE_POINTS[spec_name] = [(N, *_point(SPECS[spec_name], N, seed)) for N, seed in ((5, 0), (6, 1))]
    return _ORACLE_POINTS[spec_name]


def _oracle_value(expression, namespace, truth):
    """The expression's value shaped like ``truth``, or None where NumPy cannot make it that shape."""
    try:
        with np.errstate(all="ignore"):
            value = np.asarray(eval(expression, namespace), dtype=float)  # the test's own reading of NumPy
    except ValueError:
        return None
    if value.ndim == 1 and truth.shape == (1, value.size):
        value = value.reshape(truth.shape)
    if value.ndim == 0 and truth.shape == (1, 1):
        value = value.reshape(1, 1)
    return value if value.shape == truth.shape else None


def oracle(spec_name, expression, target):
    """(verdict, reason) for the claim whose meaning is ``expression``, about dL/d``target``."""
    spec = SPECS[spec_name]
    key = "d" + {"Y_pred": f"A{len(spec['layers'])}", "a1": "A1"}.get(target, target)
    k = spec["layers"][-1]["size"]
    ratios = []
    for N, values, gradients in _points(spec_name):
        truth = gradients[key]
        value = _oracle_value(expression, _namespace(values, gradients, N), truth)
        if value is None:
            return "wrong", "shape"
        if np.allclose(value, truth, rtol=1e-5, atol=1e-7 * np.abs(truth).max()):
            continue
        ratio = np.sum(value * truth) / np.sum(truth * truth)
        if not np.allclose(value, ratio * truth, rtol=1e-5, atol=1e-7 * np.abs(value).max()):
            return "wrong", "value"
        ratios.append((N, ratio))
        scaled = _oracle_value(expression, _namespace(values, gradients, N, scale=ratio), truth)
        if not np.allclose(scaled, ratio * truth, rtol=1e-5, atol=1e-7 * np.abs(scaled).max()):
            return "wrong", "value"
    if not ratios:
        return "correct", ""
    for a, b, c in itertools.product((-1, 0, 1), repeat=3):
        if all(np.isclose(r, 2.0 ** a * N ** b * k ** c, rtol=1e-6) for N, r in ratios):
            return "wrong", "convention"
    return "wrong", "value"


@pytest.fixture(scope="module")
def checkers():
    return {name: Checker(spec) for name, spec in SPECS.items()}


def test_the_corpus_is_large_and_mixed():
    assert len(CORPUS) >= 40
    assert {source for source, *_ in CORPUS} == {"ng", "cs231n", "nielsen", "d2l", "goodfellow"}
    verdicts = [oracle(spec, expression or claim.split("=", 1)[1], target)
                for _, spec, claim, target, expression in CORPUS]
    assert 0.3 < sum(v == ("correct", "") for v in verdicts) / len(verdicts) < 0.7
    assert {reason for _, reason in verdicts} == {"", "shape", "value", "convention"}


@pytest.mark.parametrize("source, spec, claim, target, expression", CORPUS, ids=[c[2][:60] for c in CORPUS])
def test_claim_from_a_course_gets_the_oracles_verdict(checkers, source, spec, claim, target, expression):
    checker = checkers[spec]
    parsed = checker.parse(claim)
    assert (parsed.of, parsed.wrt) == ("L", target)
    verdict = checker.check(claim)
    expected = oracle(spec, expression or claim.split("=", 1)[1], target)
    assert (verdict.verdict, verdict.reason) == expected, verdict.text()
    assert verdict.ok or verdict.expected
