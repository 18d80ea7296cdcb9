"""The typical mistakes of each layer kind, named once for ``check`` (written formulas) and ``grade`` (code).

A layer kind declares its mistakes beside its backward rules (``layers.py``): each is a ``Mistake``, the
wrong contribution a student sends back in place of the right one, with the words that name it. The
derivation turns them into ``NamedMistake``s, whole wrong backward formulas of a step (``BackwardStep.mistakes``):
``check`` calls a claim by a mistake's name when the claim equals the gradient computed with that formula, and
``grade`` searches them first among the rewrites of the backward pass. The catalogue:

- an activation: the derivative of another common activation (ReLU, sigmoid, tanh) than the forward pass's;
- dropout: the scaling 1/(1 - p) left out or applied twice, the mask left out;
- softmax and log-softmax: the derivative taken entry by entry (the diagonal of the Jacobian);
- batch and layer norm (their compact dX): the mean, the variance or both treated as constants, the variance's
  gradient taken with 1/(N - 1) (the unbiased variance).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sympy as sp

# Words for the intermediate steps a formula may treat as constants, by step kind.
STEP_WORDS = {"mean": "the mean", "variance": "the variance", "rsqrt": "the inverse standard deviation",
              "center": "the centred input", "normalize": "the normalized input"}
MIXED_UP_ACTIVATIONS = ("relu", "sigmoid", "tanh")


@dataclass(frozen=True)
class Mistake:
    """A typical wrong rule for one operand of a step: ``vjp(G)`` is what is sent back in place of the right
    contribution (``G`` the upstream gradient); ``words`` name the mistake as what a formula or code does
    ("leaves out the dropout scaling ..."), to follow "the claim" or "your code"."""

    words: str
    vjp: Callable


@dataclass(frozen=True)
class NamedMistake:
    """A backward step's whole formula with one typical mistake in it, and the words that name it."""

    words: str
    expr: sp.Basic


def constants_words(steps, wrt: str) -> str:
    """The words for a gradient of ``wrt`` that leaves out the paths through ``steps`` ((name, kind) pairs)."""
    shown = " and ".join(f"{name} ({STEP_WORDS[kind]})" if kind in STEP_WORDS else name for name, kind in steps)
    several = len(steps) > 1
    return (f"treats {shown} as {'constants' if several else 'a constant'}: it leaves out the gradient that "
            f"reaches {wrt} through {'them' if several else 'it'}, although {'they depend' if several else 'it depends'}"
            f" on {wrt} too")


def other_derivatives(activation: str, Z, elementwise) -> tuple[Mistake, ...]:
    """The derivative of another common activation at ``Z`` in place of ``activation``'s (``elementwise(name, Z)``
    builds that derivative)."""
    def times(slope):
        return lambda G: sp.hadamard_product(G, slope)

    return tuple(Mistake(f"uses the derivative of {other} where the forward pass applies {activation}",
                         times(elementwise(other, Z)))
                 for other in MIXED_UP_ACTIVATIONS if other != activation)


def dropout_mistakes(layer: int, p: sp.Rational, mask) -> tuple[Mistake, ...]:
    keep = 1 - p
    return (
        Mistake(f"leaves out the dropout scaling 1/(1 - p) = {1 / keep} of layer {layer} (inverted dropout "
                f"divides by the probability of keeping, 1 - p = {keep})", lambda G: sp.hadamard_product(G, mask)),
        Mistake(f"divides by 1 - p = {keep} (layer {layer}) once more than the layer does",
                lambda G: sp.hadamard_product(G, mask) / keep**2),
        Mistake(f"leaves out the dropout mask M{layer}: units the forward pass dropped get a gradient",
                lambda G: G / keep),
    )


def entrywise_softmax(S) -> Mistake:
    """Softmax's derivative taken entry by entry, ``s (1 - s)``; ``S`` the softmax's output."""
    return Mistake("applies softmax's derivative entry by entry (s (1 - s), the diagonal of its Jacobian); each "
                   "output depends on every entry of its sample, so the gradient is S ⊙ (G - rowsum(G ⊙ S)) with G "
                   "the upstream gradient and S the softmax",
                   lambda G: sp.hadamard_product(G, S, sp.OneMatrix(*S.shape) - S))


def entrywise_log_softmax(S) -> Mistake:
    """Log-softmax's derivative taken entry by entry, ``1 - s``; ``S`` the softmax of its input."""
    return Mistake("applies log-softmax's derivative entry by entry (1 - s, the diagonal of its Jacobian); "
                   "each output depends on every entry of its sample, so the gradient is G - S ⊙ rowsum(G) with G "
                   "the upstream gradient and S the softmax",
                   lambda G: sp.hadamard_product(G, sp.OneMatrix(*S.shape) - S))


def normalization_mistakes(form, mean_term, variance_term, whole, count, mu, var, wrt) -> tuple[NamedMistake, ...]:
    """Batch or layer norm's compact ``dX`` with its typical mistakes: ``form(inner)`` is the compact form
    around ``count dX̂ - mean_term - variance_term``; ``mu`` and ``var`` the statistics' names."""
    return (
        NamedMistake(constants_words([(var, "variance")], wrt), form(whole - mean_term)),
        NamedMistake(constants_words([(mu, "mean")], wrt), form(whole - variance_term)),
        NamedMistake(constants_words([(mu, "mean"), (var, "variance")], wrt), form(whole)),
        NamedMistake(f"has 1/({count} - 1) in its variance term (the unbiased variance), where the layer "
                     f"normalizes with the biased variance 1/{count}",
                     form(whole - mean_term - count / (count - 1) * variance_term)),
    )
