"""Which network quantity a word in a claim means, read from the network itself.

Every name comes from ``network.inputs`` and ``network.steps`` (so new layer kinds bring their names along);
on top of them, the aliases the big courses use: ``A1``/``h1`` for a layer's output, ``A0`` for the input,
``AL``/``Y_hat`` for the prediction, ``Y``/``T`` for the targets, ``m`` for the batch size, ``dW2``/``delta2``
for gradients, and any unambiguous change of case (``w1``, ``x``, ``z2``).
"""

from __future__ import annotations

import re

from ..expressions import Elementwise
from ..rules import ACTIVATIONS
from .errors import ClaimError

LOSS_WORDS = ("L", "Loss", "J", "C", "E", "l", "loss", "cost")
_PREDICTION_WORDS = ("AL", "aL", "A_L", "a_L", "Y_hat", "y_hat", "Yhat", "yhat", "hL", "H_L")
_TARGET_WORDS = ("Y", "y", "T", "t", "Y_true", "y_true", "targets")
_BATCH_WORDS = ("N", "m", "batch_size")
_LAYER_OUTPUT = re.compile(r"(?:[Aah]|H)_?(\d+)")
_WIDTH = re.compile(r"n_?(\d+)")
_DELTA = re.compile(r"delta_?(\d+|L)")


class Names:
    """The names of one derivation's network, with their aliases, sizes and the gradients it has."""

    def __init__(self, derivation):
        self.network = net = derivation.network
        self.quantities = [*net.inputs, *(s.name for s in net.steps if s.kind != "loss")]
        self.with_gradient = [step.name for step in derivation.backward]
        self.prediction = "Y_pred" if "Y_pred" in self.quantities else self.quantities[-1]
        self.targets = "Y_true" if "Y_true" in net.inputs else None
        self.depth = max((s.layer for s in net.steps), default=0)
        self.layer_outputs = {0: net.input_name}
        for step in net.steps:
            if step.kind != "loss":
                self.layer_outputs[step.layer] = step.name
        self.activations = {step.expr.arg: step.expr for step in net.steps if isinstance(step.expr, Elementwise)}
        self._folded = {}
        for name in self.quantities:
            self._folded.setdefault(name.lower(), []).append(name)

    # -- words -> canonical names
    def quantity(self, word: str) -> str | None:
        """The network quantity ``word`` names, or None."""
        if word in self.quantities:
            return word
        if word in _PREDICTION_WORDS:
            return self.prediction
        if word in _TARGET_WORDS and self.targets:
            return self.targets
        match = _LAYER_OUTPUT.fullmatch(word)
        if match and int(match.group(1)) in self.layer_outputs:
            return self.layer_outputs[int(match.group(1))]
        folded = self._folded.get(word.lower(), [])
        return folded[0] if len(folded) == 1 else None

    def layer(self, index: str) -> int | None:
        """A layer number written as digits or ``L`` (the last layer)."""
        if index == "L":
            return self.depth
        return int(index) if index.isdigit() and 0 <= int(index) <= self.depth else None

    def layered(self, base: str, index: str) -> str | None:
        """``W`` and ``1`` -> ``W1``; ``a`` and ``L`` -> the prediction; ``delta`` is not a quantity."""
        layer = self.layer(index)
        if layer is None:
            return None
        return self.quantity(f"{base}{layer}") or self.quantity(f"{base}_{layer}")

    def gradient(self, word: str) -> str | None:
        """The quantity whose gradient ``word`` names (``dW2``, ``dAL``, ``delta2``, ``dZ_2``), or None."""
        match = _DELTA.fullmatch(word)
        if match:
            layer = self.layer(match.group(1))
            name = None if layer is None else self.quantity(f"Z{layer}")
        elif word.startswith("d") and len(word) > 1:
            name = self.quantity(word[1:])
        else:
            return None
        return name if name in self.with_gradient else None

    def size(self, word: str):
        """The size symbol ``word`` names (``N``, ``m``, ``n_1``, ``n2``), or None."""
        if word in _BATCH_WORDS:
            return self.network.N
        match = _WIDTH.fullmatch(word)
        if match and int(match.group(1)) < len(self.network.widths):
            return self.network.widths[int(match.group(1))]
        return None

    def activation_key(self, name: str) -> str | None:
        """The rule key of the activation called ``name`` in this spec: a built-in's name, or the key of a custom
        activation the spec defines (``mish`` -> ``mish_3f2a1c``); None for any other word."""
        if name in ACTIVATIONS:
            return name
        return next((d.key for d in self.network.spec.activations if d.name == name), None)

    def activation_of(self, name: str):
        """The activation node applied to quantity ``name`` in the forward pass (``Z1`` -> relu(Z1)), or None."""
        return self.activations.get(self.network.symbol(name)) if name in self.quantities else None

    # -- messages
    def describe(self) -> str:
        widths = ", ".join(str(w) for w in self.network.widths)
        return (f"this network's names are {', '.join(self.quantities)}, the sizes N (or m) and {widths}; "
                f"also A0..A{self.depth} for the layers' outputs, AL for {self.prediction}"
                + (f", Y or T for {self.targets}" if self.targets else ""))

    def unknown(self, word: str, column: int) -> ClaimError:
        return ClaimError(f"unknown name {word!r}: {self.describe()}", column=column)

    def no_gradient(self, word: str, column: int) -> ClaimError:
        return ClaimError(f"{word!r} is not a gradient of this network's loss; the gradients are "
                          f"{', '.join('d' + name for name in self.with_gradient)}", column=column)
