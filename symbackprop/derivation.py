"""Network -> Derivation: local gradients and backward formulas, each with its chain-rule factors.

Batch-first: ``dW = A^T delta``, ``db = 1^T delta``, ``dA = delta W^T``, ``delta = dA (.) f'(Z)``.
Column layout: ``dW = delta A^T``, ``db = delta 1``, ``dA = W^T delta``. A gradient has the shape of what
it differentiates, and ``delta[l] = dL/dZ[l]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from .expressions import Elementwise
from .network import Network, build_network
from .rules import LOSSES
from .spec import Spec, load_spec


@dataclass(frozen=True)
class LocalGradient:
    """One entry of the local-gradient table: how ``of`` changes with ``wrt``, as the factor it contributes.

    ``side`` says where the factor multiplies the upstream gradient: ``left`` / ``right`` (matrix
    product), ``elementwise`` (Hadamard product) or ``loss`` (the loss's own gradient, no upstream).
    """

    of: str
    wrt: str
    expr: sp.Basic
    side: str
    layer: int


@dataclass(frozen=True)
class BackwardStep:
    """``symbol = expr``: the gradient of the loss with respect to ``name``, written with upstream gradients."""

    name: str
    symbol: sp.MatrixSymbol
    expr: sp.Basic
    upstream: str | None
    local: LocalGradient
    layer: int

    @property
    def shape(self):
        return self.symbol.shape


def gradient_symbol(network: Network, name: str) -> sp.MatrixSymbol:
    """The symbol standing for dL/d``name`` (same shape as ``name``)."""
    return sp.MatrixSymbol(f"d{name}", *network.symbol(name).shape)


@dataclass
class Derivation:
    """The derivation of one network: forward pass, local gradients, backward pass and composed gradients."""

    network: Network
    local_gradients: tuple[LocalGradient, ...]
    backward: tuple[BackwardStep, ...]
    _reports: dict = field(default_factory=dict, repr=False)

    @property
    def spec(self) -> Spec:
        return self.network.spec

    @property
    def forward(self) -> dict:
        """Forward quantities in order, name -> SymPy expression (``Z1``, ``a1``, ..., ``Y_pred``, ``L``)."""
        return {step.name: step.expr for step in self.network.steps}

    @property
    def gradients(self) -> dict:
        """dL/d(name) for every quantity, with upstream gradients substituted: name -> matrix expression."""
        composed, result = {}, {}
        for step in self.backward:
            expr = step.expr.xreplace(composed)
            composed[step.symbol] = expr
            result[step.name] = expr
        return result

    def step(self, name: str) -> BackwardStep:
        for step in self.backward:
            if step.name == name:
                return step
        raise KeyError(name)

    def verify(self, **options):
        """Check every formula against direct differentiation; see ``verify.verify`` for the options."""
        from .verify import verify

        key = tuple(sorted(options.items()))
        if key not in self._reports:
            self._reports[key] = verify(self, **options)
        return self._reports[key]

    def render(self, fmt: str, **options) -> str:
        """The derivation as text: ``markdown``, ``latex``, ``beamer`` or ``numpy`` (see ``render.py``)."""
        from .render import render

        return render(self, fmt, **options)


def derive(spec: Spec | dict | str | None = None) -> Derivation:
    """Derive the backward pass of ``spec`` (a Spec, a dict, a TOML path; default: the seed network)."""
    from .spec import seed_spec

    if spec is None:
        spec = seed_spec()
    elif not isinstance(spec, Spec):
        spec = load_spec(spec)
    network = build_network(spec)
    return _derive(network)


def _derive(net: Network) -> Derivation:
    local, backward = [], []
    batch_first = net.batch_first
    L = net.depth

    def add(name, expr, upstream, lg):
        backward.append(BackwardStep(name, gradient_symbol(net, name), expr, upstream, lg, lg.layer))

    Y, T = net.symbol("Y_pred"), net.inputs["Y_true"]
    rule = LOSSES[net.spec.loss.kind]
    loss_grad = rule.gradient(Y, T, net.N, net.widths[-1], 1 if batch_first else 0)
    lg = LocalGradient("L", "Y_pred", loss_grad, "loss", L)
    local.append(lg)
    add("Y_pred", loss_grad, None, lg)

    for l in range(L, 0, -1):
        a_name, A_name = net.activation_name(l), net.layer_input(l)
        Z, A, W = net.symbol(f"Z{l}"), net.symbol(A_name), net.inputs[f"W{l}"]
        layer = net.spec.layers[l - 1]
        dA = gradient_symbol(net, a_name)
        f_prime = Elementwise(layer.activation, Z, 1, tuple(layer.params.items()))
        lg = LocalGradient(a_name, f"Z{l}", f_prime, "elementwise", l)
        local.append(lg)
        # The identity's derivative is 1: delta is the upstream gradient itself.
        add(f"Z{l}", dA if layer.activation == "identity" else sp.hadamard_product(dA, f_prime), a_name, lg)

        delta = gradient_symbol(net, f"Z{l}")
        ones_over_batch = sp.OneMatrix(1, net.N) if batch_first else sp.OneMatrix(net.N, 1)
        for wrt, factor, side, expr in (
            (f"W{l}", A.T, *(("left", A.T * delta) if batch_first else ("right", delta * A.T))),
            (f"b{l}", ones_over_batch, *(("left", ones_over_batch * delta) if batch_first
                                         else ("right", delta * ones_over_batch))),
            (A_name, W.T, *(("right", delta * W.T) if batch_first else ("left", W.T * delta))),
        ):
            lg = LocalGradient(f"Z{l}", wrt, factor, side, l)
            local.append(lg)
            add(wrt, expr, f"Z{l}", lg)
    return Derivation(net, tuple(local), tuple(backward))
