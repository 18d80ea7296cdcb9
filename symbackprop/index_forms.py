"""Convolution and pooling in index form: the sums a student writes, beside the derivation's im2col form.

Each equation is data (``IndexSum``): the array it defines, that array's indices, the indices summed over and
the factors with their index expressions. The same object prints as LaTeX (``IndexSum.latex``) and evaluates
by explicit loops over every index (``evaluate``), so the tests hold each printed sum to an independent
oracle. An image index ``s y + i`` (output position ``y``, kernel offset ``i``, stride ``s``) is a ``Tap``; a
left side indexed by taps is a scatter (each term adds to the entry it names), printed with new letters and
the condition under the sum.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from .layers import CONV_KINDS, image_window
from .printing import latex_name


@dataclass(frozen=True)
class Tap:
    """The index ``stride * position + offset`` (``offset``: a letter, or a fixed number such as the padding)."""

    stride: int
    position: str
    offset: str | int

    def latex(self) -> str:
        scaled = self.position if self.stride == 1 else f"{self.stride}{self.position}"
        return f"{scaled} + {self.offset}" if self.offset != 0 else scaled

    def value(self, env: dict) -> int:
        offset = env[self.offset] if isinstance(self.offset, str) else self.offset
        return self.stride * env[self.position] + offset


_CONDITION_SEPARATOR = r",\ "


def _index_latex(index) -> str:
    return index.latex() if isinstance(index, Tap) else index


@dataclass(frozen=True)
class Factor:
    """An entry of the array ``array`` (printed ``latex``) at ``indices``."""

    array: str
    latex: str
    indices: tuple

    def printed(self) -> str:
        return rf"{self.latex}[{', '.join(_index_latex(i) for i in self.indices)}]"


@dataclass(frozen=True)
class IndexSum:
    """``target[indices] = addend + coefficient * reduce over summed of the product of factors``; ``reduce`` is
    ``sum`` or ``max``."""

    target: str
    latex_target: str
    indices: tuple
    summed: tuple[str, ...]
    factors: tuple[Factor, ...]
    coefficient: Fraction = Fraction(1)
    addend: Factor | None = None
    reduce: str = "sum"

    def latex(self) -> tuple[str, str]:
        """The left and right sides in LaTeX."""
        letters = iter("uv" if sum(isinstance(i, Tap) for i in self.indices) == 2 else "v")
        left, conditions = [], []
        for index in self.indices:
            if isinstance(index, Tap):
                letter = next(letters)
                left.append(letter)
                conditions.append(f"{index.latex()} = {letter}")
            else:
                left.append(index)
        bound = {index.position for index in self.indices if isinstance(index, Tap)} | {
            index.offset for index in self.indices if isinstance(index, Tap) and isinstance(index.offset, str)}
        plain = [s for s in self.summed if s not in bound]
        tied = [s for s in self.summed if s in bound]
        operator = r"\max" if self.reduce == "max" else r"\sum"
        sums = f"{operator}_{{{', '.join(plain)}}} " if plain else ""
        if tied:
            under = rf"\substack{{{', '.join(tied)}: \\ {_CONDITION_SEPARATOR.join(conditions)}}}"
            sums += rf"\sum_{{{under}}} "
        coefficient = "" if self.coefficient == 1 else rf"\frac{{{self.coefficient.numerator}}}" \
                                                         rf"{{{self.coefficient.denominator}}} "
        product = r" \, ".join(factor.printed() for factor in self.factors)
        right = f"{coefficient}{sums}{product}" if self.summed else f"{coefficient}{product}"
        if self.addend is not None:
            right = f"{self.addend.printed()} + {right}"
        return rf"{self.latex_target}[{', '.join(left)}]", right


def evaluate(form: IndexSum, arrays: dict, ranges: dict, shape: tuple) -> np.ndarray:
    """``form``'s left side of shape ``shape``, computed by looping over every index in ``ranges`` (letter ->
    size) exactly as the equation is printed; ``arrays`` holds each factor's array by name."""
    letters = list(dict.fromkeys([*(i for i in form.indices if isinstance(i, str)), *form.summed,
                                  *(i.position for i in form.indices if isinstance(i, Tap))]))
    out = np.full(shape, -np.inf if form.reduce == "max" else 0.0)
    for values in itertools.product(*(range(ranges[letter]) for letter in letters)):
        env = dict(zip(letters, values))
        where = tuple(i.value(env) if isinstance(i, Tap) else env[i] for i in form.indices)
        term = float(form.coefficient)
        for factor in form.factors:
            term *= arrays[factor.array][tuple(i.value(env) if isinstance(i, Tap) else env[i]
                                               for i in factor.indices)]
        out[where] = max(out[where], term) if form.reduce == "max" else out[where] + term
    if form.addend is not None:
        for where in np.ndindex(*shape):
            env = dict(zip((i for i in form.indices if isinstance(i, str)), where))
            out[where] += arrays[form.addend.array][tuple(env[i] for i in form.addend.indices)]
    return out


# The patch picture draws at most this many cells of the padded input per side, and of the row of X_col.
PICTURE_CELLS = 9
PICTURE_ROW = 12


