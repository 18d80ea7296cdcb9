"""The rule table: every activation and loss defined once.

Each entry carries its scalar SymPy forward expression, its derivative, its LaTeX name and its NumPy
snippets. Derivation, printing, code generation and verification all read these entries, so they cannot
drift apart; ``tests/test_rules.py`` checks every derivative against ``sympy.diff`` of its forward rule.

Custom activations (a spec's ``[activations.<name>]`` formulas) become entries of the same kind, built by
``custom_activation``: SymPy differentiates the formula, and the entry is registered under a key naming the
whole definition. ``activation_rule(key)`` finds built-in and custom entries alike.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass

import sympy as sp
from sympy.core.relational import Relational
from sympy.solvers.solveset import solveset

from . import formula as fm
from .expressions import Sigmoid, Softmax


@dataclass(frozen=True)
class FormulaDerivation:
    """How SymPy derived a custom activation's derivative, as the documents show it.

    ``formula`` is the user's formula with the parameters as symbols; ``worked`` is ``sympy.diff`` of it (abs,
    min, max and where as branches); ``simplified`` the derivative as the rule uses it (sigmoid and softplus
    named, simplified where that is shorter); ``kinks`` the points where the slope jumps; ``from_output`` the
    derivative written in the output ``a`` where SymPy proves that identity; ``numpy_notes`` names what the
    generated NumPy code does about overflow (``softplus``, ``sigmoid``, ``branches``; ``exp`` where a plain exp
    remains).
    """

    formula: sp.Expr
    parameters: tuple[tuple[str, float], ...]
    worked: sp.Expr
    simplified: sp.Expr
    kinks: tuple[sp.Expr, ...]
    from_output: sp.Expr | None
    numpy_notes: tuple[str, ...]


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


def activation_rule(key: str) -> ActivationRule:
    """The rule of a built-in activation (by name) or of a custom one a spec defined (by its ``key``)."""
    rule = ACTIVATIONS.get(key) or _CUSTOM.get(key)
    if rule is None:
        raise KeyError(key)
    return rule


def custom_activation(definition: CustomActivation) -> ActivationRule:
    """The rule of a custom activation, built once per process and registered under ``definition.key``.

    Raises :class:`formula.FormulaError` when the formula is outside the language or is not an activation
    (not real, finite and continuous for every real z; a kink without ``grad_at_kinks``).
    """
    key = definition.key
    if key not in _CUSTOM:
        try:
            _CUSTOM[key] = _custom_rule(definition)
        except (TypeError, ValueError, RecursionError) as error:  # SymPy giving up on a formula
            raise fm.FormulaError(f"SymPy cannot analyse this formula ({type(error).__name__}: {error})") from None
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
    kinks, one_piece = _kinks(fm.elementary(f))
    if kinks and definition.grad_at_kinks is None:
        raise fm.FormulaError(f"the slope jumps at z = {', '.join(map(str, kinks))}: set grad_at_kinks, the "
                              "derivative to take there")
    if definition.grad_at_kinks is not None and not kinks:
        raise fm.FormulaError("the formula has no kink (its slope never jumps): remove grad_at_kinks",
                              field="grad_at_kinks")

    def at_kinks(derivative):
        if not kinks:
            return derivative
        points = sp.Or(*(sp.Eq(z, k) for k in kinks))
        return sp.Piecewise((_rational(definition.grad_at_kinks), points), (derivative, True))

    derivative = _readable(sp.diff(fm.piecewise(shown), z))
    simplified = _simplified(derivative)
    forward = fm.elementary(f)
    rule_derivative = fm.elementary(at_kinks(simplified.subs(values)))
    code_derivative = at_kinks(sp.diff(fm.piecewise(f), z))
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
            tuple(kinks), from_output, numpy_notes),
    )


def _kinks(f: sp.Expr) -> tuple[list, bool]:
    """The points where the slope of ``f`` jumps, and whether ``f`` is one piece (no breakpoint).

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
    kinks = []
    for k, left, right in zip(points, sides, sides[1:]):
        value = fm.branch_at(f, k).subs(z, k)
        limits = (_limit(left, k, "-"), _limit(right, k, "+"))
        if not _finite(value) or not all(_equal(limit, value) for limit in limits):
            raise fm.FormulaError(f"the formula is not continuous at z = {k}: it tends to {limits[0]} from the "
                                  f"left and {limits[1]} from the right, and its value there is {value}")
        slopes = (_limit(sp.diff(left, z), k, "-"), _limit(sp.diff(right, z), k, "+"))
        if not all(map(_finite, slopes)):
            raise fm.FormulaError(f"the slope is unbounded next to z = {k}")
        if not _equal(*slopes):
            kinks.append(k)
    return kinks, not points


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


def _equal(a, b) -> bool:
    return sp.simplify(a - b) == 0


def _readable(expr: sp.Expr) -> sp.Expr:
    """``expr`` with nested branches as one list of cases, where there are few (folding multiplies them)."""
    return sp.piecewise_fold(expr) if len(expr.atoms(sp.Piecewise)) <= 3 else expr


def _simplified(derivative: sp.Expr) -> sp.Expr:
    """``sympy.simplify`` of ``derivative`` (branch by branch, if it has any) where that is shorter and brings
    in no new function (cosh for tanh)."""
    simpler = derivative.replace(
        lambda e: isinstance(e, sp.Piecewise),
        lambda e: sp.Piecewise(*((sp.simplify(branch), condition) for branch, condition in e.args)),
    ) if derivative.has(sp.Piecewise) else sp.simplify(derivative)
    functions = {type(f) for f in derivative.atoms(sp.Function)}
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
            if sp.simplify(difference) == 0:
                return candidate
    return None
