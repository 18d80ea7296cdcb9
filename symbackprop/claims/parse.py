r"""Read a claim, in NumPy-like code or in LaTeX, into a ``Claim``: what it is about and its right side as a tree.

A claim is ``dL/d<name> = <formula>`` (also ``dW2 = ...``, ``delta2 = ...``, ``\frac{\partial L}{\partial
W^{[2]}} = ...``, ``\nabla_{W^{(2)}} J = ...``, ``\delta^{[2]} = ...``) or a local gradient ``d<of>/d<wrt> =
<factor>``. Both parsers are recursive descent over a token list, with nesting bounded by ``tree.MAX_DEPTH``
(a clear error, never a ``RecursionError``); runs of unary signs are read in a loop. Nothing is ever evaluated
as Python. Every problem is a ``ClaimError`` carrying the column where it was found.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass

import sympy as sp

from ..rules import ACTIVATIONS
from .errors import ClaimError
from .names import LOSS_WORDS
from .tree import MAX_DEPTH, Node, node

MAX_CLAIM_LENGTH = 10_000
MAX_EXPONENT = 64
MAX_NUMBER_LENGTH = 40


@dataclass(frozen=True)
class Claim:
    """A parsed claim: ``of`` is ``"L"`` for a gradient of the loss, else a local gradient's quantity."""

    text: str
    of: str
    wrt: str
    tree: Node
    latex: bool

    @property
    def label(self) -> str:
        return f"d{self.of}/d{self.wrt}"

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


def parse(text: str, context, latex: bool) -> Claim:
    """Parse one claim about ``context``'s network (``context``: ``.names``, ``.local_factor(of, wrt)``)."""
    if len(text) > MAX_CLAIM_LENGTH:
        raise ClaimError(f"the claim is longer than {MAX_CLAIM_LENGTH} characters")
    parser = (LatexParser if latex else NumPyParser)(text, context)
    return parser.claim()


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
        return parts[0] ** tree.value if parts[0] != 0 or tree.value > 0 else None
    if tree.op == "chain":
        value = parts[0]
        for op, part in zip(tree.value, parts[1:]):
            if op == "/" and part == 0:
                return None
            value = value / part if op == "/" else value * part
        return value
    return None


class _Parser:
    """What both notations share: tokens with positions, errors, nesting, and the tree builders."""

    pattern: re.Pattern

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
            self.fail("'=' after the left side")
        if self.peek().kind == "end":
            self.fail("a formula after '='")
        tree = self.expr()
        if self.peek().kind != "end":
            self.fail("an operator or the end of the claim")
        return Claim(self.text, of, wrt, tree, isinstance(self, LatexParser))

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
        raise self.names.unknown(word, token.start + 1)

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
        value = constant(exponent)
        if value is None or not value.is_Integer:
            raise self.error("only whole-number constant powers are supported (x**2, np.power(x, 2))", token)
        if abs(int(value)) > MAX_EXPONENT:
            raise self.error(f"the exponent {value} is larger than {MAX_EXPONENT}", token)
        if int(value) < 0 and constant(base) == 0:
            raise self.error("division by zero: 0 to a negative power", token)
        return node("pow", (base,), int(value), base.start, max(exponent.end, base.end))

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
            params = ACTIVATIONS[function].parameters()
        return node("fn", (arg,), (function, order, tuple(sorted(params.items()))), token.start, self.last_end())

    def batch_sum(self, arg: Node, token: Token) -> Node:
        """Sum over the samples, keeping the matrix shape (``1^T M`` batch-first, ``M 1`` column)."""
        axis = 0 if self.names.network.batch_first else 1
        return node("sum", (arg,), (axis, True, False), token.start, self.last_end())

    def softmax(self, arg: Node, axis: int | None, token: Token) -> Node:
        if axis is None:
            axis = 1 if self.names.network.batch_first else 0
        return node("softmax", (arg,), axis, token.start, self.last_end())


# -- NumPy-like code ---------------------------------------------------------------------------------------

_NUMPY_TOKENS = re.compile(r"""
    (?P<ws>\s+)
  | (?P<frac>[d∂](?P<of>[^\W\d]\w*)\s*/\s*[d∂](?P<wrt>[^\W\d]\w*))
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<name>[^\W\d]\w*)
  | (?P<op>\*\*|>=|<=|==|!=|:=|[-+*/@().,'=<>\[\]:"])
""", re.VERBOSE)

_DERIVATIVE_SUFFIXES = ("_prime", "_derivative", "_deriv", "_grad", "_backward_local")
_AXIS_VALUES = {"0": 0, "1": 1, "-1": 1, "-2": 0, "None": None}


