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

import dataclasses
import functools
from collections.abc import Callable
from dataclasses import dataclass

import sympy as sp

from .expressions import (
    Block,
    CausalSoftmax,
    Col2im,
    Elementwise,
    Fold,
    Im2col,
    LogSoftmax,
    MaxMask,
    Place,
    RowMax,
    Softmax,
    Unfold,
)
from .images import Window
from .mistakes import (
    Mistake,
    dropout_mistakes,
    entrywise_log_softmax,
    entrywise_softmax,
    normalization_mistakes,
    other_derivatives,
)
from .rules import ACTIVATIONS, LOG_PROBABILITIES, PROBABILITIES, REAL, TRAINABLE_ACTIVATIONS, scaled


@dataclass(frozen=True)
class Local:
    """How a step's output depends on one operand (``wrt``).

    ``side`` says how the factor meets the upstream gradient ``G``: ``left`` / ``right`` (matrix product),
    ``elementwise`` (Hadamard product), ``identity`` (``G`` passes unchanged), ``vjp`` (no single factor:
    ``vjp(G)`` is the whole formula), ``loss`` (the loss's own gradient, no upstream). ``vjp(G)`` is the
    contribution to ``dL/d(wrt)``; ``mistakes`` the typical wrong ones, named for check and grade.
    """

    wrt: str
    factor: sp.Basic | None
    side: str
    vjp: Callable
    mistakes: tuple[Mistake, ...] = ()  # the typical wrong rules for this operand (``mistakes.py``)


@dataclass(frozen=True)
class WalkLine:
    """One line of the way from a layer's staged steps to its compact form: ``lhs`` (a quantity whose
    gradient the line gives) equals the sum of ``parts``, each (expression, the graph edge (of, wrt) it comes
    back through, or None); ``note`` is the catalog key of the sentence before the line."""

    note: str
    lhs: str
    parts: tuple[tuple[sp.Basic, tuple[str, str] | None], ...]


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
    rows = A.shape[0] if b.batch_first else A.shape[1]  # N samples, or T N stacked steps of a sequence
    if b.batch_first:
        linear = A * W
        locals_ = [left(W.name, A.T), *([left(bias.name, sp.OneMatrix(1, rows))] if bias else []),
                   right(source, W.T)]
    else:
        linear = W * A
        locals_ = [right(W.name, A.T), *([right(bias.name, sp.OneMatrix(rows, 1))] if bias else []),
                   left(source, W.T)]
    Z = b.step(f"Z{l}", linear + b.broadcast_batch(bias, rows) if bias else linear, l, "linear", locals_)
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
    if layer.activation == "identity":  # the slope is 1: the upstream gradient passes as it is
        local = Local(Z.name, slope, "elementwise", lambda G: G)
    else:
        local = dataclasses.replace(elementwise(Z.name, slope), mistakes=other_derivatives(
            layer.activation, Z, lambda name, Z: Elementwise(name, Z, 1, ACTIVATIONS[name].defaults)))
    b.step(out, f, l, "activation", [local], fusion=layer.activation)


def _prelu(b, l, Z, out):
    """``a = max(0, Z) + alpha ⊙ min(0, Z)`` with a trainable slope per unit; its derivative at 0 is alpha."""
    alpha = b.parameter(f"alpha{l}", b.feature_shape(b.width_of(Z.name)), "slope")
    at_zero = (("relu_grad_at_zero", 0),)
    positive, negative = Elementwise("relu", Z, 0, at_zero), Elementwise("negpart", Z, 0, at_zero)
    slope_map = b.broadcast_batch(alpha, Z.shape[0] if b.batch_first else Z.shape[1])
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
        rows = X.shape[0] if b.batch_first else X.shape[1]  # N, or T N for a sequence stacked by step
        batch = functools.partial(b.broadcast_batch, rows=rows)
        reduce, spread = (b.batch_sum, batch) if over == "batch" else (
            lambda M: b.feature_sum(M, n), lambda v: b.broadcast_features(v, n))
        count = rows if over == "batch" else n
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
        ones = sp.OneMatrix(1, rows) if b.batch_first else sp.OneMatrix(rows, 1)
        b.step(out, sp.hadamard_product(xhat, batch(gamma)) + batch(beta), l,
               "scale_shift",
               [elementwise(xhat.name, batch(gamma)),
                vjp(gamma.name, lambda G: b.batch_sum(sp.hadamard_product(G, xhat))),
                (left if b.batch_first else right)(beta.name, ones)])
        dxhat = b.gradient(xhat.name)
        mean_term = spread(reduce(dxhat))
        variance_term = sp.hadamard_product(xhat, spread(reduce(sp.hadamard_product(dxhat, xhat))))

        def form(inner):
            return sp.hadamard_product(spread(rstd), inner) / count

        compact = form(count * dxhat - mean_term - variance_term)
        b.compact(source, (mu.name, xc.name), compact,
                  mistakes=lambda: normalization_mistakes(form, mean_term, variance_term, count * dxhat, count,
                                                          mu.name, var.name, source),
                  walk=lambda: _normalization_walk(b, source, mu, xc, var, rstd, xhat, reduce, spread, count, compact))

    return build


