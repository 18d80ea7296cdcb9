r"""What both claim notations share: tokens with positions, the parsed ``Claim``, errors with columns, a nesting
bound, and the builders of the claim tree (``tree.py``).

A claim is ``dL/d<name> = <formula>`` (also ``dW2 = ...``, ``delta2 = ...``, ``\frac{\partial L}{\partial
W^{[2]}} = ...``, ``\nabla_{W^{(2)}} J = ...``, ``\delta^{[2]} = ...``) or a local gradient ``d<of>/d<wrt> =
<factor>``. Both parsers (``numpy_syntax.py``, ``latex_syntax.py``) are recursive descent over a token list,
with nesting bounded by ``tree.MAX_DEPTH`` (a clear error, never a ``RecursionError``); runs of unary signs are
read in a loop. Nothing is ever evaluated as Python. Every problem is a ``ClaimError`` with its column.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass

import sympy as sp

from ..rules import activation_rule
from .errors import ClaimError
from .names import LOSS_WORDS
from .tree import MAX_DEPTH, Node, node

FORWARD = "forward"  # a claim's ``of`` for a forward definition (``Z1 = X @ W1 + b1``, ``L = ...``)
MAX_EXPONENT = 64
MAX_NUMBER_LENGTH = 40


@dataclass(frozen=True)
class Claim:
    """A parsed claim: ``of`` is ``"L"`` for a gradient of the loss, ``FORWARD`` for a forward definition of
    ``wrt`` (``Z1 = ...``; ``L`` is the loss), else a local gradient's quantity."""

    text: str
    of: str
    wrt: str
    tree: Node
    latex: bool

    @property
    def gradients(self) -> set:
        """The upstream gradients the claim is written with (``dL/dZ2`` on its right side)."""
        return {n.value for n in self.tree.walk() if n.op == "grad"}


@dataclass(frozen=True)
class Token:
    kind: str
    text: str
    start: int
    of: str = ""
    wrt: str = ""

    @property
    def end(self) -> int:
        return self.start + len(self.text)


def constant(tree: Node):
    """The value of a tree built only from numbers and sizes (a SymPy expression), or None."""
    if tree.op == "number" or tree.op == "size":
        return tree.value
    parts = [constant(arg) for arg in tree.args]
    if any(part is None for part in parts):
        return None
    if tree.op == "neg":
        return -parts[0]
    if tree.op == "add":
        return sum((sign * part for sign, part in zip(tree.value, parts)), sp.Integer(0))
    if tree.op == "pow":
        if parts[0] == 0 and tree.value <= 0:
            return None
        value = parts[0] ** tree.value
        return value if isinstance(tree.value, int) or value.is_Rational else None
    if tree.op == "chain":
        value = parts[0]
        for op, part in zip(tree.value, parts[1:]):
            if op == "/" and part == 0:
                return None
            value = value / part if op == "/" else value * part
        return value
    return None


