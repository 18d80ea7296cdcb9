"""The formula language of custom activations: a small parser from text to SymPy, and the formulas' printed forms.

A formula is an expression in ``z`` and declared parameters, built from numbers, ``+ - * / **``, parentheses
and a fixed set of functions (``FUNCTIONS``); ``where(cond, a, b)`` takes a comparison (``< <= > >=``) as its
condition. The text is split into tokens by one regular expression over ASCII and read by a recursive-descent
parser with a nesting limit: nothing in it is ever evaluated as Python, and anything outside the language
(attribute access, other names, keywords, strings, non-ASCII look-alikes) is an error naming its column.

The printers turn the SymPy result (and its derivative) into LaTeX, into text in this same language (for
code comments), and into a NumPy expression that is stable where the formula allows (see ``NumPyFormula``).
"""

from __future__ import annotations

import itertools
import math
import re
import unicodedata
from functools import lru_cache

import sympy as sp
from sympy.codegen.rewriting import expm1_opt, log1p_opt, optimize
from sympy.core.relational import Relational
from sympy.printing.latex import LatexPrinter
from sympy.printing.precedence import precedence
from sympy.printing.str import StrPrinter
from sympy.solvers.solveset import solveset

from .errors import SymbackpropError

Z = sp.Symbol("z", real=True)
MAX_LENGTH = 400
MAX_DEPTH = 32
MAX_NUMBER = 10**6
MAX_EXPONENT = 16
MAX_PIECEWISE = 8  # calls of where, abs, min and max in one formula
MAX_BREAKPOINTS = 16


class FormulaError(SymbackpropError):
    """A formula outside the language, or not an activation; ``column`` (1-based) says where, when one place
    is to blame, and ``field`` which key of the definition (``forward`` or ``grad_at_kinks``)."""

    def __init__(self, message: str, column: int | None = None, field: str = "forward"):
        self.message, self.column, self.field = message, column, field
        super().__init__(f"at column {column}: {message}" if column else message)


def _applied(name: str, printer, arg, exp=None) -> str:
    """``name(arg)`` in LaTeX, raised to ``exp`` (printed) where the function is the base of a power."""
    power = f"^{{{exp}}}" if exp is not None else ""
    return rf"{name}{power}\left({printer._print(arg)}\right)"


class sigmoid(sp.Function):
    """The logistic function 1 / (1 + exp(-u)), kept whole so that it prints (and computes) stably."""

    @classmethod
    def eval(cls, arg):
        if arg.is_number:  # a constant is just a number
            return 1 / (1 + sp.exp(-arg))
        return None

    def _eval_is_real(self):
        return self.args[0].is_real

    def fdiff(self, argindex=1):
        return self * (1 - self)

    def elementary(self):
        return 1 / (1 + sp.exp(-self.args[0]))

    def _latex(self, printer, exp=None):
        return _applied(r"\sigma", printer, self.args[0], exp)


class softplus(sp.Function):
    """log(1 + exp(u)), kept whole so that it prints (and computes) stably."""

    @classmethod
    def eval(cls, arg):
        if arg.is_number:
            return sp.log(1 + sp.exp(arg))
        return None

    def _eval_is_real(self):
        return self.args[0].is_real

    def fdiff(self, argindex=1):
        return sigmoid(self.args[0])

    def elementary(self):
        return sp.log(1 + sp.exp(self.args[0]))

    def _latex(self, printer, exp=None):
        return _applied(r"\operatorname{softplus}", printer, self.args[0], exp)


class normal_cdf(sp.Function):
    """Φ, the standard normal distribution function (1 + erf(u / √2)) / 2: a name the lecture prints by."""

    def _latex(self, printer, exp=None):
        return _applied(r"\Phi", printer, self.args[0], exp)


class normal_pdf(sp.Function):
    """φ, the standard normal density e^(-u²/2) / √(2π): a name the lecture prints by."""

    def _latex(self, printer, exp=None):
        return _applied(r"\varphi", printer, self.args[0], exp)


