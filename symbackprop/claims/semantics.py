"""What a claim's formula means, evaluated exactly (integers modulo a prime) or in float64.

The exact semantics extend the verifier's field backend, where every function is opaque, with the identities
people use when they write derivatives out. All hold exactly here:

- ``exp``: a random value per argument, with ``exp(0) = 1``, ``exp(-z) = 1/exp(z)``, ``log(exp(z)) = z``
  and ``exp(log(x)) = x``;
- ``sigmoid(z) = e/(1 + e)`` with ``e = exp(z)`` (so it equals ``1/(1 + exp(-z))`` and ``1 - sigmoid(z) =
  sigmoid(-z)``), ``sigmoid' = s (1 - s)``; ``tanh(z) = (e^2 - 1)/(e^2 + 1)`` (so it equals
  ``(exp(z) - exp(-z))/(exp(z) + exp(-z))``), ``tanh' = 1 - t^2``; ``softplus(z) = log(1 + exp(z))``,
  ``softplus' = sigmoid``; ``silu(z) = z sigmoid(z)`` with its derivative; the identity and its slope 1;
- ``rsqrt`` (batch and layer norm's inverse standard deviation, ``(var + eps)^(-1/2)``) is a true square root
  of ``1/x`` in the field wherever ``x`` is a quadratic residue, so ``r^2 (var + eps) = 1`` holds there; its
  derivative is ``-r^3/2``, as the verifier takes it; ``sqrt(x) = 1/rsqrt(x)`` and ``x^(k/2) = rsqrt(x)^(-k)``
  (the checker draws points where every normalization's ``var + eps`` is a residue, see ``verdict.py``);
- ``negpart(z) = min(0, z)`` (PReLU's negative part) and its derivative, through the sign of ``z``;
- a sign per distinct value, random but consistent (``sign(-x) = -sign(x)``, exact zeros are 0, and the
  outputs of exp, sigmoid, softplus, ReLU-like and tanh carry the sign they have over the reals), which
  gives ``relu``, ``leaky_relu``, ``elu``, comparisons, ``np.where``, ``np.maximum``, ``abs`` and ``sign``
  their values, ReLU'(0) included.

Identities outside this list (``exp(2z) = exp(z)^2``, ``log(ab) = log a + log b``) do not hold, so the
checker treats a claim that applies ``exp``, ``log`` or a function to a composite argument with care (see
``verdict.py``). GELU (with erf) stays opaque: its value and derivative are consistent random functions.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import sympy as sp

from .. import images
from ..evaluate import PRIME, Evaluator, FieldBackend, Float64Backend, Mod

# Field elements within this of 0 are the small integers they look like, with their real signs; a random draw
# lands there with probability 2^-28.
SMALL_INTEGER = 1 << 32


def as_truth_shape(value, truth):
    """A claim's value broadcast to the truth's shape, as NumPy would add them (a 1-D value is a row)."""
    value = np.asarray(value)
    if value.ndim == 1:
        value = value.reshape(1, -1)
    return np.broadcast_to(value, truth.shape)


class Undefined(ArithmeticError):
    """A claim's value does not exist at a point: a division by zero, or the log of zero."""


def _rational(value) -> sp.Rational:
    return sp.Rational(str(value))


