"""The layer registry: every layer kind defined once, its forward steps beside their backward rules.

A layer kind turns one ``[[layers]]`` entry into forward steps through a ``network.Builder``. Each step is
``name = expr`` with, for every operand it reads, a ``Local``: the local gradient as the lecture tabulates
it (a factor and the side it multiplies the upstream gradient from) and the vector-Jacobian product that
sends the upstream gradient ``G`` back to that operand. The derivation (``derivation.py``) walks the steps
in reverse and adds up what each value receives; verification, printing and code generation read the same
steps, so nothing downstream branches on a layer kind.

Layouts are handled by the builder's helpers (``batch_sum``, ``broadcast_batch``, ...), so each kind is
written once for both: batch-first ``Z = A W + 1_N b`` and column ``Z = W A + b 1_N^T``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sympy as sp

from .expressions import Elementwise, LogSoftmax, Softmax
from .rules import LOG_PROBABILITIES, PROBABILITIES, REAL, TRAINABLE_ACTIVATIONS, scaled


@dataclass(frozen=True)
class Local:
    """How a step's output depends on one operand (``wrt``).

    ``side`` says how the factor meets the upstream gradient ``G``: ``left`` / ``right`` (matrix product),
    ``elementwise`` (Hadamard product), ``identity`` (``G`` passes unchanged), ``vjp`` (no single factor:
    ``vjp(G)`` is the whole formula), ``loss`` (the loss's own gradient, no upstream). ``vjp(G)`` is the
    contribution to ``dL/d(wrt)``.
    """

    wrt: str
    factor: sp.Basic | None
    side: str
    vjp: Callable


def left(wrt, factor) -> Local:
    return Local(wrt, factor, "left", lambda G: factor * G)


def right(wrt, factor) -> Local:
    return Local(wrt, factor, "right", lambda G: G * factor)


def elementwise(wrt, factor) -> Local:
    return Local(wrt, factor, "elementwise", lambda G: sp.hadamard_product(G, factor))


def identity(wrt) -> Local:
    return Local(wrt, None, "identity", lambda G: G)


def vjp(wrt, formula) -> Local:
    return Local(wrt, None, "vjp", formula)


@dataclass(frozen=True)
class LayerKind:
    """One layer kind: its spec keys, whether it keeps the width, and how it builds its forward steps.

    ``build(b, layer, l, source, out)`` adds the steps of layer ``l`` reading the value named ``source`` and
    ending in the value named ``out``. ``output(layer)`` says what the layer produces (real scores,
    probabilities, log-probabilities), for the losses that need one of them. ``explanation`` is the catalog
    key of the text that introduces the kind. ``ties(layer)`` names another value whose width must equal the
    layer's input (a skip connection's ``from``), or None. ``per_unit``: each output unit reads only the same
    unit of the input (batch norm, dropout, an activation), as the network picture draws it.
    """

    name: str
    keys: tuple[str, ...]
    preserves_width: bool
    build: Callable
    explanation: str
    output: Callable = lambda layer: REAL
    ties: Callable = lambda layer: None
    per_unit: bool = False


# -- dense --------------------------------------------------------------------------------------------------

def _dense(b, layer, l, source, out):
    A = b.value(source)
    n_in, n_out = b.width_of(source), b.new_width(l)
    W = b.parameter(f"W{l}", (n_in, n_out) if b.batch_first else (n_out, n_in), "weight", fan_in=n_in)
    bias = b.parameter(f"b{l}", b.feature_shape(n_out), "bias") if layer.bias else None
    if b.batch_first:
        linear = A * W
        locals_ = [left(W.name, A.T), *([left(bias.name, sp.OneMatrix(1, b.N))] if bias else []),
                   right(source, W.T)]
    else:
        linear = W * A
        locals_ = [right(W.name, A.T), *([right(bias.name, sp.OneMatrix(b.N, 1))] if bias else []),
                   left(source, W.T)]
    Z = b.step(f"Z{l}", linear + b.broadcast_batch(bias) if bias else linear, l, "linear", locals_)
    _activate(b, layer, l, Z, out)


def _activation(b, layer, l, source, out):
    """An activation on its own (after a normalization layer, say): ``out = f(A)``."""
    _activate(b, layer, l, b.value(source), out)


def _activate(b, layer, l, Z, out):
    """``out = f(Z)`` entrywise, or PReLU with its trainable slope."""
    if layer.activation in TRAINABLE_ACTIVATIONS:
        _prelu(b, l, Z, out)
        return
    f = Elementwise(layer.activation, Z, 0, tuple(layer.params.items()))
    slope = f.derivative()
    # The identity's slope is 1: the upstream gradient passes as it is.
    local = (Local(Z.name, slope, "elementwise", lambda G: G) if layer.activation == "identity"
             else elementwise(Z.name, slope))
    b.step(out, f, l, "activation", [local], fusion=layer.activation)


def _prelu(b, l, Z, out):
    """``a = max(0, Z) + alpha ⊙ min(0, Z)`` with a trainable slope per unit; its derivative at 0 is alpha."""
    alpha = b.parameter(f"alpha{l}", b.feature_shape(b.width_of(Z.name)), "slope")
    at_zero = (("relu_grad_at_zero", 0),)
    positive, negative = Elementwise("relu", Z, 0, at_zero), Elementwise("negpart", Z, 0, at_zero)
    slope_map = b.broadcast_batch(alpha)
    slope = positive.derivative() + sp.hadamard_product(slope_map, negative.derivative())
    b.step(out, positive + sp.hadamard_product(slope_map, negative), l, "activation",
           [elementwise(Z.name, slope), vjp(alpha.name, lambda G: b.batch_sum(sp.hadamard_product(G, negative)))])


def _dense_output(layer) -> str:
    return PROBABILITIES if layer.activation == "sigmoid" else REAL


# -- normalization ------------------------------------------------------------------------------------------

def _normalization(over: str):
    """Batch norm (statistics over the batch) or layer norm (over each sample's features), staged as its graph:
    mean, centred input, variance, inverse standard deviation, normalized input, scale and shift."""

    def build(b, layer, l, source, out):
        X, n = b.value(source), b.width_of(source)
        reduce, spread = (b.batch_sum, b.broadcast_batch) if over == "batch" else (
            lambda M: b.feature_sum(M, n), lambda v: b.broadcast_features(v, n))
        count = b.N if over == "batch" else n
        mu = b.step(f"mu{l}", reduce(X) / count, l, "mean",
                    [vjp(source, lambda G: spread(G) / count)])
        xc = b.step(f"xc{l}", X - spread(mu), l, "center",
                    [identity(source), vjp(mu.name, lambda G: -reduce(G))])
        var = b.step(f"var{l}", reduce(sp.HadamardPower(xc, 2)) / count, l, "variance",
                     [vjp(xc.name, lambda G: 2 * sp.hadamard_product(spread(G), xc) / count)])
        eps = sp.Rational(str(layer.eps)) * sp.OneMatrix(*var.shape)
        # Written with the output r: d/dv (v + eps)^(-1/2) = -r^3 / 2.
        rstd = b.step(f"rstd{l}", Elementwise("rsqrt", var + eps), l, "rsqrt",
                      lambda r: [elementwise(var.name, -sp.HadamardPower(r, 3) / 2)])
        xhat = b.step(f"xhat{l}", sp.hadamard_product(xc, spread(rstd)), l, "normalize",
                      [elementwise(xc.name, spread(rstd)),
                       vjp(rstd.name, lambda G: reduce(sp.hadamard_product(G, xc)))])
        gamma = b.parameter(f"gamma{l}", b.feature_shape(n), "scale")
        beta = b.parameter(f"beta{l}", b.feature_shape(n), "shift")
        ones = sp.OneMatrix(1, b.N) if b.batch_first else sp.OneMatrix(b.N, 1)
        b.step(out, sp.hadamard_product(xhat, b.broadcast_batch(gamma)) + b.broadcast_batch(beta), l,
               "scale_shift",
               [elementwise(xhat.name, b.broadcast_batch(gamma)),
                vjp(gamma.name, lambda G: b.batch_sum(sp.hadamard_product(G, xhat))),
                (left if b.batch_first else right)(beta.name, ones)])
        dxhat = b.gradient(xhat.name)
        compact = sp.hadamard_product(spread(rstd), count * dxhat - spread(reduce(dxhat))
                                      - sp.hadamard_product(xhat, spread(reduce(sp.hadamard_product(dxhat, xhat)))))
        b.compact(source, (mu.name, xc.name), compact / count)

    return build


# -- other kinds --------------------------------------------------------------------------------------------

def _dropout(b, layer, l, source, out):
    """Inverted dropout with a fixed 0/1 mask ``M`` given as an input: ``out = A ⊙ M / (1 - p)``."""
    A = b.value(source)
    M = b.mask(f"M{l}", A.shape, 1 - layer.p)
    keep = 1 / (1 - sp.Rational(str(layer.p)))
    b.step(out, keep * sp.hadamard_product(A, M), l, "dropout", [elementwise(source, keep * M)])


def _softmax(b, layer, l, source, out):
    A, n = b.value(source), b.width_of(source)
    b.step(out, Softmax(A, b.axis), l, "softmax",
           lambda S: [vjp(source, lambda G: sp.hadamard_product(
               S, G - b.per_sample_total(sp.hadamard_product(G, S), n)))], fusion="softmax")


def _log_softmax(b, layer, l, source, out):
    A, n = b.value(source), b.width_of(source)
    b.step(out, LogSoftmax(A, b.axis), l, "log_softmax",
           [vjp(source, lambda G: G - sp.hadamard_product(Softmax(A, b.axis), b.per_sample_total(G, n)))],
           fusion="log_softmax")


def _add(b, layer, l, source, out):
    """A skip connection: ``out = A + F`` with ``F`` the earlier value named by ``from``."""
    b.step(out, b.value(source) + b.value(layer.source), l, "add", [identity(source), identity(layer.source)])


LAYER_KINDS: dict[str, LayerKind] = {
    kind.name: kind
    for kind in (
        LayerKind("dense", ("size", "activation", "alpha", "relu_grad_at_zero", "bias"), False, _dense,
                  "kind_dense", _dense_output),
        LayerKind("activation", ("activation", "alpha", "relu_grad_at_zero"), True, _activation, "kind_activation",
                  _dense_output, per_unit=True),
        LayerKind("batchnorm", ("eps",), True, _normalization("batch"), "kind_batchnorm", per_unit=True),
        LayerKind("layernorm", ("eps",), True, _normalization("features"), "kind_layernorm"),
        LayerKind("dropout", ("p",), True, _dropout, "kind_dropout", per_unit=True),
        LayerKind("softmax", (), True, _softmax, "kind_softmax", lambda layer: PROBABILITIES),
        LayerKind("log_softmax", (), True, _log_softmax, "kind_log_softmax", lambda layer: LOG_PROBABILITIES),
        LayerKind("add", ("from",), True, _add, "kind_add", ties=lambda layer: layer.source, per_unit=True),
    )
}


# -- activations and losses that simplify together ------------------------------------------------------------

@dataclass(frozen=True)
class Fusion:
    """A gradient that simplifies when a last step meets a loss: for the last step's operand ``wrt``.

    ``simplified(Y, T, terms, coefficient, operand)`` is the simpler contribution (``terms`` the loss's
    ``LossTerms``); ``distribution`` the same, simpler still, when each sample's targets sum to 1; ``label``
    the catalog key naming the combination.
    """

    label: str
    simplified: Callable
    distribution: Callable | None = None


def _fused_general(Y, T, c, k, operand):
    """``k (softmax ⊙ rowsum(T) - T)``: softmax then cross-entropy, with any targets."""
    return scaled(k, sp.hadamard_product(Y, c.per_sample_total(T)) - T)


FUSIONS: dict[tuple[str, str], Fusion] = {
    ("sigmoid", "bce"): Fusion("fused_sigmoid_bce", lambda Y, T, c, k, operand: scaled(k, Y - T)),
    ("sigmoid", "cross_entropy"): Fusion("fused_sigmoid_cross_entropy",
                                         lambda Y, T, c, k, operand: scaled(k, sp.hadamard_product(T, Y) - T)),
    ("softmax", "cross_entropy"): Fusion("fused_softmax_cross_entropy", _fused_general,
                                         lambda Y, T, c, k, operand: scaled(k, Y - T)),
    ("log_softmax", "nll"): Fusion(
        "fused_log_softmax_nll",
        lambda Y, T, c, k, operand: scaled(k, sp.hadamard_product(Softmax(operand, c.axis), c.per_sample_total(T))
                                           - T),
        lambda Y, T, c, k, operand: scaled(k, Softmax(operand, c.axis) - T)),
}