def patch_picture(network, l: int) -> dict:
    """What the lecture draws for convolution layer ``l``: the top left corner of one channel of its padded
    input (``rows`` x ``cols`` cells, the padding ``ph``/``pw`` shaded), the patch of output position (1, 1)
    (or (0, 0) where there is one position) at ``y0``/``x0``, and that patch's row of ``X_col``: ``taps`` cells
    of the first channel (``more``: further channels follow)."""
    window = image_window(network.spec.layers[l - 1])
    (kh, kw), (sh, sw), (ph, pw) = window.kernel, window.stride, window.padding
    Ho, Wo = window.out
    y0, x0 = sh * min(1, Ho - 1), sw * min(1, Wo - 1)
    rows, cols = window.height + 2 * ph, window.width + 2 * pw
    rows, cols = min(rows, max(PICTURE_CELLS, y0 + kh)), min(cols, max(PICTURE_CELLS, x0 + kw))
    return {"rows": rows, "cols": cols, "ph": ph, "pw": pw, "height": window.height, "width": window.width, "kh": kh, "kw": kw,
            "y0": y0, "x0": x0, "y": min(1, Ho - 1), "x": min(1, Wo - 1), "taps": min(kh * kw, PICTURE_ROW),
            "cut": kh * kw > PICTURE_ROW, "more": window.channels > 1, "patch": window.patch,
            "source": latex_name(network.layer_input(l)),
            "text": _patch_text(rows, cols, (ph, pw), (window.height, window.width), (y0, x0), (kh, kw))
            + "\n\n-> " + " ".join("#" * min(kh * kw, PICTURE_ROW))
            + (" ..." if kh * kw > PICTURE_ROW or window.channels > 1 else "")}


def _patch_text(rows, cols, padding, size, corner, kernel) -> str:
    """The patch picture as characters: ``0`` padding, ``.`` the input, ``#`` the patch."""
    def cell(r, c):
        if corner[0] <= r < corner[0] + kernel[0] and corner[1] <= c < corner[1] + kernel[1]:
            return "#"
        inside = padding[0] <= r < padding[0] + size[0] and padding[1] <= c < padding[1] + size[1]
        return "." if inside else "0"

    return "\n".join(" ".join(cell(r, c) for c in range(cols)) for r in range(rows))


def image_forms(network, l: int) -> tuple[IndexSum, ...]:
    """The index forms of image layer ``l`` (conv2d, conv1d, maxpool, avgpool): its forward sum, then each
    gradient, with the layer's own stride and padding. Array names: ``X`` (the layer's input), ``Xpad`` (it
    padded), ``W``, ``b``, ``Z`` / ``A`` (the output), ``delta`` (the output's gradient), ``M`` (max pooling's
    first-maximum indicator), ``dW``, ``db``, ``dXpad``, ``dX``."""
    layer = network.spec.layers[l - 1]
    window = image_window(layer)
    two_d = len(layer.image) == 3
    (sh, sw), (ph, pw) = window.stride, window.padding
    taps = (Tap(sh, "y", "i"), Tap(sw, "x", "j")) if two_d else (Tap(sw, "x", "j"),)
    positions = ("y", "x") if two_d else ("x",)
    offsets = ("i", "j") if two_d else ("j",)
    source = latex_name(network.layer_input(l))
    padded = ph or pw
    x_pad = rf"{source}_{{pad}}" if padded else source
    grad = rf"\frac{{\partial L}}{{\partial {source}}}"
    grad_pad = rf"\frac{{\partial L}}{{\partial {x_pad}}}" if padded else grad
    if layer.kind in CONV_KINDS:
        W, b = latex_name(f"W{l}"), latex_name(f"b{l}")
        delta, Z = latex_name(f"dZ{l}"), latex_name(f"Z{l}")
        forms = [
            IndexSum("Z", Z, ("n", "f", *positions), ("c", *offsets),
                     (Factor("W", W, ("f", "c", *offsets)), Factor("Xpad", x_pad, ("n", "c", *taps))),
                     addend=Factor("b", b, ("f",)) if layer.bias else None),
            IndexSum("dW", latex_name(f"dW{l}"), ("f", "c", *offsets), ("n", *positions),
                     (Factor("delta", delta, ("n", "f", *positions)), Factor("Xpad", x_pad, ("n", "c", *taps)))),
        ]
        if layer.bias:
            forms.append(IndexSum("db", latex_name(f"db{l}"), ("f",), ("n", *positions),
                                  (Factor("delta", delta, ("n", "f", *positions)),)))
        forms.append(IndexSum("dXpad", grad_pad, ("n", "c", *taps), ("f", *offsets, *positions),
                              (Factor("delta", delta, ("n", "f", *positions)), Factor("W", W, ("f", "c", *offsets)))))
    else:
        A, delta = latex_name(f"a{l}"), latex_name(f"da{l}")
        area = Fraction(1, window.taps)
        if layer.kind == "maxpool":
            forms = [IndexSum("A", A, ("n", "c", *positions), offsets, (Factor("Xpad", x_pad, ("n", "c", *taps)),),
                              reduce="max"),
                     IndexSum("dXpad", grad_pad, ("n", "c", *taps), (*offsets, *positions),
                              (Factor("M", "M", ("n", "c", *positions, *offsets)),
                               Factor("delta", delta, ("n", "c", *positions))))]
        else:
            forms = [IndexSum("A", A, ("n", "c", *positions), offsets, (Factor("Xpad", x_pad, ("n", "c", *taps)),),
                              coefficient=area),
                     IndexSum("dXpad", grad_pad, ("n", "c", *taps), (*offsets, *positions),
                              (Factor("delta", delta, ("n", "c", *positions)),), coefficient=area)]
    if padded:
        crop = (Tap(1, "u", ph), Tap(1, "v", pw)) if two_d else (Tap(1, "v", pw),)
        forms.append(IndexSum("dX", grad, ("n", "c", *(("u", "v") if two_d else ("v",))), (),
                              (Factor("dXpad", grad_pad, ("n", "c", *crop)),)))
    return tuple(forms)
