"""Check backprop formulas people wrote ("claims") against the derivation, and say why a wrong one is wrong.

A claim is ``dL/d<name> = <formula>`` (a gradient) or ``d<of>/d<wrt> = <factor>`` (a local gradient in the
lecture's shorthand: the factor that multiplies the upstream gradient), written NumPy-like
(``dL/dW3 = a2.T @ (Y_pred - Y_true)``) or in LaTeX (``\\frac{\\partial L}{\\partial W^{[3]}} = a^{[2]T}
(Y_{pred} - Y_{true})``). Two small recursive-descent parsers build SymPy matrix expressions from the
network's own symbols; nothing is ever evaluated as Python. The verdict:

- ``shape``: the factors do not fit, or the result does not have the gradient's shape (symbolic sizes);
- ``value``: the shapes fit but the values differ on an explicit float64 instance (a counterexample entry);
- ``convention``: wrong here, right under another ReLU'(0) value or another squared-error scaling.
"""

from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass

import numpy as np
import sympy as sp
from sympy.matrices.expressions import MatrixExpr

from .derivation import Derivation, derive, gradient_symbol
from .errors import SymbackpropError
from .evaluate import Evaluator, Float64Backend
from .expressions import Elementwise, Softmax
from .printing import NumPyPrinter, latex, latex_name, shape_text
from .rules import ACTIVATIONS, activation_rule
from .spec import RELU_GRAD_AT_ZERO_VALUES, Spec
from .verify import evaluate_formulas, random_float_inputs, witness_sizes

RTOL = 1e-9
SEED = 0

# Squared-error losses differ only in a scale: name -> (scale of sum (Y_pred - Y_true)^2, description).
_SQUARED_ERROR_SCALINGS = {
    "half_sse": (lambda N, k: sp.Rational(1, 2), "1/2 sum of squared errors"),
    "sse": (lambda N, k: sp.Integer(1), "sum of squared errors without 1/2"),
    "mse": (lambda N, k: 1 / (N * k), "mean of squared errors over all entries"),
    "half_mse": (lambda N, k: 1 / (2 * N * k), "1/2 mean over all entries"),
    "batch_mean": (lambda N, k: 1 / N, "sum over outputs, mean over the batch"),
    "half_batch_mean": (lambda N, k: 1 / (2 * N), "1/2 sum over outputs, mean over the batch"),
}


class ClaimError(SymbackpropError):
    """A claim that cannot be parsed, or that names something the network does not have."""


class _ShapeMismatch(Exception):
    """Factors of a claim that do not fit together (a verdict, not a parse error)."""


@dataclass(frozen=True)
class Verdict:
    """One claim's outcome: ``correct``, or ``wrong`` with a reason, a detail and the right formula."""

    claim: str
    verdict: str  # "correct" or "wrong"
    reason: str = ""  # "", "shape", "value" or "convention"
    detail: str = ""
    expected: str = ""

    @property
    def ok(self) -> bool:
        return self.verdict == "correct"

    def to_dict(self) -> dict:
        return {"claim": self.claim, "verdict": self.verdict, "reason": self.reason,
                "expected": self.expected, "detail": self.detail}

    def text(self) -> str:
        """A few lines for the terminal."""
        if self.ok:
            return f"correct  {self.claim}"
        lines = [f"WRONG    {self.claim}", f"  {self.reason}: {self.detail}"]
        if self.expected:
            lines.append(f"  expected: {self.expected}")
        return "\n".join(lines)


@dataclass(frozen=True)
class Claim:
    """A parsed claim: ``of``/``wrt`` (``of`` is ``L`` for a gradient) and the right side in SymPy."""

    text: str
    of: str
    wrt: str
    expr: sp.Basic
    latex: bool
    uses_gradients: bool


# -- the shared builder: names and operations with their shape checks ---------------------------------------

def _shape(value) -> str:
    return shape_text(value.shape) if isinstance(value, MatrixExpr) else "scalar"


