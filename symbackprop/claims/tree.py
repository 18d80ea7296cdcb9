"""The claim tree: what a parsed right-hand side is, in either notation.

A node is an operation with child nodes, or a leaf. Leaves (``value`` says which): ``name`` (a network
quantity), ``grad`` (its gradient), ``local`` (a local gradient: of, wrt, SymPy factor), ``size`` (a size
symbol), ``number`` (a SymPy Rational). Operations: ``add`` (value: each term's sign), ``chain`` (value: the
operator before each further factor, ``@``, ``dot`` (which also scales by a scalar), ``*`` or ``/``), ``neg``,
``T``, ``pow`` (value: the exponent), ``sum`` (value: axis or None, keepdims, mean), ``ones`` (args: sizes;
value ``"flat"`` for a 1-D array), ``fn`` (value: activation, order, params), ``softmax`` (value: axis),
``exp``, ``log``, ``abs``, ``sign``, ``maximum``, ``cmp`` (value: ``>``, ``>=``, ``<``, ``<=``), ``where``
(condition, if true, if false), ``tuple`` (a shape, only inside ``np.ones``), the image operators ``im2col``,
``col2im``, ``fold``, ``unfold`` (value: the derivation's ``operators.Operator``, or why none fits), ``rowmax`` and
``maxmask`` (max pooling's row maximum and the mask of its first maximum).

Sums and product chains are n-ary, so ``a + b + ... + z`` is one level deep; only real nesting (parentheses,
function calls) makes a tree deeper, and ``MAX_DEPTH`` bounds it so every recursive walk stays shallow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ClaimError

MAX_DEPTH = 60  # nesting levels of a claim (parentheses, calls); every walk over a tree recurses this deep


@dataclass(frozen=True, eq=False)
class Node:
    """One operation or leaf; ``start``/``end`` locate it in the claim's text (for messages)."""

    op: str
    args: tuple = ()
    value: object = None
    start: int = 0
    end: int = 0
    depth: int = field(default=1, compare=False)

    def text(self, source: str) -> str:
        return source[self.start:self.end].strip()

    def walk(self):
        """This node and every node below it."""
        yield self
        for arg in self.args:
            yield from arg.walk()


def node(op: str, args=(), value=None, start: int = 0, end: int = 0) -> Node:
    """A node, refused with a ``ClaimError`` when it would nest deeper than ``MAX_DEPTH``."""
    args = tuple(args)
    depth = 1 + max((a.depth for a in args), default=0)
    if depth > MAX_DEPTH:
        raise ClaimError(f"too deeply nested (more than {MAX_DEPTH} levels)", column=start + 1)
    return Node(op, args, value, start, end, depth)
