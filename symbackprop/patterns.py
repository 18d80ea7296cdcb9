"""The textbook forms of the new layers' backward passes, read off the derivation and checked against it.

A lecture states what holds in general: backpropagation through time as a recurrence for a general step t and
the shared weights' gradients as sums over t; attention's five backward equations for every head; an
embedding's gradient as a scatter-add. The derivation is unrolled (steps ``h1_1 .. h1_T``, heads ``Q1_1 ..
Q1_H``), so each general statement is made from one instance by renaming its indices (``h1_2 -> h1_t``,
``dZ1_3 -> dZ1_{t+1}``) and is printed only for the range of indices where every instance renames to the same
formula: a label the derivation does not bear out is never printed. Convolution and pooling layers get their
sums in index form (``index_forms.py``, whose printed sums the tests evaluate against autograd).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import sympy as sp

from .expressions import Block, Place
from .index_forms import image_forms, patch_picture
from .layers import CONV_KINDS, POOL_KINDS
from .printing import concatenated, latex, latex_name

_INDEXED = re.compile(r"^(d?[A-Za-z]+)(\d+)_(\d+)$")
_OFFSETS = {-1: "t-1", 0: "t", 1: "t+1"}


@dataclass(frozen=True)
class Equation:
    """``lhs = rhs`` in LaTeX, holding for ``t`` (or the head) from ``first`` to ``last`` (None: no index)."""

    lhs: str
    rhs: str
    first: int | None = None
    last: int | None = None


@dataclass(frozen=True)
class Pattern:
    """A layer's general backward form: ``kind`` (``bptt``, ``attention``, ``embedding``) and its equations."""

    layer: int
    kind: str
    equations: tuple[Equation, ...]
    count: int = 0  # the number of steps T or heads H
    picture: dict | None = None  # a convolution's patch and its row of X_col (index_forms.patch_picture)


def patterns(derivation) -> list[Pattern]:
    """The general forms of every embedding, attention and recurrent layer of ``derivation``."""
    found = []
    for l, layer in enumerate(derivation.spec.layers, start=1):
        if layer.kind in ("rnn", "lstm", "gru"):
            found.append(_recurrence(derivation, l, derivation.spec.input.steps))
        elif layer.kind == "attention" and layer.heads > 1:
            found.append(_per_head(derivation, l, layer.heads))
        elif layer.kind == "attention":
            names = [f"d{q}{l}" for q in "VPSQK"]
            found.append(Pattern(l, "attention", tuple(_equation(derivation, name) for name in names), 1))
        elif layer.kind == "embedding":
            found.append(Pattern(l, "embedding", (_equation(derivation, f"dC{l}"),)))
        elif layer.kind in (*CONV_KINDS, *POOL_KINDS):
            forms = image_forms(derivation.network, l)
            conv = layer.kind in CONV_KINDS
            found.append(Pattern(l, "conv" if conv else layer.kind, tuple(Equation(*form.latex()) for form in forms),
                                 picture=patch_picture(derivation.network, l) if conv else None))
    return [pattern for pattern in found if pattern.equations]


def _equation(derivation, name: str) -> Equation:
    step = next(s for s in derivation.backward if s.symbol.name == name)
    return Equation(latex_name(name), latex(step.expr))


def _renamed(expr, layer: int, at: int, steps: int, source: str):
    """``expr`` with the indices of layer ``layer``'s unrolled names made relative to ``at`` (``t``, ``t+1``),
    step ``t``'s rows of the layer's input ``source`` (``Block(X, t - 1, T, 0)``) written ``x_t`` and of any
    other sequence ``A`` written ``A_t``; None where an index is farther than one step from ``at``."""
    mapping = {}
    for symbol in expr.atoms(sp.MatrixSymbol):
        match = _INDEXED.match(symbol.name)
        if match and int(match.group(2)) == layer:
            offset = int(match.group(3)) - at
            if offset not in _OFFSETS:
                return None
            mapping[symbol] = sp.MatrixSymbol(f"{match.group(1)}{layer}_{_OFFSETS[offset]}", *symbol.shape)
    for block in expr.atoms(Block):
        if block.axis == 0 and block.count == steps and isinstance(block.arg, sp.MatrixSymbol):
            offset = block.index + 1 - at
            if offset not in _OFFSETS:
                return None
            name = "x" if block.arg.name == source else block.arg.name
            mapping[block] = sp.MatrixSymbol(f"{name}_{_OFFSETS[offset]}", *block.shape)
    return expr.xreplace(mapping)


