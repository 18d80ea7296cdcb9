"""The shape of a claim's formula, with NumPy's rules, at symbolic sizes or at some of them fixed.

A shape is ``(rows, cols)`` of SymPy size expressions, ``Flat(n)`` for a 1-D result (a sum without
``keepdims``, ``np.ones(N)``: it broadcasts as a row, and its transpose is itself), or ``None`` for a
scalar. ``dims`` maps each size to what it is at the level being checked: itself (every width symbolic
and different) or the spec's number (``n_2 -> 1``), so a claim that only fits because a width is 1 or
two widths are equal is told apart from one that always fits.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from ..printing import shape_text


class ShapeMismatch(Exception):
    """Factors of a claim that do not fit together (a verdict, not a parse error)."""


@dataclass(frozen=True)
class Flat:
    """A 1-D array of length ``n``."""

    n: sp.Basic

    @property
    def as_row(self):
        return (sp.Integer(1), self.n)


def describe(shape) -> str:
    if shape is None:
        return "scalar"
    if isinstance(shape, Flat):
        return f"1-D of length {shape_text((shape.n,))}"
    return shape_text(shape)


class ShapeInference:
    """Shapes of the nodes of one claim; ``source`` is the claim's text, for messages."""

    def __init__(self, source: str, network, dims):
        self.source, self.network, self.dims = source, network, dims

    def __call__(self, tree):
        return getattr(self, "_" + tree.op)(tree)

    def of(self, expr_shape) -> tuple:
        return tuple(self.dims(sp.sympify(d)) for d in expr_shape)

    def text(self, tree) -> str:
        return tree.text(self.source)

    # -- leaves
    def _name(self, tree):
        return self.of(self.network.symbol(tree.value).shape)

    _grad = _name

    def _local(self, tree):
        expr = tree.value[2]
        return self.of(expr.shape) if hasattr(expr, "shape") else None

    def _size(self, tree):
        return None

    _number = _size

    # -- operations
    def _add(self, tree):
        shape = self(tree.args[0])
        for k, (sign, arg) in enumerate(zip(tree.value[1:], tree.args[1:])):
            left = self.source[tree.args[0].start:tree.args[k].end].strip()
            shape = self.broadcast(shape, self(arg), left, arg, "+" if sign > 0 else "-", tree)
        return shape

    def _chain(self, tree):
        first = tree.args[0]
        shape = self(first)
        for k, (op, arg) in enumerate(zip(tree.value, tree.args[1:])):
            other = self(arg)
            left = self.source[first.start:tree.args[k].end].strip()
            if op in ("*", "/"):
                shape = self.broadcast(shape, other, left, arg, op, tree)
            else:
                shape = self.matmul(shape, other, left, self.text(arg), op)
        return shape

    def _neg(self, tree):
        return self(tree.args[0])

    _pow = _fn = _exp = _log = _abs = _sign = _sqrt = _neg

    def _T(self, tree):
        shape = self(tree.args[0])
        return shape[::-1] if isinstance(shape, tuple) else shape

    def _softmax(self, tree):
        shape = self(tree.args[0])
        if not isinstance(shape, tuple):
            raise ShapeMismatch(f"softmax({self.text(tree.args[0])}) needs a matrix, got {describe(shape)}")
        return shape

    _log_softmax = _softmax

    def _eye(self, tree):
        from .syntax import constant

        n = self.dims(constant(tree.args[0]))
        return (n, n)

    def _diag(self, tree):
        """NumPy's ``np.diag`` (1-D -> diagonal matrix, square -> 1-D diagonal), or the paper's ``diag(X)`` (square
        -> its diagonal as a column)."""
        shape, text = self(tree.args[0]), self.text(tree.args[0])
        numpy = tree.value == "numpy"
        if numpy and isinstance(shape, Flat):
            return (shape.n, shape.n)
        if isinstance(shape, tuple) and shape[0] == shape[1]:
            return Flat(shape[0]) if numpy else (shape[0], sp.Integer(1))
        name = "np.diag" if numpy else "diag"
        raise ShapeMismatch(f"{name}({text}) takes a square matrix (its diagonal), and {text} is {describe(shape)}; "
                            "for the diagonal matrix of a vector write "
                            + ("np.diagflat(v)" if numpy else "Diag(v)"))

    def _diagmat(self, tree):
        shape, text = self(tree.args[0]), self.text(tree.args[0])
        if isinstance(shape, Flat):
            return (shape.n, shape.n)
        if isinstance(shape, tuple) and 1 in shape:
            n = shape[1] if shape[0] == 1 else shape[0]
            return (n, n)
        raise ShapeMismatch(f"Diag({text}) makes a diagonal matrix of a vector, and {text} is {describe(shape)}; "
                            "for the diagonal of a square matrix write diag(X) (a column) or np.diag(X)")

    def _sum(self, tree):
        shape = self(tree.args[0])
        axis, keepdims, _ = tree.value
        if axis is None or shape is None:
            return None
        if isinstance(shape, Flat):
            if axis == 1:
                raise ShapeMismatch(f"{self.text(tree.args[0])} is 1-D: it has no axis 1")
            return Flat(sp.Integer(1)) if keepdims else None
        rows, cols = shape
        if keepdims:
            return (sp.Integer(1), cols) if axis == 0 else (rows, sp.Integer(1))
        return Flat(cols if axis == 0 else rows)

    def _ones(self, tree):
        from .syntax import constant

        sizes = [self.dims(constant(arg)) for arg in tree.args]
        if tree.value == "flat":
            return Flat(sizes[0])
        return (sizes[0], sp.Integer(1)) if len(sizes) == 1 else tuple(sizes)

    def _cmp(self, tree):
        return self.broadcast(self(tree.args[0]), self(tree.args[1]), tree.args[0], tree.args[1], tree.value, tree)

    def _maximum(self, tree):
        return self.broadcast(self(tree.args[0]), self(tree.args[1]), tree.args[0], tree.args[1], ",", tree)

    _minimum = _maximum

    def _where(self, tree):
        condition, yes, no = (self(arg) for arg in tree.args)
        shape = self.broadcast(condition, yes, tree.args[0], tree.args[1], ",", tree)
        return self.broadcast(shape, no, tree.args[0], tree.args[2], ",", tree)

    def _tuple(self, tree):
        raise ShapeMismatch("a tuple is only the shape argument of np.ones")

    def _image_operator(self, tree):
        """``im2col``, ``col2im``, ``fold``, ``unfold``: the derivation's operator (``operators.py``) takes a matrix
        of one shape; a string in its place is why none fits."""
        shape = self(tree.args[0])
        if isinstance(tree.value, str):
            raise ShapeMismatch(tree.value)
        takes, text = self.of(tree.value.takes), self.text(tree.args[0])
        if shape != takes:
            raise ShapeMismatch(f"{tree.op}({text}) takes {describe(takes)} here, and {text} is {describe(shape)}")
        return self.of(tree.value.gives)

    _im2col = _col2im = _fold = _unfold = _image_operator

    def _rowmax(self, tree):
        shape = self.matrix(tree)
        return (shape[0], sp.Integer(1))

    def _maxmask(self, tree):
        return self.matrix(tree)

    def matrix(self, tree) -> tuple:
        """The shape of ``tree``'s argument, which must be a matrix (rowmax and the max mask work row by row)."""
        shape = self(tree.args[0])
        if not isinstance(shape, tuple):
            raise ShapeMismatch(f"{self.text(tree)} needs a matrix, and {self.text(tree.args[0])} is {describe(shape)}")
        return shape

    # -- rules
    def broadcast(self, a, b, left, right, op, tree):
        """NumPy broadcasting: sizes equal, or one of them 1; a 1-D array is a row."""
        if a is None or b is None:
            return b if a is None else a
        flat = isinstance(a, Flat) and isinstance(b, Flat)
        ra, rb = (s.as_row if isinstance(s, Flat) else s for s in (a, b))
        out = []
        for x, y in zip(ra, rb):
            if x == y or y == 1:
                out.append(x)
            elif x == 1:
                out.append(y)
            else:
                lt = left if isinstance(left, str) else self.text(left)
                word = "an elementwise operation" if op in ("*", "/", ",") else "a sum" if op in "+-" else \
                    "a comparison"
                raise ShapeMismatch(f"{lt} ({describe(a)}) {op} {self.text(right)} ({describe(b)}): {word} "
                                    "needs equal shapes (or a size 1 that broadcasts)")
        return Flat(out[1]) if flat else tuple(out)

    def matmul(self, a, b, left: str, right: str, op: str):
        """``@``/``np.matmul`` need two arrays; ``np.dot``, ``.dot`` and juxtaposition also scale."""
        if a is None or b is None:
            if op == "@":
                which = left if a is None else right
                raise ShapeMismatch(f"{left} @ {right}: a matrix product needs two arrays, and {which} is a scalar "
                                    "(use * to scale)")
            return b if a is None else a
        inner_a = a.n if isinstance(a, Flat) else a[1]
        inner_b = b.n if isinstance(b, Flat) else b[0]
        if inner_a != inner_b:
            symbol = "@" if op == "@" else "times"
            raise ShapeMismatch(f"{left} ({describe(a)}) {symbol} {right} ({describe(b)}): the inner sizes "
                                f"{shape_text((inner_a,))} and {shape_text((inner_b,))} differ")
        if isinstance(a, Flat) and isinstance(b, Flat):
            return None
        if isinstance(a, Flat):
            return Flat(b[1])
        if isinstance(b, Flat):
            return Flat(a[0])
        return (a[0], b[1])