class ExactField(FieldBackend):
    """Exact values in the integers modulo a 61-bit prime (``evaluate.PRIME``), with the identities above built in.

    ``relu_at_zero`` overrides every ReLU'(0) (to ask whether a claim is right under another convention).
    """

    def __init__(self, seed: int = 0, relu_at_zero=None):
        super().__init__(seed)
        self.signs: dict = {}
        self.logs: dict = {}
        self.relu_at_zero = relu_at_zero

    # -- values of functions at one field element
    def sign_of(self, x: Mod) -> int:
        """The sign the point gives ``x``: a small integer's own (``1 > 0``: a hinge margin of exactly 1), else
        a consistent random one."""
        if x.v == 0:
            return 0
        if x.v not in self.signs:
            small = min(x.v, PRIME - x.v) < SMALL_INTEGER
            self.set_sign(x, (1 if x.v < PRIME // 2 else -1) if small else (1 if self.rng.random() < 0.5 else -1))
        return self.signs[x.v]

    def set_sign(self, x: Mod, sign: int) -> None:
        if x.v != 0 and x.v not in self.signs:
            self.signs[x.v], self.signs[(-x).v] = sign, -sign

    def scale(self, array, factor, positive: bool):
        """``array`` times a number; a positive one keeps each entry's sign (``2 a > 0`` where ``a > 0``: a ReLU
        mask read off a dropout layer's scaled output is the ReLU's mask)."""
        result = array * factor
        if positive:
            for before, after in zip(np.ravel(array), np.ravel(result)):
                if isinstance(before, Mod) and before.v in self.signs:
                    self.set_sign(after, self.signs[before.v])
        return result

    def exp_of(self, x: Mod) -> Mod:
        if x.v == 0:
            return Mod(1)
        key = ("exp", x.v)
        if key not in self.table:
            opposite = self.table.get(("exp", (-x).v))
            if opposite is not None:
                value = opposite ** -1
            else:
                value = self.random()
                while (value + 1).v == 0 or (value * value + 1).v == 0:  # keep sigmoid and tanh defined
                    value = self.random()
            self.table[key] = value
            self.logs.setdefault(value.v, x)
            self.set_sign(value, 1)
        return self.table[key]

    def log_of(self, x: Mod) -> Mod:
        if x.v == 0:
            raise Undefined("the log of 0")
        if x.v == 1:
            return Mod(0)
        if x.v not in self.logs:
            value = self.random()
            self.logs[x.v] = value
            self.table.setdefault(("exp", value.v), x)
        return self.logs[x.v]

    @staticmethod
    def inverse(v: Mod) -> Mod:
        if v.v == 0:
            raise Undefined("a division by zero")
        return v ** -1

    @staticmethod
    def residue(x: Mod) -> bool:
        """Whether ``x`` is a nonzero square in the field (Euler's criterion)."""
        return x.v != 0 and pow(x.v, (PRIME - 1) // 2, PRIME) == 1

    def rsqrt_of(self, x: Mod) -> Mod:
        """``x^(-1/2)``: a square root of ``1/x`` where ``x`` is a residue (``PRIME = 3 mod 4``, so it is a power),
        else a consistent random value; positive, as over the reals."""
        inverse = self.inverse(x)
        key = ("rsqrt", x.v)
        if key not in self.table:
            root = inverse ** ((PRIME + 1) // 4) if self.residue(x) else self.random()
            self.table[key] = root
            self.set_sign(x, 1)
            self.set_sign(root, 1)
        return self.table[key]

    def sqrt_of(self, x: Mod) -> Mod:
        if x.v == 0:
            return x
        value = self.rsqrt_of(x) ** -1
        self.set_sign(value, 1)
        return value

    def sigmoid_of(self, z: Mod) -> Mod:
        e = self.exp_of(z)
        value = e * self.inverse(e + 1)
        self.set_sign(value, 1)
        return value

    def function_at(self, name: str, order: int, params: dict, z: Mod) -> Mod:
        """``name`` (order 0) or its derivative (order 1) at ``z``."""
        if name == "identity":
            return z if order == 0 else Mod(1)
        if name in ("relu", "leaky_relu", "elu", "negpart"):
            return self._piecewise(name, order, params, z)
        if name == "rsqrt":
            r = self.rsqrt_of(z)
            return r if order == 0 else -(r ** 3) * self.scalar(sp.Rational(1, 2))
        if name == "sqrt":  # a forward pass written as code: 1 / rsqrt, its derivative 1 / (2 sqrt)
            root = self.sqrt_of(z)
            return root if order == 0 else root ** -1 * self.scalar(sp.Rational(1, 2))
        if name == "sigmoid":
            s = self.sigmoid_of(z)
            return s if order == 0 else s * (1 - s)
        if name == "tanh":
            e2 = self.exp_of(z) ** 2
            t = (e2 - 1) * self.inverse(e2 + 1)
            self.set_sign(t, self.sign_of(z))
            return t if order == 0 else 1 - t * t
        if name == "softplus":
            if order:
                return self.sigmoid_of(z)
            value = self.log_of(self.exp_of(z) + 1)
            self.set_sign(value, 1)
            return value
        if name == "silu":
            s = self.sigmoid_of(z)
            if order:
                return s * (1 + z * (1 - s))
            value = z * s
            self.set_sign(value, self.sign_of(z))
            return value
        value = self.apply((name, tuple(sorted(params.items())), order), z)  # opaque (gelu)
        if order == 0:
            self.set_sign(value, self.sign_of(z))
        return value

    def _piecewise(self, name, order, params, z):
        sign = self.sign_of(z)
        if name == "negpart":  # min(0, z); at 0 its slope is 1 - ReLU'(0)
            if order == 0:
                return z if sign < 0 else Mod(0)
            return Mod(int(sign < 0)) if sign else 1 - self.scalar(_rational(params["relu_grad_at_zero"]))
        if order == 1:
            if sign > 0:
                return Mod(1)
            if name == "relu":
                at_zero = params["relu_grad_at_zero"] if self.relu_at_zero is None else self.relu_at_zero
                return Mod(0) if sign < 0 else self.scalar(_rational(at_zero))
            alpha = self.scalar(_rational(params["alpha"]))
            return alpha if name == "leaky_relu" else alpha * self.exp_of(z)
        if sign > 0:
            return z
        if name == "relu":
            return Mod(0)
        alpha = self.scalar(_rational(params["alpha"]))
        value = alpha * z if name == "leaky_relu" else alpha * (self.exp_of(z) - 1)
        self.set_sign(value, sign)
        return value

    # -- the backend interface the Evaluator uses, and the claim's extra operations
    def function(self, name: str, order: int, params: dict, z):
        """``function_at`` for every entry of ``z``."""
        return self.map(lambda x: self.function_at(name, order, params, x), z)

    def activation(self, node, z):
        return self.function(node.activation, node.order, node.params, z)

    def exp(self, x):
        return self.map(self.exp_of, x)

    def log(self, x):
        return self.map(self.log_of, x)

    def reciprocal(self, x):
        return self.map(self.inverse, x)

    def rsqrt(self, x):
        return self.map(self.rsqrt_of, x)

    def sqrt(self, x):
        return self.map(self.sqrt_of, x)

    def sign(self, x):
        return self.map(lambda v: Mod(self.sign_of(v)), x)

    def positive(self, x, strict: bool):
        return self.map(lambda v: Mod(int(self.sign_of(v) > 0 or (not strict and v.v == 0))), x)

    def nonzero(self, x) -> np.ndarray:
        return np.vectorize(lambda v: v.v != 0, otypes=[bool])(x)

    def map(self, fn, x):
        return fn(x) if isinstance(x, Mod) else self.elementwise(fn, x)

    def lift(self, x):
        return x if isinstance(x, np.ndarray) else np.array(self.scalar(x) if not isinstance(x, Mod) else x,
                                                            dtype=object)

    def equal(self, a, b) -> np.ndarray:
        return np.vectorize(lambda u, v: u.v == v.v, otypes=[bool])(a, b)


class Float64(Float64Backend):
    """float64 values, for readable counterexamples and as a cross-check where the exact semantics are
    incomplete; never the verdict on their own."""

    def function(self, name, order, params, z):
        node = SimpleNamespace(activation=name, order=order, params=params)
        return self.activation(node, np.asarray(z, dtype=float))

    def log(self, x):
        return np.log(x)

    def reciprocal(self, x):
        return 1.0 / np.asarray(x, dtype=float)

    def rsqrt(self, x):
        return 1.0 / np.sqrt(np.asarray(x, dtype=float))

    def sqrt(self, x):
        return np.sqrt(np.asarray(x, dtype=float))

    def sign(self, x):
        return np.sign(x)

    def positive(self, x, strict: bool):
        return ((x > 0) if strict else (x >= 0)).astype(float)

    def nonzero(self, x):
        return np.asarray(x) != 0

    def lift(self, x):
        return np.asarray(x, dtype=float)


class TreeEvaluator:
    """The value of a claim tree at one instance: ``env`` holds the inputs and forward quantities,
    ``gradients`` the backward values by quantity name, ``sizes`` the size symbols' integers."""

    def __init__(self, semantics, env: dict, gradients: dict, sizes: dict):
        self.sem, self.env, self.gradients, self.sizes = semantics, env, gradients, sizes
        self.evaluator = Evaluator(semantics, env, sizes)

    def __call__(self, tree):
        return self.sem.lift(getattr(self, "_" + tree.op)(tree))

    def lift(self, value):
        """A value as an array (0-d for a scalar), so NumPy broadcasts every operation the same way."""
        return self.sem.lift(value)

    def scalar(self, value):
        return self.lift(self.sem.scalar(sp.sympify(value).xreplace(self.sizes)))

    # -- leaves
    def _name(self, tree):
        return self.env[tree.value]

    def _grad(self, tree):
        return self.gradients[tree.value]

    def _local(self, tree):
        return self.evaluator(tree.value[2])

    def _size(self, tree):
        return self.scalar(tree.value)

    _number = _size

    # -- arithmetic
    def _add(self, tree):
        total = None
        for sign, arg in zip(tree.value, tree.args):
            value = self(arg) if sign > 0 else self.lift(-self(arg))
            total = value if total is None else self.lift(total + value)
        return total

    def _neg(self, tree):
        return -self(tree.args[0])

    def _chain(self, tree):
        value = self(tree.args[0])
        for op, arg in zip(tree.value, tree.args[1:]):
            other = self(arg)
            if op == "/":
                value = value * self.lift(self.sem.reciprocal(other))
            elif op == "*" or (op == "dot" and (value.ndim == 0 or other.ndim == 0)):
                value = value * other
            else:
                value = np.dot(value, other)
            value = self.lift(value)
        return value

    def _pow(self, tree):
        base, k = self(tree.args[0]), tree.value
        if not isinstance(k, int):  # x^(k/2) = sqrt(x)^k = rsqrt(x)^(-k)
            root = self.sem.sqrt if k > 0 else self.sem.rsqrt
            base, k = self.lift(root(base)), abs(int(2 * k))
        if k < 0:
            base, k = self.lift(self.sem.reciprocal(base)), -k
        result = self.lift(self.scalar(1) + 0 * base) if k == 0 else base
        for _ in range(k - 1):
            result = self.lift(result * base)
        return result

    def _T(self, tree):
        return self(tree.args[0]).T

    def _sum(self, tree):
        value = self(tree.args[0])
        axis, keepdims, mean = tree.value
        total = self.lift(value.sum(axis=axis, keepdims=keepdims))
        if mean:
            count = value.size if axis is None else value.shape[axis]
            total = total * self.scalar(sp.Rational(1, count))
        return total

    def _eye(self, tree):
        from .syntax import constant

        n = int(constant(tree.args[0]).xreplace(self.sizes))
        return self._diagonal_matrix([self.sem.scalar(1)] * n)

    def _diagonal_matrix(self, entries):
        n = len(entries)
        matrix = self.sem.ones((n, n)) * self.sem.scalar(0)
        for i, entry in enumerate(entries):
            matrix[i, i] = entry
        return matrix

    def _diag(self, tree):
        """``np.diag`` (NumPy's: a 1-D array's diagonal matrix, a square matrix's diagonal as 1-D) or the paper's
        ``diag(X)`` (a square matrix's diagonal as a column); shapes are checked before (``shapes.py``)."""
        value = self(tree.args[0])
        if value.ndim == 1:
            return self._diagonal_matrix(list(value))
        diagonal = np.array([value[i, i] for i in range(value.shape[0])], dtype=value.dtype)
        return diagonal if tree.value == "numpy" else diagonal.reshape(-1, 1)

    def _diagmat(self, tree):
        return self._diagonal_matrix(list(np.ravel(self(tree.args[0]))))

    def _ones(self, tree):
        from .syntax import constant

        shape = tuple(int(constant(arg).xreplace(self.sizes)) for arg in tree.args)
        if tree.value != "flat" and len(shape) == 1:
            shape = (shape[0], 1)
        return self.sem.ones(shape)

    # -- functions
    def _fn(self, tree):
        name, order, params = tree.value
        return self.sem.function(name, order, dict(params), self(tree.args[0]))

    def _softmax(self, tree):
        e = self.lift(self.sem.exp(self(tree.args[0])))
        return e * self.lift(self.sem.reciprocal(self.lift(e.sum(axis=tree.value, keepdims=True))))

    def _log_softmax(self, tree):
        return self.sem.log_softmax(self(tree.args[0]), tree.value)

    def _exp(self, tree):
        return self.sem.exp(self(tree.args[0]))

    def _sqrt(self, tree):
        return self.sem.sqrt(self(tree.args[0]))

    def _log(self, tree):
        return self.sem.log(self(tree.args[0]))

    def _sign(self, tree):
        return self.sem.sign(self(tree.args[0]))

    def _abs(self, tree):
        value = self(tree.args[0])
        return value * self.lift(self.sem.sign(value))

    def _cmp(self, tree):
        left, right = (self(arg) for arg in tree.args)
        difference = self.lift(left - right if tree.value in (">", ">=") else right - left)
        return self.sem.positive(difference, strict=len(tree.value) == 1)

    def _where(self, tree):
        condition, yes, no = np.broadcast_arrays(*(self(arg) for arg in tree.args))
        return np.where(self.sem.nonzero(condition), yes, no)

    def _maximum(self, tree):
        a, b = np.broadcast_arrays(*(self(arg) for arg in tree.args))
        return np.where(self.sem.nonzero(self.sem.positive(self.lift(a - b), strict=True)), a, b)

    def _minimum(self, tree):
        a, b = np.broadcast_arrays(*(self(arg) for arg in tree.args))
        return np.where(self.sem.nonzero(self.sem.positive(self.lift(a - b), strict=True)), b, a)

    # -- image operators, with the derivation's windows (``operators.py``)
    def _im2col(self, tree):
        return images.im2col(self(tree.args[0]), tree.value.param, self.sem.scalar(0))

    def _col2im(self, tree):
        return images.col2im(self(tree.args[0]), tree.value.param, self.sem.scalar(0))

    def _fold(self, tree):
        return images.fold(self(tree.args[0]), tree.value.param)

    def _unfold(self, tree):
        return images.unfold(self(tree.args[0]), tree.value.param)

    def _rowmax(self, tree):
        return self.sem.row_max(self(tree.args[0]))

    def _maxmask(self, tree):
        return self.sem.max_mask(self(tree.args[0]))
