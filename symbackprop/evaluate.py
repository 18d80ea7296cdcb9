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

from . import images
from .expressions import Elementwise
from .rules import ACTIVATIONS, FUNCTIONS, activation_rule, numpy_loss_code, numpy_penalty_code

# A 61-bit prime p = 3 (mod 4) modulo which every prime up to 61 is a square, so the square root of an integer
# whose square-free part has no larger prime factor (an attention scale 1/sqrt(d) for any head width d < 67, and
# 64, 96, 128, ...) is an element of the field, computed as a power.
PRIME = 2**61 - 25265841
PRIME_TEXT = "2^61 - 25265841"
# Functions whose derivative the exact backends compute from their value (see ``ActivationRule``).
EXACT_DERIVATIVES = {rule.name: rule.exact_derivative for rule in (*ACTIVATIONS.values(), *FUNCTIONS.values())
                     if rule.exact_derivative}
# The key of ``exp`` in the exact backends' tables: an opaque function of order 0, as the oracle's ``exp`` is one,
# whose derivatives are itself.
EXP = ("exp", 0)


class Evaluator:
    """Evaluate matrix expressions in ``env`` (name -> 2-D array) with ``backend``; ``sizes`` binds N, n_l.

    A float64 value may also be a stack of matrices (an array of shape (k, rows, cols): k variants of one
    quantity, as the finite-difference check perturbs them); the steps of a network then give stacks too.
    Matrix axes are counted from the end, and what works on one matrix only (an image window) runs per variant.
    """

    def __init__(self, backend, env: dict, sizes: dict):
        self.backend, self.env, self.sizes = backend, env, sizes

    def __call__(self, expr):
        return getattr(self, "_" + type(expr).__name__)(expr)

    def _MatrixSymbol(self, expr):
        return self.env[expr.name]

    def _Transpose(self, expr):
        return np.swapaxes(self(expr.arg), -1, -2)

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
            factor = sp.sympify(sp.sympify(scalar).xreplace(self.sizes))
            result = self.backend.scale(result, self.scalar(factor), bool(factor.is_positive))
        return result

    def _HadamardProduct(self, expr):
        values = [self(arg) for arg in expr.args]
        result = values[0]
        for value in values[1:]:
            result = result * value
        return result

    def _HadamardPower(self, expr):
        return self.backend.power(self(expr.base), int(expr.exp))

    def _OneMatrix(self, expr):
        return self.backend.ones(self._shape(expr))

    def _ZeroMatrix(self, expr):
        return self.backend.ones(self._shape(expr)) * self.backend.scalar(0)

    def _shape(self, expr) -> tuple[int, int]:
        sizes = self.sizes
        return tuple(int(sizes[d]) if d in sizes else int(sp.sympify(d).xreplace(sizes)) for d in expr.shape)

    def _Elementwise(self, expr):
        value = self(expr.arg)
        if expr.activation == "identity":  # not opaque: the identity is known exactly, and so is its slope
            return value if expr.order == 0 else self.backend.ones(value.shape)
        return self.backend.activation(expr, value)

    def _Exp(self, expr):
        return self.backend.exp(self(expr.arg))

    def _Log(self, expr):
        return self.backend.log(self(expr.arg))

    def _Sigmoid(self, expr):
        e = self.backend.exp(self(expr.arg))
        return e * self.backend.reciprocal(e + self.backend.scalar(1))

    def _Softmax(self, expr):
        return self.backend.softmax(self(expr.arg), expr.axis - 2)

    def _LogSoftmax(self, expr):
        return self.backend.log_softmax(self(expr.arg), expr.axis - 2)

    def _CausalSoftmax(self, expr):
        return self.backend.softmax(self(expr.arg), expr.axis - 2, causal=True)

    def _Block(self, expr):
        value = self(expr.arg)
        return value[_block_index(expr, value.shape[expr.axis - 2] // expr.count)]

    def _Place(self, expr):
        value = self(expr.arg)
        full = self.backend.ones(value.shape[:-2] + self._shape(expr)) * self.backend.scalar(0)
        full[_block_index(expr, value.shape[expr.axis - 2])] = value
        return full

    def _LossValue(self, expr):
        return self.backend.loss(self, expr)

    def _ScalarOf(self, expr):
        return self(expr.arg)[0, 0]

    def _Im2col(self, expr):
        return _per_matrix(lambda x: images.im2col(x, expr.window, self.backend.scalar(0)), self(expr.arg))

    def _Col2im(self, expr):
        return _per_matrix(lambda x: images.col2im(x, expr.window, self.backend.scalar(0)), self(expr.arg))

    def _Fold(self, expr):
        return _per_matrix(lambda x: images.fold(x, expr.positions), self(expr.arg))

    def _Unfold(self, expr):
        return _per_matrix(lambda x: images.unfold(x, expr.positions), self(expr.arg))

    def _RowMax(self, expr):
        return _per_matrix(self.backend.row_max, self(expr.arg))

    def _MaxMask(self, expr):
        return _per_matrix(self.backend.max_mask, self(expr.arg))

    def scalar(self, value):
        """A number of the expression (sizes bound) in the backend: a rational, or a product with square
        roots of integers (an attention scale 1/sqrt(d))."""
        return self.backend.scalar(sp.sympify(value).xreplace(self.sizes))

    def forward(self, network, start_after: str | None = None) -> None:
        """Run the forward steps up to Y_pred (all, or those after ``start_after``) into ``env``."""
        started = start_after is None
        for step in network.steps:
            if started and step.kind != "loss":
                self.env[step.name] = self(step.expr)
            started = started or step.name == start_after

    def backward(self, derivation, skip=frozenset(), alternatives: bool = False, formulas=None) -> None:
        """Evaluate every backward formula in order into ``env`` (after ``forward``), except those in ``skip``;
        ``formulas`` maps a step's name to another formula to use for it (a mistake put in).

        With ``alternatives``, each shorter form is evaluated too, as ``<symbol>@<label>``."""
        formulas = formulas or {}
        for step in derivation.backward:
            if step.name not in skip:
                self.env[step.symbol.name] = self(formulas.get(step.name, step.expr))
                if alternatives:
                    for alt in step.alternatives:
                        self.env[f"{step.symbol.name}@{alt.label}"] = self(alt.expr)

    def loss(self, network):
        """The scalar loss of the values in ``env`` (after ``forward``)."""
        return self(network.steps[-1].expr)


class Magnitude(Evaluator):
    """The scale of a formula's float64 evaluation: every value and scalar taken by its absolute value, so no
    term cancels another (a function, softmax or activation, is evaluated as it is, then made positive).

    The result bounds the formula entrywise; computing the formula in float64, in any order, differs from its
    exact value by a small multiple of the machine epsilon times it (a sum that cancels to nearly 0, as a bias
    gradient before batch norm does, still has the scale of its terms)."""

    def __init__(self, env: dict, sizes: dict):
        super().__init__(Float64Backend(), env, sizes)
        self.plain = Evaluator(self.backend, env, sizes)

    def _MatrixSymbol(self, expr):
        return np.abs(self.env[expr.name])

    def scalar(self, value):
        return abs(super().scalar(value))

    def _function(self, expr):
        return np.abs(self.plain(expr))

    _Elementwise = _Exp = _Log = _Sigmoid = _Softmax = _LogSoftmax = _CausalSoftmax = _RowMax = _MaxMask = _function


def _block_index(expr, width: int) -> tuple:
    """The index of block ``expr.index`` (each ``width`` long) along ``expr.axis`` of a matrix (or a stack)."""
    block = slice(expr.index * width, (expr.index + 1) * width)
    return (..., block, slice(None)) if expr.axis == 0 else (..., block)


def _per_matrix(function, value):
    """``function`` of a matrix, applied to each matrix of a stack."""
    return function(value) if value.ndim == 2 else np.stack([function(matrix) for matrix in value])


@lru_cache(maxsize=4096)
def _coeff_matrices(expr) -> tuple:
    """A product's scalar and matrix factors (SymPy recomputes them on every call; expressions are immutable)."""
    return expr.as_coeff_matrices()


class _Common:
    """Backends whose entries are Python objects held in NumPy object arrays, and whose softmax and loss are
    their definitions (exact arithmetic needs no numerical safeguards)."""

    @staticmethod
    def scale(array, factor, positive: bool):
        """``array`` times a number (``positive``: it is > 0, for a backend that keeps signs)."""
        return array * factor

    def ones(self, shape):
        return np.full(shape, self.scalar(1), dtype=object)

    def elementwise(self, fn, array):
        return np.frompyfunc(fn, 1, 1)(array) if array.size else array

    def power(self, array, k: int):
        return self.elementwise(lambda v: v ** k, array) if k >= 0 else self.power(self.reciprocal(array), -k)

    def softmax(self, x, axis, causal=False):
        e = self.exp(x)
        if causal:  # exp(-inf) = 0 above the diagonal
            e = e * np.tril(np.ones(x.shape, dtype=int))
        return e * self.reciprocal(e.sum(axis=axis, keepdims=True))

    def log_softmax(self, x, axis):
        return x - self.log(self.exp(x).sum(axis=axis, keepdims=True))

    def loss(self, evaluator, node):
        return evaluator(node.definition)[0, 0]

    def activation(self, node, z):
        return self.elementwise(lambda x: self.opaque(node.key, node.order, x), z)

    def exp(self, x):
        return self.elementwise(lambda v: self.apply(EXP, v), x)

    def log(self, x):
        return self.elementwise(lambda v: self.apply("log", v), x)

    def row_max(self, x):
        """Each row's maximum as an opaque function of the row (a column); a row of one entry is its maximum."""
        return np.array([[row[0] if len(row) == 1 else self.apply_many(("rowmax", 0), row)] for row in x],
                        dtype=object).reshape(len(x), 1)

    def max_mask(self, x):
        """The partials of ``row_max`` by each entry: opaque values, the same as direct differentiation's (1 for
        a row of one entry)."""
        return np.array([[self.scalar(1)] if len(row) == 1 else
                         [self.apply_many(("rowmax", 1, i), row) for i in range(len(row))] for row in x],
                        dtype=object).reshape(x.shape)

    def opaque(self, key, order: int, x):
        """``f(x)`` or ``f'(x)`` of an opaque function, a value per argument; ``f'`` is written with ``f`` where
        the rule knows it (``EXACT_DERIVATIVES``: sigmoid, tanh, rsqrt), and ``exp``'s is ``exp`` itself."""
        if key == EXP[0]:
            return self.apply(EXP, x)
        rule = EXACT_DERIVATIVES.get(key) if order == 1 else None
        return rule(self.apply((key, 0), x), x) if rule is not None else self.apply((key, order), x)


class Float64Backend:
    """Real arithmetic in float64 with the rule table's NumPy forms (for finite-difference checks)."""

    scale = staticmethod(_Common.scale)

    def scalar(self, value):
        return float(value)

    def ones(self, shape):
        return np.ones(shape)

    def activation(self, node: Elementwise, z):
        return _numpy_function(node.activation, node.order, tuple(sorted(node.params.items())))(z)

    def exp(self, x):
        return np.exp(x)

    def log(self, x):
        return np.log(x)

    def power(self, x, k: int):
        return np.power(x, float(k))

    def row_max(self, x):
        return x.max(axis=1, keepdims=True)

    def max_mask(self, x):
        return images.first_max_mask(x)

    def reciprocal(self, x):
        return 1.0 / x

    def softmax(self, x, axis, causal=False):
        if causal:
            x = np.where(np.tril(np.ones(x.shape, dtype=bool)), x, -np.inf)
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)

    def log_softmax(self, x, axis):
        return x - np.logaddexp.reduce(x, axis=axis, keepdims=True)

    def loss(self, evaluator, node):
        """The loss through the rule table's numerically stable NumPy form, as the generated module has it."""
        settings = node.settings
        Y, T = evaluator(node.prediction), evaluator(node.target)
        if node.axis == 0:
            Y, T = Y.T, T.T
        value = float(eval(numpy_loss_code(settings), {"np": np, "Y_pred": Y, "Y_true": T}))
        if node.weights:
            weights = [evaluator(W) for W in node.weights]
            value += float(eval(numpy_penalty_code(settings), {"np": np, "weights": weights, "N": Y.shape[0]}))
        return value


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
    try:
        r = sp.Rational(o)
    except TypeError:
        return _algebraic(sp.sympify(o))
    return r.p * pow(r.q, -1, PRIME)


class InexactRoot(ValueError):
    """A square root that the exact field cannot hold (a prime factor above 61 under it)."""


def _algebraic(number) -> int:
    """A product of rationals and square roots of integers (``sqrt(2)/2``) as a field element."""
    value = 1
    for factor in sp.Mul.make_args(number):
        base, exponent = factor.as_base_exp()
        if factor.is_Rational:
            value *= _v(factor)
        elif base.is_Integer and exponent.is_Rational and exponent.q == 2:
            root = pow(int(base) % PRIME, (PRIME + 1) // 4, PRIME)
            if root * root % PRIME != int(base) % PRIME:
                raise InexactRoot(f"sqrt({base}) has no exact value modulo the prime {PRIME_TEXT} (a prime factor "
                                  "above 61 under a square root)")
            value *= pow(root, int(exponent.p), PRIME)
        else:
            raise TypeError(f"cannot evaluate the number {number} exactly")
    return value % PRIME


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

    def apply_many(self, key, values) -> Mod:
        """An opaque function of several arguments (a window's maximum, its partials)."""
        key = (key, tuple(v.v for v in values))
        if key not in self.table:
            self.table[key] = self.random()
        return self.table[key]

    def reciprocal(self, x):
        return self.elementwise(lambda v: v ** -1, x)


class SymbolicBackend(_Common):
    """symengine expressions; each function application becomes a symbol named after its argument."""

    def __init__(self):
        self.table: dict = {}

    @staticmethod
    def scalar(value):
        return se.Integer(value) if isinstance(value, int) else se.sympify(value)

    def apply(self, key, x):
        x = se.expand(x)
        if (key, x) not in self.table:
            self.table[(key, x)] = se.Symbol(f"{'_'.join(map(str, key)) if isinstance(key, tuple) else key}"
                                             f"_{len(self.table)}")
        return self.table[(key, x)]

    def apply_many(self, key, values):
        values = tuple(se.expand(v) for v in values)
        if (key, values) not in self.table:
            self.table[(key, values)] = se.Symbol(f"{'_'.join(map(str, key))}_{len(self.table)}")
        return self.table[(key, values)]

    def reciprocal(self, x):
        """An opaque inverse, except of a single ``exp`` (never 0), whose inverse cancels it: a causal softmax's
        first row is ``e / e = 1``, as direct differentiation finds."""
        exps = {value for (key, _), value in self.table.items() if key == EXP}
        return self.elementwise(lambda v: v ** -1 if v in exps else self.apply("inverse", v), x)


class OracleBackend(_Common):
    """symengine with opaque activation functions: builds the loss that direct differentiation works on."""

    scalar = staticmethod(SymbolicBackend.scalar)

    def activation(self, node, z):
        assert node.order == 0, "the forward pass applies activations, not their derivatives"
        return self.elementwise(lambda x: se.function_symbol(node.key, x), z)

    def exp(self, x):
        """An opaque ``exp`` (its derivative itself, ``EXP``): symengine would merge ``e^a e^b`` into
        ``e^(a+b)``, which the formulas' ``exp(a + b)`` (a forward pass's ``np.exp(S - m)``) could not be told
        apart from."""
        return self.elementwise(lambda v: se.function_symbol("exp", v), x)

    def log(self, x):
        return self.elementwise(se.log, x)

    def reciprocal(self, x):
        return self.elementwise(lambda v: 1 / v, x)

    def row_max(self, x):
        return np.array([[row[0] if len(row) == 1 else se.function_symbol("rowmax", *row)] for row in x],
                        dtype=object).reshape(len(x), 1)


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
        if kind == "Pow" and not node.free_symbols:  # a square root of a number: sqrt(2)
            return self.backend.scalar(sp.sympify(str(node)))
        if kind == "Pow":
            base, exponent = node.args
            return self._power(self(base), int(exponent))
        if kind == "FunctionSymbol" and len(node.args) > 1:  # a window's maximum
            return self.backend.apply_many((node.get_name(), 0), [self(a) for a in node.args])
        if kind == "FunctionSymbol":
            return self.backend.apply((node.get_name(), 0), self(node.args[0]))
        if kind == "Derivative" and len(node.args[0].args) > 1:  # its partial by one entry of the window
            function, variable = node.args
            return self.backend.apply_many((function.get_name(), 1, list(function.args).index(variable)),
                                           [self(a) for a in function.args])
        if kind == "log":
            return self.backend.apply("log", self(node.args[0]))
        if kind == "Derivative":  # f'(x) at a symbol x
            function, variable = node.args
            return self.backend.opaque(function.get_name(), 1, self(variable))
        if kind == "Subs":
            derivative, _, point = node.args
            function = derivative.args[0]
            assert len(derivative.args) == 2, "only first derivatives of activations appear"
            return self.backend.opaque(function.get_name(), 1, self(point))
        raise TypeError(f"cannot evaluate {kind} node {node}")

    def _power(self, value, k: int):
        if k < 0 and isinstance(self.backend, SymbolicBackend):
            return self.backend.apply("inverse", value) ** -k
        return value ** k