def fits(shape, want: tuple, broadcasts: bool) -> bool:
    """Whether a claim of ``shape`` is a value of shape ``want`` (a 1-D claim stands for a row). With
    ``broadcasts`` (an entrywise local gradient, or one written with its upstream gradient) a scalar, row or
    column that broadcasts to ``want`` will do: gamma for d(gamma * xhat + beta)/dxhat, dL/dmu / N for dmu/dX."""
    if shape is None:
        return broadcasts
    if isinstance(shape, Flat):
        shape = shape.as_row
    if broadcasts and len(want) == 2:
        return all(s == w or s == 1 for s, w in zip(shape, want))
    return tuple(shape) == tuple(want)


def result_problem(shape, want: tuple, what: str, broadcasts: bool, batch_first: bool) -> str:
    """Why a claim of ``shape`` is not a value of shape ``want``; '' when it is."""
    if fits(shape, want, broadcasts):
        return ""
    if shape is None:
        return f"the claim is a scalar; {what} must be {shape_text(want)}"
    if isinstance(shape, Flat):
        hint = "" if batch_first else " (a 1-D array broadcasts as a row: keep the axis with keepdims=True)"
        return f"the claim is a 1-D array of length {shape_text((shape.n,))}; {what} must be {shape_text(want)}{hint}"
    return f"the claim has shape {shape_text(shape)}; {what} must be {shape_text(want)}"