class _Builder:
    """Turns names and operations into SymPy expressions over ``network``'s symbols, checking shapes."""

    def __init__(self, network, local_gradients):
        self.network = network
        self.local_gradients = local_gradients  # (of, wrt) -> the factor, for d<of>/d<wrt> on the right side
        self.uses_gradients = False

    def quantity(self, name):
        try:
            return self.network.symbol(name)
        except KeyError:
            return None

    def gradient(self, name):
        if self.quantity(name) is None or name == "Y_true":
            return None
        self.uses_gradients = True
        return gradient_symbol(self.network, name)

    def size(self, name):
        if name == "N":
            return self.network.N
        match = re.fullmatch(r"n_?(\d+)", name)
        if match and int(match.group(1)) < len(self.network.widths):
            return self.network.widths[int(match.group(1))]
        return None

    def activation_key(self, name):
        """The rule key of the activation called ``name`` here (built-in, or custom in this spec), or None."""
        if name in ACTIVATIONS:
            return name
        return next((d.key for d in self.network.spec.activations if d.name == name), None)

    def activation(self, name, order, arg):
        key = self.activation_key(name)
        params = activation_rule(key).parameters()
        for l, layer in enumerate(self.network.spec.layers, start=1):
            if arg == self.network.symbol(f"Z{l}") and layer.activation == key:
                params = layer.params
        return Elementwise(key, self._matrix(arg, f"{name}(...)"), order, tuple(params.items()))

    def step(self, arg, at_zero):
        """``(M > 0)`` / ``(M >= 0)``: ReLU's derivative with the value at 0 written out."""
        return Elementwise("relu", self._matrix(arg, "a comparison"), 1, (("relu_grad_at_zero", at_zero),))

    def softmax(self, arg, axis=None):
        axis = (1 if self.network.batch_first else 0) if axis is None else axis
        return Softmax(self._matrix(arg, "softmax(...)"), axis)

    def ones(self, n, cols=None):
        return sp.OneMatrix(n, 1) if cols is None else sp.OneMatrix(n, cols)

    def batch_sum(self, M, axis):
        M = self._matrix(M, "sum(...)")
        return sp.OneMatrix(1, M.shape[0]) * M if axis == 0 else M * sp.OneMatrix(M.shape[1], 1)

    @staticmethod
    def _matrix(value, what):
        if not isinstance(value, MatrixExpr):
            raise _ShapeMismatch(f"{what} needs a matrix, got a scalar")
        return value

    def matmul(self, a, b, ta, tb):
        if not (isinstance(a, MatrixExpr) and isinstance(b, MatrixExpr)):
            return a * b
        if a.shape[1] != b.shape[0]:
            raise _ShapeMismatch(f"{ta} ({_shape(a)}) @ {tb} ({_shape(b)}): the inner sizes "
                                 f"{shape_text((a.shape[1],))} and {shape_text((b.shape[0],))} differ")
        return a * b

    def elementwise(self, a, b, ta, tb):
        if not (isinstance(a, MatrixExpr) and isinstance(b, MatrixExpr)):
            return a * b
        if a.shape != b.shape:
            raise _ShapeMismatch(f"{ta} ({_shape(a)}) * {tb} ({_shape(b)}): an elementwise product needs "
                                 "equal shapes")
        return sp.hadamard_product(a, b)

    def divide(self, a, b, ta, tb):
        if isinstance(b, MatrixExpr):
            raise _ShapeMismatch(f"{ta} / {tb}: only division by a scalar is supported")
        return a * (1 / b)

    def add(self, a, b, ta, tb, sign=1):
        matrices = [x for x in (a, b) if isinstance(x, MatrixExpr)]
        if len(matrices) == 2 and a.shape != b.shape:
            op = "+" if sign > 0 else "-"
            raise _ShapeMismatch(f"{ta} ({_shape(a)}) {op} {tb} ({_shape(b)}): a sum needs equal shapes")
        if len(matrices) == 1:  # a scalar broadcast over the matrix, as NumPy does (1 - sigmoid(Z))
            ones = sp.OneMatrix(*matrices[0].shape)
            a, b = (x if isinstance(x, MatrixExpr) else x * ones for x in (a, b))
        return a + b if sign > 0 else a - b

    @staticmethod
    def transpose(a):
        return a.T if isinstance(a, MatrixExpr) else a


# -- the NumPy-like syntax ---------------------------------------------------------------------------------

_NUMPY_TOKENS = re.compile(r"""
    (?P<ws>\s+)
  | (?P<frac>d(?P<of>[A-Za-z]\w*)\s*/\s*d(?P<wrt>[A-Za-z]\w*))
  | (?P<number>\d+\.\d*|\.\d+|\d+)
  | (?P<name>[A-Za-z_]\w*)
  | (?P<op>>=|[-+*/@().,'=>])
""", re.VERBOSE)


class _Parser:
    """What both syntaxes share: a token list with positions, error messages and the builder."""

    def __init__(self, text, builder):
        self.text, self.build = text, builder
        self.tokens = self.tokenize(text)
        self.i = 0

    def tokenize(self, text):
        """``(kind, text, column)`` tokens of the syntax's ``pattern`` (blanks dropped), then an end token."""
        tokens, pos = [], 0
        while pos < len(text):
            match = self.pattern.match(text, pos)
            if not match:
                raise ClaimError(f"cannot parse claim {text!r}: at column {pos + 1}: unexpected character "
                                 f"{text[pos]!r}")
            if match.lastgroup != "ws":
                tokens.append(self.token(match))
            pos = match.end()
        tokens.append(("end", "", len(text)))
        return tokens

    def token(self, match):
        return (match.lastgroup, match.group(0), match.start())

    def peek(self, offset=0):
        return self.tokens[min(self.i + offset, len(self.tokens) - 1)]

    def next(self):
        token = self.peek()
        self.i += 1
        return token

    def fail(self, expected, token=None):
        token = token or self.peek()
        found = "the end of the claim" if token[0] == "end" else repr(token[1])
        raise ClaimError(f"cannot parse claim {self.text!r}: at column {token[2] + 1}: expected {expected}, "
                         f"found {found}")

    def expect(self, text, expected=None):
        if self.peek()[1] != text:
            self.fail(expected or repr(text))
        return self.next()

    def span(self, start):
        end = self.tokens[self.i - 1]
        return self.text[start:end[2] + len(end[1])].strip()

    def name(self, token, name):
        """A network name on the right side: a quantity or a size."""
        value = self.build.quantity(name)
        if value is None:
            value = self.build.size(name)
        if value is None:
            self.fail(f"a name of the network ({', '.join(self._known())})", token)
        return value

    def _known(self):
        net = self.build.network
        return [*net.inputs, *(s.name for s in net.steps if s.kind != "loss"), "N"]

    def gradient_or_local(self, of, wrt, token):
        """``dL/dZ2`` (a gradient symbol) or ``dZ2/da1`` (a local gradient, as its factor)."""
        if of in ("L", "Loss"):
            value = self.build.gradient(wrt)
            if value is None:
                self.fail(f"a gradient dL/d<name> of a network quantity ({', '.join(self._known())})", token)
            return value
        factor = self.build.local_gradients(of, wrt)
        if factor is None:
            self.fail(f"a gradient dL/d<name> or a local gradient of the network (not d{of}/d{wrt})", token)
        return factor

    def parse_claim(self):
        """``lhs = rhs``: the names on the left and the right side's expression."""
        of, wrt, _ = self.lhs()
        self.expect("=", "'=' after the left side")
        try:
            value = self.expr()
        except _ShapeMismatch as error:  # the verdict is known; the rest of the claim is not read
            return of, wrt, _Mismatch(str(error))
        if self.peek()[0] != "end":
            self.fail("an operator or the end of the claim")
        return of, wrt, value