# The functions a printed formula may name, each with the definition that introduces it (quoted in running
# text, so written with slashes: an inline fraction sets its parts a size smaller).
DEFINITIONS = {
    sigmoid: r"\sigma\left(u\right) = 1 / \left(1 + e^{-u}\right)",
    softplus: r"\operatorname{softplus}\left(u\right) = \log\left(1 + e^{u}\right)",
    normal_cdf: r"\Phi\left(u\right) = \left(1 + \operatorname{erf}\left(u / \sqrt{2}\right)\right) / 2",
    normal_pdf: r"\varphi\left(u\right) = e^{-u^{2} / 2} / \sqrt{2 \pi}",
}


def named(*exprs) -> list:
    """The functions of ``DEFINITIONS`` that ``exprs`` apply, in the table's order."""
    return [function for function in DEFINITIONS if any(expr.has(function) for expr in exprs)]


def _where(condition, then, otherwise):
    return sp.Piecewise((then, condition), (otherwise, True))


# name -> (number of arguments, None for two or more; the SymPy function)
FUNCTIONS = {
    "exp": (1, sp.exp), "log": (1, sp.log), "log1p": (1, lambda u: sp.log(1 + u)), "sqrt": (1, sp.sqrt),
    "tanh": (1, sp.tanh), "sigmoid": (1, sigmoid), "softplus": (1, softplus), "erf": (1, sp.erf),
    "abs": (1, sp.Abs), "sin": (1, sp.sin), "cos": (1, sp.cos), "min": (None, sp.Min), "max": (None, sp.Max),
    "where": (3, _where),
}
PIECEWISE_FUNCTIONS = ("where", "abs", "min", "max")
COMPARISONS = {"<": sp.StrictLessThan, "<=": sp.LessThan, ">": sp.StrictGreaterThan, ">=": sp.GreaterThan}

_TOKEN = re.compile(r"""
    (?P<space>[ \t]+)
  | (?P<number>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)
  | (?P<name>[A-Za-z][A-Za-z0-9_]*)
  | (?P<op>\*\*|<=|>=|[-+*/(),<>])
""", re.VERBOSE)


def _describe_character(text: str, column: int) -> str:
    """Why the character at ``column`` (1-based) cannot start a token."""
    char = text[column - 1]
    if ord(char) > 127:
        name = unicodedata.name(char, "unnamed")
        return f"unexpected character U+{ord(char):04X} ({name}); formulas are ASCII only"
    hints = {
        ".": "attribute access is not allowed (only z, parameters and the listed functions)",
        "_": "names cannot start with '_'",
        "'": "string literals are not allowed", '"': "string literals are not allowed",
        "=": "only the comparisons <, <=, >, >= are allowed, inside where(...)",
        "[": "indexing is not allowed", "]": "indexing is not allowed",
    }
    return hints.get(char, f"unexpected character {char!r}")


def tokenize(text: str) -> list[tuple[str, str, int]]:
    """``(kind, text, column)`` for every token, ending with ``("end", "", column)``."""
    if len(text) > MAX_LENGTH:
        raise FormulaError(f"the formula is {len(text)} characters long; at most {MAX_LENGTH} are allowed")
    tokens, position = [], 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        if not match:
            raise FormulaError(_describe_character(text, position + 1), position + 1)
        if match.lastgroup != "space":
            tokens.append((match.lastgroup, match.group(), position + 1))
        position = match.end()
    tokens.append(("end", "", len(text) + 1))
    return tokens


