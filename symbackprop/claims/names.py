"""Which network quantity a word in a claim means, read from the network itself.

Every name comes from ``network.inputs`` and ``network.steps`` (so new layer kinds bring their names along);
on top of them, the aliases the big courses use: ``A1``/``h1`` for a layer's output, ``A0`` for the input,
``AL``/``Y_hat`` for the prediction, ``Y``/``T`` for the targets, ``m`` (``n``) for the batch size,
``dW2``/``delta2`` for gradients, any unambiguous change of case (``w1``, ``x``, ``z2``), the staged batch-norm
names of the courses (``x_hat``, ``xmu``, ``sample_var``, ``ivar``) and, where the network has only one, a
normalization or dropout quantity without its layer (``xhat``, ``gamma``, ``M``). The spec's constants are
names too: ``eps`` (a normalization layer's epsilon), ``p`` and ``keep_prob`` (dropout), ``lambd``/``reg``/``l2``
(the L2 strength).
"""

from __future__ import annotations

import functools
import re

import sympy as sp

from ..expressions import Elementwise
from ..rules import ACTIVATIONS, FUNCTIONS
from .errors import ClaimError

LOSS_WORDS = ("L", "Loss", "J", "C", "E", "l", "loss", "cost")
_PREDICTION_WORDS = ("AL", "aL", "A_L", "a_L", "Y_hat", "y_hat", "Yhat", "yhat", "hL", "H_L")
_TARGET_WORDS = ("Y", "y", "T", "t", "Y_true", "y_true", "targets")
_BATCH_WORDS = ("N", "m", "n", "batch_size")
_LAYER_OUTPUT = re.compile(r"(?:[Aah]|H)_?(\d+)")
_WIDTH = re.compile(r"n_?(\d+)")
_DELTA = re.compile(r"delta_?(\d+|L)")
_LAYERED_WORD = re.compile(r"([A-Za-z_]*[A-Za-z])_?(\d+)")
# The courses' words for a normalization or dropout quantity (CS231n's staged batch norm, Ng's dropout mask D).
_STAGED = {"mu": "mu", "mean": "mu", "sample_mean": "mu", "xc": "xc", "xmu": "xc", "x_mu": "xc",
           "x_centered": "xc", "var": "var", "sample_var": "var", "variance": "var",
           "rstd": "rstd", "ivar": "rstd", "istd": "rstd", "inv_std": "rstd", "xhat": "xhat", "x_hat": "xhat",
           "xnorm": "xhat", "x_norm": "xhat", "gamma": "gamma", "beta": "beta", "alpha": "alpha", "M": "M",
           "mask": "M", "D": "M", "Sigma": "var", "r": "rstd", "Xc": "xc"}