class _NumPyParser(_Parser):
    """``dL/dW1 = X.T @ (dL/dZ1)``: ``@ * / + -``, ``.T``, ``sum``, ``ones``, ``relu'(Z1)``, ``(Z1 > 0)``."""

    pattern = _NUMPY_TOKENS

    def token(self, match):
        """A ``d<of>/d<wrt>`` token also carries its two names."""
        if match.lastgroup != "frac":
            return super().token(match)
        return ("frac", match.group(0), match.start(), match.group("of"), match.group("wrt"))

    def lhs(self):
        token = self.peek()
        if token[0] != "frac":
            self.fail("a left side dL/d<name> or d<name>/d<name>")
        self.next()
        return token[3], token[4], token

    def expr(self):
        start = self.peek()[2]
        value = self.term()
        while self.peek()[1] in ("+", "-"):
            op = self.next()[1]
            left = self.text[start:self.peek()[2]].strip().rstrip("+-").strip()
            rstart = self.peek()[2]
            right = self.term()
            value = self.build.add(value, right, left, self.span(rstart), 1 if op == "+" else -1)
        return value

    def term(self):
        start = self.peek()[2]
        value = self.unary()
        while self.peek()[1] in ("@", "*", "/"):
            op = self.next()[1]
            left = self.text[start:self.tokens[self.i - 1][2]].strip()
            rstart = self.peek()[2]
            right = self.unary()
            method = {"@": self.build.matmul, "*": self.build.elementwise, "/": self.build.divide}[op]
            value = method(value, right, left, self.span(rstart))
        return value

    def unary(self):
        if self.peek()[1] == "-":
            self.next()
            return -self.unary()
        if self.peek()[1] == "+":
            self.next()
            return self.unary()
        return self.postfix()

    def postfix(self):
        value = self.atom()
        while self.peek()[1] == ".":
            self.next()
            token = self.next()
            if token[1] == "T":
                value = self.build.transpose(value)
            elif token[1] == "sum":
                self.expect("(", "'(' after .sum")
                axis = self.sum_options(first=True)
                value = self.build.batch_sum(value, axis)
            else:
                self.fail("T or sum after '.'", token)
        return value

    def sum_options(self, first):
        """``axis=0[, keepdims=True])``: the axis of a sum, up to its closing parenthesis."""
        options = {}
        while self.peek()[1] != ")":
            if options or not first:
                self.expect(",", "',' or ')'")
            key = self.next()
            if key[1] not in ("axis", "keepdims") or key[1] in options:
                self.fail("axis= or keepdims=", key)
            self.expect("=", "'='")
            options[key[1]] = self.next()
        self.next()
        if "axis" not in options or options["axis"][1] not in ("0", "1"):
            self.fail("axis=0 or axis=1 in the sum")
        return int(options["axis"][1])

    def atom(self):
        token = self.next()
        kind, text = token[0], token[1]
        if kind == "number":
            return sp.Rational(text)
        if kind == "frac":
            return self.gradient_or_local(token[3], token[4], token)
        if text == "(":
            value = self.expr()
            if self.peek()[1] in (">", ">="):
                strict = self.next()[1] == ">"
                self.expect("0", "0 (only comparisons with zero are ReLU derivatives)")
                value = self.build.step(value, 0 if strict else 1)
            self.expect(")", "')'")
            return value
        if kind == "name":
            if text == "np" and self.peek()[1] == ".":
                self.next()
                token = self.next()
                text = token[1]
            if self.build.activation_key(text) is not None or text in ("softmax", "sum", "ones"):
                return self.call(text, token)
            return self.name(token, text)
        self.fail("a name, a number, a gradient dL/d<name> or '('", token)

    def call(self, name, token):
        order = 0
        if self.peek()[1] == "'":
            self.next()
            order = 1
        self.expect("(", f"'(' after {name}")
        if name == "ones":
            n = self.expr()
            cols = None
            if self.peek()[1] == ",":
                self.next()
                cols = self.expr()
            self.expect(")", "')'")
            return self.build.ones(n, cols)
        arg = self.expr()
        if name == "sum":
            return self.build.batch_sum(arg, self.sum_options(first=False))
        if name == "softmax":
            axis = None
            if self.peek()[1] == ",":
                self.next()
                self.expect("axis", "axis=")
                self.expect("=", "'='")
                axis = int(self.next()[1])
            self.expect(")", "')'")
            return self.build.softmax(arg, axis)
        self.expect(")", "')'")
        return self.build.activation(name, order, arg)