def _general(instances: dict, layer: int, steps: int, source: str, lhs: str) -> Equation | None:
    """One equation for every index ``t`` of ``instances`` (t -> expression at t) that renames to the same
    formula as the middle index does; the range printed is the longest run of such indices around it."""
    ts = sorted(instances)
    middle = ts[len(ts) // 2]
    form = _renamed(instances[middle], layer, middle, steps, source)
    if form is None:
        return None
    same = [t for t in ts if _renamed(instances[t], layer, t, steps, source) == form]
    first = last = middle
    while first - 1 in same:
        first -= 1
    while last + 1 in same:
        last += 1
    return Equation(lhs, latex(form), first, last)


def _recurrence(derivation, l: int, steps: int) -> Pattern:
    """Backpropagation through time for a recurrent layer: each per-step gradient at a general ``t`` and each
    shared parameter's gradient as a sum over ``t``."""
    per_step: dict[str, dict[int, sp.Basic]] = {}
    for step in derivation.backward:
        match = _INDEXED.match(step.symbol.name)
        if match and int(match.group(2)) == l:
            per_step.setdefault(match.group(1), {})[int(match.group(3))] = step.expr
    equations = []
    source = derivation.network.layer_input(l)
    for base, instances in per_step.items():
        equation = _general(instances, l, steps, source, latex_name(f"{base}{l}_t"))
        if equation is not None and equation.first != equation.last:
            equations.append(equation)
    for step in derivation.backward:  # a gradient stacked by step (all steps' input shares U): its row block t
        blocks = concatenated(step.expr) if isinstance(step.expr, sp.MatAdd) and step.layer == l else None
        if blocks is not None and blocks[1] == 0 and len(blocks[0]) == steps:
            equation = _general(dict(enumerate(blocks[0], start=1)), l, steps, source,
                                rf"\left({latex_name(step.symbol.name)}\right)_{{\langle t \rangle}}")
            if equation is not None:
                equations.append(equation)
    for name in (*[p for p in derivation.network.parameters if _layer_of(p) == l], source):
        if name == source and not any(s.name == source for s in derivation.backward):
            continue
        step = derivation.step(name)
        instances = {}
        for term in step.terms:
            match = _INDEXED.match(term.upstream or "")
            if match and int(match.group(2)) == l:
                expr = term.expr.arg if isinstance(term.expr, Place) else term.expr
                instances[int(match.group(3))] = expr
        if len(instances) != len(step.terms) or len(instances) < 2:
            continue
        lhs = r"\frac{\partial L}{\partial x_{t}}" if name == source else latex_name(f"d{name}")
        equation = _general(instances, l, steps, source, lhs)
        if equation is not None and (equation.first, equation.last) == (min(instances), max(instances)):
            equations.append(equation if name == source else
                             Equation(equation.lhs, rf"\sum_{{t={equation.first}}}^{{{equation.last}}} {equation.rhs}",
                                      None, None))
    return Pattern(l, "bptt", tuple(equations), steps)


def _layer_of(name: str) -> int | None:
    match = re.fullmatch(r"[A-Za-z]+(\d+)", name)
    return int(match.group(1)) if match else None


def _per_head(derivation, l: int, heads: int) -> Pattern:
    """Attention's backward equations for head 1, stated for every head when each head's own are the same
    with its index."""
    equations = []
    for q in "VPSQK":
        forms = set()
        for h in range(1, heads + 1):
            step = derivation.step(f"{q}{l}_{h}")
            mapping = {s: sp.MatrixSymbol(re.sub(rf"_{h}$", "_h", s.name), *s.shape)
                       for s in step.expr.atoms(sp.MatrixSymbol) if s.name.endswith(f"_{h}")}
            forms.add(step.expr.xreplace(mapping))
        if len(forms) == 1:
            equations.append(Equation(latex_name(f"d{q}{l}_h"), latex(forms.pop()), 1, heads))
    return Pattern(l, "attention", tuple(equations), heads)
