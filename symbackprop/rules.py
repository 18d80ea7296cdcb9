"""The rule table: every activation and loss defined once.

Each entry carries its scalar SymPy forward expression, its derivative, its LaTeX name and its NumPy
snippets. Derivation, printing, code generation and verification all read these entries, so they cannot
drift apart; ``tests/test_rules.py`` checks every derivative against ``sympy.diff`` of its forward rule.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sympy as sp

from .expressions import Sigmoid, Softmax


@dataclass(frozen=True)
class ActivationRule:
    """One elementwise activation: forward, derivative and their printed forms.

    ``forward`` and ``derivative`` map a SymPy symbol and the parameter dict to scalar expressions.
    ``numpy_forward`` / ``numpy_derivative`` are expressions in ``z`` (and the parameters, formatted in)
    that the generated module and the float64 checks use; they must be stable for |z| ~ 1000 and keep the
    dtype of ``z`` when multiplied with an array of that dtype (float32 stays float32).
    ``numpy_derivative`` may be a function of the parameters returning the expression.
    ``numpy_derivative_from_output`` is the same derivative written in the output ``a = f(z)`` where that is
    exact (sigmoid: ``a (1 - a)``), so the generated backward pass reuses the cached activation.
    """

    name: str
    latex: str
    forward: Callable[[sp.Symbol, dict], sp.Expr]
    derivative: Callable[[sp.Symbol, dict], sp.Expr]
    numpy_forward: str
    numpy_derivative: str | Callable[[dict], str]
    numpy_derivative_from_output: str | None = None
    defaults: tuple[tuple[str, float], ...] = ()
    kinks: tuple[float, ...] = ()
    needs_erf: bool = False

    def parameters(self, given: dict | None = None) -> dict:
        """The parameters this activation takes, ``given`` values over the defaults."""
        given = given or {}
        return {key: default if given.get(key) is None else given[key] for key, default in self.defaults}

    def numpy(self, order: int, params: dict, z: str = "z") -> str:
        """The NumPy expression of the forward (order 0) or derivative (order 1) applied to ``z``."""
        template = self.numpy_forward if order == 0 else self.numpy_derivative
        if callable(template):
            template = template(params)
        return template.format(z=z, **{k: _py_number(v) for k, v in params.items()})

    def numpy_from_output(self, params: dict, a: str = "a") -> str | None:
        """The NumPy derivative written in the output ``a``, or None where the rule has no such form."""
        if self.numpy_derivative_from_output is None:
            return None
        return self.numpy_derivative_from_output.format(a=a, **{k: _py_number(v) for k, v in params.items()})


def _py_number(value: float) -> str:
    """A parameter as a Python literal that reads well (1 rather than 1.0 where exact)."""
    return repr(int(value)) if float(value).is_integer() else repr(float(value))


def _rational(value: float) -> sp.Rational:
    return sp.Rational(str(value))


def _sigmoid(z):
    return 1 / (1 + sp.exp(-z))


def _relu_derivative(z, p):
    at_zero = _rational(p["relu_grad_at_zero"])
    return sp.Piecewise((1, z > 0), (at_zero, sp.Eq(z, 0)), (0, True))


def _relu_numpy_derivative(p) -> str:
    # A boolean mask where the value at zero is 0 or 1: one pass, and it keeps the dtype it multiplies.
    if p["relu_grad_at_zero"] in (0, 1):
        return "({z} >= 0)" if p["relu_grad_at_zero"] == 1 else "({z} > 0)"
    return "np.where({z} > 0, 1.0, np.where({z} == 0, {relu_grad_at_zero}, 0.0)).astype({z}.dtype)"


_STABLE_SIGMOID = "np.exp(-np.logaddexp(0, -{z}))"

ACTIVATIONS: dict[str, ActivationRule] = {
    rule.name: rule
    for rule in (
        ActivationRule(
            "identity", r"\operatorname{id}",
            lambda z, p: z, lambda z, p: sp.Integer(1),
            "{z}", "np.ones_like({z})",
        ),
        ActivationRule(
            "relu", r"\operatorname{ReLU}",
            lambda z, p: sp.Max(0, z), _relu_derivative,
            "np.maximum({z}, 0)", _relu_numpy_derivative,
            defaults=(("relu_grad_at_zero", 1),), kinks=(0.0,),
        ),
        ActivationRule(
            "leaky_relu", r"\operatorname{LeakyReLU}",
            lambda z, p: sp.Piecewise((z, z > 0), (_rational(p["alpha"]) * z, True)),
            lambda z, p: sp.Piecewise((1, z > 0), (_rational(p["alpha"]), True)),
            "np.where({z} > 0, {z}, {alpha} * {z})", "np.where({z} > 0, 1.0, {alpha}).astype({z}.dtype)",
            numpy_derivative_from_output="np.where({a} > 0, 1.0, {alpha}).astype({a}.dtype)",  # alpha > 0
            defaults=(("alpha", 0.01),), kinks=(0.0,),
        ),
        ActivationRule(
            "sigmoid", r"\sigma",
            lambda z, p: _sigmoid(z), lambda z, p: _sigmoid(z) * (1 - _sigmoid(z)),
            _STABLE_SIGMOID, "(lambda s: s * (1 - s))(" + _STABLE_SIGMOID + ")",
            numpy_derivative_from_output="{a} * (1 - {a})",
        ),
        ActivationRule(
            "tanh", r"\tanh",
            lambda z, p: sp.tanh(z), lambda z, p: 1 - sp.tanh(z) ** 2,
            "np.tanh({z})", "1 - np.tanh({z}) ** 2",
            numpy_derivative_from_output="1 - {a} ** 2",
        ),
        ActivationRule(
            "softplus", r"\operatorname{softplus}",
            lambda z, p: sp.log(1 + sp.exp(z)), lambda z, p: _sigmoid(z),
            "np.logaddexp(0, {z})", _STABLE_SIGMOID,
        ),
        ActivationRule(
            "elu", r"\operatorname{ELU}",
            lambda z, p: sp.Piecewise((z, z > 0), (_rational(p["alpha"]) * (sp.exp(z) - 1), True)),
            lambda z, p: sp.Piecewise((1, z > 0), (_rational(p["alpha"]) * sp.exp(z), True)),
            "np.where({z} > 0, {z}, {alpha} * np.expm1(np.minimum({z}, 0)))",
            "np.where({z} > 0, 1.0, {alpha} * np.exp(np.minimum({z}, 0))).astype({z}.dtype)",
            numpy_derivative_from_output="np.where({a} > 0, 1.0, {a} + {alpha})",  # a > 0 exactly where z > 0
            defaults=(("alpha", 1.0),), kinks=(0.0,),
        ),
        ActivationRule(
            "gelu", r"\operatorname{GELU}",
            lambda z, p: z * (1 + sp.erf(z / sp.sqrt(2))) / 2,
            lambda z, p: (1 + sp.erf(z / sp.sqrt(2))) / 2 + z * sp.exp(-z**2 / 2) / sp.sqrt(2 * sp.pi),
            "0.5 * {z} * (1 + erf({z} / 2 ** 0.5))",
            "0.5 * (1 + erf({z} / 2 ** 0.5)) + {z} * np.exp(-0.5 * {z} ** 2) / (2 * np.pi) ** 0.5",
            needs_erf=True,
        ),
        ActivationRule(
            "silu", r"\operatorname{SiLU}",
            lambda z, p: z * _sigmoid(z), lambda z, p: _sigmoid(z) * (1 + z * (1 - _sigmoid(z))),
            "{z} * " + _STABLE_SIGMOID,
            "(lambda s: s * (1 + {z} * (1 - s)))(" + _STABLE_SIGMOID + ")",
        ),
    )
}


@dataclass(frozen=True)
class LossRule:
    """One loss: its scalar value on explicit matrices, its gradient and their printed forms.

    ``gradient(Y, T, N, k, axis)`` is dL/dY_pred as a SymPy matrix expression (k outputs, softmax
    along ``axis``). ``value(Y, T, m)`` builds the scalar loss from 2-D arrays of entries, with ``m`` a namespace
    providing ``exp`` and ``log`` (SymPy, symengine or NumPy), so the same definition is differentiated
    symbolically and evaluated numerically. ``reduction`` states exactly what is summed or averaged.
    ``targets_are_distributions``: the combined gradient needs every row of Y_true to sum to 1.
    """

    name: str
    latex: str
    reduction: str
    value: Callable
    gradient: Callable
    numpy_value: str
    min_outputs: int = 1
    targets_are_distributions: bool = False


def _sum(rows):
    return sum((entry for row in rows for entry in row), 0)


def _half_sse(Y, T, m):
    return _sum(((y - t) ** 2 for y, t in zip(yr, tr)) for yr, tr in zip(Y, T)) / 2


def _mse(Y, T, m):
    return _sum(((y - t) ** 2 for y, t in zip(yr, tr)) for yr, tr in zip(Y, T)) / (len(Y) * len(Y[0]))


def _bce_logits(Y, T, m):
    # softplus(y) - t*y == -(t log sigma(y) + (1 - t) log(1 - sigma(y)))
    terms = ((m.log(1 + m.exp(y)) - t * y for y, t in zip(yr, tr)) for yr, tr in zip(Y, T))
    return _sum(terms) / (len(Y) * len(Y[0]))


def _softmax_cross_entropy(Y, T, m):
    total = 0
    for yr, tr in zip(Y, T):
        log_norm = m.log(sum((m.exp(y) for y in yr), 0))
        total += sum((t * (y - log_norm) for y, t in zip(yr, tr)), 0)
    return -total / len(Y)


LOSSES: dict[str, LossRule] = {
    rule.name: rule
    for rule in (
        LossRule(
            "half_sse",
            r"\frac{1}{2} \sum_{i,j} \left(Y_{pred} - Y_{true}\right)_{ij}^{2}",
            "one half of the sum of squared errors over all N x k entries (no mean)",
            _half_sse,
            lambda Y, T, N, k, axis: Y - T,
            "0.5 * np.sum((Y_pred - Y_true) ** 2)",
        ),
        LossRule(
            "mse",
            r"\frac{1}{N k} \sum_{i,j} \left(Y_{pred} - Y_{true}\right)_{ij}^{2}",
            "mean of squared errors over all N x k entries, no 1/2 (PyTorch MSELoss default)",
            _mse,
            lambda Y, T, N, k, axis: 2 / (N * k) * (Y - T),
            "np.mean((Y_pred - Y_true) ** 2)",
        ),
        LossRule(
            "bce_logits",
            r"\frac{1}{N k} \sum_{i,j} \left[\log\left(1 + e^{Y_{pred,ij}}\right) - Y_{true,ij} Y_{pred,ij}\right]",
            "binary cross-entropy on logits, mean over all N x k entries (PyTorch BCEWithLogitsLoss)",
            _bce_logits,
            lambda Y, T, N, k, axis: 1 / (N * k) * (Sigmoid(Y) - T),
            "np.mean(np.logaddexp(0, Y_pred) - Y_true * Y_pred)",
        ),
        LossRule(
            "softmax_cross_entropy",
            r"-\frac{1}{N} \sum_{i,j} Y_{true,ij} \log \operatorname{softmax}\left(Y_{pred}\right)_{ij}",
            "cross-entropy of the row-wise softmax, summed over classes, mean over the N samples "
            "(PyTorch cross_entropy with probability targets)",
            _softmax_cross_entropy,
            lambda Y, T, N, k, axis: 1 / N * (Softmax(Y, axis) - T),
            "-np.sum(Y_true * (Y_pred - np.logaddexp.reduce(Y_pred, axis=1, keepdims=True))) / Y_pred.shape[0]",
            min_outputs=2,
            targets_are_distributions=True,
        ),
    )
}
