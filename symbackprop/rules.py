"""The rule table: every elementwise function and every loss defined once.

Each activation carries its scalar SymPy forward expression, its derivative, its LaTeX name and its NumPy
snippets; each loss its summed term, its gradient, the reductions it allows and its NumPy form. Derivation,
printing, code generation and verification all read these entries, so they cannot drift apart;
``tests/test_rules.py`` checks every derivative against ``sympy.diff`` of its forward rule.

Custom activations (a spec's ``[activations.<name>]`` formulas) become entries of the same kind, built by
``custom_activation``: SymPy differentiates the formula, and the entry is registered under a key naming the
whole definition. ``activation_rule(key)`` finds built-in, internal and custom entries alike.
"""

from __future__ import annotations

import hashlib
import json
import signal
import threading
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass

import sympy as sp
from sympy.core.relational import Relational
from sympy.solvers.solveset import solveset

from . import formula as fm
from .expressions import Exp, Log, LogSoftmax, Sigmoid, Softmax


@dataclass(frozen=True)
class FormulaDerivation:
    """How SymPy derived a custom activation's derivative, as the documents show it.

    ``formula`` is the user's formula with the parameters as symbols; ``worked`` is ``sympy.diff`` of it (abs,
    min, max and where as branches); ``simplified`` the derivative as the rule uses it (sigmoid and softplus
    named, simplified where that is shorter); ``kinks`` the points where the slope jumps; ``from_output`` the
    derivative written in the output ``a`` where SymPy proves that identity; ``numpy_notes`` names what the
    generated NumPy code does about overflow (``softplus``, ``sigmoid``, ``branches``; ``exp`` where a plain exp
    remains); ``smooth`` each other breakpoint with the slope there (a ``max`` and an ``abs`` whose kinks cancel,
    as in a stable softplus).
    """

    formula: sp.Expr
    parameters: tuple[tuple[str, float], ...]
    worked: sp.Expr
    simplified: sp.Expr
    kinks: tuple[sp.Expr, ...]
    from_output: sp.Expr | None
    numpy_notes: tuple[str, ...]
    smooth: tuple[tuple[sp.Expr, sp.Expr], ...] = ()


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
    ``latex_call`` prints an application other than ``name(z)`` (``\\min(0, {z})``). ``exact_derivative(a, z)``
    gives ``f'(z)`` from ``a = f(z)`` for the exact backends, where formulas may be written with the output
    (batch norm's inverse square root: ``-a^3 / 2``; sigmoid: ``a (1 - a)``, which makes a sigmoid output and
    binary cross-entropy simplify); other functions stay opaque there, ``f`` and ``f'`` unrelated.
    ``grad_at_kinks`` is the derivative a custom activation takes at its kinks; ``derivation`` says how
    SymPy derived a custom activation's derivative (None for the built-in ones).
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
    latex_call: str | None = None
    exact_derivative: Callable | None = None
    grad_at_kinks: float | None = None
    derivation: FormulaDerivation | None = None

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