class _Parser:
    """Recursive descent over the tokens; ``depth`` bounds the nesting so no input can exhaust the stack."""

    def __init__(self, text: str, parameters: dict):
        self.tokens, self.i, self.depth, self.piecewise = tokenize(text), 0, 0, 0
        self.symbols = {"z": Z, **{name: sp.Symbol(name, real=True) for name in parameters}}

    def peek(self):
        return self.tokens[self.i]

    def next(self):
        token = self.tokens[self.i]
        self.i += 1
        return token

    def fail(self, message, token=None):
        raise FormulaError(message, (token or self.peek())[2])

    def expect(self, text, what=None):
        token = self.next()
        if token[1] != text:
            self.fail(f"expected {what or repr(text)}, got {_shown(token)}", token)

    def formula(self):
        if self.peek()[0] == "end":
            self.fail("the formula is empty")
        value = self.sum()
        token = self.peek()
        if token[1] in COMPARISONS:
            self.fail("a comparison is only allowed as the condition of where(condition, a, b)")
        if token[0] != "end":
            self.fail(f"expected an operator or the end of the formula, got {_shown(token)}")
        return value

    def sum(self):
        value = self.product()
        while self.peek()[1] in ("+", "-"):
            value = value + self.product() if self.next()[1] == "+" else value - self.product()
        return value

    def product(self):
        value = self.unary()
        while self.peek()[1] in ("*", "/"):
            if self.next()[1] == "*":
                value = value * self.unary()
            else:
                token = self.peek()
                divisor = self.unary()
                if divisor == 0:
                    self.fail("division by zero", token)
                value = value / divisor
        return value

    def unary(self):
        self.depth += 1
        if self.depth > MAX_DEPTH:
            self.fail(f"the formula is nested too deeply (more than {MAX_DEPTH} levels)")
        if self.peek()[1] in ("+", "-"):
            value = self.unary() if self.next()[1] == "+" else -self.unary()
        else:
            value = self.power()
        self.depth -= 1
        return value

    def power(self):
        base = self.atom()
        if self.peek()[1] != "**":
            return base
        token = self.next()
        exponent = self.unary()
        if exponent.is_number and (not exponent.is_real or abs(exponent) > MAX_EXPONENT):
            self.fail(f"a constant exponent must be a real number of size at most {MAX_EXPONENT}", token)
        if base.is_number and not (base.is_real and abs(base) <= MAX_NUMBER):
            self.fail(f"a constant base of ** must be a real number of size at most {MAX_NUMBER:g}", token)
        return self.real(base**exponent, token, f"({text(base)})**({text(exponent)})")

    def atom(self):
        token = self.next()
        kind, text = token[:2]
        if kind == "number":
            value = sp.Rational(text)
            if value > MAX_NUMBER or len(text) > 24:
                self.fail(f"numbers are limited to {MAX_NUMBER:g} and 24 characters", token)
            return value
        if text == "(":
            value = self.sum()
            self.expect(")", "')'")
            return value
        if kind == "name":
            if self.peek()[1] == "(":
                return self.call(token)
            if text in self.symbols:
                return self.symbols[text]
            if text in FUNCTIONS:
                self.fail(f"{text} is a function: write {text}(...)", token)
            declared = ", ".join(self.symbols)
            self.fail(f"unknown name {text!r}; a formula may use {declared} and the functions "
                      f"{', '.join(FUNCTIONS)} (declare a parameter as parameters = {{ {text} = <number> }})",
                      token)
        self.fail(f"expected a number, a name, a function call or '(', got {_shown(token)}", token)

    def call(self, token):
        name = token[1]
        if name not in FUNCTIONS:
            what = "a variable, not a function" if name in self.symbols else "not a function of the formula language"
            self.fail(f"{name!r} is {what}; functions: {', '.join(FUNCTIONS)}", token)
        arity, function = FUNCTIONS[name]
        if name in PIECEWISE_FUNCTIONS:
            self.piecewise += 1
            if self.piecewise > MAX_PIECEWISE:
                self.fail(f"at most {MAX_PIECEWISE} calls of {', '.join(PIECEWISE_FUNCTIONS)} in one formula", token)
        self.expect("(")
        args = [self.condition() if name == "where" else self.sum()]
        while self.peek()[1] == ",":
            self.next()
            args.append(self.sum())
        if self.peek()[1] in COMPARISONS:
            self.fail("a comparison is only allowed as the condition of where(condition, a, b)")
        self.expect(")", "',' or ')'")
        if (arity is None and len(args) < 2) or (arity is not None and len(args) != arity):
            count = "two or more arguments" if arity is None else f"{arity} argument{'s' * (arity > 1)}"
            self.fail(f"{name} takes {count}, got {len(args)}", token)
        what = f"{name}({', '.join(text(a) for a in args)})"
        try:
            value = function(*args)
        except (TypeError, ValueError) as error:  # SymPy refusing, e.g. a comparison with a division by zero
            self.fail(f"{what} cannot be built: {error}", token)
        return self.real(value, token, what)

    def real(self, value, token, what):
        """``value``, unless it is a constant that is not a finite real number (log(0), sqrt(-1))."""
        if value.is_number and not (value.is_extended_real and value.is_finite):
            self.fail(f"{what} is not a finite real number", token)
        return value

    def condition(self):
        left = self.sum()
        token = self.next()
        if token[1] not in COMPARISONS:
            self.fail(f"where(condition, a, b) needs a comparison (<, <=, >, >=) first, got {_shown(token)}", token)
        return COMPARISONS[token[1]](left, self.sum())