class Parser:
    """What both notations share: tokens with positions, errors, nesting, and the tree builders."""

    pattern: re.Pattern
    latex = False

    def __init__(self, text: str, context):
        self.text, self.context, self.names = text, context, context.names
        self.tokens = self.tokenize(text)
        self.i = 0
        self.nesting = 0

    # -- tokens
    def tokenize(self, text):
        tokens, pos = [], 0
        while pos < len(text):
            match = self.pattern.match(text, pos)
            if not match:
                raise ClaimError(f"unexpected character {text[pos]!r}", column=pos + 1)
            if match.lastgroup != "ws":
                tokens.append(self.token(match))
            pos = match.end()
        tokens.append(Token("end", "", len(text)))
        return tokens

    def token(self, match) -> Token:
        return Token(match.lastgroup, match.group(0), match.start())

    def peek(self, offset: int = 0) -> Token:
        return self.tokens[min(self.i + offset, len(self.tokens) - 1)]

    def next(self) -> Token:
        token = self.peek()
        self.i = min(self.i + 1, len(self.tokens) - 1) if token.kind == "end" else self.i + 1
        return token

    def at(self, *texts) -> bool:
        return self.peek().kind != "end" and self.peek().text in texts

    def accept(self, *texts) -> Token | None:
        return self.next() if self.at(*texts) else None

    def expect(self, text: str, what: str | None = None) -> Token:
        if not self.at(text):
            self.fail(what or repr(text))
        return self.next()

    def fail(self, expected: str, token: Token | None = None):
        token = token or self.peek()
        found = "the end of the claim" if token.kind == "end" else repr(token.text)
        raise ClaimError(f"expected {expected}, found {found}", column=token.start + 1)

    def error(self, message: str, token: Token) -> ClaimError:
        return ClaimError(message, column=token.start + 1)

    def last_end(self) -> int:
        return self.tokens[self.i - 1].end if self.i else 0

    @contextmanager
    def nested(self):
        """One level of nesting (a parenthesis, a call); refused past ``MAX_DEPTH``."""
        self.nesting += 1
        if self.nesting > MAX_DEPTH:
            raise self.error(f"too deeply nested (more than {MAX_DEPTH} levels)", self.peek())
        try:
            yield
        finally:
            self.nesting -= 1

    # -- the claim
    def claim(self) -> Claim:
        of, wrt = self.left_side()
        if not self.accept("=", ":=", r"\leftarrow", r"\gets"):
            if self.at("["):  # dW1[f, c, i, j] = ...
                raise self.error("an entry of a gradient (an index form) is not judged: write the matrix form"
                                 + self.names.matrix_form(), self.peek())
            self.fail("'=' after the left side")
        if self.peek().kind == "end":
            self.fail("a formula after '='")
        tree = self.expr()
        if self.peek().kind != "end":
            self.fail("an operator or the end of the claim")
        return Claim(self.text, of, wrt, tree, self.latex)

    def gradient_side(self, of_word: str, wrt_word: str, token: Token) -> tuple[str, str]:
        """The two names of ``d<of>/d<wrt>``: ``("L", quantity)`` for the loss, else a local gradient."""
        of = None if of_word in LOSS_WORDS else self.names.quantity(of_word)
        wrt = self.names.quantity(wrt_word)
        if wrt is None:
            raise self.names.unknown(wrt_word, token.start + 1)
        if of is None:
            if of_word not in LOSS_WORDS:
                raise self.names.unknown(of_word, token.start + 1)
            if wrt not in self.names.with_gradient:
                raise self.names.no_gradient(f"d{wrt}", token.start + 1)
            return "L", wrt
        return of, wrt

    # -- leaves
    def leaf(self, op: str, value, token: Token) -> Node:
        return node(op, (), value, token.start, token.end)

    def quantity_or_gradient(self, word: str, token: Token) -> Node:
        """A name on the right side: a quantity, a gradient written ``dW2``/``delta2``, or a size."""
        name = self.names.quantity(word)
        if name is not None:
            return self.leaf("name", name, token)
        grad = self.names.gradient(word)
        if grad is not None:
            return self.leaf("grad", grad, token)
        size = self.names.size(word)
        if size is not None:
            return self.leaf("size", size, token)
        value = self.spec_constant(word, token)
        if value is not None:
            return value
        raise self.names.unknown(word, token.start + 1)

    def spec_constant(self, word: str, token: Token) -> Node | None:
        """``eps``, ``p``, ``keep_prob``, ``lambd``: the spec's value as a number leaf, or None."""
        try:
            value = self.names.constant(word)
        except ClaimError as error:
            raise self.error(error.message, token) from None
        return None if value is None else self.leaf("number", value, token)

    def derivative(self, of_word: str, wrt_word: str, token: Token) -> Node:
        """``dL/dZ2`` (an upstream gradient) or ``dZ2/da1`` (a local gradient, as its factor)."""
        of, wrt = self.gradient_side(of_word, wrt_word, token)
        if of == "L":
            return self.leaf("grad", wrt, token)
        factor = self.context.local_factor(of, wrt)
        if factor is None:
            raise self.error(f"{of} does not depend directly on {wrt}: no local gradient d{of}/d{wrt}", token)
        return self.leaf("local", (of, wrt, factor), token)

    def number(self, token: Token, text: str | None = None) -> Node:
        text = token.text if text is None else text
        if len(text) > MAX_NUMBER_LENGTH:
            raise self.error(f"a number longer than {MAX_NUMBER_LENGTH} characters", token)
        return self.leaf("number", sp.Rational(text), token)

    # -- operations
    def chain(self, factors: list[Node], ops: list[str]) -> Node:
        if not ops:
            return factors[0]
        for op, factor in zip(ops, factors[1:]):
            if op == "/" and constant(factor) == 0:
                raise self.error(f"division by zero: {factor.text(self.text)!r} is 0",
                                 Token("op", "/", factor.start))
        return node("chain", factors, tuple(ops), factors[0].start, factors[-1].end)

    def sum(self) -> Node:
        """Terms joined by ``+`` and ``-`` (each notation's ``term`` reads one)."""
        terms, signs = [self.term()], [1]
        while self.at("+", "-"):
            signs.append(1 if self.next().text == "+" else -1)
            terms.append(self.term())
        return self.add(terms, signs)

    def add(self, terms: list[Node], signs: list[int]) -> Node:
        if len(terms) == 1 and signs[0] > 0:
            return terms[0]
        if len(terms) == 1:
            return node("neg", terms, None, terms[0].start, terms[0].end)
        return node("add", terms, tuple(signs), terms[0].start, terms[-1].end)

    def signed(self, signs: list[Token], operand: Node) -> Node:
        """A run of unary signs, read in a loop: an odd number of minus signs negates."""
        if sum(token.text == "-" for token in signs) % 2 == 0:
            return operand
        return node("neg", (operand,), None, signs[0].start, operand.end)

    def power(self, base: Node, exponent: Node, token: Token) -> Node:
        """``base ** exponent`` entrywise, for a whole or half-whole constant exponent (``x**2``,
        ``(var + eps)**-0.5``); a power of a diagonal matrix ``Diag(v)`` is ``Diag(v ** exponent)``."""
        value = constant(exponent)
        if value is None or not (2 * value).is_Integer:
            raise self.error("only constant whole or half powers are supported (x**2, np.power(x, 2), "
                             "(var + eps)**-0.5)", token)
        if abs(value) > MAX_EXPONENT:
            raise self.error(f"the exponent {value} is larger than {MAX_EXPONENT}", token)
        if value < 0 and constant(base) == 0:
            raise self.error("division by zero: 0 to a negative power", token)
        value = int(value) if value.is_Integer else sp.Rational(value)
        end = max(exponent.end, base.end)
        if base.op == "sqrt" and value % 2 == 0:  # sqrt(x)^2 = x exactly, whatever the field says of sqrt
            base, value = base.args[0], value // 2
            if value == 1:
                return base
        if base.op == "diagmat":
            return node("diagmat", (node("pow", base.args, value, base.args[0].start, end),), None, base.start, end)
        return node("pow", (base,), value, base.start, end)

    def ones(self, sizes: list[Node], token: Token, flat: bool) -> Node:
        """``ones(N)`` (a column), ``ones(N, 1)``, ``np.ones((1, N))``; ``np.ones(N)`` is 1-D, as in NumPy."""
        for size in sizes:
            value = constant(size)
            if value is None or not (value.is_integer and value.is_positive):
                raise self.error(f"ones(...) takes sizes: N, n_1, or a positive whole number; got "
                                 f"{size.text(self.text)!r}", token)
        if len(sizes) not in (1, 2):
            raise self.error("ones(...) takes one or two sizes", token)
        return node("ones", sizes, "flat" if flat else None, token.start, self.last_end())

    def apply(self, function: str, order: int, arg: Node, token: Token) -> Node:
        """An activation (or its derivative) of ``arg``; ``function == "layer"`` (g, f, phi) takes the
        activation that the forward pass applies to ``arg``."""
        own = self.names.activation_of(arg.value) if arg.op == "name" else None
        if function == "layer":
            if own is None:
                raise self.error("g'(...), f'(...) and phi'(...) need a quantity an activation is applied to "
                                 "(a layer's Z)", token)
            function, params = own.activation, own.params
        elif own is not None and own.activation == function:
            params = own.params
        else:
            params = activation_rule(function).parameters()
        return node("fn", (arg,), (function, order, tuple(sorted(params.items()))), token.start, self.last_end())

    def batch_sum(self, arg: Node, token: Token) -> Node:
        """Sum over the samples, keeping the matrix shape (``1^T M`` batch-first, ``M 1`` column)."""
        axis = 0 if self.names.network.batch_first else 1
        return node("sum", (arg,), (axis, True, False), token.start, self.last_end())

    def softmax(self, arg: Node, axis: int | None, token: Token, function: str = "softmax") -> Node:
        """Softmax (or log-softmax) over each sample's entries, or along ``axis``."""
        if axis is None:
            axis = 1 if self.names.network.batch_first else 0
        return node(function, (arg,), axis, token.start, self.last_end())

    def size_of(self, tree: Node, what: str, token: Token) -> Node:
        value = constant(tree)
        if value is None or not (value.is_integer and value.is_positive):
            raise self.error(f"{what} takes a size: N, n_1, or a positive whole number; got "
                             f"{tree.text(self.text)!r}", token)
        return tree

    def eye(self, size: Node, token: Token) -> Node:
        """The identity matrix ``np.eye(N)``, ``I_N``."""
        return node("eye", (self.size_of(size, "the identity matrix", token),), None, token.start, self.last_end())

    def repeat(self, vector: Node, count: Node, token: Token, rows: bool) -> Node:
        """``row_repeat(x, n)`` (a 1 x k row, or a 1-D vector as NumPy's ``tile`` takes it, stacked n times: the
        n x 1 ones times x, broadcast) or ``column_repeat(x, n)`` (``x 1_n^T``)."""
        count = self.size_of(count, "the repeat count", token)
        one = self.constant_leaf(1, token)
        ones = node("ones", (count, one) if rows else (one, count), None, token.start, self.last_end())
        return node("chain", (ones, vector) if rows else (vector, ones), ("*",) if rows else ("@",), token.start,
                    self.last_end())

    def constant_leaf(self, value: int, token: Token) -> Node:
        return node("number", (), sp.Integer(value), token.start, token.end)