def _normalization_walk(b, source, mu, xc, var, rstd, xhat, reduce, spread, count, compact):
    """From the staged steps to the compact ``dX``: the two paths out of the input, the two out of the centred
    input, the mean's gradient once the centred input's zero sum removes the variance term, the variance term
    written with the normalized input, and the three paths side by side."""
    d = b.gradient
    direct = (sp.hadamard_product(d(xhat.name), spread(rstd)), (xhat.name, xc.name))
    through_var = -sp.hadamard_product(xhat, spread(sp.hadamard_product(rstd, reduce(sp.hadamard_product(
        d(xhat.name), xhat))))) / count
    through_mu = -spread(sp.hadamard_product(rstd, reduce(d(xhat.name)))) / count
    return (WalkLine("walk_paths", source, ((d(xc.name), (xc.name, source)), (spread(d(mu.name)) / count,
                                                                               (mu.name, source)))),
            WalkLine("walk_centred", xc.name, (direct, (2 * sp.hadamard_product(xc, spread(d(var.name))) / count,
                                                        (var.name, xc.name)))),
            WalkLine("walk_mean", mu.name, ((-sp.hadamard_product(rstd, reduce(d(xhat.name))), None),)),
            WalkLine("walk_variance", xc.name, (direct, (through_var, (var.name, xc.name)))),
            WalkLine("walk_three", source, (direct, (through_mu, (mu.name, source)), (through_var, (var.name, xc.name)))),
            WalkLine("walk_compact", source, ((compact, None),)))


# -- other kinds --------------------------------------------------------------------------------------------

def _dropout(b, layer, l, source, out):
    """Inverted dropout with a fixed 0/1 mask ``M`` given as an input: ``out = A ⊙ M / (1 - p)``."""
    A = b.value(source)
    M = b.mask(f"M{l}", A.shape, 1 - layer.p)
    p = sp.Rational(str(layer.p))
    keep = 1 / (1 - p)
    b.step(out, keep * sp.hadamard_product(A, M), l, "dropout",
           [dataclasses.replace(elementwise(source, keep * M), mistakes=dropout_mistakes(l, p, M))])


def _softmax(b, layer, l, source, out):
    A, n = b.value(source), b.width_of(source)
    b.step(out, Softmax(A, b.axis), l, "softmax", _softmax_locals(b, source, n), fusion="softmax")


def _softmax_locals(b, source: str, n):
    """A softmax's rule, written with its output ``S``: ``S ⊙ (G - rowsum(G ⊙ S))`` over each sample's ``n``."""
    return lambda S: [dataclasses.replace(vjp(source, lambda G: sp.hadamard_product(
        S, G - b.per_sample_total(sp.hadamard_product(G, S), n))), mistakes=(entrywise_softmax(S),))]


