"""The matrix-expression vocabulary SymPy lacks: elementwise functions, softmax, logarithms, the loss.

SymPy's own elementwise machinery (``ElementwiseApplyFunction``) differentiates and prints badly, so the
network uses these small nodes instead. They only carry structure: what an elementwise function means is defined by the rule table (``rules.py``), and ``evaluate.py`` gives the nodes values.

Two families: ``Elementwise`` applies a rule-table function (an activation, or an internal one such as the
inverse square root of batch norm) that the exact verifier treats as an opaque function; ``Exp``, ``Log``,
``Sigmoid``, ``Softmax`` and ``LogSoftmax`` are built from ``exp`` and ``log`` themselves, so identities
between them (``d/dy log(1 + e^y) = sigma(y)``) hold exactly in every backend.
"""

from __future__ import annotations

import sympy as sp
from sympy.core.symbol import Str
from sympy.matrices.expressions import MatrixExpr


def _str(value) -> Str:
    return value if isinstance(value, Str) else Str(str(value))


class _Printed:
    """Prints as the derivation's own formulas: ``str()`` in the text form (``relu'(Z1)``), SymPy's ``latex()``
    (and so a notebook's display) in the lecture's notation; never as the constructor call. The project's
    printers keep their own method for each node."""

    def _printed(self, printer, ours):
        """The node printed by ``printer``'s own method for it, else (SymPy's printer) by ``ours``."""
        method = next((method for cls in type(self).__mro__ if issubclass(cls, _Printed)
                       and (method := getattr(printer, f"_print_{cls.__name__}", None)) is not None), None)
        if method is not None:
            return method(self)
        if type(printer).__module__.startswith(__package__):  # one of ours without a form for it: SymPy's
            return printer._print_Basic(self)
        return ours(self)

    def _sympystr(self, printer):
        from .printing import text

        return self._printed(printer, text)

    def _latex(self, printer):
        from .printing import latex

        return self._printed(printer, latex)


class Elementwise(_Printed, MatrixExpr):
    """``f(Z)`` (order 0) or ``f'(Z)`` (order 1) entrywise, for the function ``f`` whose rule-table key
    (``rules.activation_rule``) is ``activation``: a built-in or internal name, or a custom activation's key.

    ``params`` is a tuple of ``(name, value)`` pairs (e.g. ``alpha``) that select one member of the
    function's family.
    """

    def __new__(cls, activation, arg, order=0, params=()):
        params = sp.Tuple(*(sp.Tuple(_str(k), sp.nsimplify(v)) for k, v in params))
        return super().__new__(cls, _str(activation), arg, sp.Integer(order), params)

    activation = property(lambda self: self.args[0].name)
    arg = property(lambda self: self.args[1])
    order = property(lambda self: int(self.args[2]))
    params = property(lambda self: {str(k): float(v) for k, v in self.args[3]})
    shape = property(lambda self: self.arg.shape)

    @property
    def key(self) -> str:
        """A name for this exact function (activation and parameters), used by the verifier."""
        return "_".join([self.activation, *(f"{k}{v:g}" for k, v in sorted(self.params.items()))])

    def derivative(self) -> Elementwise:
        """``f'(Z)`` for this ``f(Z)``."""
        return Elementwise(self.activation, self.arg, 1, tuple(self.params.items()))


class _Unary(_Printed, MatrixExpr):
    """A function applied entrywise (or per sample, with an axis) that keeps its argument's shape."""

    def __new__(cls, arg):
        return super().__new__(cls, arg)

    arg = property(lambda self: self.args[0])
    shape = property(lambda self: self.arg.shape)


class Exp(_Unary):
    """``e^M`` entrywise."""


class Log(_Unary):
    """The natural logarithm entrywise."""


class Sigmoid(_Unary):
    """The logistic function entrywise, written through ``exp`` (it appears in the gradient of ``bce_logits``)."""


class _PerSample(_Printed, MatrixExpr):
    """A function of each sample's vector: along rows (``axis=1``, batch-first) or columns (``axis=0``)."""

    def __new__(cls, arg, axis):
        return super().__new__(cls, arg, sp.Integer(axis))

    arg = property(lambda self: self.args[0])
    axis = property(lambda self: int(self.args[1]))
    shape = property(lambda self: self.arg.shape)


class Softmax(_PerSample):
    """Softmax over each sample's entries."""


class LogSoftmax(_PerSample):
    """``log softmax`` over each sample's entries: ``M - log(sum exp(M))`` per sample."""


class LossValue(_Printed, sp.Expr):
    """The scalar loss: a data term ``L(Y_pred, Y_true)`` and an optional L2 penalty on the weights.

    ``loss`` is the spec's ``LossSettings`` in SymPy form (``rules.LossSettings.to_basic``), ``axis`` the axis
    along which one sample's entries lie (1 batch-first, 0 column), ``weights`` the weight matrices the penalty
    covers. ``definition`` is the same value as a 1 x 1 matrix expression built from the nodes above, which
    ``evaluate.py`` can evaluate in every backend.
    """

    def __new__(cls, loss, prediction, target, axis, weights=()):
        return super().__new__(cls, loss, prediction, target, sp.Integer(axis), sp.Tuple(*weights))

    loss = property(lambda self: self.args[0])
    prediction = property(lambda self: self.args[1])
    target = property(lambda self: self.args[2])
    axis = property(lambda self: int(self.args[3]))
    weights = property(lambda self: tuple(self.args[4]))

    @property
    def settings(self):
        from .rules import LossSettings

        return LossSettings.from_basic(self.loss)

    @property
    def rule(self):
        from .rules import loss_rule

        return loss_rule(self.loss)

    @property
    def definition(self) -> MatrixExpr:
        from .rules import loss_definition

        return loss_definition(self)


