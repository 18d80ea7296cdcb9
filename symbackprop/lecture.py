"""Numbers for the lecture: a worked example (one forward pass, every gradient, one gradient-descent step)
and the memory table (what the forward pass must keep for the backward pass).

Both are computed from the derivation itself: the worked example evaluates the network's forward steps and
the derivation's backward formulas with ``Evaluator`` in float64; the memory table lists the forward
quantities that the backward formulas read.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sympy as sp

from .evaluate import Evaluator, Float64Backend
from .printing import latex_name
from .rules import LOSSES, activation_rule

EXAMPLE_BATCH = 2
EXAMPLE_LR = 0.1
# The worked example prints every matrix; wider networks get the derivation without it.
EXAMPLE_MAX_WIDTH = 8
# Inputs are drawn with one decimal so they print exactly; draws with a pre-activation closer than this to
# a kink, or a gradient smaller than this everywhere, are redrawn.
KINK_MARGIN = 0.05
MAX_DRAWS = 1000


@dataclass(frozen=True)
class WorkedExample:
    """One training step on a tiny batch: inputs, forward values, loss, gradients, updated parameters."""

    batch: int
    lr: float
    inputs: dict  # X, W1, b1, ..., Y_true -> array
    forward: dict  # Z1, a1, ..., Y_pred -> array
    loss: float
    gradients: dict  # gradient symbol name (dY_pred, dZ3, dW3, ...) -> array
    updated: dict  # W1, b1, ... after one step
    loss_after: float


def _evaluate(derivation, env: dict, sizes: dict) -> tuple[dict, float]:
    """Forward values, backward formulas (into one env) and the loss, in float64."""
    evaluator = Evaluator(Float64Backend(), dict(env), sizes)
    evaluator.forward(derivation.network)
    evaluator.backward(derivation)
    return evaluator.env, evaluator.loss(derivation.network)


def example_inputs(derivation, batch: int = EXAMPLE_BATCH, seed: int = 0) -> dict:
    """Seeded inputs with one decimal: X, parameters and targets that suit the loss.

    Draws are repeated until no pre-activation sits near a kink (ReLU at 0) and no gradient is all zero
    (a dead layer teaches nothing).
    """
    network = derivation.network
    sizes = network.sizes(batch, network.spec.sizes)
    kinked = [l for l, layer in enumerate(network.spec.layers, start=1)
              if activation_rule(layer.activation).kinks]
    rng = np.random.default_rng(seed)
    for _ in range(MAX_DRAWS):
        inputs = {}
        for name, symbol in network.inputs.items():
            shape = tuple(int(d.subs(sizes)) for d in symbol.shape)
            inputs[name] = np.round(rng.uniform(-1, 1, shape), 1)
        inputs["Y_true"] = _targets(network, inputs["Y_true"])
        env, _ = _evaluate(derivation, inputs, sizes)
        clear_of_kinks = all(np.abs(env[f"Z{l}"] - k).min() > KINK_MARGIN for l in kinked
                             for k in activation_rule(network.spec.layers[l - 1].activation).kinks)
        alive = all(np.abs(env[step.symbol.name]).max() > KINK_MARGIN for step in derivation.backward)
        if clear_of_kinks and alive:
            break
    return inputs


def _targets(network, draw: np.ndarray) -> np.ndarray:
    """Targets the loss accepts: one-hot rows for softmax cross-entropy, 0/1 for BCE, the draw otherwise."""
    kind = network.spec.loss.kind
    T = draw if network.batch_first else draw.T
    if LOSSES[kind].targets_are_distributions:
        T = np.eye(T.shape[1])[np.argmax(T, axis=1)]
    elif kind == "bce_logits":
        T = (T > 0).astype(float)
    return T if network.batch_first else T.T


def worked_example(derivation, batch: int = EXAMPLE_BATCH, lr: float = EXAMPLE_LR,
                   seed: int = 0) -> WorkedExample:
    """Evaluate one forward pass, every backward formula and one gradient-descent step of size ``lr``."""
    network = derivation.network
    sizes = network.sizes(batch, network.spec.sizes)
    inputs = example_inputs(derivation, batch, seed)
    env, loss = _evaluate(derivation, inputs, sizes)
    forward = {step.name: env[step.name] for step in network.steps if step.kind != "loss"}
    gradients = {step.symbol.name: env[step.symbol.name] for step in derivation.backward}
    params = [name for name in network.inputs if name[0] in "Wb" and name[1:].isdigit()]
    updated = {name: inputs[name] - lr * gradients[f"d{name}"] for name in params}
    _, loss_after = _evaluate(derivation, {**inputs, **updated}, sizes)
    return WorkedExample(batch, lr, inputs, forward, loss, gradients, updated, loss_after)


@dataclass(frozen=True)
class MemoryRow:
    """One layer's share of what the forward pass keeps: quantities, floats per sample, bytes at a batch."""

    layer: int
    kept: tuple[str, ...]
    floats_per_sample: int
    bytes32: int
    bytes64: int