_EPS_WORDS = ("eps", "epsilon", "varepsilon")
_DROP_WORDS = ("p", "keep_prob")
_L2_WORDS = ("lambd", "lmbda", "lambda", "lam", "reg", "l2")
LAYER_CONSTANTS = (*_EPS_WORDS, *_DROP_WORDS)  # words that take a layer: eps2, p_4, \epsilon^{[2]}


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
        return folded[0] if len(folded) == 1 else self.staged(word)

    @staticmethod
    def staged_base(word: str) -> str | None:
        """The quantity base a course's word for a staged quantity means (``x_hat`` -> ``xhat``), or None."""
        return _STAGED.get(word) or _STAGED.get(word.lower())

    def staged(self, word: str) -> str | None:
        """A normalization or dropout quantity in the courses' words: ``x_hat2``, ``xmu2``, ``D3`` (a mask),
        or the word alone (``xhat``, ``\\gamma``) where the network has exactly one."""
        match = _LAYERED_WORD.fullmatch(word)
        base, layer = (match.group(1), match.group(2)) if match else (word, None)
        base = self.staged_base(base)
        if base is None:
            return None
        if layer is not None:
            return f"{base}{layer}" if f"{base}{layer}" in self.quantities else None
        found = [name for name in self.quantities if re.fullmatch(rf"{base}\d+", name)]
        return found[0] if len(found) == 1 else None

    @functools.cached_property
    def words(self) -> list[str]:
        """Multi-letter words that name something here (``xhat``, ``gamma``, ``eps``, ``lambd``): LaTeX reads
        them whole rather than as a product of letters."""
        bases = {re.sub(r"\d+$", "", name) for name in self.quantities}
        words = [b for b in bases if b.isalpha() and len(b) > 1]
        words += [w for w in _STAGED if w.isalpha() and len(w) > 1 and self.staged(w)]
        for word in (*_EPS_WORDS, *_L2_WORDS):
            try:
                if word.isalpha() and self.constant(word) is not None:
                    words.append(word)
            except ClaimError:
                continue
        return words

    def layer(self, index: str) -> int | None:
        """A layer number written as digits or ``L`` (the last layer)."""
        if index == "L":
            return self.depth
        return int(index) if index.isdigit() and 0 <= int(index) <= self.depth else None

    def forward(self, name: str | None) -> str | None:
        """``name`` if the forward pass computes it (``Z1``, ``a1``, ``Y_pred``, ``xhat2``; not an input or a
        parameter), ``L`` for a word for the loss; else None."""
        if name in LOSS_WORDS:
            return "L"
        steps = {step.name for step in self.network.steps if step.kind != "loss"}
        return name if name in steps else None

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

    def constant(self, word: str):
        """The spec constant ``word`` names, as a Rational: a normalization layer's ``eps``, a dropout layer's
        ``p`` (``keep_prob`` is ``1 - p``), the L2 strength (``lambd``, ``reg``); ``eps2``/``p3`` name the layer.
        None for other words; a ``ClaimError`` where the word is ambiguous or the spec has no such constant."""
        match = _LAYERED_WORD.fullmatch(word)
        base, layer = (match.group(1), int(match.group(2))) if match and match.group(1) in LAYER_CONSTANTS \
            else (word, None)
        if base in _L2_WORDS:
            l2 = self.network.spec.loss.l2
            if not l2:
                raise ClaimError(f"{word!r} is the L2 strength, and this spec has no L2 regularization "
                                 "([regularization] l2)")
            return sp.Rational(str(l2))
        key = "eps" if base in _EPS_WORDS else "p" if base in _DROP_WORDS else None
        if key is None:
            return None
        kind = "a normalization layer's epsilon (eps)" if key == "eps" else "a dropout layer's probability (p)"
        values = {l: getattr(layer_spec, key) for l, layer_spec in enumerate(self.network.spec.layers, start=1)
                  if getattr(layer_spec, key) is not None and (layer is None or l == layer)}
        if len(set(values.values())) != 1:
            where = ", ".join(f"layer {l}: {v:g}" for l, v in values.items())
            raise ClaimError(f"{word!r} is {kind}: " + (f"the layers differ ({where}); write {base}<layer>"
                                                        if values else "this spec has none there"))
        value = sp.Rational(str(values.popitem()[1]))
        return 1 - value if base == "keep_prob" else value

    def activation_key(self, name: str) -> str | None:
        """The rule key of the activation called ``name`` in this spec: a built-in's name, or the key of a custom
        activation the spec defines (``mish`` -> ``mish_3f2a1c``); None for any other word."""
        # FUNCTIONS: rsqrt, negpart (PReLU's min(0, z)); a square root is the claims' own sqrt, which the exact
        # semantics relate to rsqrt (batch norm's 1 / sqrt(var + eps)), not an opaque rule
        if name in ACTIVATIONS or (name in FUNCTIONS and name != "sqrt"):
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

    def matrix_form(self) -> str:
        """How a convolution's gradients are written to be judged (the im2col form with the derivation's names),
        as a sentence to add to a refusal; "" for a network without convolutions."""
        conv = next((step for step in self.network.steps if step.kind == "im2col"
                     and f"Zcol{step.layer}" in self.quantities), None)
        if conv is None:
            return ""
        l, source = conv.layer, conv.expr.arg.name
        return (f"; a convolution's gradients are judged in their im2col form, as dW{l} = dZcol{l}.T @ Xcol{l}, "
                f"db{l} = dZcol{l}.sum(axis=0), dXcol{l} = dZcol{l} @ W{l} and d{source} = col2im(dXcol{l}) "
                "(im2col, col2im, fold and unfold take their windows from the derivation; "
                "sums over the positions written with indices are not judged)")

    def unknown(self, word: str, column: int) -> ClaimError:
        return ClaimError(f"unknown name {word!r}: {self.describe()}", column=column)

    def no_gradient(self, word: str, column: int) -> ClaimError:
        return ClaimError(f"{word!r} is not a gradient of this network's loss; the gradients are "
                          f"{', '.join('d' + name for name in self.with_gradient)}", column=column)