class NumPyParser(_Parser):
    """``dW2 = np.dot(dZ2, A1.T)``, ``dL/dZ1 = dL/da1 * (1 - a1**2)``: Python's operator precedence, NumPy's
    functions and methods (``np.dot``, ``.dot``, ``np.sum(..., axis=1, keepdims=True)``, ``np.where``, ...)."""

    pattern = _NUMPY_TOKENS

    def token(self, match) -> Token:
        if match.lastgroup == "frac":
            return Token("frac", match.group(0), match.start(), match.group("of"), match.group("wrt"))
        return super().token(match)

    def left_side(self):
        token = self.next()
        if token.kind == "frac":
            return self.gradient_side(token.of, token.wrt, token)
        if token.kind == "name":
            grad = self.names.gradient(token.text)
            if grad is not None:
                return "L", grad
            if token.text.startswith("d"):
                raise self.names.no_gradient(token.text, token.start + 1)
        self.fail("a left side dL/d<name>, d<name>/d<name>, dW2 or delta2", token)

    # -- precedence levels, lowest first
    def expr(self) -> Node:
        with self.nested():
            left = self.sum()
            if self.at(">", ">=", "<", "<="):
                op = self.next()
                right = self.sum()
                return node("cmp", (left, right), op.text, left.start, right.end)
            if self.at("==", "!="):
                self.fail("an operator (only <, <=, >, >= comparisons are supported)")
            return left

    def sum(self) -> Node:
        terms, signs = [self.term()], [1]
        while self.at("+", "-"):
            signs.append(1 if self.next().text == "+" else -1)
            terms.append(self.term())
        return self.add(terms, signs)

    def term(self) -> Node:
        factors, ops = [self.unary()], []
        while self.at("@", "*", "/"):
            ops.append(self.next().text)
            factors.append(self.unary())
        return self.chain(factors, ops)

    def unary(self) -> Node:
        signs = []
        while self.at("-", "+"):
            signs.append(self.next())
        return self.signed(signs, self.power_of())

    def power_of(self) -> Node:
        base = self.postfix()
        if self.at("**"):
            token = self.next()
            signs = []
            while self.at("-", "+"):
                signs.append(self.next())
            return self.power(base, self.signed(signs, self.postfix()), token)
        return base

    def postfix(self) -> Node:
        value = self.atom()
        while self.at(".", "["):
            token = self.next()
            if token.text == "[":
                raise self.error("indexing (M[...]) is not supported; write the whole matrix", token)
            method = self.next()
            if method.text == "T":
                value = node("T", (value,), None, value.start, method.end)
            elif method.text in ("transpose", "copy"):
                self.expect("(", f"'(' after .{method.text}")
                self.expect(")", "')'")
                value = value if method.text == "copy" else node("T", (value,), None, value.start, self.last_end())
            elif method.text == "dot":
                self.expect("(", "'(' after .dot")
                with self.nested():
                    other = self.expr()
                self.expect(")", "')'")
                value = node("chain", (value, other), ("dot",), value.start, self.last_end())
            elif method.text in ("sum", "mean"):
                self.expect("(", f"'(' after .{method.text}")
                axis, keepdims = self.reduction_options(first=True)
                value = node("sum", (value,), (axis, keepdims, method.text == "mean"), value.start, self.last_end())
            elif method.text == "astype":
                self.skip_call()
            else:
                self.fail("T, transpose(), dot(...), sum(...), mean(...) or astype(...) after '.'", method)
        return value

    def skip_call(self):
        """``(float)``, ``(np.float64)``, ``('float')`` after ``.astype``: a type, which changes no value."""
        self.expect("(", "'(' after .astype")
        while not self.at(")"):
            token = self.next()
            if token.kind == "end" or token.text in ("(", "["):
                self.fail("a type name and ')'", token)
        self.next()

    def reduction_options(self, first: bool):
        """``axis=0, keepdims=True)`` (or a positional axis) up to the closing parenthesis."""
        options = {}
        while not self.at(")"):
            if options or not first:
                self.expect(",", "',' or ')'")
            if self.peek().kind == "name" and self.peek(1).text == "=":
                key = self.next()
                self.next()
                if key.text not in ("axis", "keepdims") or key.text in options:
                    self.fail("axis= or keepdims=", key)
            else:
                key = Token("name", "axis", self.peek().start)
                if "axis" in options:
                    self.fail("keepdims=")
            options[key.text] = self.option_value(key.text)
        self.next()
        return options.get("axis"), options.get("keepdims", False)

    def option_value(self, key: str):
        token = self.next()
        text = token.text
        if text == "-" and self.peek().kind == "number":
            text += self.next().text
        if key == "axis" and text in _AXIS_VALUES:
            return _AXIS_VALUES[text]
        if key == "keepdims" and text in ("True", "False", "1", "0"):
            return text in ("True", "1")
        self.fail("axis=0, axis=1 or axis=None" if key == "axis" else "keepdims=True or keepdims=False", token)

    def atom(self) -> Node:
        token = self.next()
        if token.kind == "number":
            return self.number(token)
        if token.kind == "frac":
            return self.derivative(token.of, token.wrt, token)
        if token.text == "(":
            with self.nested():
                value = self.expr()
                if self.at(","):
                    self.fail("')' (tuples are only sizes in np.ones((N, 1)))")
            self.expect(")", "')'")
            return node(value.op, value.args, value.value, token.start, self.last_end())
        if token.kind == "name":
            word = token.text
            if word == "np" and self.at("."):
                self.next()
                name = self.next()
                if name.kind != "name":
                    self.fail("a NumPy function after 'np.'", name)
                return self.call(name.text, Token("name", f"np.{name.text}", token.start), numpy=True)
            if self.at("(", "'"):
                return self.call(word, token, numpy=False)
            return self.quantity_or_gradient(word, token)
        self.fail("a name, a number, a gradient dL/d<name> or '('", token)

    # -- calls
    def arguments(self) -> tuple[list[Node], dict]:
        """Positional arguments and ``axis=``/``keepdims=`` options up to the closing parenthesis; a
        parenthesized tuple ``(N, 1)`` (a shape) is a ``tuple`` node."""
        args, keywords = [], {}
        with self.nested():
            while not self.at(")"):
                if args or keywords:
                    self.expect(",", "',' or ')'")
                if self.peek().kind == "name" and self.peek(1).text == "=":
                    key = self.next()
                    self.next()
                    if key.text not in ("axis", "keepdims") or key.text in keywords:
                        self.fail("axis= or keepdims= (once each)", key)
                    keywords[key.text] = (key, self.option_value(key.text))
                elif keywords:
                    self.fail("a keyword argument after a keyword argument")
                else:
                    args.append(self.tuple_or_expr())
        self.next()
        return args, keywords

    def tuple_or_expr(self) -> Node:
        if not (self.at("(") and self.comma_ahead()):
            return self.expr()
        start = self.next()
        sizes = [self.expr()]
        while self.accept(","):
            if self.at(")"):
                break
            sizes.append(self.expr())
        self.expect(")", "')'")
        return node("tuple", sizes, None, start.start, self.last_end())

    def comma_ahead(self) -> bool:
        """Whether the parenthesis ahead holds a top-level comma (a tuple)."""
        depth, k = 0, 0
        while True:
            token = self.peek(k)
            if token.kind == "end":
                return False
            depth += {"(": 1, ")": -1}.get(token.text, 0)
            if depth == 0:
                return False
            if depth == 1 and token.text == ",":
                return True
            k += 1

    def call(self, word: str, token: Token, numpy: bool) -> Node:
        order = 1 if self.accept("'") else 0
        function, order = self.function_name(word, order, token)
        self.expect("(", f"'(' after {token.text}")
        args, keywords = self.arguments()
        end = self.last_end()
        takes = {"sum": (1, 2), "mean": (1, 2), "ones": (1, 2), "where": (3,), "power": (2,), "maximum": (2,),
                 "heaviside": (2,), "dot": (2,), "matmul": (2,), "multiply": (2,), "divide": (2,),
                 "true_divide": (2,), "add": (2,), "subtract": (2,)}.get(function, (1,))
        options = {"sum": {"axis", "keepdims"}, "mean": {"axis", "keepdims"}, "softmax": {"axis"}}.get(function, set())
        if len(args) not in takes:
            raise self.error(f"{token.text}(...) takes {' or '.join(map(str, takes))} argument(s), not {len(args)}",
                             token)
        for key, (key_token, _) in keywords.items():
            if key not in options:
                raise self.error(f"{token.text}(...) takes no {key}=", key_token)
        for arg in args[1:] if function == "ones" else args:
            if arg.op == "tuple":
                raise self.error("a tuple is only a shape, as in np.ones((N, 1))", Token("op", "(", arg.start))
        if function in ACTIVATIONS or function == "layer":
            return self.apply(function, order, args[0], token)
        if function in ("sum", "mean"):
            axis = keywords["axis"][1] if "axis" in keywords else None
            if len(args) == 2:
                value = constant(args[1])
                if value not in (0, 1, -1, -2) or "axis" in keywords:
                    raise self.error("the axis of a sum is 0, 1 or None", token)
                axis = {0: 0, 1: 1, -1: 1, -2: 0}[int(value)]
            keepdims = keywords["keepdims"][1] if "keepdims" in keywords else False
            if not numpy and axis is not None:
                keepdims = True  # the claim syntax's sum(M, axis=0) keeps the matrix shape
            return node("sum", args[:1], (axis, keepdims, function == "mean"), token.start, end)
        if function == "softmax":
            return self.softmax(args[0], keywords["axis"][1] if "axis" in keywords else None, token)
        if function == "ones":
            sizes = list(args[0].args) if args[0].op == "tuple" else args
            if args[0].op == "tuple" and len(args) > 1:
                raise self.error("np.ones((rows, cols)) takes one shape", token)
            return self.ones(sizes, token, flat=numpy and len(sizes) == 1)
        binary = {"dot": "dot", "matmul": "@", "multiply": "*", "divide": "/", "true_divide": "/"}
        if function in binary:
            return self.chain(list(args), [binary[function]])
        if function in ("add", "subtract"):
            return self.add(list(args), [1, 1 if function == "add" else -1])
        if function in ("power", "square"):
            exponent = args[1] if function == "power" else self.constant_leaf(2, token)
            return self.power(args[0], exponent, token)
        if function == "transpose":
            return node("T", args, None, token.start, end)
        if function == "heaviside":  # heaviside(x, h0): 1 where x > 0, h0 where x == 0, else 0
            x, at_zero = args
            positive = node("cmp", (x, self.constant_leaf(0, token)), ">", token.start, end)
            non_negative = node("cmp", (x, self.constant_leaf(0, token)), ">=", token.start, end)
            rest = node("chain", (at_zero, non_negative), ("*",), token.start, end)
            return node("where", (positive, self.constant_leaf(1, token), rest), None, token.start, end)
        return node(function, args, None, token.start, end)

    def constant_leaf(self, value: int, token: Token) -> Node:
        return node("number", (), sp.Integer(value), token.start, token.end)

    def function_name(self, word: str, order: int, token: Token) -> tuple[str, int]:
        """The function a call names: an activation (``sigmoid_prime`` is its derivative), ``g``/``f``/``phi``
        (the layer's own activation), or one of NumPy's."""
        for suffix in _DERIVATIVE_SUFFIXES:
            if word.endswith(suffix) and word[:-len(suffix)] in (*ACTIVATIONS, "g", "f", "phi", "sigma"):
                word, order = word[:-len(suffix)], 1
        word = {"sigma": "sigmoid", "expit": "sigmoid", "absolute": "abs", "amax": "max"}.get(word, word)
        if word in ("g", "f", "phi"):
            return "layer", order
        if word in ACTIVATIONS:
            return word, order
        known = ("sum", "mean", "softmax", "ones", "dot", "matmul", "multiply", "divide", "true_divide", "add",
                 "subtract", "power", "square", "transpose", "where", "maximum", "heaviside", "exp", "log",
                 "abs", "sign")
        if word in known and order == 0:
            return word, 0
        raise self.error(f"unknown function {token.text!r}; known: the activations "
                         f"({', '.join(ACTIVATIONS)}) and their derivatives (relu'(Z1), sigmoid_prime(Z1)), "
                         "g'(Z1) for a layer's own activation, sum, mean, ones, softmax, and NumPy's dot, matmul, "
                         "multiply, divide, power, square, transpose, where, maximum, heaviside, exp, log, abs, "
                         "sign", token)