def _log_softmax(b, layer, l, source, out):
    A, n = b.value(source), b.width_of(source)
    S = Softmax(A, b.axis)
    rule = vjp(source, lambda G: G - sp.hadamard_product(S, b.per_sample_total(G, n)))
    b.step(out, LogSoftmax(A, b.axis), l, "log_softmax",
           [dataclasses.replace(rule, mistakes=(entrywise_log_softmax(S),))],
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


# -- embeddings, attention, recurrence ----------------------------------------------------------------------
# Sizes beside the widths at witness sizes: a vocabulary unlike the batch (2) and every witness width (3-8),
# and a head width that is a perfect square, so that the attention scale 1/sqrt(d) stays rational.
WITNESS_VOCAB = 9
WITNESS_HEAD_SIZE = 4
WITNESS_EMBEDDING = 3
# These kinds are batch-first only. A sequence of T steps is one matrix of T N rows stacked by step (rows
# t N .. (t + 1) N - 1 are step t), so a layer that acts row by row (dense, an activation, an embedding) acts
# on every step at once, and a recurrent layer reads step t's rows as a ``Block`` of them.

def _embedding(b, layer, l, source, out):
    """``E = onehot(X) C``: each of the k ids of a sample picks a row of ``C``, and the k rows are concatenated
    (``E = [onehot(X_1) C, ..., onehot(X_k) C]``); ``dC = onehot(X)ᵀ dE`` is a scatter-add of rows."""
    X = b.value(source)
    k = layer.context
    V = X.shape[1] / k
    # With k > 1 the output is k embeddings wide: its width is k e_l, e_l the embedding width.
    width = b.new_width(l) if k == 1 else b.size(f"e_{l}", layer.size, WITNESS_EMBEDDING)
    C = b.parameter(f"C{l}", (V, width), "embedding")
    if k == 1:
        b.step(out, X * C, l, "embedding", [left(C.name, X.T)])
        return
    pieces = [Block(X, j, k, 1) for j in range(k)]
    b.step(out, sp.MatAdd(*(Place(piece * C, j, k, 1) for j, piece in enumerate(pieces))), l, "embedding",
           [vjp(C.name, lambda G: sp.MatAdd(*(piece.T * Block(G, j, k, 1) for j, piece in enumerate(pieces))))])


def _attention(b, layer, l, source, out):
    """Scaled dot-product self-attention over the rows (positions) of one sequence with ``heads`` heads:
    ``Q = X W_q`` (and ``K``, ``V``) for all heads at once, as PyTorch's in-projection does, each head's queries
    a column block ``Q_h`` of it; per head ``S_h = Q_h K_hᵀ / sqrt(d)``, ``P_h = softmax(S_h)`` row by row,
    ``O_h = P_h V_h``; the heads side by side, ``O``, projected by ``W_o``."""
    X = b.value(source)
    d_in, n_out, H = b.width_of(source), b.new_width(l), layer.heads
    dk = b.size(f"d_{l}", layer.head_size, WITNESS_HEAD_SIZE)
    rows = X.shape[0]
    scale = 1 / sp.sqrt(dk)
    suffixes = [f"_{h + 1}" if H > 1 else "" for h in range(H)]
    projections = {}
    for name in ("q", "k", "v"):
        W = b.parameter(f"W{name}{l}", (d_in, H * dk), "weight", fan_in=d_in)
        expr, locals_ = X * W, [left(W.name, X.T), right(source, W.T)]
        if layer.bias:
            bias = b.parameter(f"b{name}{l}", (1, H * dk), "bias")
            expr += b.broadcast_batch(bias, rows)
            locals_.append(left(bias.name, sp.OneMatrix(1, rows)))
        every = b.step(f"{name.upper()}{l}", expr, l, "projection", locals_)
        projections[name] = [every] if H == 1 else [
            b.step(f"{name.upper()}{l}{suffixes[h]}", Block(every, h, H, 1), l, "head",
                   [vjp(every.name, lambda G, h=h: Place(G, h, H, 1))]) for h in range(H)]
    heads = []
    for h, (Q, K, V) in enumerate(zip(*projections.values())):
        S = b.step(f"S{l}{suffixes[h]}", scale * Q * K.T, l, "scores",
                   [right(Q.name, scale * K), vjp(K.name, lambda G, Q=Q: scale * G.T * Q)])
        softmax = CausalSoftmax if layer.causal else Softmax
        P = b.step(f"P{l}{suffixes[h]}", softmax(S, 1), l, "attention_weights", _softmax_locals(b, S.name, rows))
        heads.append(b.step(f"O{l}{suffixes[h]}", P * V, l, "attention_output",
                            [right(P.name, V.T), left(V.name, P.T)]))
    O = heads[0] if H == 1 else b.step(
        f"O{l}", sp.MatAdd(*(Place(O_h, h, H, 1) for h, O_h in enumerate(heads))), l, "concatenate",
        [vjp(O_h.name, lambda G, h=h: Block(G, h, H, 1)) for h, O_h in enumerate(heads)])
    Wo = b.parameter(f"Wo{l}", (H * dk, n_out), "weight", fan_in=H * dk)
    locals_ = [left(Wo.name, O.T), right(O.name, Wo.T)]
    expr = O * Wo
    if layer.bias:
        bo = b.parameter(f"bo{l}", (1, n_out), "bias")
        expr += b.broadcast_batch(bo, rows)
        locals_.append(left(bo.name, sp.OneMatrix(1, rows)))
    b.step(out, expr, l, "linear", locals_)


def _recurrent(cell: str):
    """An ``rnn``, ``lstm`` or ``gru`` layer unrolled over the spec's ``steps``, its initial state zero; its
    output is the last state (``return = "last"``) or every state stacked by step (``"all"``).

    The input's share of every step is one product for all steps at once, ``U = X W_x + 1 b`` (a GRU's
    ``A_x``), so that its gradients are one product each too: ``dW_x = Xᵀ dU`` with ``dU`` the steps' gradients
    stacked. The state weights' gradient ``dW_h = Σ_t h_{t-1}ᵀ dA_t`` has the same stacked form beside it."""

    blocks = {"rnn": 1, "lstm": 4, "gru": 3}[cell]

    def build(b, layer, l, source, out):
        X = b.value(source)
        T = b.spec.input.steps
        d, h = b.width_of(source), b.new_width(l)
        N = X.shape[0] / T
        Wx = b.parameter(f"Wx{l}", (d, blocks * h), "weight", fan_in=d)
        Wh = b.parameter(f"Wh{l}", (h, blocks * h), "weight", fan_in=h)
        bias = b.parameter(f"bx{l}" if cell == "gru" else f"b{l}", (1, blocks * h), "bias")
        bh = b.parameter(f"bh{l}", (1, blocks * h), "bias") if cell == "gru" else None
        U = b.step(f"AX{l}" if cell == "gru" else f"U{l}", X * Wx + b.broadcast_batch(bias, X.shape[0]), l,
                   "linear", [left(Wx.name, X.T), left(bias.name, sp.OneMatrix(1, X.shape[0])),
                              right(source, Wx.T)])
        states, cell_state, recurrent = [], None, []
        for t in range(1, T + 1):
            x_part = Block(U, t - 1, T, 0)
            to_U = functools.partial(Place, index=t - 1, count=T, axis=0)
            previous = states[-1] if states else None
            read_h = [] if previous is None else [left(Wh.name, previous.T), right(previous.name, Wh.T)]
            if cell == "gru":
                AX = b.step(f"AX{l}_{t}", x_part, l, "step_rows", [vjp(U.name, to_U)])
                hidden = b.broadcast_batch(bh, N) if previous is None else previous * Wh + b.broadcast_batch(bh, N)
                AH = b.step(f"AH{l}_{t}", hidden, l, "linear", [*read_h, left(bh.name, sp.OneMatrix(1, N))])
                state = _gru_cell(b, l, t, AX, AH, previous)
                gate_input = AH
            else:
                linear = x_part if previous is None else x_part + previous * Wh
                A = b.step(f"{'Z' if cell == 'rnn' else 'A'}{l}_{t}", linear, l, "linear",
                           [vjp(U.name, to_U), *read_h])
                if cell == "rnn":
                    f = Elementwise("tanh", A)
                    state = b.step(f"h{l}_{t}", f, l, "activation", [elementwise(A.name, f.derivative())])
                else:
                    state, cell_state = _lstm_cell(b, l, t, A, cell_state)
                gate_input = A
            if previous is not None:
                recurrent.append((previous, gate_input))
            states.append(state)
        # dW_h = Σ_t h_{t-1}ᵀ dA_t as one product: the states h_1 .. h_{T-1} stacked, times the gradients stacked.
        count = len(recurrent)
        stacked = sp.MatAdd(*(Place(h_prev, i, count, 0) for i, (h_prev, _) in enumerate(recurrent)))
        gradients = sp.MatAdd(*(Place(b.gradient(A.name), i, count, 0) for i, (_, A) in enumerate(recurrent)))
        b.compact(Wh.name, [A.name for _, A in recurrent], sp.Transpose(stacked) * gradients, "steps_stacked")
        if layer.returns == "last":
            b.step(out, states[-1], l, "state", [identity(states[-1].name)])
        else:
            b.step(out, sp.MatAdd(*(Place(s, t, T, 0) for t, s in enumerate(states))), l, "states",
                   [vjp(s.name, lambda G, t=t: Block(G, t, T, 0)) for t, s in enumerate(states)])

    return build


def _lstm_cell(b, l, t, A, previous_cell):
    """CS231n's LSTM step: gates i, f, o, g from the four column blocks of ``A``; ``c = f ⊙ c' + i ⊙ g``,
    ``h = o ⊙ tanh(c)``."""
    gates = {}
    for index, (name, function) in enumerate((("i", "sigmoid"), ("f", "sigmoid"), ("o", "sigmoid"), ("g", "tanh"))):
        if name == "f" and previous_cell is None:
            continue  # the forget gate multiplies c_0 = 0: it has no effect at the first step
        gates[name] = b.step(f"{name}{l}_{t}", Elementwise(function, Block(A, index, 4, 1)), l, "gate",
                             lambda out, function=function, index=index: [vjp(A.name, lambda G: Place(
                                 sp.hadamard_product(G, _slope(function, out)), index, 4, 1))])
    i, o, g = gates["i"], gates["o"], gates["g"]
    new = sp.hadamard_product(i, g)
    locals_ = [elementwise(i.name, g), elementwise(g.name, i)]
    if previous_cell is not None:
        f = gates["f"]
        new = sp.hadamard_product(f, previous_cell) + new
        locals_ += [elementwise(f.name, previous_cell), elementwise(previous_cell.name, f)]
    c = b.step(f"c{l}_{t}", new, l, "cell", locals_)
    squashed = Elementwise("tanh", c)
    h = b.step(f"h{l}_{t}", sp.hadamard_product(o, squashed), l, "state",
               [elementwise(o.name, squashed), elementwise(c.name, sp.hadamard_product(o, squashed.derivative()))])
    return h, c


def _gru_cell(b, l, t, AX, AH, previous):
    """PyTorch's GRU step: ``r, z = sigmoid``, ``n = tanh(xn + r ⊙ hn)``, ``h = (1 - z) ⊙ n + z ⊙ h'``, from
    the input's and the state's shares ``AX``, ``AH`` (three column blocks each)."""

    def gate(name, index):
        def locals_(out):
            back = lambda G: Place(sp.hadamard_product(G, _slope("sigmoid", out)), index, 3, 1)
            return [vjp(AX.name, back), vjp(AH.name, back)]

        return b.step(f"{name}{l}_{t}", Elementwise("sigmoid", Block(AX, index, 3, 1) + Block(AH, index, 3, 1)),
                      l, "gate", locals_)

    r, z = gate("r", 0), gate("z", 1)
    hn = Block(AH, 2, 3, 1)
    n = b.step(f"n{l}_{t}", Elementwise("tanh", Block(AX, 2, 3, 1) + sp.hadamard_product(r, hn)), l, "gate",
               lambda n: [vjp(AX.name, lambda G: Place(sp.hadamard_product(G, _slope("tanh", n)), 2, 3, 1)),
                          elementwise(r.name, sp.hadamard_product(_slope("tanh", n), hn)),
                          vjp(AH.name, lambda G: Place(sp.hadamard_product(G, _slope("tanh", n), r), 2, 3, 1))])
    keep = sp.OneMatrix(*z.shape) - z
    if previous is None:
        return b.step(f"h{l}_{t}", sp.hadamard_product(keep, n), l, "state",
                      [elementwise(n.name, keep), elementwise(z.name, -n)])
    return b.step(f"h{l}_{t}", sp.hadamard_product(keep, n) + sp.hadamard_product(z, previous), l, "state",
                  [elementwise(n.name, keep), elementwise(z.name, previous - n), elementwise(previous.name, z)])


def _slope(function: str, out):
    """A gate's slope written with its output, as courses write it: ``s ⊙ (1 - s)``, ``1 - g^2``."""
    ones = sp.OneMatrix(*out.shape)
    if function == "sigmoid":
        return sp.hadamard_product(out, ones - out)
    return ones - sp.HadamardPower(out, 2)


LAYER_KINDS.update({
    kind.name: kind
    for kind in (
        LayerKind("embedding", ("vocab", "size"), False, _embedding, "kind_embedding"),
        LayerKind("attention", ("heads", "head_size", "causal", "size", "bias"), False, _attention,
                  "kind_attention"),
        *(LayerKind(cell, ("size", "return"), False, _recurrent(cell), f"kind_{cell}") for cell in ("rnn", "lstm", "gru")),
    )
})


# -- images: convolution, pooling, flatten --------------------------------------------------------------------
# An image batch (N, C, H, W) is the N x (C H W) matrix of its samples in C order, a signal (N, C, L) one of
# height 1 (``images.py``); so ``flatten`` is the identity, and a dense layer after it reads the same matrix.
IMAGE_KINDS = ("conv2d", "conv1d", "maxpool", "avgpool", "flatten")
CONV_KINDS = ("conv2d", "conv1d")
POOL_KINDS = ("maxpool", "avgpool")


def image_window(layer) -> Window:
    """The window of a convolution or pooling layer over its input image (``layer.image``: (C, H, W) or
    (C, L)); a one-dimensional signal is an image of height 1."""
    C, *spatial = layer.image
    H, W = spatial if len(spatial) == 2 else (1, spatial[0])
    return Window(C, H, W, layer.kernel, layer.stride, layer.padding or (0, 0), layer.kind in POOL_KINDS)


def image_output(layer) -> tuple[int, ...]:
    """The image a convolution or pooling layer makes: (F, H', W') or (F, L') (pooling keeps C)."""
    window = image_window(layer)
    channels = layer.channels if layer.kind in CONV_KINDS else window.channels
    return (channels, *window.out) if len(layer.image) == 3 else (channels, window.out[1])


def _convolution(b, layer, l, source, out):
    """The cross-correlation PyTorch computes, as one matrix product: ``X_col = im2col(A)`` (one row per sample
    and output position, one column per (c, i, j)), ``Z_col = X_col W_colᵀ + 1 b``, folded back to each sample's
    F maps. Backward: ``dW_col = δ_colᵀ X_col``, ``db = 1ᵀ δ_col``, ``dA = col2im(δ_col W_col)``."""
    window = image_window(layer)
    A = b.value(source)
    W = b.parameter(f"W{l}", (layer.channels, window.patch), "weight", fan_in=window.patch)
    kernel = layer.kernel if len(layer.image) == 3 else layer.kernel[1:]
    b.module_shapes[W.name] = (layer.channels, layer.image[0], *kernel)  # (F, C, kh, kw) or (F, C, k)
    bias = b.parameter(f"b{l}", (1, layer.channels), "bias") if layer.bias else None
    if bias is not None:
        b.module_shapes[bias.name] = (layer.channels,)  # (F,), as PyTorch's and CS231n's
    X = b.step(f"Xcol{l}", Im2col(A, window), l, "im2col", [vjp(source, lambda G: Col2im(G, window))])
    rows = X.shape[0]
    locals_ = [vjp(W.name, lambda G: G.T * X), *([left(bias.name, sp.OneMatrix(1, rows))] if bias else []),
               right(X.name, W)]
    linear = X * W.T
    Zcol = b.step(f"Zcol{l}", linear + b.broadcast_batch(bias, rows) if bias else linear, l, "linear", locals_)
    positions = window.positions
    Z = b.step(f"Z{l}", Fold(Zcol, positions), l, "fold", [vjp(Zcol.name, lambda G: Unfold(G, positions))])
    _activate(b, layer, l, Z, out)


def _pooling(kind: str):
    """Max or average pooling over each channel's windows: ``P_col = im2col(A)`` per channel (one row per
    sample, channel and position), then each row's maximum or mean. The maximum's gradient goes to the first
    maximum of its window in row-major order (a convention, like ReLU'(0)); the mean's is spread equally."""

    def build(b, layer, l, source, out):
        window = image_window(layer)
        A = b.value(source)
        P = b.step(f"Pcol{l}", Im2col(A, window), l, "im2col", [vjp(source, lambda G: Col2im(G, window))])
        rows, taps = window.rows_per_sample, window.taps
        spread = sp.OneMatrix(1, taps)
        if kind == "maxpool":
            b.step(out, Fold(RowMax(P), rows), l, "maxpool",
                   [vjp(P.name, lambda G: sp.hadamard_product(Unfold(G, rows) * spread, MaxMask(P)))])
        else:
            b.step(out, Fold(P * sp.OneMatrix(taps, 1) / taps, rows), l, "avgpool",
                   [vjp(P.name, lambda G: Unfold(G, rows) * spread / taps)])

    return build


def _flatten(b, layer, l, source, out):
    """``(N, C, H, W)`` to ``(N, C H W)`` in C order: the derivation already holds images so; the identity."""
    b.step(out, b.value(source), l, "flatten", [identity(source)])


_CONV_KEYS = ("channels", "kernel", "stride", "padding", "activation", "alpha", "relu_grad_at_zero", "bias")
LAYER_KINDS.update({
    kind.name: kind
    for kind in (
        *(LayerKind(name, _CONV_KEYS, False, _convolution, f"kind_{name}", _dense_output) for name in CONV_KINDS),
        *(LayerKind(name, ("kernel", "stride"), False, _pooling(name), f"kind_{name}") for name in POOL_KINDS),
        LayerKind("flatten", (), True, _flatten, "kind_flatten"),
    )
})
