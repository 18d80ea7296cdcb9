"""The NumPy-like notation: ``dW2 = np.dot(dZ2, A1.T)``, ``dL/dZ1 = dL/da1 * (1 - a1**2)``."""

from __future__ import annotations

import re

from ..rules import ACTIVATIONS
from .operators import IMAGE_OPERATORS
from .syntax import FORWARD, Parser, Token, constant
from .tree import Node, node

_NUMPY_TOKENS = re.compile(r"""
    (?P<ws>\s+|\#.*|;\s*$)  # a comment, as in Python, and a statement's closing semicolon: no part of the claim
  | (?P<frac>[d∂](?P<of>[^\W\d]\w*)\s*/\s*[d∂](?P<wrt>[^\W\d]\w*))
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<name>[^\W\d]\w*)
  | (?P<op>\*\*|>=|<=|==|!=|:=|[-+*/@().,'=<>\[\]:"])
""", re.VERBOSE)

_DERIVATIVE_SUFFIXES = ("_prime", "_derivative", "_deriv", "_grad", "_backward_local")
_AXIS_VALUES = {"0": 0, "1": 1, "-1": 1, "-2": 0, "None": None}
# The batch matrix forms of Wesselink et al.: rows_sum(X) is X 1 (a column), columns_sum(X) is 1^T X (a row).
_MATRIX_SUMS = {name: (axis, mean) for names, axis, mean in (
    (("rows_sum", "row_sum", "rowsum", "rowsums"), 1, False), (("columns_sum", "column_sum", "colsum", "colsums",
                                                                 "cols_sum"), 0, False),
    (("rows_mean", "row_mean"), 1, True), (("columns_mean", "column_mean", "colmean"), 0, True)) for name in names}


class NumPyParser(Parser):
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
            forward = self.names.forward(self.names.quantity(token.text) or token.text)
            if forward is not None:  # a forward definition: Z1 = X @ W1 + b1, L = ...
                return FORWARD, forward
            if token.text.startswith("d"):
                raise self.names.no_gradient(token.text, token.start + 1)
        self.fail("a left side dL/d<name>, d<name>/d<name>, dW2, delta2, or a quantity of the forward pass", token)

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
        if numpy and word in ("identity", "diag"):
            word = {"identity": "eye", "diag": "np.diag"}[word]  # np.diag: NumPy's, diag(X): the paper's column
        function, order = self.function_name(word, order, token)
        self.expect("(", f"'(' after {token.text}")
        args, keywords = self.arguments()
        end = self.last_end()
        takes = {"sum": (1, 2), "mean": (1, 2), "ones": (1, 2), "where": (3,), "power": (2,), "maximum": (2,),
                 "minimum": (2,), "heaviside": (2,), "dot": (2,), "matmul": (2,), "multiply": (2,), "divide": (2,),
                 "true_divide": (2,), "add": (2,), "subtract": (2,), "row_repeat": (2,),
                 "column_repeat": (2,)}.get(function, (1,))
        options = {"sum": {"axis", "keepdims"}, "mean": {"axis", "keepdims"}, "softmax": {"axis"},
                   "log_softmax": {"axis"}}.get(function, set())
        if len(args) not in takes:
            raise self.error(f"{token.text}(...) takes {' or '.join(map(str, takes))} argument(s), not {len(args)}",
                             token)
        for key, (key_token, _) in keywords.items():
            if key not in options:
                raise self.error(f"{token.text}(...) takes no {key}=", key_token)
        for arg in args[1:] if function == "ones" else args:
            if arg.op == "tuple":
                raise self.error("a tuple is only a shape, as in np.ones((N, 1))", Token("op", "(", arg.start))
        if function == "layer" or self.names.activation_key(function) or function in self.custom_keys():
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
        if function in ("softmax", "log_softmax"):
            return self.softmax(args[0], keywords["axis"][1] if "axis" in keywords else None, token, function)
        if function in _MATRIX_SUMS:
            axis, mean = _MATRIX_SUMS[function]
            return node("sum", args, (axis, True, mean), token.start, end)
        if function in ("row_repeat", "column_repeat"):
            return self.repeat(args[0], args[1], token, rows=function == "row_repeat")
        if function == "eye":
            return self.eye(args[0], token)
        if function in ("np.diag", "diag", "diagmat"):
            return node("diagmat" if function == "diagmat" else "diag", args, "numpy" if function == "np.diag" else
                        None, token.start, end)
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

    def custom_keys(self) -> set[str]:
        """The rule keys of the spec's custom activations."""
        return {d.key for d in self.names.network.spec.activations}

    def function_name(self, word: str, order: int, token: Token) -> tuple[str, int]:
        """The function a call names: an activation (``sigmoid_prime`` is its derivative), ``g``/``f``/``phi``
        (the layer's own activation), or one of NumPy's."""
        for suffix in _DERIVATIVE_SUFFIXES:
            stem = word[:-len(suffix)]
            if word.endswith(suffix) and (stem in ("g", "f", "phi", "sigma") or self.names.activation_key(stem)):
                word, order = stem, 1
        word = {"sigma": "sigmoid", "expit": "sigmoid", "absolute": "abs", "amax": "max", "Diag": "diagmat",
                "diagflat": "diagmat", "logsoftmax": "log_softmax", "first_max_mask": "maxmask",
                "argmax_mask": "maxmask"}.get(word, word)
        if word in ("g", "f", "phi"):
            return "layer", order
        if self.names.activation_key(word):
            return self.names.activation_key(word), order
        known = ("sum", "mean", "softmax", "log_softmax", "ones", "dot", "matmul", "multiply", "divide",
                 "true_divide", "add", "subtract", "power", "square", "sqrt", "transpose", "where", "maximum",
                 "minimum", "heaviside", "exp", "log", "abs", "sign", "eye", "np.diag", "diag", "diagmat",
                 "row_repeat", "column_repeat", *_MATRIX_SUMS, *IMAGE_OPERATORS, "rowmax", "maxmask")
        if word in known and order == 0:
            return word, 0
        activations = [*ACTIVATIONS, *(d.name for d in self.names.network.spec.activations)]
        raise self.error(f"unknown function {token.text!r}; known: the activations "
                         f"({', '.join(activations)}) and their derivatives (relu'(Z1), sigmoid_prime(Z1)), "
                         "g'(Z1) for a layer's own activation, sum, mean, ones, softmax, log_softmax, the batch "
                         "matrix forms rows_sum, columns_sum, row_repeat, column_repeat, diag (a square matrix's "
                         "diagonal as a column) and Diag (a diagonal matrix), and NumPy's dot, matmul, multiply, "
                         "divide, power, square, sqrt, transpose, where, maximum, minimum, heaviside, exp, log, "
                         "abs, sign, eye, identity, diag, diagflat; in an image network im2col, col2im, fold, "
                         "unfold, rowmax and first_max_mask (argmax_mask)", token)