# -- LaTeX -------------------------------------------------------------------------------------------------

_LATEX_TOKENS = re.compile(r"""
    (?P<ws>\s+|\\[,;:!\ ]|~|&|\\(?:left|right|displaystyle|textstyle|big|Big|bigg|Bigg|bigl|bigr|Bigl|Bigr
                                  |quad|qquad|limits|nolimits)(?![A-Za-z]))
  | (?P<command>\\[A-Za-z]+|\\[{}|])
  | (?P<number>\d+(?:\.\d+)?)
  | (?P<letters>[A-Za-z]+)
  | (?P<op>:=|>=|<=|[-+*/(){}\[\]^_'=<>,.|;:])
  | (?P<unicode>[∂∇δσ⊙∘·×ᵀ⊤])
""", re.VERBOSE)

_UNICODE = {"∂": r"\partial", "∇": r"\nabla", "δ": r"\delta", "σ": r"\sigma", "⊙": r"\odot", "∘": r"\circ",
            "·": r"\cdot", "×": r"\times", "ᵀ": "^T", "⊤": r"\top"}
# Font and naming wrappers that change no meaning: \mathbf{W} is W, \operatorname{ReLU} is ReLU.
_WRAPPERS = {r"\mathbf", r"\boldsymbol", r"\bm", r"\mathit", r"\mathrm", r"\mathsf", r"\mathbb", r"\mathcal",
             r"\operatorname", r"\text", r"\textrm", r"\textbf", r"\textit", r"\vec", r"\pmb", r"\mathnormal"}
