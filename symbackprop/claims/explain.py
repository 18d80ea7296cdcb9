"""The words of a verdict: the right formula in the claim's notation, constant factors and what convention
explains them, the width equalities a claim relies on, and a readable counterexample entry."""

from __future__ import annotations

import math

import sympy as sp

from ..evaluate import PRIME
from ..printing import NumPyPrinter, latex, latex_name
from ..rules import activation_rule


class ClaimPrinter(NumPyPrinter):
    """The NumPy-like claim syntax: gradients as ``dL/dZ2``, ``relu'(Z1)``, ``ones(N).T`` for a lone 1ᵀ."""

    def __init__(self, gradients: dict):
        super().__init__()
        self.gradients = gradients  # gradient symbol name -> quantity name

    def _print_MatrixSymbol(self, expr):
        return f"dL/d{self.gradients[expr.name]}" if expr.name in self.gradients else expr.name

    def _print_OneMatrix(self, expr):
        rows, cols = expr.shape
        if rows != 1 and cols != 1:
            return "1"  # a matrix of ones, written as the number NumPy broadcasts (``1 - Y_pred``)
        return f"ones({self._print(rows)})" if cols == 1 else f"ones({self._print(cols)}).T"

    def _print_Elementwise(self, expr):
        if expr.order == 0:
            return super()._print_Elementwise(expr)
        return f"{activation_rule(expr.activation).name}'({self._print(expr.arg)})"

    def _image_operator(self, expr):
        """``col2im(dL/dXcol1)``: a claim's image operators take their windows from the derivation."""
        name = {"MaxMask": "first_max_mask"}.get(type(expr).__name__, type(expr).__name__.lower())
        return f"{name}({self._print(expr.arg)})"

    _print_Im2col = _print_Col2im = _print_Fold = _print_Unfold = _print_RowMax = _print_MaxMask = _image_operator


def formula(of: str, wrt: str, expr, as_latex: bool, gradients: dict) -> str:
    """``d<of>/d<wrt> = expr`` in the claim syntax, or in LaTeX."""
    if as_latex:
        side = (lambda name: "L" if name == "L" else latex_name(name))
        return rf"\frac{{\partial {side(of)}}}{{\partial {side(wrt)}}} = {latex(expr)}"
    return f"d{of}/d{wrt} = {ClaimPrinter(gradients).doprint(expr)}"


def definition(name: str, expr, as_latex: bool, gradients: dict) -> str:
    """``name = expr`` (a forward definition) in the claim syntax, or in LaTeX."""
    if as_latex:
        return f"{'L' if name == 'L' else latex_name(name)} = {latex(expr)}"
    return f"{name} = {ClaimPrinter(gradients).doprint(expr)}"


# -- constant factors --------------------------------------------------------------------------------------

def factor_candidates(N: sp.Symbol, k: sp.Symbol) -> list:
    """Scalings a loss convention can explain, 2^a N^b k^c (k: the outputs), simplest first."""
    exponents = [(a, b, c) for a in (0, 1, -1) for b in (0, -1, 1) for c in (0, -1, 1) if (a, b, c) != (0, 0, 0)]
    exponents.sort(key=lambda e: (sum(map(abs, e)), abs(e[2])))
    return [sp.Integer(2) ** a * N ** b * k ** c for a, b, c in exponents]


_PART_WORDS = {
    ("N", -1): "averaged over the N samples", ("N", 1): "summed over the samples (no 1/N)",
    ("k", -1): "averaged over the k outputs", ("k", 1): "summed over the outputs (no 1/k)",
    ("2", 1): "without the 1/2", ("2", -1): "with a 1/2",
}


def scaling_words(factor, N, k) -> str:
    """What scaling a loss by ``factor`` amounts to: ``averaged over the N samples and without the 1/2``."""
    powers = sp.powsimp(factor).as_powers_dict()
    parts = []
    for base, key in ((sp.Integer(2), "2"), (N, "N"), (k, "k")):
        exponent = int(powers.get(base, 0))
        if exponent:
            parts.append(_PART_WORDS[(key, 1 if exponent > 0 else -1)])
    return " and ".join(parts)


def rational(value: int, bound: int = 10**6) -> sp.Rational | None:
    """The small fraction p/q congruent to ``value`` modulo the prime (rational reconstruction), or None."""
    r0, r1, s0, s1 = PRIME, value % PRIME, 0, 1
    limit = math.isqrt(PRIME // 2)
    while r1 > limit:
        q = r0 // r1
        r0, r1, s0, s1 = r1, r0 - q * r1, s1, s0 - q * s1
    if s1 == 0 or abs(s1) > bound or abs(r1) > bound:
        return None
    return sp.Rational(r1, s1)


# -- width relations ---------------------------------------------------------------------------------------

def relation_text(relation) -> str:
    if relation[0] == "one":
        return f"n_{relation[1]} = 1"
    if relation[0] == "value":
        return f"n_{relation[1]} = {relation[2]}"
    return f"n_{relation[1]} = n_{relation[2]}"


def relations_text(relations, shown: int = 4) -> str:
    """``n_2 = 1``, ``n_1 = n_2 and n_3 = 1``; past ``shown`` relations, the count of the rest."""
    if not relations:
        return "of this network's widths"
    text = " and ".join(relation_text(r) for r in relations[:shown])
    return text + (f" (and {len(relations) - shown} more width equalities)" if len(relations) > shown else "")


def sizes_text(sizes: dict) -> str:
    return ", ".join(f"{symbol}={value}" for symbol, value in sizes.items())