# 1 / (1 + e^-z) from e = e^-|z|: 1 / (1 + e) for z >= 0, e / (1 + e) below; it never overflows and costs one
# exp (np.logaddexp costs about five times as much).
_STABLE_SIGMOID = "(lambda e: np.where({z} >= 0, 1, e) / (1 + e))(np.exp(-np.abs({z})))"

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
            exact_derivative=lambda a, z: a * (1 - a),
        ),
        ActivationRule(
            "tanh", r"\tanh",
            lambda z, p: sp.tanh(z), lambda z, p: 1 - sp.tanh(z) ** 2,
            "np.tanh({z})", "1 - np.tanh({z}) ** 2",
            numpy_derivative_from_output="1 - {a} ** 2",
            exact_derivative=lambda a, z: 1 - a ** 2,
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


# Functions the layer kinds use internally; a spec cannot name them as activations.
FUNCTIONS: dict[str, ActivationRule] = {
    rule.name: rule
    for rule in (
        ActivationRule(
            # The inverse standard deviation of batch and layer norm, (var + eps)^(-1/2).
            "rsqrt", r"\operatorname{rsqrt}",
            lambda z, p: 1 / sp.sqrt(z), lambda z, p: -1 / (2 * z * sp.sqrt(z)),
            "1 / np.sqrt({z})", "-0.5 / ({z} * np.sqrt({z}))",
            numpy_derivative_from_output="-0.5 * {a} ** 3",
            latex_call=r"\left({z}\right)^{{-1/2}}",
            exact_derivative=lambda a, z: -(a ** 3) / 2,
        ),
        ActivationRule(
            # The square root of a forward pass written as code (``np.sqrt``, ``** 0.5``).
            "sqrt", r"\operatorname{sqrt}",  # \sqrt takes an argument: sqrt'(z) could not be set with it
            lambda z, p: sp.sqrt(z), lambda z, p: 1 / (2 * sp.sqrt(z)),
            "np.sqrt({z})", "0.5 / np.sqrt({z})",
            numpy_derivative_from_output="0.5 / {a}",
            latex_call=r"\sqrt{{{z}}}",
            exact_derivative=lambda a, z: a ** -1 / 2,
        ),
        ActivationRule(
            # min(0, z): the negative part that PReLU scales by its trainable slope.
            "negpart", r"\min",
            lambda z, p: sp.Piecewise((0, z > 0), (z, True)),
            lambda z, p: sp.Piecewise((0, z > 0), (1 - _rational(p["relu_grad_at_zero"]), sp.Eq(z, 0)), (1, True)),
            "np.minimum({z}, 0)",
            lambda p: {0: "({z} <= 0)", 1: "({z} < 0)"}.get(
                p["relu_grad_at_zero"], "np.where({z} < 0, 1.0, np.where({z} == 0, 0.5, 0.0)).astype({z}.dtype)"),
            defaults=(("relu_grad_at_zero", 0),), kinks=(0.0,),
            latex_call=r"\min\left(0, {z}\right)",
        ),
    )
}

# Activations with a trainable parameter per unit: the dense layer kind builds them from the functions above.
TRAINABLE_ACTIVATIONS = {"prelu": r"\operatorname{PReLU}"}


def activation_rule(key: str) -> ActivationRule:
    """The rule of an elementwise function: a built-in activation or internal function (by name), or a custom
    activation a spec defined (by its ``key``)."""
    rule = ACTIVATIONS.get(key) or FUNCTIONS.get(key) or _CUSTOM.get(key)
    if rule is None:
        raise KeyError(key)
    return rule


# -- losses ------------------------------------------------------------------------------------------------

REDUCTIONS = ("sum", "batch_mean", "mean")
L2_SCALES = ("none", "batch_mean")
# What the last layer hands to the loss.
REAL, PROBABILITIES, LOG_PROBABILITIES = "real", "probabilities", "log_probabilities"


@dataclass(frozen=True)
class LossSettings:
    """A loss as the spec states it: the rule, its reduction and scale, its parameters and the L2 penalty.

    ``kind`` is the name the spec used (``half_sse``), ``rule`` the loss rule it denotes (``squared_error``).
    The loss is ``scale / D * sum(term) + l2 / 2 * sum_l ||W_l||^2`` (divided by ``N`` when ``l2_scale`` is
    ``batch_mean``), with ``D`` 1, ``N`` or ``N k`` for the reductions ``sum``, ``batch_mean``, ``mean``.
    Unset fields take the kind's own values: ``LossSettings("half_sse")`` is ``squared_error``, ``sum``, 0.5.
    """

    kind: str
    rule: str | None = None
    reduction: str | None = None
    scale: float | None = None
    params: tuple[tuple[str, float], ...] = ()
    l2: float = 0.0
    l2_scale: str = "none"

    def __post_init__(self):
        rule, reduction, scale = SHORTCUTS.get(self.kind, (self.kind, None, 1))
        rule = self.rule or rule
        defaults = {"rule": rule, "reduction": reduction or LOSS_RULES[rule].default_reduction, "scale": scale,
                    "params": tuple(sorted(LOSS_RULES[rule].parameters(dict(self.params)).items()))}
        for name, value in defaults.items():
            if name == "params" or getattr(self, name) is None:
                object.__setattr__(self, name, value)

    def to_basic(self) -> sp.Tuple:
        """The settings as a SymPy tuple, so a ``LossValue`` node can carry them."""
        return sp.Tuple(*map(sp.Symbol, (self.kind, self.rule, self.reduction, self.l2_scale)),
                        _rational(self.scale), _rational(self.l2),
                        sp.Tuple(*(sp.Tuple(sp.Symbol(k), _rational(v)) for k, v in self.params)))

    @classmethod
    def from_basic(cls, value: sp.Tuple) -> LossSettings:
        kind, rule, reduction, l2_scale, scale, l2, params = value
        return cls(kind.name, rule.name, reduction.name, _number(scale),
                   tuple((k.name, _number(v)) for k, v in params), _number(l2), l2_scale.name)

    @property
    def parameters(self) -> dict:
        return dict(self.params)


def _number(value) -> float:
    """A rational setting back as the int or float the spec gave."""
    return int(value) if value.is_integer else float(value)


def per_sample_total(M, n, batch_first: bool):
    """Each sample's sum of ``M``, repeated over its ``n`` entries: ``M 1_n 1_n^T`` (column layout: ``1_n 1_n^T M``)."""
    return M * sp.OneMatrix(n, n) if batch_first else sp.OneMatrix(n, n) * M


class LossTerms:
    """Layout-aware pieces for writing a loss on predictions ``Y`` and targets ``T`` (N x k or k x N)."""

    def __init__(self, Y, T, batch_first: bool, k):
        self.Y, self.T, self.batch_first, self.k = Y, T, batch_first, k

    @property
    def N(self):
        """The batch size symbol."""
        return self.Y.shape[0] if self.batch_first else self.Y.shape[1]

    @property
    def ones(self):
        return sp.OneMatrix(*self.Y.shape)

    @property
    def axis(self) -> int:
        """The axis along which one sample's entries lie."""
        return 1 if self.batch_first else 0

    def per_sample_total(self, M):
        """Each sample's sum of ``M``, repeated over that sample's entries (``M 1_k 1_k^T``)."""
        return per_sample_total(M, self.k, self.batch_first)

    def total(self, M):
        """The sum of all entries of ``M`` as a 1 x 1 matrix."""
        rows, cols = M.shape
        return sp.OneMatrix(1, rows) * M * sp.OneMatrix(cols, 1)


@dataclass(frozen=True)
class LossRule:
    """One loss: the term summed over all entries, its gradient, and how it may be used.

    ``term(c, p)`` is the matrix of entries to sum (``c`` a ``LossTerms``, ``p`` the loss parameters) and
    ``gradient(c, p)`` the gradient of their sum with respect to ``Y`` (times ``gradient_scale``, kept apart
    so the printed formula reads ``2 (Y - T)``); both are SymPy matrix expressions, so
    verification, printing and code generation read the same definition. ``latex_term`` is the summand for
    ``\\sum_{i,j}``; ``numpy_term`` the same entries in NumPy (batch-first arrays ``Y_pred``, ``Y_true``),
    numerically stable. ``inputs`` lists what the last layer must produce (``real`` scores, ``probabilities``,
    ``log_probabilities``); ``targets`` what the targets are (``real``, ``binary``, ``one_hot``,
    ``distribution``) for drawing data. ``simplified`` is a simpler gradient that holds when every sample's
    targets sum to 1, shown beside the general one. ``latex_sign`` (``-``) goes in front of the printed loss
    when ``latex_term`` leaves out the term's sign.
    """

    name: str
    latex_term: str
    term: Callable
    gradient: Callable
    numpy_term: str
    default_reduction: str
    reductions: tuple[str, ...] = REDUCTIONS
    inputs: tuple[str, ...] = (REAL,)
    targets: str = "real"
    min_outputs: int = 1
    defaults: tuple[tuple[str, float], ...] = ()
    simplified: Callable | None = None
    gradient_scale: int = 1
    latex_sign: str = ""

    def parameters(self, given: dict | None = None) -> dict:
        given = given or {}
        return {key: given.get(key, default) for key, default in self.defaults}

    def scaled_gradient(self, terms: LossTerms, settings: LossSettings):
        """``dL/dY_pred``: the gradient with its coefficient in front, kept as a product (``2/N (Y - T)``,
        not ``2/N Y - 2/N T``), as the lectures write it."""
        coefficient = loss_coefficient(settings, terms.N, terms.k) * self.gradient_scale
        return scaled(coefficient, self.gradient(terms, self.parameters(settings.parameters)))


def _hinge_margins(c, p):
    """Each score minus the score of its sample's true class, plus the margin."""
    return c.Y - c.per_sample_total(sp.hadamard_product(c.Y, c.T)) + _rational(p["margin"]) * c.ones


def _hinge_indicator(c, p):
    """Where a wrong class's margin is violated: ``(1 - T) ⊙ step(Y - score of the true class + margin)``."""
    step = _relu_node(_hinge_margins(c, p), 1, p["hinge_grad_at_zero"])
    return sp.hadamard_product(c.ones - c.T, step)


def _relu_node(M, order, at_zero):
    from .expressions import Elementwise

    return Elementwise("relu", M, order, (("relu_grad_at_zero", at_zero),))


def _reciprocal(M):
    return sp.HadamardPower(M, -1)


LOSS_RULES: dict[str, LossRule] = {
    rule.name: rule
    for rule in (
        LossRule(
            "squared_error", r"\left(Y_{pred} - Y_{true}\right)_{ij}^{2}",
            lambda c, p: sp.HadamardPower(c.Y - c.T, 2),
            lambda c, p: c.Y - c.T,
            "(Y_pred - Y_true) ** 2",
            "mean", gradient_scale=2,
        ),
        LossRule(
            "bce_logits",
            r"\left[\log\left(1 + e^{Y_{pred,ij}}\right) - Y_{true,ij} Y_{pred,ij}\right]",
            lambda c, p: Log(c.ones + Exp(c.Y)) - sp.hadamard_product(c.T, c.Y),
            lambda c, p: Sigmoid(c.Y) - c.T,
            "np.logaddexp(0, Y_pred) - Y_true * Y_pred",
            "mean", targets="binary",
        ),
        LossRule(
            "bce",
            r"\left[Y_{true,ij} \log Y_{pred,ij} + \left(1 - Y_{true,ij}\right) \log\left(1 - Y_{pred,ij}\right)\right]",
            lambda c, p: -(sp.hadamard_product(c.T, Log(c.Y)) + sp.hadamard_product(c.ones - c.T, Log(c.ones - c.Y))),
            lambda c, p: -(sp.hadamard_product(c.T, _reciprocal(c.Y))
                           - sp.hadamard_product(c.ones - c.T, _reciprocal(c.ones - c.Y))),
            "-(Y_true * np.log(Y_pred) + (1 - Y_true) * np.log1p(-Y_pred))",
            "mean", inputs=(PROBABILITIES,), targets="binary", latex_sign="-",
        ),
        LossRule(
            "cross_entropy", r"Y_{true,ij} \log Y_{pred,ij}",
            lambda c, p: -sp.hadamard_product(c.T, Log(c.Y)),
            lambda c, p: -sp.hadamard_product(c.T, _reciprocal(c.Y)),
            "-Y_true * np.log(np.maximum(Y_pred, np.finfo(Y_pred.dtype).tiny))",
            "batch_mean", reductions=("sum", "batch_mean"), inputs=(PROBABILITIES,), targets="distribution",
            latex_sign="-",
        ),
        LossRule(
            "nll", r"Y_{true,ij} Y_{pred,ij}",
            lambda c, p: -sp.hadamard_product(c.T, c.Y),
            lambda c, p: -c.T,
            "-Y_true * Y_pred",
            "batch_mean", reductions=("sum", "batch_mean"), inputs=(LOG_PROBABILITIES,), targets="distribution",
            latex_sign="-",
        ),
        LossRule(
            "softmax_cross_entropy", r"Y_{true,ij} \log \operatorname{softmax}\left(Y_{pred}\right)_{ij}",
            lambda c, p: -sp.hadamard_product(c.T, LogSoftmax(c.Y, c.axis)),
            lambda c, p: sp.hadamard_product(Softmax(c.Y, c.axis), c.per_sample_total(c.T)) - c.T,
            "-Y_true * (Y_pred - np.logaddexp.reduce(Y_pred, axis=-1, keepdims=True))",
            "batch_mean", reductions=("sum", "batch_mean"), targets="distribution", min_outputs=2,
            simplified=lambda c, p: Softmax(c.Y, c.axis) - c.T, latex_sign="-",
        ),
        LossRule(
            "hinge",
            r"\left(1 - Y_{true,ij}\right) \max\left(0,\ Y_{pred,ij} - \sum_{m} Y_{true,im} Y_{pred,im} + \Delta\right)",
            lambda c, p: sp.hadamard_product(c.ones - c.T, _relu_node(_hinge_margins(c, p), 0, p["hinge_grad_at_zero"])),
            lambda c, p: _hinge_indicator(c, p) - sp.hadamard_product(c.T, c.per_sample_total(_hinge_indicator(c, p))),
            "(1 - Y_true) * np.maximum(Y_pred - (Y_pred * Y_true).sum(axis=-1, keepdims=True) + {margin}, 0)",
            "batch_mean", reductions=("sum", "batch_mean"), targets="one_hot", min_outputs=2,
            defaults=(("margin", 1.0), ("hinge_grad_at_zero", 0)),
        ),
    )
}

# Loss kinds a spec may name: every rule, and shortcuts that fix a rule's reduction and scale.
SHORTCUTS = {"half_sse": ("squared_error", "sum", 0.5), "mse": ("squared_error", "mean", 1)}
LOSS_KINDS = (*SHORTCUTS, *LOSS_RULES)


def loss_rule(settings) -> LossRule:
    """The rule of a ``LossSettings`` (or of its SymPy form in a ``LossValue``)."""
    if isinstance(settings, sp.Tuple):
        settings = LossSettings.from_basic(settings)
    return LOSS_RULES[settings.rule]


def scaled(coefficient, matrix):
    """``coefficient * matrix`` kept as a product: SymPy would spread a number over a sum (``2 Y - 2 T``)."""
    return matrix if coefficient == 1 else sp.MatMul(coefficient, matrix, evaluate=False)


def loss_coefficient(settings: LossSettings, N, k):
    """``scale / D``: the factor in front of the summed term (``D`` from the reduction)."""
    divisor = {"sum": 1, "batch_mean": N, "mean": N * k}[settings.reduction]
    return _rational(settings.scale) / divisor


def l2_coefficient(settings: LossSettings, N):
    """The factor of ``W`` in the penalty's gradient: ``l2``, divided by ``N`` for ``l2_scale = batch_mean``."""
    return _rational(settings.l2) / (N if settings.l2_scale == "batch_mean" else 1)


def loss_definition(node) -> sp.MatrixExpr:
    """A ``LossValue`` as a 1 x 1 matrix expression: the scaled sum of its term plus the L2 penalty."""
    settings, terms = node.settings, loss_terms(node)
    N = terms.N
    rule = LOSS_RULES[settings.rule]
    value = loss_coefficient(settings, N, terms.k) * terms.total(rule.term(terms, rule.parameters(settings.parameters)))
    for W in node.weights:
        value += l2_coefficient(settings, N) / 2 * terms.total(sp.HadamardPower(W, 2))
    return value


def loss_terms(node) -> LossTerms:
    """The ``LossTerms`` of a ``LossValue`` node."""
    Y, batch_first = node.prediction, node.axis == 1
    return LossTerms(Y, node.target, batch_first, Y.shape[1] if batch_first else Y.shape[0])


def numpy_loss_code(settings: LossSettings, stacked: bool = False) -> str:
    """The data term of the loss in NumPy (batch-first arrays ``Y_pred``, ``Y_true``), reduced and scaled.

    ``stacked``: the arrays may hold a batch of sequences (B, T, k), each sequence's loss reduced over its own
    T rows, and the batch's loss is their sum."""
    rule = LOSS_RULES[settings.rule]
    term = rule.numpy_term.format(**{key: _py_number(value) for key, value in settings.params})
    total = f"np.sum({term})"
    divisor = ({"sum": "", "batch_mean": " / Y_pred.shape[-2]", "mean": " / (Y_pred.shape[-2] * Y_pred.shape[-1])"}
               if stacked else {"sum": "", "batch_mean": " / Y_pred.shape[0]", "mean": " / Y_pred.size"})[
        settings.reduction]
    scale = "" if settings.scale == 1 else f"{_py_number(settings.scale)} * "
    return f"{scale}{total}{divisor}"


def numpy_penalty_code(settings: LossSettings) -> str:
    """The L2 penalty in NumPy, given ``weights`` (the weight arrays) and ``N`` (the batch size)."""
    divisor = " / N" if settings.l2_scale == "batch_mean" else ""
    return f"{_py_number(settings.l2 / 2)} * sum(np.sum(W ** 2) for W in weights){divisor}"


# -- custom activations: a formula from the spec, differentiated by SymPy --------------------------------------

@dataclass(frozen=True)
class CustomActivation:
    """One ``[activations.<name>]`` table of a spec: a formula in ``z`` and parameters, and its settings."""

    name: str
    forward: str
    parameters: tuple[tuple[str, float], ...] = ()
    latex: str | None = None
    grad_at_kinks: float | None = None

    @property
    def key(self) -> str:
        """``<name>_<6 hex digits>``: the rule's name in this process, fixed by the whole definition, so two
        specs may define the same name differently."""
        content = json.dumps([self.name, self.forward, [list(p) for p in self.parameters], self.latex,
                              self.grad_at_kinks])
        return f"{self.name}_{hashlib.sha256(content.encode()).hexdigest()[:6]}"

    def to_dict(self) -> dict:
        """The table as the spec writes it."""
        table = {"forward": self.forward}
        if self.parameters:
            table["parameters"] = dict(self.parameters)
        if self.latex is not None:
            table["latex"] = self.latex
        if self.grad_at_kinks is not None:
            table["grad_at_kinks"] = self.grad_at_kinks
        return table


_CUSTOM: dict[str, ActivationRule] = {}


def custom_activation(definition: CustomActivation) -> ActivationRule:
    """The rule of a custom activation, built once per process and registered under ``definition.key``.

    Raises :class:`formula.FormulaError` when the formula is outside the language or is not an activation
    (not real, finite and continuous for every real z; a kink without ``grad_at_kinks``), or when analysing it
    takes longer than ``ANALYSIS_SECONDS``.
    """
    key = definition.key
    if key not in _CUSTOM:
        try:
            with time_bound(ANALYSIS_SECONDS):
                _CUSTOM[key] = _custom_rule(definition)
        except (TypeError, ValueError, RecursionError) as error:  # SymPy giving up on a formula
            raise fm.FormulaError(f"SymPy cannot analyse this formula ({type(error).__name__}: {error})") from None
        except _Expired:
            raise fm.FormulaError(f"SymPy could not analyse this formula within {ANALYSIS_SECONDS:g} s (its "
                                  "constants or nesting are too large); simplify it") from None
    return _CUSTOM[key]


def _custom_rule(definition: CustomActivation) -> ActivationRule:
    z = fm.Z
    symbols = {name: sp.Symbol(name, real=True) for name, _ in definition.parameters}
    values = {symbols[name]: _rational(value) for name, value in definition.parameters}
    formula = fm.parse(definition.forward, symbols)
    if not formula.has(z):
        raise fm.FormulaError("the formula does not depend on z")
    for name, symbol in symbols.items():
        if not formula.has(symbol):
            raise fm.FormulaError(f"parameter {name!r} is not used in the formula")
    shown = fm.stabilized(formula)
    f = fm.stabilized(shown.subs(values))
    kinks, smooth, one_piece = _kinks(fm.elementary(f))
    if kinks and definition.grad_at_kinks is None:
        raise fm.FormulaError(f"the slope jumps at z = {', '.join(map(str, kinks))}: set grad_at_kinks, the "
                              "derivative to take there")
    if definition.grad_at_kinks is not None and not kinks:
        raise fm.FormulaError("the formula has no kink (its slope never jumps): remove grad_at_kinks",
                              field="grad_at_kinks")

    derivative = _readable(sp.diff(fm.piecewise(shown), z))
    simplified = _simplified(derivative)
    forward = fm.elementary(f)
    derivatives = simplified.subs(values), sp.diff(fm.piecewise(f), z)  # the rule's and the code's
    # a smooth breakpoint needs its own value only where the branches' conventions there add up to another one
    smooth = tuple((k, slope) for k, slope in smooth
                   if not all(_equal(expr.subs(z, k), slope) for expr in derivatives))
    rule_derivative, code_derivative = (at_kinks(expr, kinks, definition.grad_at_kinks, smooth)
                                        for expr in derivatives)
    rule_derivative = fm.elementary(rule_derivative)
    from_output = _from_output(shown, (derivative, simplified), values) if one_piece else None
    numpy_notes = tuple(name for name, present in (
        ("softplus", f.has(fm.softplus)), ("sigmoid", f.has(fm.sigmoid) or code_derivative.has(fm.sigmoid)),
        ("branches", any(not branch.is_polynomial(z) for branch, _ in fm.pieces(f)) and not one_piece),
        ("exp", f.has(sp.exp) or code_derivative.has(sp.exp))) if present)
    a = sp.Symbol("a", real=True)
    return ActivationRule(
        definition.name, definition.latex or rf"\operatorname{{{definition.name.replace('_', chr(92) + '_')}}}",
        lambda x, p: forward.xreplace({z: x}), lambda x, p: rule_derivative.xreplace({z: x}),
        fm.numpy_code(f), fm.numpy_code(code_derivative),
        numpy_derivative_from_output=None if from_output is None else fm.numpy_code(
            from_output.subs(values).xreplace({a: z}), z="{a}"),
        kinks=tuple(float(k) for k in kinks),
        needs_erf=f.has(sp.erf) or code_derivative.has(sp.erf),
        grad_at_kinks=definition.grad_at_kinks,
        derivation=FormulaDerivation(
            _readable(formula), definition.parameters, _readable(sp.diff(fm.piecewise(formula), z)), simplified,
            tuple(kinks), from_output, numpy_notes, smooth),
    )


def at_kinks(derivative: sp.Expr, kinks, value: float | None, smooth=()) -> sp.Expr:
    """``derivative`` with the value ``value`` (a custom activation's ``grad_at_kinks``) at each of ``kinks``, and
    at each breakpoint of ``smooth`` ((point, slope) pairs: the slope does not jump there) that slope, whatever
    value the branches' own conventions (a ``max``'s, an ``abs``'s) would add up to."""
    pieces = [(_rational(value), sp.Or(*(sp.Eq(fm.Z, k) for k in kinks)))] if kinks else []
    pieces += [(slope, sp.Eq(fm.Z, k)) for k, slope in smooth]
    return sp.Piecewise(*pieces, (derivative, True)) if pieces else derivative


def _kinks(f: sp.Expr) -> tuple[list, tuple, bool]:
    """The points where the slope of ``f`` jumps, the other breakpoints with the slope there, and whether ``f`` is
    one piece (no breakpoint).

    Raises FormulaError where ``f``, its slope or a condition is not real and finite on a region, where ``f``
    jumps at a breakpoint, or where the slope is unbounded next to one.
    """
    z = fm.Z
    for relation in fm.piecewise(f).atoms(Relational):
        _check_defined(relation.lhs - relation.rhs, sp.S.Reals)
    points = fm.breakpoints(f)
    intervals = fm.intervals(points)
    sides = [fm.branch_at(f, fm.inside(interval)) for interval in intervals]
    for expr, interval in zip(sides, intervals):
        _check_defined(fm.branch_at(f, fm.inside(interval), evaluate=False), interval)
        _check_defined(sp.diff(expr, z), interval)
    kinks, smooth = [], []
    for k, left, right in zip(points, sides, sides[1:]):
        value = fm.branch_at(f, k).subs(z, k)
        limits = (_limit(left, k, "-"), _limit(right, k, "+"))
        if not _finite(value) or not all(_equal(limit, value) for limit in limits):
            raise fm.FormulaError(f"the formula is not continuous at z = {k}: it tends to {limits[0]} from the "
                                  f"left and {limits[1]} from the right, and its value there is {value}")
        slopes = (_limit(sp.diff(left, z), k, "-"), _limit(sp.diff(right, z), k, "+"))
        if not all(map(_finite, slopes)):
            raise fm.FormulaError(f"the slope is unbounded next to z = {k}")
        if _equal(*slopes):
            smooth.append((k, slopes[0]))
        else:
            kinks.append(k)
    return kinks, tuple(smooth), not points


def _check_defined(expr, interval) -> None:
    """Raise FormulaError unless every log, root and division in ``expr`` is real and finite on ``interval``."""
    z = fm.Z
    if expr.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
        raise fm.FormulaError(f"the formula is not finite for {fm.describe(interval)} (a division by zero?)")
    for node in sp.postorder_traversal(expr):  # inner first: a problem inside makes the outer checks moot
        if isinstance(node, sp.log):
            base, need = node.args[0], "positive"
        elif isinstance(node, sp.Pow) and not (node.exp.is_Integer and node.exp >= 0):
            base = node.base
            need = ("nonzero" if node.exp.is_Integer else "nonnegative" if node.exp.is_number and node.exp > 0
                    else "positive")
        else:
            continue
        if getattr(base, f"is_{need}"):
            continue
        violation = {"nonzero": sp.Eq(base, 0), "positive": base <= 0, "nonnegative": base < 0}[need]
        try:
            bad = solveset(violation, z, interval)
        except NotImplementedError:
            bad = None
        if bad is sp.S.EmptySet:
            continue
        if all(isinstance(part, (sp.Interval, sp.FiniteSet)) for part in sp.Union.make_args(bad)):
            raise fm.FormulaError(f"{fm.text(node)} is not real and finite at z = {fm.inside(bad)}")
        raise fm.FormulaError(f"cannot show that {fm.text(node)} is real and finite for {fm.describe(interval)}")


def _limit(expr, point, direction):
    return sp.limit(expr, fm.Z, point, direction)


def _finite(value) -> bool:
    return bool(value.is_extended_real and value.is_finite)


# How long one sympy.simplify of a custom activation's derivative may take before the unsimplified (still exact)
# form is kept: simplify can fall into arbitrary-precision evaluation (z*sigmoid(1000000) ran for minutes).
SIMPLIFY_SECONDS = 2.0
# How long the whole analysis of one custom activation may take before the spec is refused.
ANALYSIS_SECONDS = 20.0


class _Expired(Exception):
    """A ``time_bound`` ran out."""


def _expire(signum, frame):
    raise _Expired


@contextmanager
def time_bound(seconds: float):
    """Raise ``_Expired`` inside the block once ``seconds`` have passed (a timer signal, so on the main thread
    only; elsewhere the block runs unbounded). An enclosing bound keeps running: the inner one ends no later
    than it, and it is set again, less the time spent, on the way out."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    outer, start = signal.getitimer(signal.ITIMER_REAL)[0], time.monotonic()
    previous = signal.signal(signal.SIGALRM, _expire)
    signal.setitimer(signal.ITIMER_REAL, min(seconds, outer) if outer else seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
        if outer:
            signal.setitimer(signal.ITIMER_REAL, max(outer - (time.monotonic() - start), 1e-3))


def bounded_simplify(expr: sp.Expr) -> sp.Expr | None:
    """``sympy.simplify(expr)``, or None where it takes longer than ``SIMPLIFY_SECONDS``."""
    try:
        with time_bound(SIMPLIFY_SECONDS):
            return sp.simplify(expr)
    except _Expired:
        return None


def _equal(a, b) -> bool:
    """Whether SymPy proves ``a = b`` within its time bound."""
    return bounded_simplify(a - b) == 0


def _readable(expr: sp.Expr) -> sp.Expr:
    """``expr`` with nested branches as one list of cases, where there are few (folding multiplies them)."""
    return sp.piecewise_fold(expr) if len(expr.atoms(sp.Piecewise)) <= 3 else expr


def _simplified(derivative: sp.Expr) -> sp.Expr:
    """``sympy.simplify`` of ``derivative`` (branch by branch, if it has any) where that is shorter and brings
    in no new function (cosh for tanh), and ends within its time bound."""
    simpler = derivative.replace(
        lambda e: isinstance(e, sp.Piecewise),
        lambda e: sp.Piecewise(*((bounded_simplify(branch) or branch, condition) for branch, condition in e.args)),
    ) if derivative.has(sp.Piecewise) else bounded_simplify(derivative)
    functions = {type(f) for f in derivative.atoms(sp.Function)}
    if simpler is None:  # out of time: the derivative as differentiated
        return derivative
    if sp.count_ops(simpler) < sp.count_ops(derivative) and {type(f) for f in simpler.atoms(sp.Function)} <= functions:
        return simpler
    return derivative


def _from_output(shown, derivatives, values) -> sp.Expr | None:
    """The derivative written in ``a = f(z)`` (no z left), where SymPy proves it equals the derivative."""
    a = sp.Symbol("a", real=True)
    for derivative in derivatives:
        candidate = derivative.xreplace({shown: a})
        if not candidate.has(fm.Z):
            difference = fm.elementary((candidate.xreplace({a: shown}) - derivative).subs(values))
            if bounded_simplify(difference) == 0:
                return candidate
    return None