# -- the LaTeX syntax --------------------------------------------------------------------------------------

_LATEX_TOKENS = re.compile(r"""
    (?P<ws>\s+|\\[,;:!\ ]|\\(?:left|right|displaystyle|big|Big|bigg|Bigg|quad|qquad)(?![A-Za-z])|&)
  | (?P<command>\\[A-Za-z]+)
  | (?P<number>\d+\.\d*|\.\d+|\d)
  | (?P<letters>[A-Za-z]+)
  | (?P<op>\\geq?|>=|[-+*/(){}\[\]^_'=>,.|])
""", re.VERBOSE)

_LATEX_FUNCTIONS = {
    **{name: name for name in ACTIVATIONS},
    **{re.sub(r"\\operatorname\{(\w+)\}|\\(\w+)", r"\1\2", rule.latex).lower(): name
       for name, rule in ACTIVATIONS.items()},
    "leakyrelu": "leaky_relu", "sigma": "sigmoid", "softmax": "softmax",
}
_ATOM_STARTS = ("(", "[", "{", r"\frac", r"\dfrac", r"\tfrac", r"\delta", r"\mathbf", r"\mathbb",
                r"\operatorname", r"\mathrm", r"\text", r"\sigma", r"\tanh")
_PRODUCTS = {r"\cdot": "@", r"\times": "@", r"\odot": "*", r"\circ": "*", "*": "*"}


