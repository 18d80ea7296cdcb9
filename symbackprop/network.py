"""Spec -> Network: the forward pass as ordered SymPy matrix expressions with symbolic shapes."""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .expressions import Elementwise, LossValue
from .spec import Spec


@dataclass(frozen=True)
class Step:
    """One forward quantity: ``symbol = expr``, with ``expr`` written in earlier steps' symbols."""

    name: str
    symbol: sp.Basic
    expr: sp.Basic
    layer: int
    kind: str  # "linear", "activation" or "loss"


@dataclass(frozen=True)
class Network:
    """The forward pass of a spec: symbols for every quantity and the steps that define them.

    Shapes are symbolic: ``N`` samples, ``n_0`` inputs, ``n_l`` units in layer ``l``. In the batch-first
    layout rows are samples (``X`` is N x n_0); in the column layout columns are samples.
    """

    spec: Spec
    N: sp.Symbol
    widths: tuple[sp.Symbol, ...]
    inputs: dict  # name -> MatrixSymbol for X, W1, b1, ..., Y_true
    steps: tuple[Step, ...]

    @property
    def depth(self) -> int:
        return len(self.spec.layers)

    @property
    def batch_first(self) -> bool:
        return self.spec.layout == "batch-first"

    @property
    def input_name(self) -> str:
        return self.spec.input.name

    def symbol(self, name: str) -> sp.Basic:
        """The symbol of an input or a forward step, by name."""
        if name in self.inputs:
            return self.inputs[name]
        for step in self.steps:
            if step.name == name:
                return step.symbol
        raise KeyError(name)

    def shape(self, rows_of_samples: sp.Basic, n: sp.Basic) -> tuple:
        """The shape of a per-sample quantity of width ``n`` in this layout."""
        return (rows_of_samples, n) if self.batch_first else (n, rows_of_samples)

    def activation_name(self, layer: int) -> str:
        """The name of layer ``layer``'s output (1-based): ``a<l>``, or ``Y_pred`` for the last layer."""
        return "Y_pred" if layer == self.depth else f"a{layer}"

    def layer_input(self, layer: int) -> str:
        return self.input_name if layer == 1 else self.activation_name(layer - 1)

    def sizes(self, N: int, widths) -> dict:
        """Values for the size symbols: batch ``N`` and the layer widths ``widths`` (n_0, ..., n_L)."""
        return {self.N: N, **dict(zip(self.widths, widths))}


def build_network(spec: Spec) -> Network:
    """Build the forward pass of ``spec``: ``Z = A W + 1 b`` (batch-first) or ``Z = W A + b 1^T``, then ``a = f(Z)``."""
    N = sp.Symbol("N", positive=True, integer=True)
    widths = tuple(sp.Symbol(f"n_{l}", positive=True, integer=True) for l in range(len(spec.layers) + 1))
    batch_first = spec.layout == "batch-first"

    def per_sample(name, n):
        return sp.MatrixSymbol(name, *((N, n) if batch_first else (n, N)))

    inputs = {spec.input.name: per_sample(spec.input.name, widths[0])}
    steps = []
    previous = inputs[spec.input.name]
    for l, layer in enumerate(spec.layers, start=1):
        n_in, n_out = widths[l - 1], widths[l]
        if batch_first:
            W = inputs[f"W{l}"] = sp.MatrixSymbol(f"W{l}", n_in, n_out)
            b = inputs[f"b{l}"] = sp.MatrixSymbol(f"b{l}", 1, n_out)
            linear = previous * W + sp.OneMatrix(N, 1) * b
        else:
            W = inputs[f"W{l}"] = sp.MatrixSymbol(f"W{l}", n_out, n_in)
            b = inputs[f"b{l}"] = sp.MatrixSymbol(f"b{l}", n_out, 1)
            linear = W * previous + b * sp.OneMatrix(1, N)
        Z = per_sample(f"Z{l}", n_out)
        steps.append(Step(f"Z{l}", Z, linear, l, "linear"))
        name = "Y_pred" if l == len(spec.layers) else f"a{l}"
        a = per_sample(name, n_out)
        steps.append(Step(name, a, Elementwise(layer.activation, Z, 0, tuple(layer.params.items())), l, "activation"))
        previous = a
    inputs["Y_true"] = per_sample("Y_true", widths[-1])
    loss = sp.Symbol("L")
    steps.append(Step("L", loss, LossValue(spec.loss.kind, previous, inputs["Y_true"]), len(spec.layers), "loss"))
    return Network(spec, N, widths, inputs, tuple(steps))
