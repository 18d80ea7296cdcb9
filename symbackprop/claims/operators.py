"""The image operators a claim calls (``im2col``, ``col2im``, ``fold``, ``unfold``), given their windows.

A claim writes ``col2im(dXcol3)`` without the window (the image's shape, kernel, stride, padding) or the count of
positions the operator needs: those are the derivation's. Each ``Im2col`` of the forward pass is an ``im2col`` a
claim may apply and, with its shapes swapped, a ``col2im`` (its adjoint); each ``Fold`` is a ``fold`` and an
``unfold``. An operator in a claim takes the one whose input has its argument's shape at the spec's sizes (of
several, the one the derivation applies to that very quantity or gradient: ``im2col(X)``, ``col2im(dXcol1)``);
where none or several different ones do, the node keeps a one-line refusal, which its shape (``shapes.py``)
reports.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import sympy as sp

from ..expressions import Fold, Im2col
from .shapes import ShapeInference, ShapeMismatch, describe

IMAGE_OPERATORS = ("im2col", "col2im", "fold", "unfold")


@dataclass(frozen=True)
class Operator:
    """One image operator as the derivation applies it: ``param`` (an ``images.Window``, or the positions count
    of ``fold``/``unfold``), the shapes it takes and gives, the layer it belongs to, and the claim leaf it is
    applied to where it is one (``("name", "X")`` for ``im2col(X)``, ``("grad", "Xcol1")`` for its adjoint)."""

    name: str
    param: object
    takes: tuple
    gives: tuple
    layer: int
    applied_to: tuple | None


def operators(network) -> dict[str, list[Operator]]:
    """Each image operator's uses in ``network``: the forward pass's, and their adjoints."""
    table = {name: [] for name in IMAGE_OPERATORS}
    for step in network.steps:
        for found in step.expr.atoms(Im2col, Fold):
            takes, gives = tuple(found.arg.shape), tuple(found.shape)
            name, adjoint = ("im2col", "col2im") if isinstance(found, Im2col) else ("fold", "unfold")
            param = found.window if isinstance(found, Im2col) else found.positions
            quantity = ("name", found.arg.name) if isinstance(found.arg, sp.MatrixSymbol) else None
            table[name].append(Operator(name, param, takes, gives, step.layer, quantity))
            gradient = ("grad", step.name) if found == step.expr else None
            table[adjoint].append(Operator(adjoint, param, gives, takes, step.layer, gradient))
    return table


class Windows:
    """Gives each image operator of a claim the derivation's window for it, judged at the sizes ``dims`` maps to."""

    def __init__(self, network, dims):
        self.network, self.dims = network, dims
        self.table = operators(network)

    def __call__(self, claim):
        """``claim`` with each image operator's node holding its ``Operator``, or the refusal (a string)."""
        if not any(n.op in IMAGE_OPERATORS for n in claim.tree.walk()):
            return claim
        return dataclasses.replace(claim, tree=self.resolve(claim.tree, claim.text))

    def resolve(self, tree, source: str):
        args = tuple(self.resolve(arg, source) for arg in tree.args)
        value = self.operator(tree.op, args[0], source) if tree.op in IMAGE_OPERATORS else tree.value
        return dataclasses.replace(tree, args=args, value=value)

    def shape(self, shape) -> tuple:
        return tuple(self.dims(sp.sympify(d)) for d in shape)

    def operator(self, name: str, arg, source: str):
        """The ``Operator`` whose input has ``arg``'s shape; the refusal where none or several different ones
        do; None where ``arg`` has no shape (its own mismatch is the claim's problem)."""
        try:
            shape = ShapeInference(source, self.network, self.dims)(arg)
        except ShapeMismatch:
            return None
        uses = self.table[name]
        fitting = [use for use in uses if self.shape(use.takes) == shape]
        text = f"{name}({arg.text(source)})"
        for candidates in (fitting, [use for use in fitting if use.applied_to == (arg.op, arg.value)]):
            if len({use.param for use in candidates}) == 1:
                return candidates[0]
        if fitting:
            layers = sorted({use.layer for use in fitting})
            return (f"{text} is ambiguous: layers {', '.join(map(str, layers[:-1]))} and {layers[-1]} each apply "
                    f"{name} to a {describe(shape)} matrix, with different windows")
        if not uses:
            return f"{text}: this network has no {name} (no convolution or pooling layer)"
        takes = [f"{describe(self.shape(use.takes))} (layer {use.layer})" for use in uses]
        listed = takes[0] if len(takes) == 1 else f"{', '.join(takes[:-1])} or {takes[-1]}"
        return f"{text}: {arg.text(source)} is {describe(shape)}, and {name} takes {listed} in this network"