def _shown(token) -> str:
    return "the end of the formula" if token[0] == "end" else repr(token[1])


def parse(text: str, parameters: dict | None = None) -> sp.Expr:
    """The SymPy expression of ``text``, in the real symbol ``z`` and real symbols named after ``parameters``.

    Raises :class:`FormulaError` for anything outside the language.
    """
    expr = _Parser(text, parameters or {}).formula()
    _check_constants(expr)
    return expr


def _check_constants(expr: sp.Expr) -> None:
    """Refuse a constant part that overflows float64 (``exp(710)``): the generated code, the float checks and
    the worked example would all meet inf."""
    stack = [expr]
    while stack:
        node = stack.pop()
        if not node.is_number:
            stack.extend(node.args)
            continue
        try:
            value = sp.lambdify((), node, "math")()
            finite = not isinstance(value, (int, float)) or math.isfinite(float(value))
        except OverflowError:
            finite = False
        except Exception:  # noqa: BLE001 - a function math lacks (sigmoid, softplus): nothing to check here
            finite = True
        if not finite:
            # a log can bring an overflowing part back into range (log(1 + exp(1000000)) is 1e6); without one,
            # the value overflows with its part (and evaluating a tower of exps exactly would take minutes)
            value = sp.N(node, 20) if node.has(sp.log) else sp.oo
            if value.is_finite and abs(value) < 1.7e308:
                raise FormulaError(f"the constant {node} overflows float64 on the way to its value ({float(value):.6g}): "
                                   "a part of it is above 1.8e308; write its value instead")
            raise FormulaError(f"the constant {node} overflows float64 (its value is above 1.8e308)")


# -- rewriting ---------------------------------------------------------------------------------------------

def elementary(expr: sp.Expr) -> sp.Expr:
    """``expr`` with sigmoid and softplus written out in exp and log (what independent oracles understand)."""
    return expr.replace(lambda e: isinstance(e, (sigmoid, softplus)), lambda e: e.elementary())


def stabilized(expr: sp.Expr) -> sp.Expr:
    """``expr`` with ``log(1 + exp(u))`` as softplus(u) and ``1 / (1 + exp(u))`` as sigmoid(-u).

    Both are identities; the named forms print as NumPy code that cannot overflow.
    """
    def one_plus_exp(e):
        return isinstance(e, sp.Add) and len(e.args) == 2 and sp.S.One in e.args and any(
            isinstance(a, sp.exp) for a in e.args)

    def exponent(e):
        return next(a for a in e.args if isinstance(a, sp.exp)).args[0]

    expr = expr.replace(lambda e: isinstance(e, sp.log) and one_plus_exp(e.args[0]),
                        lambda e: softplus(exponent(e.args[0])))
    return expr.replace(lambda e: isinstance(e, sp.Pow) and e.exp == -1 and one_plus_exp(e.base),
                        lambda e: sigmoid(-exponent(e.base)))


