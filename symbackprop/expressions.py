"""The matrix-expression vocabulary SymPy lacks: elementwise activations, the loss's link functions, the loss.

SymPy's own elementwise machinery (``ElementwiseApplyFunction``) differentiates and prints badly (see
DESIGN.md), so the network uses these small nodes instead. They only carry structure: what they mean is
defined by the rule table (``rules.py``), and ``evaluate.py`` gives them values.
"""

from __future__ import annotations

import sympy as sp
from sympy.core.symbol import Str
from sympy.matrices.expressions import MatrixExpr


def _str(value) -> Str:
    return value if isinstance(value, Str) else Str(str(value))


class Elementwise(MatrixExpr):
    """``f(Z)`` (order 0) or ``f'(Z)`` (order 1) entrywise, for the activation ``f`` whose rule-table key
    (``rules.activation_rule``) is ``activation``: a built-in name, or a custom activation's key.

    ``params`` is a tuple of ``(name, value)`` pairs (e.g. ``alpha``) that select one member of the
    activation's family.
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


class Sigmoid(MatrixExpr):
    """The logistic function entrywise, as it appears in the gradient of ``bce_logits``."""

    def __new__(cls, arg):
        return super().__new__(cls, arg)

    arg = property(lambda self: self.args[0])
    shape = property(lambda self: self.arg.shape)


class Softmax(MatrixExpr):
    """Softmax over each sample: along rows (``axis=1``, batch-first) or columns (``axis=0``, column layout)."""

    def __new__(cls, arg, axis):
        return super().__new__(cls, arg, sp.Integer(axis))

    arg = property(lambda self: self.args[0])
    axis = property(lambda self: int(self.args[1]))
    shape = property(lambda self: self.arg.shape)


class LossValue(sp.Expr):
    """The scalar loss ``L(Y_pred, Y_true)`` of the kind named in the rule table."""

    def __new__(cls, kind, prediction, target):
        return super().__new__(cls, _str(kind), prediction, target)

    kind = property(lambda self: self.args[0].name)
    prediction = property(lambda self: self.args[1])
    target = property(lambda self: self.args[2])