_FUNCTION_COMMANDS = {r"\sigma": "sigmoid", r"\tanh": "tanh", r"\exp": "exp", r"\log": "log", r"\ln": "log",
                      r"\max": "maximum", r"\phi": "layer", r"\varphi": "layer"}
_FUNCTION_WORDS = {
    **{name: name for name in ACTIVATIONS}, "leakyrelu": "leaky_relu", "lrelu": "leaky_relu", "id": "identity",
    "sigmoid": "sigmoid", "sigma": "sigmoid", "softmax": "softmax", "exp": "exp", "log": "log", "ln": "log",
    "max": "maximum", "sign": "sign", "sgn": "sign",
}
_PRODUCTS = {r"\cdot": "dot", r"\times": "dot", r"\odot": "*", r"\circ": "*", "*": "*", r"\ast": "*", "/": "/"}
_TRANSPOSE = ("T", r"\top", r"\intercal")
_LAYERED = ("W", "w", "b", "B", "Z", "z", "A", "a", "h", "H", "n")  # letters whose sub/superscript is a layer
_GREEK_NAMES = {rf"\{name}" for name in ("mu", "nu", "gamma", "beta", "eta", "tau", "rho", "kappa", "omega")}
_PRIME = (r"\prime",)


class LatexParser(_Parser):
    r"""``\frac{\partial L}{\partial W^{[1]}} = X^\top \delta^{[1]}``: juxtaposition, ``\cdot`` and ``\times``
    are matrix products (scaling where one side is a scalar), ``\odot``/``\circ``/``*`` elementwise; layers as
    ``W^{[l]}``, ``W^{(l)}``, ``W^l``, ``W_l``; the transpose as ``^T``, ``^\top``, ``^{[l]T}``, ``^{T^{[l]}}``."""

    pattern = _LATEX_TOKENS
    in_sum = 0  # how many sums over the samples enclose the parser's position
    pending_transpose = False  # whether the name just read carried a transpose (W^{[1]T})

    def tokenize(self, text):
        tokens = []
        for token in super().tokenize(text):
            if token.kind == "unicode":
                replacement = _UNICODE[token.text]
                if replacement == "^T":
                    tokens += [Token("op", "^", token.start), Token("letters", "T", token.start)]
                    continue
                token = Token("command", replacement, token.start)
            tokens.append(token)
        return self.unwrap(tokens)

    def unwrap(self, tokens):
        r"""Drop font wrappers with their braces; ``\hat{y}`` becomes the word ``yhat``. Iterative."""
        out, closing, i = [], [], 0
        depth = 0
        while i < len(tokens):
            token = tokens[i]
            if token.text == "{":
                depth += 1
            elif token.text == "}":
                if closing and closing[-1] == depth:
                    closing.pop()
                    depth -= 1
                    i += 1
                    continue
                depth -= 1
            if token.text in _WRAPPERS or token.text in (r"\hat", r"\widehat"):
                following = tokens[i + 1] if i + 1 < len(tokens) else tokens[-1]
                if token.text in (r"\hat", r"\widehat"):
                    inner = tokens[i + 2] if following.text == "{" else following
                    close = i + 3 if following.text == "{" else i + 1
                    if inner.kind != "letters" or (following.text == "{" and tokens[close].text != "}"):
                        raise self.error(r"\hat{...} of a single letter (\hat{y})", token)
                    out.append(Token("word", inner.text + "hat", token.start))
                    i = close + 1
                    continue
                if following.text == "{":
                    depth += 1
                    closing.append(depth)
                    i += 2
                    continue
                i += 1
                continue
            out.append(token)
            i += 1
        return out

    # -- small readers
    def group_tokens(self) -> list[Token]:
        """The tokens of one ``{...}`` group, or the single token after ``^``/``_`` (iterative)."""
        if not self.at("{"):
            token = self.next()
            if token.kind == "end":
                self.fail("a superscript or subscript")
            if token.kind == "letters" and len(token.text) > 1 and token.text not in ("pred", "true", "hat"):
                # x^Tb: only the first letter is raised
                self.i -= 1
                self.split_letters(1)
                token = self.next()
            if token.kind == "number" and len(token.text) > 1 and "." not in token.text:
                self.i -= 1
                self.tokens[self.i] = Token("number", token.text[1:], token.start + 1)
                token = Token("number", token.text[0], token.start)
            return [token]
        opening, depth, tokens = self.next(), 1, []
        while True:
            token = self.next()
            if token.kind == "end":
                self.fail("'}'", token)
            depth += {"{": 1, "}": -1}.get(token.text, 0)
            if depth == 0:
                return tokens or self.fail("a non-empty group", opening)
            tokens.append(token)

    def split_letters(self, count: int) -> str:
        """Take the first ``count`` letters of a letters token (LaTeX reads ``XW`` as X times W)."""
        token = self.peek()
        if count >= len(token.text):
            return self.next().text
        self.tokens[self.i] = Token(token.kind, token.text[count:], token.start + count)
        return token.text[:count]

    def word_length(self, letters: str) -> int:
        """How many letters at the start of a letters token form one word (LaTeX reads ``XW`` as X times W):
        the input's name, ``Loss``, ``pred``/``true``, ``AL``, or a function name (a short one such as ``id``
        or ``max`` only as the whole token); else 1."""
        words = [self.names.network.input_name, "Loss", "loss", "pred", "true", *_FUNCTION_WORDS]
        for word in sorted((w for w in words if len(w) > 1), key=len, reverse=True):
            whole = word not in _FUNCTION_WORDS or len(word) > 3 or word in ("exp", "log") or len(letters) == len(word)
            if whole and letters.lower().startswith(word.lower()):
                return len(word)
        return 2 if letters.startswith(("AL", "aL")) else 1

    # -- the left side
    def left_side(self):
        token = self.peek()
        if token.text in (r"\frac", r"\dfrac", r"\tfrac"):
            self.next()
            with self.nested():
                of_word, of_token = self.differential()
                wrt_word, _ = self.differential()
            return self.gradient_side(of_word, wrt_word, of_token)
        if token.text == r"\nabla":
            leaf = self.nabla()
            return "L", leaf.value
        if token.text == r"\delta" or token.kind == "letters":
            leaf = self.symbol()
            if leaf.op == "grad" and not self.pending_transpose:
                return "L", leaf.value
        self.fail(r"a left side \frac{\partial L}{\partial <name>}, \nabla_{<name>} L, \delta^{[l]} or dW^{[l]}",
                  token)

    def differential(self) -> tuple[str, Token]:
        r"""One side of ``\frac{\partial L}{\partial W^{[1]}}``: the word after ``\partial`` or ``d``."""
        self.expect("{", "'{'")
        if not self.accept(r"\partial"):
            if self.peek().kind == "letters" and self.peek().text.startswith("d"):
                self.split_letters(1)
            else:
                self.fail(r"d or \partial")
        token = self.peek()
        if token.kind == "letters" and token.text in LOSS_WORDS and self.peek(1).text == "}" or token.text == r"\ell":
            self.next()
            word = "L"
        else:
            leaf = self.symbol(allow_gradient=False)
            if leaf.op != "name" or self.pending_transpose:
                raise self.error("a network quantity after d or \\partial", token)
            word = leaf.value
        self.expect("}", "'}'")
        return word, token

    def nabla(self) -> Node:
        r"""``\nabla_{W^{[1]}} L``: the gradient of the loss with respect to the subscript's quantity."""
        token = self.next()
        self.expect("_", r"'_' after \nabla")
        start = self.i
        if self.at("{"):
            self.next()
            inner = self.peek()
            leaf = self.bare_output() if inner.kind == "letters" and inner.text == "a" and \
                self.peek(1).text == "}" else self.symbol(allow_gradient=False)
            self.expect("}", "'}'")
        else:
            inner = self.peek()
            leaf = self.bare_output() if inner.kind == "letters" and inner.text.startswith("a") else \
                self.symbol(allow_gradient=False)
        if leaf.op != "name":
            raise self.error(r"a network quantity after \nabla_", self.tokens[start])
        loss = self.next()
        if not ((loss.kind in ("letters", "word") and loss.text in LOSS_WORDS) or loss.text == r"\ell"):
            self.fail(r"the loss (L, J, C, E, \mathcal{L}) after \nabla_{...}", loss)
        if leaf.value not in self.names.with_gradient:
            raise self.names.no_gradient(f"d{leaf.value}", token.start + 1)
        return node("grad", (), leaf.value, token.start, self.last_end())

    def bare_output(self) -> Node:
        r"""Nielsen's ``\nabla_a C``: a bare ``a`` is the network's output."""
        token = Token("letters", self.split_letters(1), self.peek().start)
        return self.leaf("name", self.names.prediction, token)

    # -- precedence levels
    def expr(self) -> Node:
        with self.nested():
            left = self.sum()
            if self.at(">", r"\geq", r"\ge", "<", r"\leq", r"\le", r"\gt", r"\lt"):
                op = self.next()
                if op.text == ">" and self.accept("="):
                    text = ">="
                elif op.text == "<" and self.accept("="):
                    text = "<="
                else:
                    text = {r"\geq": ">=", r"\ge": ">=", r"\leq": "<=", r"\le": "<=", r"\gt": ">",
                            r"\lt": "<"}.get(op.text, op.text)
                right = self.sum()
                return node("cmp", (left, right), text, left.start, right.end)
            return left

    def sum(self) -> Node:
        terms, signs = [self.term()], [1]
        while self.at("+", "-"):
            signs.append(1 if self.next().text == "+" else -1)
            terms.append(self.term())
        return self.add(terms, signs)

    def starts_atom(self) -> bool:
        token = self.peek()
        return token.kind in ("letters", "number", "word") or token.text in (
            "(", "[", "{", r"\{", r"\frac", r"\dfrac", r"\tfrac", r"\delta", r"\nabla", r"\sum", r"\partial",
            r"\ell", *_FUNCTION_COMMANDS, *_GREEK_NAMES)

    def term(self) -> Node:
        factors, ops = [self.unary()], []
        while True:
            if self.peek().text in _PRODUCTS:
                ops.append(_PRODUCTS[self.next().text])
            elif self.starts_atom():
                ops.append("dot")
            else:
                return self.chain(factors, ops)
            factors.append(self.unary())

    def unary(self) -> Node:
        signs = []
        while self.at("-", "+"):
            signs.append(self.next())
        if self.at(r"\sum"):
            return self.signed(signs, self.summation())
        return self.signed(signs, self.postfix())

    def summation(self) -> Node:
        r"""``\sum_i M``, ``\sum_{i=1}^{m} M``: a sum over the samples of the product that follows."""
        token = self.next()
        if self.accept("_"):
            index = [t.text for t in self.group_tokens()]
            if not index or index[0] not in ("i", "n", "k", "s") or (len(index) > 1 and index[1] != "="):
                raise self.error(r"\sum over the samples: \sum_i or \sum_{i=1}^{N}", token)
        if self.accept("^"):
            self.group_tokens()
        self.in_sum += 1
        try:
            factors, ops = [self.postfix()], []
            while self.peek().text in _PRODUCTS or self.starts_atom():
                ops.append(_PRODUCTS.get(self.peek().text, "dot"))
                if self.peek().text in _PRODUCTS:
                    self.next()
                factors.append(self.postfix())
        finally:
            self.in_sum -= 1
        return self.batch_sum(self.chain(factors, ops), token)

    def postfix(self) -> Node:
        value = self.atom()
        while self.at("^"):
            token = self.next()
            sup = self.group_tokens()
            texts = [t.text for t in sup]
            if all(t in _TRANSPOSE for t in texts) and len(texts) == 1:
                value = node("T", (value,), None, value.start, self.last_end())
            else:
                value = self.power(value, self.sup_number(sup, token), token)
        return value

    def sup_number(self, sup: list[Token], token: Token) -> Node:
        texts = "".join(t.text for t in sup)
        if not re.fullmatch(r"-?\d+", texts):
            raise self.error(f"a transpose (^T, ^\\top) or a whole-number power, not ^{{{texts}}}", token)
        return node("number", (), sp.Integer(texts), token.start, self.last_end())

    def atom(self) -> Node:
        token = self.peek()
        if token.kind == "number":
            self.next()
            if token.text == "1" and self.at("_"):
                return self.ones_or_indicator(token)
            return self.number(token)
        if token.text in (r"\frac", r"\dfrac", r"\tfrac"):
            return self.fraction()
        if token.text in ("(", "[", "{", r"\{"):
            self.next()
            with self.nested():
                value = self.expr()
            self.expect({"(": ")", "[": "]", "{": "}", r"\{": r"\}"}[token.text])
            return value
        if token.text == r"\nabla":
            return self.nabla()
        if token.text in _FUNCTION_COMMANDS or (token.kind == "letters" and self.is_function_word()):
            return self.function()
        if token.text == r"\ell":
            raise self.error("the loss itself is not a matrix; a claim's right side is a formula", token)
        if token.text == r"\delta" or token.kind in ("letters", "word") or token.text in _GREEK_NAMES:
            if token.text == "e" and self.peek(1).text == "^" and self.names.quantity("e") is None:
                return self.exponential()
            leaf = self.symbol()
            return node("T", (leaf,), None, leaf.start, leaf.end) if self.pending_transpose else leaf
        self.fail("a name, a number, a fraction or '('", token)

    def ones_or_indicator(self, token: Token) -> Node:
        r"""``\mathbf{1}_N`` (a column of ones) or ``\mathbb{1}_{Z > 0}`` (an indicator)."""
        self.next()
        if self.at("{") and any(t.text in (">", "<", r"\geq", r"\ge", r"\leq", r"\le") for t in self.group_peek()):
            self.next()
            with self.nested():
                value = self.expr()
            self.expect("}", "'}'")
            if value.op != "cmp":
                raise self.error(r"a comparison in the indicator \mathbb{1}_{...}", token)
            return value
        sup = self.group_tokens()
        if len(sup) != 1:
            raise self.error(r"a size after \mathbf{1}_, as in \mathbf{1}_N", token)
        size = self.names.size(sup[0].text) if sup[0].kind == "letters" else None
        if size is None:
            raise self.error(r"a size after \mathbf{1}_, as in \mathbf{1}_N", sup[0])
        return self.ones([self.leaf("size", size, sup[0])], token, flat=False)

    def group_peek(self, k: int = 0) -> list[Token]:
        """The tokens of the ``{...}`` group ``k`` tokens ahead (its braces included), without consuming."""
        depth, tokens = 0, []
        while True:
            token = self.peek(k)
            if token.kind == "end":
                return tokens
            depth += {"{": 1, "}": -1}.get(token.text, 0)
            if depth == 0:
                return tokens
            tokens.append(token)
            k += 1

    def exponential(self) -> Node:
        """``e^{-z}``: exp of the superscript."""
        token = self.next()
        self.expect("^")
        if self.at("{"):
            self.next()
            with self.nested():
                arg = self.expr()
            self.expect("}", "'}'")
        else:
            arg = self.atom()
        return node("exp", (arg,), None, token.start, self.last_end())

    def fraction(self) -> Node:
        r"""``\frac{a}{b}``: a quotient, or a (local) gradient ``\frac{\partial L}{\partial Z^{[2]}}``."""
        token = self.next()
        first = self.peek(1)
        if first.text == r"\partial" or (first.kind == "letters" and first.text.startswith("d") and
                                          (len(first.text) > 1 or self.peek(2).text in LOSS_WORDS)):
            with self.nested():
                of_word, of_token = self.differential()
                wrt_word, _ = self.differential()
            leaf = self.derivative(of_word, wrt_word, of_token)
            return node(leaf.op, (), leaf.value, token.start, self.last_end())
        parts = []
        with self.nested():
            for _ in range(2):
                self.expect("{", "'{'")
                parts.append(self.expr())
                self.expect("}", "'}'")
        return self.chain(parts, ["/"])

    # -- functions
    def is_function_word(self) -> bool:
        """Whether the letters ahead name a function: ``relu``, ``softmax``, or ``g``/``f`` applied (``g'(``)."""
        token = self.peek()
        length = self.word_length(token.text)
        if length > 1 and token.text[:length].lower() in _FUNCTION_WORDS:
            return True
        return token.text in ("g", "f") and self.peek(1).text in ("'", "^", "(") and \
            self.names.quantity(token.text) is None

    def function(self) -> Node:
        token = self.peek()
        if token.kind == "command":
            self.next()
            function = _FUNCTION_COMMANDS[token.text]
        else:
            word = self.split_letters(self.word_length(token.text))
            function = _FUNCTION_WORDS.get(word.lower(), "layer" if word in ("g", "f") else None)
        order, power = 0, None
        while True:
            if self.accept("'"):
                order = 1
            elif self.at("^"):
                sup_token = self.next()
                sup = self.group_tokens()
                if any(t.text in _PRIME or t.text == "'" for t in sup):
                    order = 1  # \sigma^{\prime}, g^{[1]\prime}
                elif function != "layer":  # g^{[1]}: the layer comes from the argument
                    power = self.sup_number(sup, sup_token)
            else:
                break
        if function == "maximum":
            return self.maximum(token)
        if function is None or (order and function in ("exp", "log", "softmax", "sign")):
            raise self.error(f"unknown function {token.text!r}", token)
        if not self.at("(", "{", "["):
            self.fail(f"'(' after {token.text}")
        opening = self.next()
        with self.nested():
            arg = self.expr()
        self.expect({"(": ")", "{": "}", "[": "]"}[opening.text])
        if function in ACTIVATIONS or function == "layer":
            value = self.apply(function, order, arg, token)
        elif function == "softmax":
            value = self.softmax(arg, None, token)
        else:
            value = node(function, (arg,), None, token.start, self.last_end())
        return self.power(value, power, token) if power is not None else value

    def maximum(self, token: Token) -> Node:
        r"""``\max(0, Z)``: the elementwise maximum of two arguments."""
        self.expect("(", r"'(' after \max")
        with self.nested():
            first = self.expr()
            self.expect(",", "','")
            second = self.expr()
        self.expect(")", "')'")
        return node("maximum", (first, second), None, token.start, self.last_end())

    # -- names
    def symbol(self, allow_gradient: bool = True) -> Node:
        r"""A name with its layer, subscripts and transposes: ``W^{[1]}``, ``W^{(1)\top}``, ``w^3``, ``W_1``,
        ``Y_{pred}``, ``\delta^{[2]}``, ``dZ^{[1]}``, ``n_1``. Sets ``pending_transpose``."""
        token = self.peek()
        gradient = False
        if token.text == r"\delta":
            self.next()
            base, gradient = "Z", True
        elif token.kind == "word" or token.text in _GREEK_NAMES:
            base = self.next().text.lstrip("\\")
        elif token.kind == "letters":
            letters = token.text
            if allow_gradient and letters[0] == "d" and len(letters) > 1 and self.word_length(letters) == 1:
                rest = letters[1:]
                if rest[0] in "WbZAazXxY" or rest.startswith(self.names.network.input_name):
                    self.split_letters(1)
                    gradient = True
            base = self.split_letters(self.word_length(self.peek().text))
        else:
            self.fail("a name of the network", token)
        layer, sub, transposed = None, None, False
        while self.at("^", "_") and not transposed:
            if self.at("_"):
                marker = self.next()
                sub = "".join(t.text for t in self.group_tokens())
                if layer is None and (sub.isdigit() or sub == "L") and (base in _LAYERED or self.layered(base, sub)):
                    layer, sub = sub, None
                elif sub not in ("pred", "true", "hat") and not (base == "n" and sub.isdigit()):
                    raise self.error(f"a layer, pred or true after '_', not _{{{sub}}} (component indices are "
                                     "not supported: write the matrix form)", marker)
                continue
            read = self.layer_superscript(base, layer)
            if read is None:
                break
            layer, transposed = read
        self.pending_transpose = transposed
        word = base if sub is None else f"{base}_{sub}"
        if base == "n" and (layer or sub):
            size = self.names.size(f"n_{layer or sub}")
            if size is None:
                raise self.names.unknown(f"n_{layer or sub}", token.start + 1)
            return self.leaf("size", size, token)
        if layer is not None:
            name = self.names.layered(base, layer)
            if name is None:
                raise self.names.unknown(f"{'d' if gradient and base != 'Z' else ''}{base}{layer}", token.start + 1)
        else:
            if gradient and token.text == r"\delta":
                raise self.error(r"a layer after \delta, as in \delta^{[2]}", token)
            name = self.names.quantity(word)
            if name is None and not gradient:
                size = self.names.size(word)
                if size is not None:
                    return self.leaf("size", size, token)
                if word in LOSS_WORDS:
                    raise self.error("the loss itself is not a matrix; a claim's right side is a formula", token)
            if name is None:
                raise self.names.unknown(("d" if gradient and token.text != r"\delta" else "") + word,
                                         token.start + 1)
        if gradient:
            if name not in self.names.with_gradient:
                raise self.names.no_gradient(f"d{name}", token.start + 1)
            return node("grad", (), name, token.start, self.last_end())
        return node("name", (), name, token.start, self.last_end())

    def layer_superscript(self, base: str, layer):
        """Read a layer superscript after a name (``^{[2]}``, ``^{(2)}``, ``^2``, ``^L``, with a transpose
        ``^{[2]T}``/``^{T^{[2]}}`` or, inside a sum, a sample index ``^{[2](i)}``) and return (layer,
        transposed). Return None, reading nothing, where the superscript is a transpose or a power for
        ``postfix``: an unbracketed ``^2`` is a layer only where the network has one by that name (``w^2``)."""
        if layer is not None or self.peek(1).text in _TRANSPOSE:
            return None
        if self.peek(1).text == "{":
            texts = [t.text for t in self.group_peek(1)[1:] if t.text not in ("{", "}", "^")]
        else:
            texts = [self.peek(1).text[:1]]
        transposed = any(t in _TRANSPOSE for t in texts)
        rest = [t for t in texts if t not in _TRANSPOSE]
        sample = len(rest) > 3 and rest[-3] == "(" and rest[-1] == ")" and rest[-2].isalpha() and rest[-2] != "L"
        if sample:
            rest = rest[:-3]
        bracketed = len(rest) == 3 and rest[0] in "[(" and rest[2] in "])"
        index = rest[1 if bracketed else 0] if len(rest) in (1, 3) else None
        if index is None or not (index.isdigit() or index == "L"):
            return None
        if not bracketed and not self.layered(base, index):
            return None
        if sample and not self.in_sum:
            raise self.error("a sample index (i) outside a sum over the samples", self.peek(1))
        self.next()
        self.group_tokens()
        return index, transposed

    def layered(self, base: str, index: str) -> bool:
        """Whether the network has a quantity (or width) ``base`` at layer ``index``."""
        if base == "n":
            return self.names.size(f"n_{index}") is not None
        return self.names.layered(base, index) is not None
