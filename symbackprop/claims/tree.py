"""The claim tree: what a parsed right-hand side is, in either notation.

A node is an operation with child nodes, or a leaf (a network quantity, a gradient, a size, a number).
Sums and product chains are n-ary, so ``a + b + ... + z`` is one level deep; only real nesting (parentheses,
function calls) makes a tree deeper, and ``MAX_DEPTH`` bounds it so every recursive walk stays shallow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .errors import ClaimError

MAX_DEPTH = 60  # nesting levels of a claim (parentheses, calls); every walk over a tree recurses this deep

# Leaves: the value says which quantity, gradient, size or number.
LEAVES = frozenset({"name", "grad", "local", "size", "number"})
# Operations whose arguments are not matrices being combined but a matrix and a setting.
OPERATIONS = frozenset({
    "add",      # value: the signs (+1/-1) of the terms
    "chain",    # value: the operators between the factors, each "@" (matmul), "dot" (scales a scalar), "*", "/"
    "neg", "T",
    "pow",      # value: the integer exponent
    "sum",      # value: (axis or None, keepdims, mean)
    "ones",     # args: its sizes (scalar trees)
    "fn",       # value: (activation, order, params)
    "softmax",  # value: the axis
    "exp", "log", "abs", "sign", "maximum",
    "cmp",      # value: ">", ">=", "<", "<="
    "where",    # args: condition, value where true, value where false
    "tuple",    # a shape (N, 1): only the argument of np.ones
})


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
