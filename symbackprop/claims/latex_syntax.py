r"""The LaTeX notation: ``\frac{\partial L}{\partial W^{[1]}} = X^\top \delta^{[1]}``, ``\nabla_{W^{(2)}} J``,
``\delta^l = ((w^{l+1})^T \delta^{l+1}) \odot \sigma'(z^l)``."""

from __future__ import annotations

import re

import sympy as sp

from ..rules import ACTIVATIONS, activation_rule
from .names import LAYER_CONSTANTS, LOSS_WORDS
from .operators import IMAGE_OPERATORS
from .syntax import FORWARD, Parser, Token
from .tree import Node, node

_LATEX_TOKENS = re.compile(r"""
    (?P<ws>\s+|\\[,;:!\ ]|~|&|\\(?:left|right|displaystyle|textstyle|big|Big|bigg|Bigg|bigl|bigr|Bigl|Bigr
                                  |quad|qquad|limits|nolimits|nonumber|notag)(?![A-Za-z])
           |\\(?:label|tag\*?)\{[^{}]*\}|%[^\n]*)  # equation labels, tags and comments: no part of the math
  | (?P<command>\\[A-Za-z]+|\\[{}|_])
  | (?P<word>(?:im2col|col2im)(?![A-Za-z]))  # the image operators, whose names hold a digit
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
                      r"\max": "maximum", r"\min": "minimum", r"\phi": "layer", r"\varphi": "layer"}
_FUNCTION_WORDS = {
    **{name: name for name in ACTIVATIONS}, "leakyrelu": "leaky_relu", "lrelu": "leaky_relu", "id": "identity",
    "sigmoid": "sigmoid", "sigma": "sigmoid", "softmax": "softmax", "exp": "exp", "log": "log", "ln": "log",
    "max": "maximum", "min": "minimum", "sign": "sign", "sgn": "sign", "sqrt": "sqrt", "diag": "diag",
    "log_softmax": "log_softmax", "logsoftmax": "log_softmax",
    # The batch matrix forms of Wesselink et al.: rows_sum(X) = X 1 (a column), columns_sum(X) = 1^T X (a row).
    **{name: "rows_sum" for name in ("rows_sum", "row_sum", "rowsum", "rowsums")},
    **{name: "columns_sum" for name in ("columns_sum", "column_sum", "colsum", "colsums", "cols_sum")},
    "rows_mean": "rows_mean", "columns_mean": "columns_mean", "row_repeat": "row_repeat",
    "column_repeat": "column_repeat",
    # The image operators (their windows come from the derivation: operators.py) and max pooling's row maximum
    # and mask (the documents print the mask as \mathbf{1}_{\operatorname{argmax}}(P), read in ones_or_indicator).
    **{name: name for name in IMAGE_OPERATORS}, "rowmax": "rowmax", "argmax_mask": "maxmask",
    "first_max_mask": "maxmask",
}
_SUMS = {"rows_sum": (1, False), "columns_sum": (0, False), "rows_mean": (1, True), "columns_mean": (0, True)}
_PRODUCTS = {r"\cdot": "dot", r"\times": "dot", r"\odot": "⊙", r"\circ": "⊙", "*": "⊙", r"\ast": "⊙", "/": "/",
             r"\oslash": "⊘", r"\div": "/"}
_ENTRYWISE = {"⊙": "*", "⊘": "/"}  # the entrywise products, which bind less tightly than matrix products
_TRANSPOSE = ("T", r"\top", r"\intercal")
_LAYERED = ("W", "w", "b", "B", "Z", "z", "A", "a", "h", "H", "n")  # letters whose sub/superscript is a layer
_GREEK_NAMES = {rf"\{name}" for name in ("mu", "nu", "gamma", "beta", "eta", "tau", "rho", "kappa", "omega", "alpha",
                                          "Sigma", "epsilon", "varepsilon", "lambda")}
_PRIME = (r"\prime",)


class LatexParser(Parser):
    r"""``\frac{\partial L}{\partial W^{[1]}} = X^\top \delta^{[1]}``: juxtaposition, ``\cdot`` and ``\times``
    are matrix products (scaling where one side is a scalar), ``\odot``/``\circ``/``*`` elementwise; layers as
    ``W^{[l]}``, ``W^{(l)}``, ``W^l``, ``W_l``; the transpose as ``^T``, ``^\top``, ``^{[l]T}``, ``^{T^{[l]}}``."""

    pattern = _LATEX_TOKENS
    latex = True
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
        return self.unwrap(self.custom_names(tokens))

    def custom_names(self, tokens):
        r"""A custom activation written as the documents print it (the spec's ``latex``, such as
        ``\operatorname{Swish}_{\beta}``) read as the word of its name (``swish``)."""
        for definition in self.names.network.spec.activations:
            printed = [token.text for token in super().tokenize(activation_rule(definition.key).latex)[:-1]]
            i = 0
            while i + len(printed) <= len(tokens):
                if [token.text for token in tokens[i:i + len(printed)]] == printed:
                    tokens[i:i + len(printed)] = [Token("word", definition.name, tokens[i].start)]
                i += 1
        return tokens

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
            joined = self.joined_name(tokens, i) if token.text in _WRAPPERS else None
            if joined is not None:
                out.append(joined[0])
                i = joined[1]
                continue
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

    @staticmethod
    def joined_name(tokens, i):
        r"""``\operatorname{rows\_sum}`` read as the one word ``rows_sum``: (the word, the index after the group),
        or None where the group is not letters joined by ``\_``."""
        if i + 1 >= len(tokens) or tokens[i + 1].text != "{":
            return None
        k, parts = i + 2, []
        while k < len(tokens) and (tokens[k].kind == "letters" or tokens[k].text == "\\_"):
            parts.append("_" if tokens[k].text == "\\_" else tokens[k].text)
            k += 1
        if k >= len(tokens) or tokens[k].text != "}" or "_" not in parts:
            return None
        return Token("word", "".join(parts), tokens[i].start), k + 1

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
        words = [self.names.network.input_name, "Loss", "loss", "pred", "true", *_FUNCTION_WORDS,
                 *(custom.name for custom in self.names.network.spec.activations), *self.names.words]
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
        if (token.kind == "letters" and token.text in LOSS_WORDS and self.peek(1).text == "=") or token.text == r"\ell":
            self.next()
            return FORWARD, "L"  # the loss's definition
        if token.text == r"\delta" or token.kind == "letters":
            leaf = self.symbol()
            if leaf.op == "grad" and not self.pending_transpose:
                return "L", leaf.value
            if leaf.op == "name" and not self.pending_transpose and self.names.forward(leaf.value):
                return FORWARD, leaf.value  # a forward definition: Z^{[1]} = X W^{[1]} + b^{[1]}
        self.fail(r"a left side \frac{\partial L}{\partial <name>}, \nabla_{<name>} L, \delta^{[l]}, dW^{[l]} or a "
                  "quantity of the forward pass", token)

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
            leaf = self.postfix() if token.text == "(" else \
                (token.text == r"\sigma" and self.variance()) or self.symbol(allow_gradient=False)
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

    def starts_atom(self) -> bool:
        token = self.peek()
        return token.kind in ("letters", "number", "word") or token.text in (
            "(", "[", "{", r"\{", r"\frac", r"\dfrac", r"\tfrac", r"\delta", r"\nabla", r"\sum", r"\partial",
            r"\ell", r"\sqrt", *_FUNCTION_COMMANDS, *_GREEK_NAMES)

    def term(self) -> Node:
        """Products: matrix products (juxtaposition, ``\\cdot``) and ``/`` bind tighter than the entrywise
        ``\\odot`` and ``\\oslash``, so ``A \\odot B C`` is ``A \\odot (B C)``."""
        segments, ops = [([self.unary()], [])], []
        while True:
            if self.peek().text in _PRODUCTS:
                op = _PRODUCTS[self.next().text]
            elif self.starts_atom():
                op = "dot"
            else:
                break
            if op in _ENTRYWISE:
                ops.append(_ENTRYWISE[op])
                segments.append(([self.unary()], []))
            else:
                segments[-1][1].append(op)
                segments[-1][0].append(self.unary())
        return self.chain([self.chain(*segment) for segment in segments], ops)

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
                op = _PRODUCTS.get(self.peek().text, "dot")
                ops.append(_ENTRYWISE.get(op, op))
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
        """A constant exponent: ``2``, ``-1``, ``-1/2``, ``-\\frac{1}{2}``, ``-0.5``, ``3/2``."""
        texts = "".join(t.text for t in sup).removeprefix("\\circ")  # A^{\circ 3}: a Hadamard power
        match = re.fullmatch(r"(-?)(?:(\d+(?:\.\d+)?)(?:/(\d+))?|\\[dt]?frac\{?(\d)\}?\{?(\d)\}?)", texts)
        if not match:
            raise self.error(f"a transpose (^T, ^\\top) or a whole or half power, not ^{{{texts}}}", token)
        sign, whole, over, top, bottom = match.groups()
        value = sp.Rational(whole) / sp.Integer(over or 1) if whole else sp.Rational(int(top), int(bottom))
        return node("number", (), -value if sign else value, token.start, self.last_end())

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
        if token.text == r"\sqrt":
            return self.square_root()
        if token.text == "I" and self.peek(1).text == "_" and self.names.quantity("I") is None:
            self.next()
            self.next()
            sub = self.group_tokens()
            size = self.names.size("".join(t.text for t in sub)) if sub[0].kind == "letters" else None
            if size is None:
                raise self.error(r"a size after I_, as in I_N (the identity matrix)", token)
            return self.eye(self.leaf("size", size, sub[0]), token)
        if token.text in _FUNCTION_COMMANDS or (token.kind in ("letters", "word") and self.is_function_word()):
            return self.function()
        if token.text == r"\ell":
            raise self.error("the loss itself is not a matrix; a claim's right side is a formula", token)
        if token.text == r"\delta" or token.kind in ("letters", "word") or token.text in _GREEK_NAMES:
            if token.text == "e" and self.peek(1).text == "^" and self.names.quantity("e") is None:
                return self.exponential()
            leaf = self.symbol()
            return node("T", (leaf,), None, leaf.start, leaf.end) if self.pending_transpose else leaf
        self.fail("a name, a number, a fraction or '('", token)

    def square_root(self) -> Node:
        r"""``\sqrt{x}`` entrywise."""
        token = self.next()
        if self.at("["):
            raise self.error(r"only square roots: \sqrt{x}", token)
        arg = self.braced(self.postfix)
        return node("sqrt", (arg,), None, token.start, self.last_end())

    def ones_or_indicator(self, token: Token) -> Node:
        r"""``\mathbf{1}_N`` (a column of ones; also ``\mathbf{1}_{4}``, ``\mathbf{1}_{36 N}``), ``\mathbb{1}_{Z > 0}``
        (an indicator) or ``\mathbb{1}_{\operatorname{argmax}}(P)`` (max pooling's mask of each row's maximum)."""
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
        if [t.text for t in sup] == ["argmax"]:
            arg = self.argument(r"\mathbb{1}_{argmax}")
            return node("maxmask", (arg,), None, token.start, self.last_end())
        # A count, a name (N, m) or a subscripted one as our own LaTeX prints widths (n_{2}), or a count times a name.
        counted = sup[0].kind == "number"
        count = (sp.Integer(sup[0].text) if sup[0].text.isdigit() and int(sup[0].text) else None) if counted \
            else sp.Integer(1)
        named = sup[1:] if counted else sup
        text = "".join(t.text for t in named if t.text not in ("{", "}"))
        size = sp.Integer(1) if not named else self.names.size(text) if named[0].kind == "letters" else None
        if size is None or count is None:
            raise self.error(r"a size after \mathbf{1}_, as in \mathbf{1}_N, \mathbf{1}_{4} or \mathbf{1}_{4 N}", sup[0])
        return self.ones([node("size", (), count * size, sup[0].start, sup[-1].end)], token, flat=False)

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
        arg = self.braced(self.atom)
        return node("exp", (arg,), None, token.start, self.last_end())

    def braced(self, unbraced) -> Node:
        """``{...}``: the expression in the braces; without braces, what ``unbraced`` reads."""
        if not self.accept("{"):
            return unbraced()
        with self.nested():
            arg = self.expr()
        self.expect("}", "'}'")
        return arg

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
        if token.kind == "word":
            return token.text.lower() in _FUNCTION_WORDS or self.names.activation_key(token.text) is not None
        length = self.word_length(token.text)
        if length > 1 and (token.text[:length].lower() in _FUNCTION_WORDS
                           or self.names.activation_key(token.text[:length])):
            return True
        # (an LSTM's gates f and g are quantities: f^{[1]}_{2} is the forget gate at step 2, not a function)
        named = any(re.fullmatch(rf"{token.text}\d+_\d+", name) for name in self.names.quantities)
        return token.text in ("g", "f") and self.peek(1).text in (("'", "(") if named else ("'", "^", "(")) and \
            self.names.quantity(token.text) is None

    def function(self) -> Node:
        token = self.peek()
        if token.text == r"\sigma":
            variance = self.variance()
            if variance is not None:
                return variance
        if token.kind == "command":
            self.next()
            function = _FUNCTION_COMMANDS[token.text]
        else:
            word = self.next().text if token.kind == "word" else self.split_letters(self.word_length(token.text))
            function = ("diagmat" if word == "Diag" else _FUNCTION_WORDS.get(word.lower())
                        or self.names.activation_key(word) or ("layer" if word in ("g", "f") else None))
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
        if function == "minimum" and (order or not self.two_arguments_ahead()):
            function = "negpart"  # \min'(Z), \min(Z): PReLU's negative part min(0, Z)
        elif function in ("maximum", "minimum", "row_repeat", "column_repeat"):
            return self.two_arguments(function, token)
        if function is None or (order and function != "layer" and not self.names.activation_key(function)
                                and function not in {d.key for d in self.names.network.spec.activations}):
            raise self.error(f"unknown function {token.text!r}", token)
        arg = self.argument(token.text)
        if function == "layer" or self.names.activation_key(function) or \
                function in {d.key for d in self.names.network.spec.activations}:
            value = self.apply(function, order, arg, token)
        elif function in ("softmax", "log_softmax"):
            value = self.softmax(arg, None, token, function)
        elif function in _SUMS:
            value = node("sum", (arg,), (_SUMS[function][0], True, _SUMS[function][1]), token.start, self.last_end())
        else:
            value = node(function, (arg,), None, token.start, self.last_end())
        return self.power(value, power, token) if power is not None else value

    def argument(self, after: str) -> Node:
        """A function's argument in parentheses, braces or brackets."""
        if not self.at("(", "{", "["):
            self.fail(f"'(' after {after}")
        opening = self.next()
        with self.nested():
            arg = self.expr()
        self.expect({"(": ")", "{": "}", "[": "]"}[opening.text])
        return arg

    def two_arguments(self, function: str, token: Token) -> Node:
        r"""``\max(0, Z)``, ``\min(0, Z)`` (elementwise), ``\operatorname{row\_repeat}(x, N)``."""
        self.expect("(", f"'(' after {token.text}")
        with self.nested():
            first = self.expr()
            self.expect(",", "','")
            second = self.expr()
        self.expect(")", "')'")
        if function in ("row_repeat", "column_repeat"):
            return self.repeat(first, second, token, rows=function == "row_repeat")
        return node(function, (first, second), None, token.start, self.last_end())

    def two_arguments_ahead(self) -> bool:
        """Whether the parenthesis ahead holds a top-level comma."""
        depth, k = 0, 0
        while self.peek(k).kind != "end":
            text = self.peek(k).text
            depth += {"(": 1, "{": 1, "[": 1, ")": -1, "}": -1, "]": -1}.get(text, 0)
            if depth == 0:
                return False
            if depth == 1 and text == ",":
                return True
            k += 1
        return False

    def variance(self) -> Node | None:
        r"""``\sigma^2`` as a normalization layer's variance (``\sigma^2_B``, ``\sigma_B^2``, ``\sigma^{2[2]}``,
        ``\sigma^{[2]2}``) and ``\sigma^{[2]}`` as its square root, where no parenthesis follows
        (``\sigma^2(z)`` is a squared sigmoid); else None, reading nothing."""
        start, token = self.i, self.next()
        squared, layer = False, None
        while self.at("^", "_"):
            marker = self.next().text
            texts = [t.text for t in self.group_tokens()]
            if marker == "^" and "2" in (texts[0], texts[-1]):
                squared = True
                texts = texts[1:] if texts[0] == "2" else texts[:-1]
            if texts in (["B"], []):
                continue
            inner = texts[1:-1] if len(texts) == 3 and texts[0] in "[(" and texts[2] in ")]" else texts
            if len(inner) != 1 or layer is not None:
                break
            layer = inner[0]
        if self.at("(", "{", "[") or not (squared or layer is not None):
            self.i = start
            return None
        name = self.names.layered("var", layer) if layer is not None else self.names.quantity("var")
        if name is not None and not squared:  # \sigma^{[2]}: the standard deviation, so (\sigma^{[2]})^2 is var2
            leaf = node("name", (), name, token.start, self.last_end())
            return node("sqrt", (leaf,), None, token.start, self.last_end())
        if name is None:
            raise self.error("\\sigma^2 is the variance of a batch or layer norm layer"
                             + (f", and layer {layer} has none" if layer is not None else
                                ": write its layer, as \\sigma^{2[2]}, where there are several or none"), token)
        return node("name", (), name, token.start, self.last_end())

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
        layer, sub, transposed, index = None, None, False, None
        digits = self.peek()
        if digits.kind == "number" and digits.start == self.last_end() and digits.text.isdigit() and \
                self.layered(base, digits.text):  # the code notation inside LaTeX: db1, W2
            layer = self.next().text
        while self.at("^", "_") and not (transposed and (self.at("^") or layer is None)):
            if self.at("_"):
                marker = self.next()
                sub = "".join(t.text for t in self.group_tokens())
                if layer is not None and sub.isdigit() and index is None:  # a step or a head: h^{[1]}_{3}
                    index, sub = sub, None
                elif layer is None and sub.isalpha() and (len(sub) == 1 or sub == "col") and any(
                        re.fullmatch(rf"{base}{sub}\d+", name) for name in self.names.quantities):
                    base, sub = base + sub, None  # W_h^{[1]}: the recurrent weight Wh1; X_{col}^{[1]}: im2col's Xcol1
                elif layer is None and (sub.isdigit() or sub == "L") and (base in _LAYERED or base in LAYER_CONSTANTS
                                                                          or self.layered(base, sub)):
                    layer, sub = sub, None
                elif sub == "B" and base in ("mu", "Sigma"):  # the batch's statistics (Ioffe and Szegedy)
                    sub = None
                elif layer is None and self.names.staged_base(base + sub):  # X_{c}: the centred input, as printed
                    base, sub = base + sub, None
                elif sub not in ("pred", "true", "hat") and not (base == "n" and sub.isdigit()):
                    raise self.error(f"a layer, pred or true after '_', not _{{{sub}}} (component indices are "
                                     f"not supported: write the matrix form){self.names.matrix_form()}", marker)
                continue
            read = self.layer_superscript(base, layer)
            if read is None:
                break
            layer, transposed = read
        self.pending_transpose = transposed
        word = base if sub is None else f"{base}_{sub}"
        if base == "n" and (layer or sub) and index is None:
            size = self.names.size(f"n_{layer or sub}")
            if size is None:
                raise self.names.unknown(f"n_{layer or sub}", token.start + 1)
            return self.leaf("size", size, token)
        if index is not None:
            name = f"{base}{layer}_{index}"
            if name not in self.names.quantities:
                raise self.names.unknown(f"{'d' if gradient and base != 'Z' else ''}{base}{layer}_{index}",
                                         token.start + 1)
        elif layer is not None:
            name = self.names.layered(base, layer)
            constant = None if name is not None or gradient else self.spec_constant(f"{base}{layer}", token)
            if constant is not None:
                return constant
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
                constant = self.spec_constant(word, token)
                if constant is not None:
                    return constant
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
        sample = len(rest) >= 3 and rest[-3] == "(" and rest[-1] == ")" and rest[-2].isalpha() and rest[-2] != "L"
        if sample and len(rest) == 3:  # only a sample index: Y_{pred}^{(i)} inside a sum over the samples
            if not self.in_sum:
                raise self.error("a sample index (i) outside a sum over the samples", self.peek(1))
            self.next()
            self.group_tokens()
            return None, transposed
        if sample:
            rest = rest[:-3]
        bracketed = len(rest) >= 3 and rest[0] in "[(" and rest[-1] in "])"
        index = self.layer_index(rest[1:-1] if bracketed else rest, bracketed)
        if index is None:
            return None
        if not bracketed and not self.layered(base, index):
            return None
        if sample and not self.in_sum:
            raise self.error("a sample index (i) outside a sum over the samples", self.peek(1))
        self.next()
        self.group_tokens()
        return index, transposed

    def layer_index(self, inner: list, bracketed: bool) -> str | None:
        """The layer a superscript's tokens name: ``2``, ``L`` (the last layer), ``L-1`` (counted back from it);
        None where they are no layer (a power, ``^{-1}``). A general index (``l``, ``l+1``, ``k``) is refused:
        a claim is judged on this spec's network, whose layers have numbers."""
        if len(inner) == 1 and (inner[0].isdigit() or inner[0] == "L"):
            return inner[0]
        if len(inner) == 3 and inner[0] == "L" and inner[1] == "-" and inner[2].isdigit():
            layer = self.names.network.depth - int(inner[2])
            if layer < 1:
                raise self.error(f"layer L-{inner[2]} does not exist: this network has L = "
                                 f"{self.names.network.depth} layers", self.peek(1))
            return str(layer)
        general = inner and inner[0] in ("l", "k") and (len(inner) == 1 or (
            len(inner) == 3 and inner[1] in "+-" and inner[2].isdigit()))
        if general:
            raise self.error(f"a general layer index ^{{{''.join(inner)}}}: write the layer's number (check judges "
                             "this spec's network, layer by layer), or L, L-1, ... counted from the last layer",
                             self.peek(1))
        if len(inner) == 1 and inner[0].isalpha():
            return None  # a sample index, ^{(i)}, read where a sum over the samples allows it
        if bracketed or (inner and inner[0] == "L"):
            raise self.error(f"a layer superscript is a number, L or L-1, ..., not ^{{{''.join(inner)}}}",
                             self.peek(1))
        return None

    def layered(self, base: str, index: str) -> bool:
        """Whether the network has a quantity (or width) ``base`` at layer ``index``."""
        if base == "n":
            return self.names.size(f"n_{index}") is not None
        return self.names.layered(base, index) is not None