class _LatexParser(_Parser):
    """``\\frac{\\partial L}{\\partial W^{[1]}} = X^{T} \\delta^{[1]}``: juxtaposition and ``\\cdot`` are
    matrix products, ``\\odot`` is elementwise; ``W^{[2]T}``, ``W^{T^{[2]}}``, ``W^{[2]\\top}`` all mean W2
    transposed."""

    pattern = _LATEX_TOKENS

    def take_letters(self, count):
        """Consume the first ``count`` letters of a letters token (LaTeX reads ``XW`` as X times W)."""
        kind, text, pos = self.peek()
        if count >= len(text):
            return self.next()[1]
        self.tokens[self.i] = (kind, text[count:], pos + count)
        return text[:count]

    def group_tokens(self):
        """The tokens of one ``{...}`` group or of one symbol after ``^`` / ``_`` (``X^T``, ``n_1``)."""
        if self.peek()[1] == "{":
            start, depth = self.next(), 1
            tokens = []
            while depth:
                token = self.next()
                if token[0] == "end":
                    self.fail("'}'", token)
                depth += {"{": 1, "}": -1}.get(token[1], 0)
                if depth:
                    tokens.append(token)
            return tokens or self.fail("a non-empty group", start)
        if self.peek()[0] == "letters":
            token = self.peek()
            return [("letters", self.take_letters(1), token[2])]
        return [self.next()]

    def superscript(self):
        """``^{[2]T}``, ``^{T^{[2]}}``, ``^{T[2]}``, ``^\\top``, ``^T``: (layer or None, transposed)."""
        self.expect("^")
        tokens = self.group_tokens()
        texts = [t[1] for t in tokens if t[1] not in ("{", "}", "^")]
        transposed = any(t in ("T", r"\top", r"\intercal") for t in texts)
        rest = [t for t in texts if t not in ("T", r"\top", r"\intercal")]
        if not rest:
            return None, transposed
        if len(rest) == 3 and rest[0] == "[" and rest[1].isdigit() and rest[2] == "]":
            return rest[1], transposed
        self.fail("a layer index [l] or T in the superscript", tokens[0])

    def lhs(self):
        token = self.peek()
        if token[1] not in (r"\frac", r"\dfrac", r"\tfrac"):
            self.fail(r"a left side \frac{\partial L}{\partial <name>}", token)
        self.next()
        of = self.differential()
        wrt = self.differential()
        return of, wrt, token

    def differential(self):
        """One side of ``\\frac{dL}{dW^{[1]}}``: the name after ``d`` or ``\\partial``."""
        self.expect("{", "'{'")
        if self.peek()[1] == r"\partial":
            self.next()
        elif self.peek()[0] == "letters" and self.peek()[1].startswith("d"):
            self.take_letters(1)
        else:
            self.fail(r"d or \partial")
        token = self.peek()
        if token[0] == "letters" and token[1] in ("L", "Loss"):
            self.next()
            name = "L"
        else:
            name = self.symbol_name(token)
        self.expect("}", "'}'")
        return name

    def symbol_name(self, token):
        """Read a symbol (``W^{[1]}``, ``Y_{pred}``, ``\\delta^{[2]}``) and return its network name."""
        if token[1] == r"\delta":
            self.next()
            base = "delta"
        elif token[0] == "letters":
            base = self.take_letters(self.word_length(token[1]))
        else:
            self.fail("a name of the network", token)
        layer = sub = None
        transposed = False
        while self.peek()[1] in ("^", "_"):
            if self.peek()[1] == "_":
                self.next()
                sub = "".join(t[1] for t in self.group_tokens())
            else:
                after = [self.peek(k)[1] for k in (1, 2, 3)]
                transpose = ("T", r"\top")
                if after[0] in transpose or (after[0] == "{" and after[1] in transpose and after[2] == "}"):
                    break  # a plain transpose: left for the postfix loop
                layer, transposed = self.superscript()
                if transposed:
                    break
        self.pending_transpose = transposed
        name = self.resolve(base, layer, sub)
        if name is None:
            self.fail("a name of the network (W^{[l]}, b^{[l]}, Z^{[l]}, a^{[l]}, X, Y_{pred}, Y_{true}, N)",
                      token)
        return name

    def word_length(self, letters):
        words = [self.build.network.input_name, "Loss", *_LATEX_FUNCTIONS]
        for word in sorted(words, key=len, reverse=True):
            if letters.startswith(word) or (word in _LATEX_FUNCTIONS and letters.lower().startswith(word)
                                            and len(word) > 1):
                return len(word)
        return 1

    def resolve(self, base, layer, sub):
        net = self.build.network
        if base == "delta" and layer:
            return f"delta{layer}"
        if layer is not None:
            base = {"z": "Z", "A": "a", "w": "W", "B": "b"}.get(base, base)
            return f"{base}{layer}" if base in ("W", "b", "Z", "a") else None
        if base in ("Y", "y") and sub in ("pred", "true"):
            return f"Y_{sub}"
        if base == "n" and sub and sub.isdigit():
            return f"n_{sub}"
        if sub is None and (base == net.input_name or base == "N"):
            return base
        return None

    def value_of(self, name, token):
        if name.startswith("delta"):
            return self.build.gradient(f"Z{name[5:]}")
        return self.name(token, name)

    def expr(self):
        start = self.peek()[2]
        value = self.term()
        while self.peek()[1] in ("+", "-"):
            op = self.next()[1]
            left = self.text[start:self.tokens[self.i - 1][2]].strip()
            rstart = self.peek()[2]
            right = self.term()
            value = self.build.add(value, right, left, self.span(rstart), 1 if op == "+" else -1)
        return value

    def starts_atom(self):
        kind, text = self.peek()[:2]
        return kind in ("letters", "number") or text in _ATOM_STARTS

    def term(self):
        start = self.peek()[2]
        value = self.unary()
        while True:
            text = self.peek()[1]
            if text in _PRODUCTS:
                op = _PRODUCTS[self.next()[1]]
            elif text == "/":
                op = "/"
                self.next()
            elif self.starts_atom():
                op = "@"
            else:
                return value
            left = self.text[start:self.peek()[2]].strip().rstrip("\\odtcimeasrp*/").strip()
            rstart = self.peek()[2]
            right = self.unary()
            method = {"@": self.build.matmul, "*": self.build.elementwise, "/": self.build.divide}[op]
            value = method(value, right, left, self.span(rstart))

    def unary(self):
        if self.peek()[1] == "-":
            self.next()
            return -self.unary()
        return self.postfix()

    def postfix(self):
        value = self.atom()
        while self.peek()[1] == "^":
            layer, transposed = self.superscript()
            if layer is not None or not transposed:
                self.fail(r"T or \top in a superscript here")
            value = self.build.transpose(value)
        return value

    def function_word(self, token):
        """An activation or softmax by command or word: ``\\operatorname{ReLU}``, ``\\sigma``, ``relu``."""
        text = token[1]
        if text in (r"\operatorname", r"\mathrm", r"\text"):
            self.next()
            word = "".join(t[1] for t in self.group_tokens())
        elif text in (r"\sigma", r"\tanh"):
            self.next()
            word = text[1:]
        else:
            word = self.take_letters(self.word_length(text))
        name = _LATEX_FUNCTIONS.get(word.lower()) or (word if self.build.activation_key(word) else None)
        if name is None:
            self.fail("an activation (relu, sigmoid, tanh, ...) or softmax", token)
        return name

    def atom(self):
        token = self.peek()
        kind, text = token[:2]
        if kind == "number":
            self.next()
            return sp.Rational(text)
        if text in (r"\frac", r"\dfrac", r"\tfrac"):
            return self.fraction()
        if text in ("(", "[", "{"):
            self.next()
            value = self.expr()
            if self.peek()[1] in (">", ">=", r"\ge", r"\geq"):
                strict = self.next()[1] == ">"
                self.expect("0", "0 (only comparisons with zero are ReLU derivatives)")
                value = self.build.step(value, 0 if strict else 1)
            self.expect({"(": ")", "[": "]", "{": "}"}[text])
            return value
        if text in (r"\mathbf", r"\mathbb"):
            self.next()
            if "".join(t[1] for t in self.group_tokens()) != "1":
                self.fail(r"\mathbf{1}", token)
            n = None
            if self.peek()[1] == "_":
                self.next()
                n = self.name(token, "".join(t[1] for t in self.group_tokens()))
            if n is None:
                self.fail(r"a size after \mathbf{1}, as in \mathbf{1}_{N}")
            return self.build.ones(n)
        if text in (r"\operatorname", r"\mathrm", r"\text", r"\sigma", r"\tanh") or (
                kind == "letters" and self.word_length(text) > 1 and text[:self.word_length(text)].lower()
                in _LATEX_FUNCTIONS):
            return self.function(token)
        if text == r"\delta" or kind == "letters":
            self.pending_transpose = False
            name = self.symbol_name(token)
            value = self.value_of(name, token)
            return self.build.transpose(value) if self.pending_transpose else value
        self.fail("a name, a number, a fraction or '('", token)

    def function(self, token):
        name = self.function_word(token)
        order = 0
        if self.peek()[1] == "'":
            self.next()
            order = 1
        self.expect("(", f"'(' after {name}")
        arg = self.expr()
        self.expect(")", "')'")
        return self.build.softmax(arg) if name == "softmax" else self.build.activation(name, order, arg)

    def fraction(self):
        """``\\frac{a}{b}``: a scalar, or a (local) gradient ``\\frac{\\partial L}{\\partial Z^{[2]}}``."""
        token = self.next()
        numerator = self.peek(1)
        if numerator[1] == r"\partial" or (numerator[0] == "letters" and numerator[1].startswith("d")
                                           and len(numerator[1]) > 1):
            self.i -= 1
            _, (of, wrt) = self.next(), (self.differential(), self.differential())
            return self.gradient_or_local(of, wrt, token)
        self.expect("{")
        numerator = self.expr()
        self.expect("}")
        self.expect("{")
        denominator = self.expr()
        self.expect("}")
        return self.build.divide(numerator, denominator, "numerator", "denominator")