@lru_cache(maxsize=256)
def piecewise(expr: sp.Expr) -> sp.Expr:
    """``expr`` with abs, min, max and sign as Piecewise (each where it stands: nothing is lifted or merged)."""
    return expr.rewrite(sp.Piecewise)


def breakpoints(expr: sp.Expr) -> list[sp.Expr]:
    """The points where a condition of ``piecewise(expr)`` can change, in increasing order."""
    points = set()
    for relation in piecewise(expr).atoms(Relational):
        try:
            zeros = solveset(relation.lhs - relation.rhs, Z, sp.S.Reals)
        except NotImplementedError:
            zeros = None
        if not isinstance(zeros, sp.FiniteSet):
            raise FormulaError(f"cannot solve the condition {text(relation)} for the finitely many points where "
                               "it changes")
        points |= set(zeros)
    if len(points) > MAX_BREAKPOINTS:
        raise FormulaError(f"the conditions change at {len(points)} points; at most {MAX_BREAKPOINTS} are allowed")
    return sorted(points, key=float)


def branch_at(expr: sp.Expr, point: sp.Expr, evaluate: bool = True) -> sp.Expr:
    """``expr`` with every Piecewise replaced by the branch that applies at ``z = point``; with
    ``evaluate=False`` nothing is simplified on the way (``1/z * z`` stays, and so does its division)."""
    def choose(node):
        for branch, condition in node.args:
            with sp.evaluate(True):
                holds = condition.subs(Z, point)
            if holds not in (sp.true, sp.false):
                raise FormulaError(f"cannot decide the condition {text(condition)} at z = {point}")
            if holds:
                return branch
        raise FormulaError(f"no branch applies at z = {point}")

    with sp.evaluate(evaluate):
        return piecewise(expr).replace(lambda node: isinstance(node, sp.Piecewise), choose)


def intervals(points: list) -> list[sp.Interval]:
    """The open intervals of the real line between consecutive ``points`` (sorted)."""
    return [sp.Interval.open(low, high) for low, high in itertools.pairwise([-sp.oo, *points, sp.oo])]


def inside(region: sp.Set) -> sp.Expr:
    """A point of ``region`` (an interval, a union of them, or points): a midpoint, or 1 past a finite end."""
    if isinstance(region, sp.Union):
        return inside(region.args[0])
    if isinstance(region, sp.FiniteSet):
        return min(region, key=float)
    low, high = region.start, region.end
    if low == -sp.oo:
        return high - 1 if high != sp.oo else sp.S.Zero
    return low + 1 if high == sp.oo else (low + high) / 2


def describe(interval: sp.Interval) -> str:
    """An open interval as a condition on z: ``z < -1``, ``-1 < z < 1``, ``z > 1``, ``every real z``."""
    low, high = interval.start, interval.end
    if low == -sp.oo:
        return f"z < {high}" if high != sp.oo else "every real z"
    return f"z > {low}" if high == sp.oo else f"{low} < z < {high}"


def pieces(expr: sp.Expr) -> list[tuple[sp.Expr, sp.Set]]:
    """``(branch, set of z)`` pairs: the expression ``expr`` takes on each set (disjoint, covering the reals)."""
    grouped: dict = {}
    points = breakpoints(expr)
    for region in [*intervals(points), *(sp.FiniteSet(point) for point in points)]:
        branch = branch_at(expr, inside(region))
        grouped[branch] = grouped.get(branch, sp.S.EmptySet) | region
    return list(grouped.items())


# -- printing ----------------------------------------------------------------------------------------------

def _decimal(number) -> str | None:
    """A rational whose denominator is a power of 10 as the decimal a user writes (1.0507), else None."""
    if not isinstance(number, sp.Rational) or number.q == 1 or 10 ** len(str(number.q)[1:]) != number.q:
        return None
    digits = len(str(number.q)) - 1
    return f"{'-' if number < 0 else ''}{abs(number.p) // number.q}.{abs(number.p) % number.q:0{digits}d}"


