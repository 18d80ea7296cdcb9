"""What the lecture's labels say. Every brace label under a backward formula, every entry of a panel or a
local-gradient list and the chain-rule example is printed from a ``Statement``, which knows what kind of
thing it labels, so each one can be put to the claims checker (``claim``) and none can say more than is true.

Kinds:

- ``local``: a local gradient that is a factor, ``\\partial Z^{[3]} / \\partial W^{[3]} = a^{[2]\\top}``;
- ``map``: a local gradient with no single factor, the map from the upstream gradient to the input's share
  (``\\partial X_c / \\partial a: \\partial L / \\partial X_c \\mapsto \\ldots``);
- ``path``: one term of a sum, what reaches ``wrt`` through ``of`` (labelled with the chain-rule product
  ``\\partial L/\\partial X_c \\cdot \\partial X_c/\\partial a``);
- ``penalty``: the L2 penalty's share of a weight's gradient (labelled with the penalty it differentiates);
- ``upstream``: a gradient by its name (``\\partial L / \\partial Z^{[3]}`` is ``\\delta^{[3]}``).
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from .printing import latex, latex_name, penalty_latex


def _name(name: str) -> str:
    return "L" if name == "L" else latex_name(name)


def partial(of: str, wrt: str, inline: bool = False) -> str:
    """``\\frac{\\partial of}{\\partial wrt}``, or ``\\partial of / \\partial wrt`` where it sits in a label."""
    of, wrt = _name(of), latex_name(wrt)
    return rf"\partial {of} / \partial {wrt}" if inline else rf"\frac{{\partial {of}}}{{\partial {wrt}}}"


@dataclass(frozen=True)
class Statement:
    """One printed claim: ``expr`` is what ``of`` and ``wrt`` say it is, read as ``kind`` says; ``penalty`` is
    the penalty's LaTeX for the ``penalty`` kind."""

    kind: str
    of: str
    wrt: str
    expr: sp.Basic
    penalty: str = ""

    @property
    def label(self) -> str:
        """The statement as a brace label (small, inline)."""
        if self.kind == "penalty":
            return rf"\partial_{{{latex_name(self.wrt)}}} \bigl({self.penalty}\bigr)"
        if self.kind == "path":
            return rf"{partial('L', self.of, True)} \cdot {partial(self.of, self.wrt, True)}"
        if self.kind == "upstream":
            return latex_name(f"d{self.wrt}")
        return partial(self.of, self.wrt, True)

    @property
    def lhs(self) -> str:
        """The statement's left side as a display line writes it."""
        if self.kind == "penalty":
            return rf"\frac{{\partial}}{{\partial {latex_name(self.wrt)}}} \Bigl({self.penalty}\Bigr)"
        return partial(self.of, self.wrt)

    @property
    def claim(self) -> str | None:
        """The statement as a claim the checker (``symbackprop check``) judges, in LaTeX; None for the penalty's
        share, which is no quantity of the network (the tests differentiate the penalty itself)."""
        if self.kind == "penalty":
            return None
        if self.kind == "upstream":
            return rf"{latex_name(f'd{self.wrt}')} = {partial('L', self.wrt)}"
        # A map's and a path term's value are what the local map makes of the upstream gradient: the checker
        # reads d<of>/d<wrt> with the upstream gradient in it that way.
        return rf"{partial(self.of, self.wrt)} = {latex(self.expr)}"


def local_statement(lg, spec) -> Statement:
    """What a local-gradient entry states: a factor, a map, or (the loss's entry for a weight) the penalty's
    share."""
    if lg.side == "loss" and lg.of == "L" and lg.wrt != "Y_pred":
        return Statement("penalty", "L", lg.wrt, lg.expr, penalty_latex(spec.loss, lg.wrt))
    return Statement("map" if lg.side in ("identity", "vjp") else "local", lg.of, lg.wrt, lg.expr)


def term_statement(term, spec) -> Statement:
    """What the brace under one term of a backward formula states: its local factor, or where the term has
    none of its own (a map, or a penalty), the whole term as a path or the penalty's share."""
    local = term.local
    if term.upstream is None:
        return local_statement(local, spec)
    if local.side in ("identity", "vjp"):
        return Statement("path", local.of, local.wrt, term.expr)
    return Statement("local", local.of, local.wrt, local.expr)


def brace(body: str, statement: Statement) -> str:
    """``body`` braced with the statement's label; the group is an ordinary atom, so a ``+`` after it is set
    as a binary operator."""
    return rf"{{\underbrace{{{body}}}_{{{statement.label}}}}}"