# -- printing the expected formula -------------------------------------------------------------------------

class ClaimPrinter(NumPyPrinter):
    """The NumPy-like claim syntax: gradients as ``dL/dZ2``, ``relu'(Z1)``, ``ones(N).T`` for a lone 1ᵀ."""

    def __init__(self, gradients):
        super().__init__()
        self.gradients = gradients

    def _print_MatrixSymbol(self, expr):
        return f"dL/d{self.gradients[expr.name]}" if expr.name in self.gradients else expr.name

    def _print_OneMatrix(self, expr):
        rows, cols = expr.shape
        return f"ones({self._print(rows)})" if cols == 1 else f"ones({self._print(cols)}).T"

    def _print_Elementwise(self, expr):
        if expr.activation == "identity" and expr.order == 0:
            return self._print(expr.arg)
        return f"{activation_rule(expr.activation).name}{chr(39) * expr.order}({self._print(expr.arg)})"


def _latex_side(name: str) -> str:
    return "L" if name == "L" else latex_name(name)


# -- the checker -------------------------------------------------------------------------------------------

class Checker:
    """Checks claims about one spec's network; derives once and keeps the explicit instances it checks on."""

    def __init__(self, spec: Spec | dict | str | None = None):
        self.derivation = derive(spec)
        self.network = self.derivation.network
        self.spec = self.network.spec
        _, widths = witness_sizes(self.network.depth)
        # One more than the widest layer: the batch differs from every width, and 2/N is not 1.
        self.N = max(widths) + 1
        self.sizes = self.network.sizes(self.N, widths)
        self.gradient_names = {step.symbol.name: step.name for step in self.derivation.backward}
        self.inputs = random_float_inputs(self.network, self.sizes, np.random.default_rng(SEED))
        self.kink_inputs = self._kinked(self.inputs) if self._relu_layers() else None
        self._envs = {}

    # -- parsing
    def parse(self, text: str, latex: bool | None = None) -> Claim:
        latex = "\\" in text if latex is None else latex
        builder = _Builder(self.network, self._local_factor)
        parser = (_LatexParser if latex else _NumPyParser)(text, builder)
        of, wrt, value = parser.parse_claim()
        of, wrt = self._canonical(of, parser), self._canonical(wrt, parser)
        if of == "L" and wrt not in self.gradient_names.values():
            names = ", ".join(self.gradient_names.values())
            parser.fail(f"dL/d<name> of a quantity with a gradient ({names})", parser.tokens[0])
        return Claim(text, of, wrt, value, latex, builder.uses_gradients)

    def _local_factor(self, of, wrt):
        lg = self._local(self.derivation, "Z" + of[5:] if of.startswith("delta") else of, wrt)
        return None if lg is None else lg.expr

    def _canonical(self, name, parser):
        if name in ("L", "Loss"):
            return "L"
        if name.startswith("delta"):
            name = f"Z{name[5:]}"
        if name in self._names():
            return name
        parser.fail(f"a name of the network ({', '.join(self._names())}) on the left side", parser.tokens[0])

    def _names(self):
        return [*self.network.inputs, *(s.name for s in self.network.steps if s.kind != "loss")]

    # -- instances
    def _relu_layers(self):
        return [l for l, layer in enumerate(self.spec.layers, start=1) if layer.activation == "relu"]

    def _kinked(self, inputs):
        """``inputs`` with ReLU layers' biases set so that every other unit's pre-activation is exactly 0
        on the first sample (x + (-x) == 0 in float64), where ReLU conventions differ."""
        inputs = {name: value.copy() for name, value in inputs.items()}
        net = self.network
        for l in self._relu_layers():
            evaluator = Evaluator(Float64Backend(), dict(inputs), self.sizes)
            evaluator.forward(net)
            A, W = net.symbol(net.layer_input(l)), net.inputs[f"W{l}"]
            product = evaluator(A * W if net.batch_first else W * A)
            b = inputs[f"b{l}"]
            for j in range(0, product.shape[1] if net.batch_first else product.shape[0], 2):
                if net.batch_first:
                    b[0, j] = -product[0, j]
                else:
                    b[j, 0] = -product[j, 0]
        return inputs

    def env(self, derivation: Derivation, kinked: bool) -> dict:
        key = (id(derivation), kinked)
        if key not in self._envs:
            inputs = self.kink_inputs if kinked else self.inputs
            env = evaluate_formulas(derivation, Float64Backend(), inputs, self.sizes)
            self._envs[key] = (derivation, env)  # the derivation is kept so that its id stays unique
        return self._envs[key][1]

    def value(self, expr, env):
        if not isinstance(expr, MatrixExpr):
            return float(sp.sympify(expr).subs(self.sizes))
        return np.asarray(_ClaimEvaluator(Float64Backend(), dict(env), self.sizes)(expr), dtype=float)

    # -- verdicts
    def check(self, text: str, latex: bool | None = None) -> Verdict:
        claim = self.parse(text, latex)
        truth, want_shape, elementwise = self._truth(claim, self.derivation)
        if truth is None:
            return self._no_dependence(claim)
        expected = self._expected(claim)
        wrong = lambda reason, detail: Verdict(text, "wrong", reason, detail, expected)
        problem = self._shape_problem(claim, want_shape, elementwise)
        if problem:
            return wrong("shape", problem)
        difference = self._difference(claim, self.derivation, kinked=False)
        if difference:
            convention = self._loss_convention(claim)
            return wrong("convention", convention) if convention else wrong("value", difference)
        if self.kink_inputs is not None:
            difference = self._difference(claim, self.derivation, kinked=True)
            if difference:
                convention = self._relu_convention(claim)
                return wrong("convention", convention) if convention else wrong("value", difference)
        return Verdict(text, "correct")

    def _local(self, derivation, of, wrt):
        """The local-gradient entry for ``d<of>/d<wrt>``; an identity layer's output stands for its Z."""
        net = derivation.network
        identity_outputs = [f"Z{l}" for l, layer in enumerate(net.spec.layers, start=1)
                            if net.activation_name(l) == of and layer.activation == "identity"]
        for candidate in (of, *identity_outputs):
            for lg in derivation.local_gradients:
                if (lg.of, lg.wrt) == (candidate, wrt):
                    return lg
        return None

    def _truth(self, claim, derivation):
        """(the right value's expression, its shape, whether a scalar factor broadcasts) for ``claim``."""
        if claim.of == "L":
            step = derivation.step(claim.wrt)
            return step.symbol, step.symbol.shape, False
        lg = self._local(derivation, claim.of, claim.wrt)
        if lg is None:
            return None, None, False
        return lg.expr, lg.expr.shape, lg.side == "elementwise"

    def _no_dependence(self, claim):
        suggestion = next((lg for lg in self.derivation.local_gradients if lg.wrt == claim.wrt), None)
        detail = f"{claim.of} does not depend directly on {claim.wrt}"
        expected = ""
        if suggestion is not None:
            expected = self._format(suggestion.of, suggestion.wrt, suggestion.expr, claim.latex)
            detail += f"; the local gradient of {claim.wrt} is d{suggestion.of}/d{claim.wrt}"
        return Verdict(claim.text, "wrong", "value", detail, expected)

    def _shape_problem(self, claim, want, elementwise):
        value = claim.expr
        if isinstance(value, _Mismatch):
            return value.message
        what = f"dL/d{claim.wrt}" if claim.of == "L" else f"d{claim.of}/d{claim.wrt}"
        if not isinstance(value, MatrixExpr):
            return "" if elementwise else f"the claim is a scalar; {what} must be {shape_text(want)}"
        if tuple(value.shape) != tuple(want):
            return f"the claim has shape {shape_text(value.shape)}; {what} must be {shape_text(want)}"
        return ""

    def _compare(self, claim_value, truth_value):
        """'' when equal; else a counterexample entry."""
        claim_value = np.broadcast_to(claim_value, np.shape(truth_value))
        scale = max(float(np.max(np.abs(truth_value), initial=0)),
                    float(np.max(np.abs(claim_value), initial=0)), 1.0)
        error = np.abs(claim_value - truth_value)
        if not np.all(np.isfinite(claim_value)) or np.max(error, initial=0) > RTOL * scale:
            worst = np.nanargmax(np.where(np.isfinite(error), error, np.inf))
            i, j = np.unravel_index(int(worst), error.shape)
            return (i, j), float(claim_value[i, j]), float(truth_value[i, j])
        return None

    def _difference(self, claim, derivation, kinked):
        env = self.env(derivation, kinked)
        truth, _, _ = self._truth(claim, derivation)
        found = self._compare(self.value(claim.expr, env), self.value(truth, env))
        if found is None:
            return ""
        (i, j), got, want = found
        sizes = ", ".join(f"{k}={v}" for k, v in self._size_names().items())
        where = "at an instance with some ReLU inputs exactly 0" if kinked else "at a random instance"
        return (f"the shapes fit but the values differ {where} ({sizes}, seed {SEED}): entry ({i}, {j}) "
                f"is {got:.6g}, the gradient is {want:.6g}")

    def _size_names(self):
        return {str(symbol): value for symbol, value in self.sizes.items()}

    def _loss_convention(self, claim):
        """Right for another scaling of the squared error? (Gradients scale with the loss.)"""
        if claim.of != "L" or self.spec.loss.kind not in ("half_sse", "mse"):
            return ""
        N, k = self.N, self.sizes[self.network.widths[-1]]
        own = _SQUARED_ERROR_SCALINGS[self.spec.loss.kind][0](N, k)
        env = self.env(self.derivation, False)
        for name, (scale, description) in _SQUARED_ERROR_SCALINGS.items():
            if name == self.spec.loss.kind:
                continue
            factor = float(scale(N, k) / own)
            scaled = {key: value * factor if key in self.gradient_names else value
                      for key, value in env.items()}
            truth = self.value(self._truth(claim, self.derivation)[0], scaled)
            if self._compare(self.value(claim.expr, scaled), truth) is None:
                return (f"correct for the loss {description}, but this spec's loss is {self.spec.loss.kind} "
                        f"({_SQUARED_ERROR_SCALINGS[self.spec.loss.kind][1]})")
        return ""

    def _relu_convention(self, claim):
        """Right with another ReLU'(0) value (checked where ReLU inputs are exactly 0)?"""
        own = sorted({self.spec.layers[l - 1].relu_grad_at_zero for l in self._relu_layers()})
        for value in RELU_GRAD_AT_ZERO_VALUES:
            if [value] == own:
                continue
            layers = tuple(dataclasses.replace(layer, relu_grad_at_zero=value) if layer.activation == "relu"
                           else layer for layer in self.spec.layers)
            variant = derive(dataclasses.replace(self.spec, layers=layers))
            if not self._difference(claim, variant, kinked=True):
                owns = ", ".join(f"{v:g}" for v in own)
                return (f"correct if ReLU'(0) = {value:g}, but this spec takes ReLU'(0) = {owns} "
                        "(relu_grad_at_zero)")
        return ""

    def _expected(self, claim):
        if claim.of != "L":
            lg = self._local(self.derivation, claim.of, claim.wrt)
            return self._format(claim.of, claim.wrt, lg.expr, claim.latex)
        step = self.derivation.step(claim.wrt)
        expr = step.expr if claim.uses_gradients else self.derivation.gradients[claim.wrt]
        return self._format("L", claim.wrt, expr, claim.latex)

    def _format(self, of, wrt, expr, as_latex):
        if as_latex:
            return rf"\frac{{\partial {_latex_side(of)}}}{{\partial {_latex_side(wrt)}}} = {latex(expr)}"
        return f"d{of}/d{wrt} = {ClaimPrinter(self.gradient_names).doprint(expr)}"


