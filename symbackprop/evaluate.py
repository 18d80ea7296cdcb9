"""Give the network's matrix expressions values: float64 arrays, exact field elements, or symengine expressions.

One interpreter (``Evaluator``) walks a SymPy matrix expression; a backend says what a number, an activation,
``exp`` and ``1/x`` are. The float64 backend applies the rule table's NumPy forms; the field backend works in
the integers modulo a prime and treats every function as opaque (consistent random values), which makes an
evaluation at random points a Schwartz-Zippel identity test; the symbolic backend maps function applications
to fresh symbols so identities can be expanded exactly.
"""

from __future__ import annotations

import random
from functools import cache, lru_cache

import numpy as np
import symengine as se
import sympy as sp

from .expressions import Elementwise
from .rules import LOSSES, activation_rule

PRIME = 2**61 - 1


class Evaluator:
    """Evaluate matrix expressions in ``env`` (name -> 2-D array) with ``backend``; ``sizes`` binds N, n_l."""

    def __init__(self, backend, env: dict, sizes: dict):
        self.backend, self.env, self.sizes = backend, env, sizes

    def __call__(self, expr):
        return getattr(self, "_" + type(expr).__name__)(expr)

    def _MatrixSymbol(self, expr):
        return self.env[expr.name]

    def _Transpose(self, expr):
        return self(expr.arg).T

    def _MatAdd(self, expr):
        values = [self(arg) for arg in expr.args]
        total = values[0]
        for value in values[1:]:
            total = total + value
        return total

    def _MatMul(self, expr):
        scalar, matrices = _coeff_matrices(expr)
        result = self(matrices[0])
        for matrix in matrices[1:]:
            result = result @ self(matrix)
        if scalar != 1:
            result = result * self.scalar(scalar)
        return result

    def _HadamardProduct(self, expr):
        values = [self(arg) for arg in expr.args]
        result = values[0]
        for value in values[1:]:
            result = result * value
        return result

    def _OneMatrix(self, expr):
        return self.backend.ones(tuple(int(self.sizes.get(d, d)) for d in expr.shape))

    def _Elementwise(self, expr):
        value = self(expr.arg)
        if expr.activation == "identity":  # not opaque: the identity is known exactly, and so is its slope
            return value if expr.order == 0 else self.backend.ones(value.shape)
        return self.backend.activation(expr, value)

    def _Sigmoid(self, expr):
        e = self.backend.exp(self(expr.arg))
        return e * self.backend.reciprocal(e + self.backend.scalar(1))

    def _Softmax(self, expr):
        e = self.backend.exp(self(expr.arg))
        return e * self.backend.reciprocal(e.sum(axis=expr.axis, keepdims=True))

    def scalar(self, value):
        return self.backend.scalar(sp.Rational(sp.sympify(value).xreplace(self.sizes)))

    def forward(self, network, start_after: str | None = None) -> None:
        """Run the forward steps up to Y_pred (all, or those after ``start_after``) into ``env``."""
        started = start_after is None
        for step in network.steps:
            if started and step.kind != "loss":
                self.env[step.name] = self(step.expr)
            started = started or step.name == start_after

    def backward(self, derivation, skip=frozenset()) -> None:
        """Evaluate every backward formula in order into ``env`` (after ``forward``), except those in ``skip``."""
        for step in derivation.backward:
            if step.name not in skip:
                self.env[step.symbol.name] = self(step.expr)

    def loss(self, network):
        """The scalar loss of the values in ``env`` (after ``forward``)."""
        Y, T = self.env["Y_pred"], self.env["Y_true"]
        if not network.batch_first:
            Y, T = Y.T, T.T
        return self.backend.loss(LOSSES[network.spec.loss.kind], Y, T)


@lru_cache(maxsize=4096)
def _coeff_matrices(expr) -> tuple:
    """A product's scalar and matrix factors (SymPy recomputes them on every call; expressions are immutable)."""
    return expr.as_coeff_matrices()


class _Common:
    """Backends whose entries are Python objects held in NumPy object arrays."""

    def ones(self, shape):
        return np.full(shape, self.scalar(1), dtype=object)

    def elementwise(self, fn, array):
        return np.frompyfunc(fn, 1, 1)(array) if array.size else array


class Float64Backend:
    """Real arithmetic in float64 with the rule table's NumPy forms (for finite-difference checks)."""

    def scalar(self, value):
        return float(value)

    def ones(self, shape):
        return np.ones(shape)

    def activation(self, node: Elementwise, z):
        return _numpy_function(node.activation, node.order, tuple(sorted(node.params.items())))(z)

    def exp(self, x):
        return np.exp(x)

    def reciprocal(self, x):
        return 1.0 / x

    def loss(self, rule, Y, T):
        return float(eval(rule.numpy_value, {"np": np, "Y_pred": Y, "Y_true": T}))


@cache
def _numpy_function(name: str, order: int, params: tuple):
    """Compile the rule table's NumPy form of an activation (or its derivative) into a function of ``z``."""
    from math import erf

    code = activation_rule(name).numpy(order, dict(params), z="z")
    return eval(f"lambda z: {code}", {"np": np, "erf": np.vectorize(erf, otypes=[float])})