class _Blocks(_Printed, MatrixExpr):
    """A linear operator on equal blocks along an axis (0: row blocks, 1: column blocks): ``count`` blocks,
    this one at ``index`` (0-based)."""

    def __new__(cls, arg, index, count, axis):
        return super().__new__(cls, arg, sp.Integer(index), sp.Integer(count), sp.Integer(axis))

    arg = property(lambda self: self.args[0])
    index = property(lambda self: int(self.args[1]))
    count = property(lambda self: int(self.args[2]))
    axis = property(lambda self: int(self.args[3]))


class Block(_Blocks):
    """Block ``index`` of ``count`` equal blocks of ``arg`` along ``axis``: an LSTM gate's columns of the
    stacked pre-activations, a head's columns of ``W_q``, step ``t``'s rows of a sequence stacked by time.
    Its adjoint is ``Place``."""

    @property
    def shape(self):
        rows, cols = self.arg.shape
        return (rows / self.count, cols) if self.axis == 0 else (rows, cols / self.count)


class Place(_Blocks):
    """``arg`` put at block ``index`` of ``count`` along ``axis``, zeros elsewhere: the adjoint of ``Block``.
    A sum of one ``Place`` per block is a concatenation."""

    @property
    def shape(self):
        rows, cols = self.arg.shape
        return (rows * self.count, cols) if self.axis == 0 else (rows, cols * self.count)


class CausalSoftmax(Softmax):
    """Softmax over each row's entries at or left of the diagonal (a position attends to itself and earlier
    ones); the entries above it are 0, as if their scores were -inf."""


# -- images (``images.py``): linear operators with their adjoints, and max pooling's selection ----------------

class _Windowed(_Printed, MatrixExpr):
    """An operator that slides a window (``images.Window``, held as a tuple of integers) over images."""

    def __new__(cls, arg, window):
        # ``window``: an ``images.Window``, or the tuple it is held as (``expr.func(*expr.args)`` rebuilds it)
        return super().__new__(cls, arg, window if isinstance(window, sp.Tuple) else sp.Tuple(*window.astuple()))

    arg = property(lambda self: self.args[0])

    @property
    def window(self):
        from .images import Window

        return Window.fromtuple(self.args[1])


class Im2col(_Windowed):
    """``im2col(X)``: the patches a kernel sees, one row per sample and output position, one column per
    ``(c, i, j)`` (``per_channel``, for pooling: one row per sample, channel and position, one column per
    ``(i, j)``); zero padding included. A linear operator whose adjoint is ``Col2im``."""

    @property
    def shape(self):
        return (self.arg.shape[0] * self.window.rows_per_sample, self.window.patch)


class Col2im(_Windowed):
    """``col2im(G)``: the adjoint of ``Im2col``, each row's entries added back where its patch came from, the
    padding cropped."""

    @property
    def shape(self):
        return (self.arg.shape[0] / self.window.rows_per_sample, self.window.size)


class _Positions(_Printed, MatrixExpr):
    """A reordering between one row per (sample, position) and one row per sample."""

    def __new__(cls, arg, positions):
        return super().__new__(cls, arg, sp.Integer(positions))

    arg = property(lambda self: self.args[0])
    positions = property(lambda self: int(self.args[1]))


class Fold(_Positions):
    """``(N P) x F`` to ``N x (F P)``: a convolution's rows (one per sample and position) as each sample's ``F``
    maps side by side, in C order (with ``F = 1``, a reshape). Its adjoint (and inverse) is ``Unfold``."""

    @property
    def shape(self):
        rows, cols = self.arg.shape
        return (rows / self.positions, cols * self.positions)


class Unfold(_Positions):
    """``N x (F P)`` to ``(N P) x F``: the adjoint of ``Fold``."""

    @property
    def shape(self):
        rows, cols = self.arg.shape
        return (rows * self.positions, cols / self.positions)


class RowMax(_Printed, MatrixExpr):
    """Each row's largest entry (a column): max pooling over the windows ``Im2col`` unfolded. The exact
    backends treat it as an opaque function of the row's entries."""

    def __new__(cls, arg):
        return super().__new__(cls, arg)

    arg = property(lambda self: self.args[0])
    shape = property(lambda self: (self.arg.shape[0], sp.Integer(1)))


class MaxMask(_Printed, MatrixExpr):
    """The partial derivatives of ``RowMax`` by each entry of its row: 1 at the row's maximum, 0 elsewhere, and
    with ties the first maximum in row-major order of the window (a convention, as ReLU'(0) is). The exact
    backends give the opaque function's partials."""

    def __new__(cls, arg):
        return super().__new__(cls, arg)

    arg = property(lambda self: self.args[0])
    shape = property(lambda self: self.arg.shape)


class ScalarOf(_Printed, sp.Expr):
    """The one entry of a 1 x 1 matrix expression as a scalar: the loss of a forward pass written as code
    (``forward_code.py``), whose last line reduces a matrix to a number (``.sum()``, ``.mean()``)."""

    def __new__(cls, arg):
        return super().__new__(cls, arg)

    arg = property(lambda self: self.args[0])