class _Decimals:
    """Printer mixin: decimal coefficients (1.0507 z) instead of fractions (10507 z / 10000)."""

    times = " "

    def _print_Rational(self, expr):
        return _decimal(expr) or super()._print_Rational(expr)

    def _print_Mul(self, expr):
        coefficient, rest = expr.as_coeff_Mul()
        shown = _decimal(abs(coefficient))
        if shown is None or rest == 1:
            return super()._print_Mul(expr)
        body = self.parenthesize(rest, precedence(expr))
        return f"{'-' if coefficient < 0 else ''}{shown}{self.times}{body}"


class FormulaLatexPrinter(_Decimals, LatexPrinter):
    """LaTeX of a formula: SymPy's, with branches as a ``cases`` block (``otherwise`` in the document's language)."""

    def __init__(self, otherwise: str = "otherwise", **settings):
        super().__init__(settings)
        self.otherwise = otherwise

    def _print_Symbol(self, expr, style="plain"):
        text = super()._print_Symbol(expr, style)
        # A parameter named by a word (scale) reads upright, so that "scale z" is not five factors.
        return rf"\mathrm{{{text}}}" if len(expr.name) > 1 and not text.startswith("\\") else text

    def _print_Piecewise(self, expr):
        rows = []
        for branch, condition in expr.args:
            when = rf"\text{{{self.otherwise}}}" if condition is sp.true else self._print(condition)
            rows.append(f"{self._print(branch)} & {when}")
        return r"\begin{cases} " + r" \\ ".join(rows) + r" \end{cases}"


class FormulaTextPrinter(_Decimals, StrPrinter):
    """A formula in the formula language itself (``where``, ``abs``, ``sigmoid``), for code comments."""

    times = "*"

    def _print_Piecewise(self, expr):
        (branch, condition), rest = expr.args[0], expr.args[1:]
        if condition is sp.true:
            return self._print(branch)
        otherwise = self._print(sp.Piecewise(*rest)) if rest else "nan"
        return f"where({self._print(condition)}, {self._print(branch)}, {otherwise})"

    def _print_Abs(self, expr):
        return f"abs({self._print(expr.args[0])})"

    def _print_Min(self, expr):
        return f"min({', '.join(self._print(a) for a in expr.args)})"

    def _print_Max(self, expr):
        return f"max({', '.join(self._print(a) for a in expr.args)})"

    def _print_Or(self, expr):
        return " or ".join(f"({self._print(a)})" for a in expr.args)

    def _print_And(self, expr):
        return " and ".join(f"({self._print(a)})" for a in expr.args)


def latex(expr, otherwise: str = "otherwise") -> str:
    return FormulaLatexPrinter(otherwise).doprint(expr)


def text(expr) -> str:
    return FormulaTextPrinter().doprint(expr)


_NUMPY_FUNCTIONS = {"exp": "np.exp", "log": "np.log", "tanh": "np.tanh", "sin": "np.sin", "cos": "np.cos",
                    "log1p": "np.log1p", "expm1": "np.expm1", "erf": "erf"}