class Mod:
    """An element of the integers modulo ``PRIME``."""

    __slots__ = ("v",)

    def __init__(self, v: int):
        self.v = v % PRIME

    def __add__(self, o):
        return Mod(self.v + _v(o))

    __radd__ = __add__

    def __sub__(self, o):
        return Mod(self.v - _v(o))

    def __rsub__(self, o):
        return Mod(_v(o) - self.v)

    def __mul__(self, o):
        return Mod(self.v * _v(o))

    __rmul__ = __mul__

    def __neg__(self):
        return Mod(-self.v)

    def __truediv__(self, o):
        return Mod(self.v * pow(_v(o), -1, PRIME))

    def __pow__(self, k: int):
        return Mod(pow(self.v, k, PRIME)) if k >= 0 else Mod(pow(pow(self.v, -1, PRIME), -k, PRIME))

    def __eq__(self, o):
        return self.v == _v(o)

    def __hash__(self):
        return hash(self.v)

    def __repr__(self):
        return f"{self.v}"


def _v(o) -> int:
    if isinstance(o, Mod):
        return o.v
    if isinstance(o, int):
        return o
    r = sp.Rational(o)
    return r.p * pow(r.q, -1, PRIME)


class FieldBackend(_Common):
    """Exact arithmetic modulo a 61-bit prime; functions are opaque, with consistent random values.

    ``f(x)`` and ``f'(x)`` get independent random values for each distinct argument ``x``, drawn once and
    remembered, so the same application always has the same value.
    """

    def __init__(self, seed: int = 0):
        self.rng = random.Random(seed)
        self.table: dict = {}

    def random(self) -> Mod:
        return Mod(self.rng.randrange(1, PRIME))

    def scalar(self, value):
        return Mod(_v(value))

    def apply(self, key, x: Mod) -> Mod:
        key = (key, x.v)
        if key not in self.table:
            self.table[key] = self.random()
        return self.table[key]

    def activation(self, node, z):
        return self.elementwise(lambda x: self.apply((node.key, node.order), x), z)

    def exp(self, x):
        return self.elementwise(lambda v: self.apply("exp", v), x)

    def reciprocal(self, x):
        return self.elementwise(lambda v: v ** -1, x)


class SymbolicBackend(_Common):
    """symengine expressions; each function application becomes a symbol named after its argument."""

    def __init__(self):
        self.table: dict = {}

    @staticmethod
    def scalar(value):
        return se.Integer(value) if isinstance(value, int) else se.sympify(sp.Rational(value))

    def apply(self, key, x):
        x = se.expand(x)
        if (key, x) not in self.table:
            self.table[(key, x)] = se.Symbol(f"{'_'.join(map(str, key)) if isinstance(key, tuple) else key}"
                                             f"_{len(self.table)}")
        return self.table[(key, x)]

    def activation(self, node, z):
        return self.elementwise(lambda x: self.apply((node.key, node.order), x), z)

    def exp(self, x):
        return self.elementwise(lambda v: self.apply("exp", v), x)

    def reciprocal(self, x):
        return self.elementwise(lambda v: self.apply("inverse", v), x)


class OracleBackend(_Common):
    """symengine with opaque activation functions: builds the loss that direct differentiation works on."""

    scalar = staticmethod(SymbolicBackend.scalar)

    def activation(self, node, z):
        assert node.order == 0, "the forward pass applies activations, not their derivatives"
        return self.elementwise(lambda x: se.function_symbol(node.key, x), z)

    def exp(self, x):
        return self.elementwise(se.exp, x)

    def reciprocal(self, x):
        return self.elementwise(lambda v: 1 / v, x)

    def loss(self, rule, Y, T):
        return rule.value(Y.tolist(), T.tolist(), se)


class Valuation:
    """Evaluate an oracle (symengine) expression in the field or symbolic backend, node by node, memoised.

    ``values`` maps each leaf symbol to its value. Function applications go through the backend's table,
    so they agree with what the ``Evaluator`` computed for the same arguments.
    """

    def __init__(self, backend, values: dict):
        self.backend, self.values, self.memo = backend, values, {}

    def __call__(self, node):
        try:
            return self.memo[node]
        except KeyError:
            value = self.memo[node] = self._value(node)
            return value

    def _value(self, node):
        kind = type(node).__name__
        if kind == "Symbol":
            return self.values[node]
        if node.is_Number:
            return self.backend.scalar(sp.Rational(str(node)))
        if kind == "Add":
            args = [self(a) for a in node.args]
            return sum(args[1:], args[0])
        if kind == "Mul":
            result = self(node.args[0])
            for a in node.args[1:]:
                result = result * self(a)
            return result
        if kind == "Pow":
            base, exponent = node.args
            if base == se.E:
                return self.backend.apply("exp", self(exponent))
            k = int(exponent)
            value = self(base)
            if k < 0 and isinstance(self.backend, SymbolicBackend):
                return self.backend.apply("inverse", value) ** -k
            return value ** k
        if kind == "FunctionSymbol":
            return self.backend.apply((node.get_name(), 0), self(node.args[0]))
        if kind == "log":
            return self.backend.apply("log", self(node.args[0]))
        if kind == "Derivative":  # f'(x) at a symbol x
            function, variable = node.args
            return self.backend.apply((function.get_name(), 1), self(variable))
        if kind == "Subs":
            derivative, _, point = node.args
            function = derivative.args[0]
            assert len(derivative.args) == 2, "only first derivatives of activations appear"
            return self.backend.apply((function.get_name(), 1), self(point))
        raise TypeError(f"cannot evaluate {kind} node {node}")
