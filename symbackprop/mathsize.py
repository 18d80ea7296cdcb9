"""Estimated sizes of LaTeX math and text, so the deck can be laid out before TeX runs.

The slides are planned in Python (which formula goes on which frame, where a long formula breaks), and
that needs the size each piece will take on the page. This module estimates it with a small box model of
TeX's math layout at 10 pt: glyphs, fractions, scripts, ``\\left``/``\\right``, under-braces, matrices and
``cases``. The figures are deliberately on the generous side; the deck's own fitting macros measure the real
boxes and shrink what still does not fit, and the tests read the scale factors they log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

_TOKEN = re.compile(r"\\[A-Za-z]+\*?|\\.|[{}^_&]|\s+|.", re.DOTALL)
# Widths in pt at 10 pt for the pieces the project's printers emit.
_GLYPH = 6.0
# Italic capitals run wider than the average glyph (W is 11 pt, X 8 pt), small letters narrower.
_CAPITAL = 7.8
_SMALL = 5.4
_WIDE_GLYPHS = {"W": 11.0, "M": 9.6, "m": 8.1, "w": 7.9, r"\top": 7.8}
_DIGIT = 5.0
_TEXT_LATIN = 4.8
_TEXT_CAPITAL = 6.8  # an upright capital in an operator's name (ReLU, GELU)
_TEXT_WIDE = 9.6  # Hangul and other full-width characters
_BINARY = {"+", "-", r"\odot", r"\times", r"\cdot", r"\pm", r"\circ"}
_RELATION = {"=", "<", ">", r"\le", r"\ge", r"\leq", r"\geq", r"\leftarrow", r"\to", r"\rightarrow",
             r"\Rightarrow", r"\approx", r"\coloneqq", r"\mapsto", r"\ne", r"\neq", r"\in"}
_ARROWS = {r"\leftarrow", r"\to", r"\rightarrow", r"\Rightarrow", r"\mapsto"}
_SPACES = {r"\,": 1.7, r"\:": 2.2, r"\;": 2.8, r"\!": -1.7, r"\quad": 10.0, r"\qquad": 20.0, "~": 3.3,
           "\\ ": 3.3, r"\enspace": 5.0}
_DOTS = {r"\cdots": 13.0, r"\ldots": 13.0, r"\dots": 13.0, r"\ddots": 13.0, r"\vdots": 3.0}
# What a sized delimiter adds to its bracket's width (\Bigl( is 6 pt wide where ( is 3.9 pt).
_SIZED_DELIMITERS = {r"\bigl": 1.0, r"\bigr": 1.0, r"\big": 1.0, r"\Bigl": 2.1, r"\Bigr": 2.1, r"\Big": 2.1,
                     r"\biggl": 3.0, r"\biggr": 3.0}
_IGNORED = {r"\displaystyle", r"\textstyle", r"\scriptstyle", r"\limits", r"\nolimits", r"\bigl", r"\bigr",
            r"\Bigl", r"\Bigr", r"\biggl", r"\biggr", r"\big", r"\Big", r"\relax", r"\strut", r"\mathstrut"}
_ONE_ARGUMENT_TEXT = {r"\operatorname", r"\text", r"\mathrm", r"\textbf", r"\mathit", r"\mathsf", r"\texttt"}
_ONE_ARGUMENT_MATH = {r"\mathbf", r"\boldsymbol", r"\bm", r"\hat", r"\bar", r"\tilde", r"\vec", r"\overline",
                      r"\widehat", r"\mathcal", r"\mathbb", r"\phantom", r"\underline"}
_DROPPED_ARGUMENT = {r"\color", r"\label", r"\hypertarget"}
_OPERATOR_NAMES = {r"\tanh", r"\log", r"\exp", r"\max", r"\min", r"\sin", r"\cos", r"\ln", r"\sinh",
                   r"\cosh", r"\arg", r"\det", r"\sup", r"\inf", r"\lim"}
_BIG_OPERATORS = {r"\sum": 10.5, r"\prod": 9.5, r"\int": 6.0}
_ENVIRONMENTS = {"bmatrix": 8.0, "pmatrix": 8.0, "matrix": 0.0, "cases": 6.0, "aligned": 0.0,
                 "array": 0.0, "smallmatrix": 0.0}
_ROW_HEIGHT = 12.5
_AXIS = 2.5


@dataclass(frozen=True)
class Box:
    """Width, height above the baseline and depth below it, in pt."""

    w: float = 0.0
    h: float = 0.0
    d: float = 0.0

    @property
    def total(self) -> float:
        return self.h + self.d

    def scaled(self, factor: float) -> Box:
        return Box(self.w * factor, self.h * factor, self.d * factor)


def _tokens(source: str) -> list[str]:
    return [token for token in _TOKEN.findall(source) if not token.isspace()]


def _group(tokens: list[str], start: int) -> tuple[list[str], int]:
    """The tokens of the argument at ``start`` (a braced group or a single token) and the index after it."""
    if start >= len(tokens):
        return [], start
    if tokens[start] != "{":
        return [tokens[start]], start + 1
    depth, index = 0, start
    while index < len(tokens):
        if tokens[index] == "{":
            depth += 1
        elif tokens[index] == "}":
            depth -= 1
            if depth == 0:
                return tokens[start + 1:index], index + 1
        index += 1
    return tokens[start + 1:], len(tokens)


def _environment(tokens: list[str], start: int, name: str) -> tuple[list[str], int]:
    """The body of ``\\begin{name} ... \\end{name}`` beginning after ``start`` (nesting respected)."""
    depth, index = 1, start
    while index < len(tokens):
        if tokens[index] in (r"\begin", r"\end"):
            argument, after = _group(tokens, index + 1)
            if "".join(argument) == name:
                depth += 1 if tokens[index] == r"\begin" else -1
                if depth == 0:
                    return tokens[start:index], after
            index = after
            continue
        index += 1
    return tokens[start:], len(tokens)


def _split_rows(tokens: list[str]) -> list[list[list[str]]]:
    """Rows (split at ``\\\\``) of cells (split at ``&``), outside nested groups and environments."""
    rows, cells, cell, depth = [], [], [], 0
    for token in tokens:
        if token == "{" or token == r"\begin":
            depth += token == "{"
        if token == "}":
            depth -= 1
        if depth == 0 and token == "&":
            cells.append(cell)
            cell = []
        elif depth == 0 and token == "\\\\":
            rows.append([*cells, cell])
            cells, cell = [], []
        else:
            cell.append(token)
    if cell or cells:
        rows.append([*cells, cell])
    return rows


def text_width(text: str, size: float = 10.0) -> float:
    """The width of running text (no math) at ``size`` pt."""
    wide = sum(1 for ch in text if ord(ch) > 0x2E80)
    capitals = sum(1 for ch in text if "A" <= ch <= "Z")
    return (wide * _TEXT_WIDE + capitals * _TEXT_CAPITAL + (len(text) - wide - capitals) * _TEXT_LATIN) * size / 10.0


class _Measure:
    """Lays out a token list left to right; ``style`` 0 display, 1 text, 2 script, 3 scriptscript."""

    def __init__(self, style: int = 0):
        self.style = style

    @property
    def scale(self) -> float:
        return (1.0, 1.0, 0.7, 0.5)[self.style]

    def _inner(self, tokens, style=None) -> Box:
        return _Measure(self.style if style is None else style).run(tokens)

    def _script_style(self) -> int:
        return 2 if self.style < 2 else 3

    def run(self, tokens: list[str]) -> Box:
        w, h, d, i, s = 0.0, 0.0, 0.0, 0, self.scale
        last, stacked = Box(), None  # stacked: the width of the script right before (x_{i}^{2} stacks them)
        while i < len(tokens):
            token = tokens[i]
            i += 1
            box = None
            if token in ("^", "_"):
                argument, i = _group(tokens, i)
                script = self._inner(argument, self._script_style())
                width = script.w + 0.5 * s
                w += width if stacked is None else max(0.0, width - stacked)
                stacked = None if stacked is not None else width
                if token == "^":
                    h = max(h, max(4.1 * s, last.h - 2.5 * s) + script.h)
                else:
                    d = max(d, max(1.5 * s, last.d + 1.0 * s) + script.d)
                continue
            if token == "{":
                argument, i = _group(tokens, i - 1)
                box = self._inner(argument)
            elif token in _SIZED_DELIMITERS:
                w += _SIZED_DELIMITERS[token] * s
                continue
            elif token in _IGNORED or token == "}":
                continue
            elif token in _SPACES:
                w += _SPACES[token] * s
                continue
            elif token in _DROPPED_ARGUMENT or token == r"\hyperlink":
                _, i = _group(tokens, i)
                continue
            elif token == r"\frac" or token == r"\dfrac" or token == r"\tfrac":
                numerator, i = _group(tokens, i)
                denominator, i = _group(tokens, i)
                inner = 1 if self.style == 0 and token != r"\tfrac" else self._script_style()
                num, den = self._inner(numerator, inner), self._inner(denominator, inner)
                shift = (6.8, 6.9) if self.style == 0 and token != r"\tfrac" else (3.9 * s, 3.5 * s)
                box = Box(max(num.w, den.w) + 2.4 * s, shift[0] + num.h + 0.5, shift[1] + den.d + 0.5)
            elif token in (r"\underbrace", r"\overbrace"):
                argument, i = _group(tokens, i)
                body = self._inner(argument)
                label = Box()
                if i < len(tokens) and tokens[i] in ("_", "^"):
                    label_tokens, i = _group(tokens, i + 1)
                    label = self._inner(label_tokens, self._script_style())
                grow = 5.5 * s + label.total
                box = Box(max(body.w, label.w), body.h + (grow if token == r"\overbrace" else 0),
                          body.d + (grow if token == r"\underbrace" else 0))
            elif token in _ONE_ARGUMENT_TEXT:
                argument, i = _group(tokens, i)
                box = Box(text_width("".join(argument), 10 * s), 7.0 * s, 2.0 * s)
            elif token in _ONE_ARGUMENT_MATH:
                argument, i = _group(tokens, i)
                body = self._inner(argument)
                box = Box(body.w, body.h + (2.0 * s if token not in (r"\mathbf", r"\mathcal", r"\mathbb")
                                            else 0), body.d)
            elif token == r"\sqrt":
                argument, i = _group(tokens, i)
                body = self._inner(argument)
                box = Box(body.w + 8.5 * s, body.h + 2.0 * s, body.d + 1.0 * s)
            elif token == r"\left":
                _, i = _group(tokens, i)
                body_tokens, i = self._until_right(tokens, i)
                body = self._inner(body_tokens)
                # The pair grows with what it encloses: a raised index or a fraction takes the next size.
                pair = 16.0 if body.d > 10 or body.h > 15 else 12.0 if body.h > 9.2 or body.d > 4.5 else 7.8
                reach = {16.0: (14.5, 9.5), 12.0: (11.5, 6.5)}.get(pair, (7.5, 2.5))  # the grown pair's height
                box = Box(body.w + pair * s, max(body.h, reach[0] * s) + 1, max(body.d, reach[1] * s) + 1)
            elif token == r"\begin":
                name_tokens, i = _group(tokens, i)
                name = "".join(name_tokens)
                body_tokens, i = _environment(tokens, i, name)
                if name == "array" and body_tokens and body_tokens[0] == "{":
                    _, skip = _group(body_tokens, 0)
                    body_tokens = body_tokens[skip:]
                box = self._grid(_split_rows(body_tokens), name)
            elif token in _BIG_OPERATORS:
                box = self._big_operator(token, tokens, i)
                i = box[1]
                box = box[0]
            elif token in _OPERATOR_NAMES:
                box = Box(text_width(token[1:], 10 * s) + 1.7 * s, 7.0 * s, 0.5 * s)
            elif token in _DOTS:
                box = Box(_DOTS[token] * s, (13.0 if token == r"\vdots" else 1.5) * s, 0.0)
            elif token in _BINARY or token in _RELATION:
                gap = (2.2 if token in _BINARY else 2.8) * s * (self.style < 2)
                glyph = 10.0 if token in _ARROWS else 7.8
                box = Box(2 * gap + glyph * s, 5.5 * s, 1.0 * s)
            elif token in "()[]|":
                box = Box(3.9 * s, 7.5 * s, 2.5 * s)
            elif token == ",":
                box = Box(4.5 * s, 1.0 * s, 2.0 * s)
            elif token == "\\\\":
                continue
            elif token.isdigit() or token == ".":
                box = Box(_DIGIT * s, 6.5 * s, 0.0)
            else:
                glyph = _WIDE_GLYPHS.get(token) or (_CAPITAL if "A" <= token <= "Z" else _SMALL if "a" <= token <= "z"
                                                    else _GLYPH)
                box = Box(glyph * s, 7.0 * s, 2.0 * s)
            w, h, d = w + box.w, max(h, box.h), max(d, box.d)
            last, stacked = box, None
        return Box(w, h, d)

    @staticmethod
    def _until_right(tokens, start) -> tuple[list[str], int]:
        depth, index = 1, start
        while index < len(tokens):
            if tokens[index] == r"\left":
                depth += 1
            elif tokens[index] == r"\right":
                depth -= 1
                if depth == 0:
                    _, after = _group(tokens, index + 1)
                    return tokens[start:index], after
            index += 1
        return tokens[start:], len(tokens)

    def _big_operator(self, token, tokens, i):
        s = self.scale
        body = Box(_BIG_OPERATORS[token] * s * (1.4 if self.style == 0 else 1.0), 7.5 * s, 2.5 * s)
        extra_w, below, above = 0.0, 0.0, 0.0
        while i < len(tokens) and tokens[i] in ("_", "^"):
            kind = tokens[i]
            argument, i = _group(tokens, i + 1)
            script = self._inner(argument, self._script_style())
            if self.style == 0:
                extra_w = max(extra_w, script.w - body.w)
                if kind == "_":
                    below = script.total + 3.0
                else:
                    above = script.total + 3.0
            else:
                extra_w += script.w
        return Box(body.w + max(extra_w, 0.0), body.h + above, body.d + below), i

    def _grid(self, rows, name) -> Box:
        s = self.scale
        inner = 1 if name in ("bmatrix", "pmatrix", "matrix", "cases", "array", "smallmatrix") else 0
        if name == "smallmatrix":
            inner = self._script_style()
        boxes = [[self._inner(cell, inner) for cell in row] for row in rows]
        columns = max((len(row) for row in boxes), default=0)
        widths = [max((row[c].w for row in boxes if c < len(row)), default=0.0) for c in range(columns)]
        gap = {"cases": 10.0, "aligned": 0.0}.get(name, 10.0)
        row_height = _ROW_HEIGHT * (0.7 if name == "smallmatrix" else 1.0)
        heights = [max(row_height, max((b.total for b in row), default=0) + 3.0) for row in boxes]
        total = sum(heights)
        width = sum(widths) + gap * max(columns - 1, 0) + _ENVIRONMENTS.get(name, 0.0)
        return Box(width * s, (total / 2 + _AXIS) * s, (total / 2 - _AXIS) * s)


@lru_cache(maxsize=8192)
def measure(math: str, display: bool = True) -> Box:
    """The estimated box of LaTeX ``math`` (display style unless ``display`` is false), in pt."""
    return _Measure(0 if display else 1).run(_tokens(math))


def split_top_level(math: str, operators: tuple[str, ...] = ("=",)) -> list[str]:
    """``math`` cut before each top-level ``operators`` token (outside braces, ``\\left..\\right`` and
    environments); the pieces joined give ``math`` back."""
    tokens = _TOKEN.findall(math)
    pieces, current, depth = [], "", 0
    for token in tokens:
        if token in ("{", r"\left", r"\begin"):
            depth += 1
        elif token in ("}", r"\right", r"\end"):
            depth -= 1
        if depth == 0 and token in operators and current.strip():
            pieces.append(current)
            current = ""
        current += token
    pieces.append(current)
    return [piece.strip() for piece in pieces if piece.strip()]


def last_group(math: str) -> tuple[str, str, str, str, str] | None:
    """``math`` as ``(before, opening, inside, closing, after)`` around its last top-level ``\\left( ...
    \\right)`` (or ``[ ... ]``) group, or None where it has none."""
    tokens = _TOKEN.findall(math)
    depth, braces, start, found = 0, 0, None, None
    for index, token in enumerate(tokens):
        braces += {"{": 1, "}": -1}.get(token, 0)
        if token == r"\left" and braces == 0:
            if depth == 0:
                start = index
            depth += 1
        elif token == r"\right" and braces == 0:
            depth -= 1
            pair = (tokens[start + 1], tokens[index + 1] if index + 1 < len(tokens) else "")
            if depth == 0 and pair in (("(", ")"), ("[", "]")):
                found = (start, index)
    if found is None:
        return None
    start, end = found
    return ("".join(tokens[:start]), tokens[start + 1], "".join(tokens[start + 2:end]), tokens[end + 1],
            "".join(tokens[end + 2:]))