def memory_table(derivation, batch: int = 64) -> list[MemoryRow]:
    """Per layer (0 = the input), the forward quantities the backward formulas read, and their size.

    Parameters are not counted: they are kept anyway. A quantity is kept if some backward formula
    mentions it (``Z`` for ``f'(Z)``, the layer input for ``dW``, ``Y_pred`` for the loss gradient).
    """
    network = derivation.network
    read = set()
    for step in derivation.backward:
        read |= {symbol.name for symbol in step.expr.atoms(sp.MatrixSymbol)}
    widths = dict(zip((str(w) for w in network.widths), network.spec.sizes))
    per_layer = {0: [network.input_name]}
    for step in network.steps:
        if step.kind != "loss":
            per_layer.setdefault(step.layer, []).append(step.name)
    rows = []
    for layer, names in sorted(per_layer.items()):
        kept = tuple(name for name in names if name in read)
        floats = sum(widths[str(network.widths[layer])] for _ in kept)
        rows.append(MemoryRow(layer, kept, floats, 4 * floats * batch, 8 * floats * batch))
    return rows


def number(value: float, digits: int = 4) -> str:
    """A value rounded for reading: at most ``digits`` decimals, no trailing zeros, no ``-0``."""
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def latex_matrix(array: np.ndarray, digits: int = 4) -> str:
    """A matrix of rounded values as an amsmath ``bmatrix``."""
    rows = (" & ".join(number(v, digits) for v in row) for row in np.atleast_2d(array))
    return r"\begin{bmatrix}" + r" \\ ".join(rows) + r"\end{bmatrix}"


def has_worked_example(derivation) -> bool:
    """Whether the network is small enough for a worked example whose matrices can be read."""
    return max(derivation.network.spec.sizes) <= EXAMPLE_MAX_WIDTH


def lecture_context(derivation, batch: int = 64) -> dict:
    """The worked example and the memory table as printed strings, for the templates."""
    example = worked_example(derivation) if has_worked_example(derivation) else None
    rows = memory_table(derivation, batch)
    network = derivation.network

    def entries(values: dict, names=None) -> list[dict]:
        return [{"name": name, "lhs": "L" if name == "L" else latex_name(name), "value": latex_matrix(value)}
                for name, value in values.items() if names is None or name in names]

    return {
        "example": example and {
            "batch": example.batch, "lr": number(example.lr), "seed": 0,
            "data": entries(example.inputs, (network.input_name, "Y_true")),
            "params": entries(example.inputs, example.updated),
            "forward": entries(example.forward), "gradients": entries(example.gradients),
            "updated": entries(example.updated), "loss": number(example.loss),
            "loss_after": number(example.loss_after),
            "inputs_py": {name: value.tolist() for name, value in example.inputs.items()},
        },
        "memory": {
            "batch": batch,
            "rows": [{"layer": row.layer, "kept": ", ".join(latex_name(name) for name in row.kept),
                      "kept_text": ", ".join(row.kept), "floats": row.floats_per_sample,
                      "bytes32": f"{row.bytes32:,}", "bytes64": f"{row.bytes64:,}"} for row in rows],
            "floats": sum(row.floats_per_sample for row in rows),
            "bytes32": f"{sum(row.bytes32 for row in rows):,}",
            "bytes64": f"{sum(row.bytes64 for row in rows):,}",
        },
        "diagram": [{"index": l, "shown": min(size, 4), "more": size > 4, "size": size}
                    for l, size in enumerate(network.spec.sizes)],
    }