class NumPyFormula(StrPrinter):
    """A formula as one NumPy expression in ``{z}`` (a ``str.format`` field), keeping the dtype of ``z``.

    Stable where the formula allows: sigmoid and softplus print as ``np.logaddexp`` forms, ``log(1 + u)`` and
    ``exp(u) - 1`` as ``np.log1p`` / ``np.expm1``; each branch of a piecewise formula that is not a polynomial
    is evaluated only where it applies (other entries get a point inside its region), so a branch never
    overflows, divides by zero or leaves its domain where it is not used. Constants print as Python floats,
    which NumPy casts to the array's dtype.
    """

    def __init__(self, z: str = "{z}"):
        super().__init__()
        self.z = z

    def doprint(self, expr):
        expr = optimize(piecewise(expr), [log1p_opt, expm1_opt])
        # b**u with u not a number as exp(u log b), so that b**(-u) never prints as 1/b**u, which overflows;
        # 1 - sigmoid(u) as sigmoid(-u), which keeps its digits where sigmoid(u) is close to 1.
        expr = expr.replace(lambda e: isinstance(e, sp.Pow) and not e.exp.is_number,
                            lambda e: sp.exp(e.exp * sp.log(e.base), evaluate=False))
        expr = expr.replace(lambda e: isinstance(e, sp.Add) and len(e.args) == 2 and sp.S.One in e.args and any(
            isinstance(-a, sigmoid) for a in e.args), lambda e: sigmoid(-next(-a for a in e.args if a != 1).args[0]))
        pairs = pieces(expr) if expr.has(sp.Piecewise) else [(expr, sp.S.Reals)]
        if len(pairs) > 1:
            return self._print_pieces(pairs)
        expr = pairs[0][0]
        if not expr.has(Z):
            return f"np.full_like({self.z}, {self._print(expr)})"
        return super().doprint(expr)

    def _print(self, expr, **kwargs):
        if isinstance(expr, sp.Expr) and expr.is_number and not expr.is_Integer:
            return repr(float(expr))
        return super()._print(expr, **kwargs)

    def _print_Symbol(self, expr):
        return self.z if expr == Z else expr.name

    def _print_Mul(self, expr):
        coefficient, rest = expr.as_coeff_Mul()
        if coefficient.is_Integer or rest == 1:
            return super()._print_Mul(expr)
        return f"{self._print(coefficient)}*{self.parenthesize(rest, precedence(expr))}"

    def _print_Function(self, expr):
        name = type(expr).__name__
        if name not in _NUMPY_FUNCTIONS:
            raise TypeError(f"no NumPy form for {name}")
        return f"{_NUMPY_FUNCTIONS[name]}({', '.join(self._print(a) for a in expr.args)})"

    def _print_sigmoid(self, expr):
        return f"np.exp(-np.logaddexp(0, {self._print(-expr.args[0])}))"

    def _print_softplus(self, expr):
        return f"np.logaddexp(0, {self._print(expr.args[0])})"

    def _print_Pow(self, expr, rational=False):
        if expr.exp == sp.S.Half:
            return f"np.sqrt({self._print(expr.base)})"
        if expr.exp == -sp.S.Half:
            return f"1 / np.sqrt({self._print(expr.base)})"
        if expr.exp.is_Integer or not expr.exp.is_number:
            return super()._print_Pow(expr, rational)
        return f"{self.parenthesize(expr.base, precedence(expr), strict=True)}**{float(expr.exp)!r}"

    def _print_Relational(self, expr):
        return f"({self._print(expr.lhs)} {expr.rel_op} {self._print(expr.rhs)})"

    def _print_And(self, expr):
        return " & ".join(self._print(a) for a in expr.args)

    def _print_Or(self, expr):
        return " | ".join(self._print(a) for a in expr.args)

    def _print_pieces(self, pairs):
        """Nested ``np.where`` over disjoint regions; a non-polynomial branch sees only its own region's z."""
        code = None
        for branch, region in reversed(pairs):
            condition = self._print(region.as_relational(Z))
            if branch.is_polynomial(Z):
                value = self._print(branch)
            else:
                inner = NumPyFormula("z")._print(branch)
                value = f"(lambda z: {inner})(np.where({condition}, {self.z}, {float(inside(region))!r}))"
            code = value if code is None else f"np.where({condition}, {value}, {code})"
        # np.where of constants alone would be float64 (or int64) whatever the dtype of z.
        return code if any(branch.has(Z) for branch, _ in pairs) else f"np.asarray({code}, dtype={self.z}.dtype)"


def numpy_code(expr, z: str = "{z}") -> str:
    return NumPyFormula(z).doprint(expr)