class _Mismatch:
    """A claim whose factors do not fit: parsing succeeded, the shape verdict is already known."""

    def __init__(self, message):
        self.message = message


class _ClaimEvaluator(Evaluator):
    """The evaluator, plus the nodes a written claim can simplify to (``M - M`` is a zero matrix)."""

    def _ZeroMatrix(self, expr):
        return np.zeros(tuple(int(sp.sympify(d).subs(self.sizes)) for d in expr.shape))


def check(claim: str, spec: Spec | dict | str | None = None, *, latex: bool | None = None) -> Verdict:
    """Check one claim about ``spec``'s network (default: the seed network); LaTeX when it has a backslash."""
    return Checker(spec).check(claim, latex)


def claims_from_text(text: str) -> list[str]:
    """NumPy-like claims, one per line; blank lines and ``#`` comments are skipped."""
    lines = (line.split("#", 1)[0].strip() for line in text.splitlines())
    return [line for line in lines if line]


_MATH_BLOCK = re.compile(r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|\$(.+?)\$", re.DOTALL)
_EQUATION_BREAK = re.compile(r"\\q?quad(?![A-Za-z])|\\\\|(?<!\\),(?=\s*\\frac)")


def latex_claims_from_text(text: str) -> list[str]:
    """LaTeX claims: each ``$$...$$``, ``\\[...\\]`` or ``$...$`` block holding ``=``, or else one per line.

    Lines starting with ``%`` are comments. A block may hold several equations separated by ``\\quad``,
    ``\\qquad`` or ``\\\\`` (as lecture slides write them side by side); each is one claim.
    """
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("%"))
    blocks = [next(g for g in match.groups() if g is not None) for match in _MATH_BLOCK.finditer(text)]
    if not blocks:
        blocks = text.splitlines()
    claims = []
    for block in blocks:
        for part in _EQUATION_BREAK.split(block):
            part = " ".join(part.replace("&", " ").split()).rstrip(".,; ")
            if "=" in part:
                claims.append(part)
    return claims
