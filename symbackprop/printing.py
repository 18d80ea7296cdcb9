"""Printers: the network's matrix expressions as LaTeX, as NumPy code and as plain text.

One printer per target, dispatching on the expression's type (``_print_<Class>``), so no output is made by
editing another printer's strings. Names follow the lecture: ``W1`` prints as ``W^{[1]}``, ``dZ1`` as
``\\delta^{[1]}``, ``Y_pred`` as ``Y_{pred}``, batch norm's ``xhat2`` as ``\\hat{X}^{[2]}``.

Sums and broadcasts are products with all-ones matrices (``1_N^T M`` sums ``M`` over the batch, ``1_N b``
repeats a bias for every sample); the NumPy printer turns them into ``.sum(axis=..., keepdims=True)`` and
NumPy broadcasting, and a division into an elementwise product with a reciprocal prints as ``T / P``.
"""

from __future__ import annotations

import re

import sympy as sp
from sympy.printing.latex import LatexPrinter
from sympy.printing.str import StrPrinter

from .expressions import Block, Place
from .rules import activation_rule, loss_coefficient, loss_terms

_LAYERED = re.compile(r"^([A-Za-z]+)(\d+)$")
# LaTeX of layered names other than ``<letter>^{[l]}``: batch and layer norm's intermediates and parameters.
_LAYERED_LATEX = {
    "mu": r"\mu^{{[{l}]}}", "xc": r"X_{{c}}^{{[{l}]}}", "var": r"\left(\sigma^{{[{l}]}}\right)^{{2}}",
    "rstd": r"r^{{[{l}]}}", "xhat": r"\hat{{X}}^{{[{l}]}}", "gamma": r"\gamma^{{[{l}]}}",
    "beta": r"\beta^{{[{l}]}}", "alpha": r"\alpha^{{[{l}]}}",
    **{f"{base}col": rf"{base}_{{{{col}}}}^{{{{[{{l}}]}}}}" for base in "XZP"},  # a convolution's im2col matrices
    **{f"{base}{sub}": rf"{base}_{{{{{sub}}}}}^{{{{[{{l}}]}}}}" for base, subs in (("W", "qkvoxh"), ("b", "qkvoxh"))
       for sub in subs},
    "AX": r"A_{{x}}^{{[{l}]}}", "AH": r"A_{{h}}^{{[{l}]}}",
}
# A step or a head of a layer: ``h1_3`` (layer 1, step 3), ``Q2_1`` (layer 2, head 1), and the general
# ``h1_t``, ``dZ1_t+1``, ``Q2_h`` of the lectures' recurrences.
_INDEXED = re.compile(r"^([A-Za-z]+\d+)_(\d+|t|t[-+]1|h)$")


def latex_name(name: str) -> str:
    """LaTeX for a quantity or gradient name: ``W1`` -> ``W^{[1]}``, ``dW1`` -> ``\\frac{\\partial L}{...}``,
    ``h1_3`` -> ``h^{[1]}_{3}``."""
    indexed = _INDEXED.match(name)
    if indexed and (not name.startswith("d") or name.startswith("dZ")):
        base, index = latex_name(indexed.group(1)), indexed.group(2)
        if "_{" in base:  # one subscript: A_{x}^{[2]} at step 1 is A_{x,1}^{[2]}
            return re.sub(r"_\{([^{}]*)\}", lambda m: f"_{{{m.group(1)},{index}}}", base, count=1)
        return f"{base}_{{{index}}}"
    if name.startswith("d") and _INDEXED.match(name[1:]):
        return rf"\frac{{\partial L}}{{\partial {latex_name(name[1:])}}}"
    if name.startswith("dZ") and _LAYERED.match(name[1:]):
        base, layer = _LAYERED.match(name[1:]).groups()
        return rf"\delta{'_{col}' if base == 'Zcol' else ''}^{{[{layer}]}}"
    if name.startswith("d") and len(name) > 1 and name != "d":
        inner = name[1:]
        if _LAYERED.match(inner) or inner in ("Y_pred", "X") or "_" not in inner:
            return rf"\frac{{\partial L}}{{\partial {latex_name(inner)}}}"
    match = _LAYERED.match(name)
    if match:
        base, layer = match.groups()
        return _LAYERED_LATEX.get(base, "{base}^{{[{l}]}}").format(base=base, l=layer)
    if "_" in name:
        base, _, rest = name.partition("_")
        rest = rest.replace("_", r"\_")
        return rf"{base}_{{{rest}}}"
    return name


def text_name(name: str) -> str:
    """Plain-text (Unicode) name for comments: ``dZ1`` -> ``δ1``, ``dW1`` -> ``dL/dW1``."""
    if name.startswith("dZ") and (_LAYERED.match(name[1:]) or _INDEXED.match(name[1:])):
        return f"δ{name[2:]}"
    if name.startswith("d") and len(name) > 1 and (_LAYERED.match(name[1:]) or _INDEXED.match(name[1:])
                                                   or name[1:] in ("Y_pred", "X")):
        return f"dL/d{name[1:]}"
    return name


def _is_negative(term) -> bool:
    """A product whose number has a minus sign (``-N/(N - 1)`` too, whose sign SymPy cannot decide)."""
    return isinstance(term, sp.MatMul) and term.as_coeff_mmul()[0].could_extract_minus_sign()


def _flat_coeff_matrices(expr) -> tuple:
    """A product's number and matrix factors, with the numbers of nested products (``(1/N) (-H)``) pulled out
    front, so that no factor prints with its own sign in the middle of a product."""
    coeff, matrices = expr.as_coeff_matrices()
    flat = []
    for matrix in matrices:
        if isinstance(matrix, sp.MatMul):
            inner_coeff, inner = _flat_coeff_matrices(matrix)
            coeff *= inner_coeff
            flat.extend(inner)
        else:
            flat.append(matrix)
    return coeff, flat


def _is_reciprocal(factor) -> bool:
    return isinstance(factor, sp.HadamardPower) and factor.exp.is_negative


def _is_gradient(arg) -> bool:
    return isinstance(arg, sp.MatrixSymbol) and arg.name.startswith("d") and len(arg.name) > 1


def _factor_order(arg) -> int:
    """Where a factor prints in an elementwise product: the upstream gradient first (``dA ⊙ f'(Z)``), then
    other quantities, then derivatives and broadcasts."""
    if _is_gradient(arg):
        return 0
    if type(arg).__name__ == "Elementwise" or (isinstance(arg, sp.MatMul) and arg.has(sp.OneMatrix)):
        return 2
    return 1


def _term_order(term) -> tuple:
    """Where a term prints in a sum: negative terms last, terms without any gradient (an L2 penalty's
    ``lambda W``) after those that carry one, and constants (``+ eps``) after everything else."""
    has_gradient = any(_is_gradient(symbol) for symbol in term.atoms(sp.MatrixSymbol))
    return _is_negative(term), not has_gradient, is_broadcast(term), _constant(term) is not None


def is_broadcast(expr) -> bool:
    """A vector repeated along the batch or the features: ``1_N b``, ``b 1_N^T``."""
    if not isinstance(expr, sp.MatMul):
        return False
    _, matrices = _flat_coeff_matrices(expr)
    return len(matrices) == 2 and sum(isinstance(m, sp.OneMatrix) for m in matrices) == 1


def _constant(expr):
    """The number ``c`` of a constant matrix ``c 1`` (every entry ``c``), else None."""
    if isinstance(expr, sp.OneMatrix):
        return sp.Integer(1)
    if isinstance(expr, sp.MatMul):
        coeff, matrices = _flat_coeff_matrices(expr)
        if all(isinstance(m, sp.OneMatrix) for m in matrices) and coeff.is_number:
            return coeff
    return None


def _decimal(value) -> str:
    """A constant as a short decimal (``1e-05``) when it is not a simple fraction."""
    value = sp.nsimplify(value)
    return str(value) if value.is_Integer or (value.is_Rational and value.q <= 100) else f"{float(value):g}"


def concatenated(expr):
    """The blocks of a sum of ``Place`` terms that fill every block (a concatenation), in order, and the axis;
    else None. A transposed ``Place`` (SymPy moves a transpose into a sum) is the transposed block placed
    across; terms placed in the same block are summed there."""
    args = [Place(a.arg.arg.T, a.arg.index, a.arg.count, 1 - a.arg.axis)
            if isinstance(a, sp.Transpose) and isinstance(a.arg, Place) else a for a in expr.args]
    if not (all(isinstance(a, Place) for a in args) and len({(a.count, a.axis) for a in args}) == 1):
        return None
    count, axis = args[0].count, args[0].axis
    blocks = [[a.arg for a in args if a.index == index] for index in range(count)]
    if not all(blocks):
        return None
    # several terms placed in one block (an LSTM step's gates, each placed in its columns) add up there
    return [block[0] if len(block) == 1 else sp.MatAdd(*block) for block in blocks], axis


class _MatrixLayout:
    """What the printers share: term order (``Y_pred - Y_true``, ``dA ⊙ f'(Z)``), parentheses, divisions."""

    hadamard = " * "
    divide = " / "
    grouped = (sp.MatAdd, sp.HadamardProduct)

    def _print_MatAdd(self, expr):
        blocks = concatenated(expr)
        if blocks is not None:
            return self._concatenation(*blocks)
        terms = sorted(expr.args, key=_term_order)
        out = self._print(terms[0])
        for term in terms[1:]:
            if _is_negative(term):
                out += f" - {self._operand_of_sum(-term)}"
            else:
                out += f" + {self._print(term)}"
        return out

    def _operand_of_sum(self, term):
        text = self._print(term)
        return self._parenthesize_group(text) if isinstance(term, sp.MatAdd) else text

    def _print_HadamardProduct(self, expr):
        # The upstream gradient first, the local derivative f'(Z) second, as the derivation reads.
        args = sorted(expr.args, key=_factor_order)
        numerator = [arg for arg in args if not _is_reciprocal(arg)]
        denominator = [arg.base if arg.exp == -1 else sp.HadamardPower(arg.base, -arg.exp)
                       for arg in args if _is_reciprocal(arg)]
        text = self.hadamard.join(self._operand(arg) for arg in numerator) if numerator else self._one()
        if denominator:
            below = self.hadamard.join(self._operand(arg) for arg in denominator)
            text = f"{self._grouped_if(text, len(numerator) > 1)}{self.divide}{self._grouped_if(below, len(denominator) > 1)}"
        return text

    def _grouped_if(self, text, condition):
        return self._parenthesize_group(text) if condition else text

    def _one(self):
        return "1"

    def _operand(self, expr):
        text = self._print(expr)
        return self._parenthesize_group(text) if self._is_group(expr) else text

    def _is_group(self, expr) -> bool:
        """Whether ``expr`` needs parentheses as an operand: sums (not a concatenation, which has its own
        brackets), products of several matrices."""
        if isinstance(expr, sp.MatAdd) and concatenated(expr) is not None:
            return False
        if isinstance(expr, sp.MatMul) and not isinstance(expr, self.grouped):
            return len(_flat_coeff_matrices(expr)[1]) > 1
        return isinstance(expr, self.grouped)

    def _parenthesize_group(self, text):
        return f"({text})"

    def _coefficient(self, coeff, body):
        if coeff == 1:
            return body
        if coeff == -1:
            return "-" + body
        return self._scaled(coeff, body)


class MathPrinter(_MatrixLayout, LatexPrinter):
    """LaTeX in the lecture's notation: ``X^{\\top}``, ``\\odot`` for the elementwise product, ``\\mathbf{1}_N``."""

    def _print_MatrixSymbol(self, expr):
        return latex_name(expr.name)

    def _print_Symbol(self, expr, style="plain"):
        if expr.name.startswith("n_"):
            return f"n_{{{expr.name[2:]}}}"
        return super()._print_Symbol(expr, style)

    def _print_Transpose(self, expr):
        arg = expr.arg
        if isinstance(arg, sp.MatrixSymbol):
            text = self._print(arg)
            if text.endswith("]}") and "^{" in text and not text.startswith(r"\frac"):
                return text[:-1] + r"\top}"
            indexed = re.fullmatch(r"(.*\])\}(_\{[^{}]*\})", text)  # h^{[1]}_{2} -> h^{[1]\top}_{2}
            if indexed and not text.startswith(r"\frac"):
                return indexed.group(1) + r"\top}" + indexed.group(2)
            return f"{{{text}}}^{{\\top}}" if "^" in text else f"{text}^{{\\top}}"
        return rf"\left({self._print(arg)}\right)^{{\top}}"

    def _print_OneMatrix(self, expr):
        rows, cols = expr.shape
        if cols == 1:
            return rf"\mathbf{{1}}_{{{self._print(rows)}}}"
        if rows == 1:
            return rf"\mathbf{{1}}_{{{self._print(cols)}}}^{{\top}}"
        if rows == cols:
            return rf"\mathbf{{1}}_{{{self._print(rows)}}} \mathbf{{1}}_{{{self._print(rows)}}}^{{\top}}"
        return r"\mathbf{1}"

    hadamard = r" \odot "
    divide = r" \oslash "

    def _one(self):
        return r"\mathbf{1}"

    def _print_MatMul(self, expr):
        coeff, matrices = _flat_coeff_matrices(expr)
        constant = _constant(expr)
        if constant is not None:
            text = _decimal(constant)
            if "e" in text:
                mantissa, exponent = text.split("e")
                return ("" if mantissa == "1" else mantissa + r" \cdot ") + f"10^{{{int(exponent)}}}"
            return self._print(sp.nsimplify(text))
        return self._coefficient(coeff, " ".join(self._operand(m) for m in matrices))

    def _scaled(self, coeff, body):
        return f"{self._print(coeff)} {body}"

    def _parenthesize_group(self, text):
        return rf"\left({text}\right)"

    def _is_group(self, expr) -> bool:
        # A negative factor of an elementwise product is bracketed: ``G \odot \left(-\frac{1}{2} r\right)``.
        return super()._is_group(expr) or _is_negative(expr)

    def _print_HadamardPower(self, expr):
        return rf"\left({self._print(expr.base)}\right)^{{\circ {self._print(expr.exp)}}}"

    def _print_Elementwise(self, expr):
        if expr.activation == "identity" and expr.order == 0:
            return self._print(expr.arg)
        rule = activation_rule(expr.activation)
        if rule.latex_call and expr.order == 0:
            return rule.latex_call.format(z=self._print(expr.arg))
        prime = "'" if expr.order else ""
        return rf"{rule.latex}{prime}\left({self._print(expr.arg)}\right)"

    def _print_Exp(self, expr):
        return rf"\exp\left({self._print(expr.arg)}\right)"

    def _print_Log(self, expr):
        return rf"\log\left({self._print(expr.arg)}\right)"

    def _print_Sigmoid(self, expr):
        return rf"\sigma\left({self._print(expr.arg)}\right)"

    def _print_Softmax(self, expr):
        return rf"\operatorname{{softmax}}\left({self._print(expr.arg)}\right)"

    def _print_CausalSoftmax(self, expr):
        return rf"\operatorname{{softmax}}_{{\text{{causal}}}}\left({self._print(expr.arg)}\right)"

    def _print_Block(self, expr):
        inner = self._print(expr.arg)
        inner = inner if isinstance(expr.arg, sp.MatrixSymbol) else rf"\left({inner}\right)"
        if expr.axis == 0:
            return rf"{{{inner}}}_{{\langle {expr.index + 1} \rangle}}"
        return rf"{{{inner}}}_{{[:,\,{expr.index + 1}]}}"

    def _print_Place(self, expr):
        where = "rows" if expr.axis == 0 else "cols"
        return rf"\operatorname{{place}}^{{{where}}}_{{{expr.index + 1}/{expr.count}}}\left({self._print(expr.arg)}\right)"

    def _concatenation(self, blocks, axis):
        if axis == 1:
            return r"\left[\, " + r" \;\big|\; ".join(self._print(b) for b in blocks) + r" \,\right]"
        return r"\begin{bmatrix} " + r" \\ ".join(self._print(b) for b in blocks) + r" \end{bmatrix}"

    def _print_LogSoftmax(self, expr):
        return rf"\log\operatorname{{softmax}}\left({self._print(expr.arg)}\right)"

    def _print_Im2col(self, expr):
        return rf"\operatorname{{im2col}}\left({self._print(expr.arg)}\right)"

    def _print_Col2im(self, expr):
        return rf"\operatorname{{col2im}}\left({self._print(expr.arg)}\right)"

    def _print_Fold(self, expr):
        return rf"\operatorname{{fold}}\left({self._print(expr.arg)}\right)"

    def _print_Unfold(self, expr):
        return rf"\operatorname{{unfold}}\left({self._print(expr.arg)}\right)"

    def _print_RowMax(self, expr):
        return rf"\operatorname{{rowmax}}\left({self._print(expr.arg)}\right)"

    def _print_MaxMask(self, expr):
        # a bold 1, the indicator: msbm (amssymb's \mathbb) has no blackboard digits
        return rf"\mathbf{{1}}_{{\operatorname{{argmax}}}}\left({self._print(expr.arg)}\right)"

    def _print_LossValue(self, expr):
        settings, rule = expr.settings, expr.rule
        terms = loss_terms(expr)
        N = terms.Y.shape[0] if terms.batch_first else terms.Y.shape[1]
        coefficient = self._print(loss_coefficient(settings, N, terms.k))
        text = rf"{rule.latex_sign}{'' if coefficient == '1' else coefficient + ' '}\sum_{{i,j}} {rule.latex_term}"
        if expr.weights:
            text += rf" + {penalty_coefficient(settings)} \sum_{{l}} \left\lVert W^{{[l]}} \right\rVert_{{F}}^{{2}}"
        return text.replace(r"\Delta", self._print(sp.nsimplify(settings.parameters.get("margin", 1))))


class TextPrinter(_MatrixLayout, StrPrinter):
    """Compact Unicode text for code comments: ``a2ᵀ δ3``, ``⊙``, ``relu'(Z1)``."""

    def _print_MatrixSymbol(self, expr):
        return text_name(expr.name)

    def _print_Transpose(self, expr):
        arg = expr.arg
        return f"{self._print(arg)}ᵀ" if isinstance(arg, sp.MatrixSymbol) else f"({self._print(arg)})ᵀ"

    def _print_OneMatrix(self, expr):
        rows, cols = expr.shape
        return "1ᵀ" if rows == 1 else "1" if cols == 1 or rows != cols else "1 1ᵀ"

    hadamard = " ⊙ "
    divide = " ⊘ "

    def _print_MatMul(self, expr):
        coeff, matrices = _flat_coeff_matrices(expr)
        constant = _constant(expr)
        if constant is not None:
            return _decimal(constant)
        return self._coefficient(coeff, " ".join(self._operand(m) for m in matrices))

    def _scaled(self, coeff, body):
        text = self._print(coeff)
        return f"{text} {body}" if coeff.is_Symbol or coeff.is_Integer else f"({text}) {body}"

    def _print_HadamardPower(self, expr):
        return f"{self._operand(expr.base)}^{self._print(expr.exp)}"

    def _print_LossValue(self, expr):
        return self._print(expr.definition)  # the loss as the 1 x 1 matrix it is

    def _print_Elementwise(self, expr):
        if expr.activation == "identity" and expr.order == 0:
            return self._print(expr.arg)
        return f"{activation_rule(expr.activation).name}{chr(39) if expr.order else ''}({self._print(expr.arg)})"

    def _print_Exp(self, expr):
        return f"exp({self._print(expr.arg)})"

    def _print_Log(self, expr):
        return f"log({self._print(expr.arg)})"

    def _print_Sigmoid(self, expr):
        return f"sigmoid({self._print(expr.arg)})"

    def _print_Softmax(self, expr):
        return f"softmax({self._print(expr.arg)})"

    def _print_CausalSoftmax(self, expr):
        return f"causal_softmax({self._print(expr.arg)})"

    def _print_LogSoftmax(self, expr):
        return f"log_softmax({self._print(expr.arg)})"

    def _print_Block(self, expr):
        where = f"t={expr.index + 1}" if expr.axis == 0 else f"block {expr.index + 1}/{expr.count}"
        return f"{self._operand(expr.arg)}[{where}]"

    def _print_Place(self, expr):
        where = "rows" if expr.axis == 0 else "columns"
        return f"place({self._print(expr.arg)} at {where} {expr.index + 1}/{expr.count})"

    def _print_Im2col(self, expr):
        return f"im2col({self._print(expr.arg)})"

    def _print_Col2im(self, expr):
        return f"col2im({self._print(expr.arg)})"

    def _print_Fold(self, expr):
        return f"fold({self._print(expr.arg)})"

    def _print_Unfold(self, expr):
        return f"unfold({self._print(expr.arg)})"

    def _print_RowMax(self, expr):
        return f"rowmax({self._print(expr.arg)})"

    def _print_MaxMask(self, expr):
        return f"argmax_mask({self._print(expr.arg)})"

    def _concatenation(self, blocks, axis):
        return "[" + (" | " if axis == 1 else "; ").join(self._print(b) for b in blocks) + "]"


# The largest whole number the code printers write as an integer literal; beyond it, a float literal: JAX reads a
# Python int as int32 (unless float64 is enabled), PyTorch and NumPy as int64, and overflow where the constant (an
# ELU alpha of 1e19, an L2 coefficient) is meant as a float anyway.
LARGEST_INT_LITERAL = 2**31 - 1


def float_literal(value: int) -> str:
    """A whole number as a Python float literal (``1e+19``); beyond the largest float, as it is (Python's own
    arithmetic keeps it exact, as in ``1 / (5...0*N)`` for a loss scaled by 1e-320)."""
    try:
        return repr(float(value))
    except OverflowError:
        return str(value)


class NumPyPrinter(_MatrixLayout, StrPrinter):
    """NumPy code for a formula, written against the generated module's local names.

    Sizes print as the expressions ``sizes`` gives them (``N`` -> ``N``, ``n_3`` -> ``3``); elementwise
    functions call the module's helpers (``names`` maps each ``Elementwise`` node's function and order to
    the helper's name); ``1ᵀ M`` prints as a sum over the batch and ``1 b`` as ``b`` (broadcast).
    ``outputs`` maps a pre-activation symbol to its activation's name: a derivative whose rule can be written
    in the output prints as the ``from_output`` helper applied to it. ``local_gradients`` maps a
    pre-activation symbol to the variable holding ``f'(Z)`` that the forward pass computed and kept. ``ids``
    names the inputs that are one-hot in the derivation and integer ids in the code: a product with one is a
    gather (``C[X[:, 0]]``), with its transpose a scatter-add (``scatter_rows``). ``positions`` (the size
    symbol counting an attention network's positions) makes the code take a batch of sequences: every value
    with one row per position holds the rows of all sequences, one after another, (B T, n), so products with
    weights and reductions over positions (a parameter's gradient) cover the whole batch in one step; a value
    with one row and one column per position (attention's scores and weights) is (B, T, T), and a product that
    reads or makes one views the row-form operands per sequence (``_seq``) and flattens a row-form result
    (``_flat``). Axes count from the end. With
    ``in_place``, ``dA ⊙ f'(Z)`` prints as an update of the upstream gradient's array
    (``np.multiply(dA, f'(Z), out=dA)``), which the caller must own. With ``fused`` (the NumPy module's own
    lines, not another library's), arithmetic on full arrays costs as few passes over them as NumPy allows: a
    sum over one axis of a product of two arrays is one ``np.einsum`` (no product array), and numbers and
    broadcast vectors multiply each other before they meet a full array (see ``_terms``).
    """

    def __init__(self, sizes: dict | None = None, outputs: dict | None = None, in_place: bool = False,
                 local_gradients: dict | None = None, names: dict | None = None, ids=frozenset(),
                 positions: sp.Symbol | None = None, fused: bool = False):
        super().__init__()
        self.fused = fused
        self.ids = ids
        self.positions = positions
        self.sizes = sizes or {}
        self.outputs = outputs or {}
        self.in_place = in_place
        self.local_gradients = local_gradients or {}
        self.names = names or {}

    def _print_Symbol(self, expr):
        return str(self.sizes.get(expr, expr.name))

    def _print_Integer(self, expr):
        return super()._print_Integer(expr) if abs(expr.p) <= LARGEST_INT_LITERAL else float_literal(expr.p)

    def _print_MatrixSymbol(self, expr):
        return expr.name

    def _print_Transpose(self, expr):
        if self._per_sequence(expr.arg):
            return f"{self._operand(expr.arg)}.swapaxes(-1, -2)"
        return f"{self._operand(expr.arg)}.T"

    def _axis(self, axis: int) -> int:
        """A matrix axis as the code writes it: from the end for a batch of sequences."""
        return axis - 2 if self.positions is not None else axis

    def _per_sequence(self, expr) -> bool:
        """Whether ``expr`` is a (B, T, T) array in a batch of sequences: one row and one column per position."""
        return self.positions is not None and tuple(expr.shape) == (self.positions, self.positions)

    def _sequence_product(self, coeff, matrices) -> str | None:
        """A product that reads or makes a per-sequence (T x T) value, computed per sequence, else None."""
        if not any(self._per_sequence(m) for m in (*matrices, sp.MatMul(*matrices))):
            return None
        T = self.positions

        def view(m):
            if self._per_sequence(m) or T not in (m.T if isinstance(m, sp.Transpose) else m).shape[:1]:
                return self._operand(m)
            if isinstance(m, sp.Transpose):
                return f"_seq({self._print(m.arg)}, {self._print(T)}).swapaxes(-1, -2)"
            return f"_seq({self._print(m)}, {self._print(T)})"

        body = " @ ".join(view(m) for m in matrices)
        if not self._per_sequence(sp.MatMul(*matrices)):
            body = f"_flat({body})"
        return self._coefficient(coeff, body)

    def _print_OneMatrix(self, expr):
        return "1"  # in a sum or a product with a full matrix, a scalar 1 broadcasts the same way

    def _print_MatMul(self, expr):
        coeff, matrices = _flat_coeff_matrices(expr)
        matrices = list(matrices)
        if all(isinstance(m, sp.OneMatrix) for m in matrices):
            return self._print(coeff) if coeff != 1 else "1"
        if self.fused and coeff != 1 and len(matrices) == 1:
            return self._print_terms(self._terms(expr))
        if self.positions is not None and not any(isinstance(m, sp.OneMatrix) for m in matrices):
            sequence = self._sequence_product(coeff, matrices)
            if sequence is not None:
                return sequence
        if len(matrices) == 2 and coeff == 1:  # a one-hot input times a matrix: a gather or a scatter-add
            first, second = matrices
            if self._ids(first) is not None:
                return f"{self._operand(second)}[{self._ids(first)}]"
            if isinstance(first, sp.Transpose) and self._ids(first.arg) is not None:
                return f"scatter_rows({self._ids(first.arg)}, {self._print(second)}, {self._print(first.shape[0])})"
        head, tail = [], []  # reductions to apply after the product of the middle factors
        while len(matrices) > 1 and isinstance(matrices[0], sp.OneMatrix):
            rows, _ = matrices.pop(0).shape
            head.append(None if rows != 1 and matrices[0].shape[0] == 1 else 0)
        while len(matrices) > 1 and isinstance(matrices[-1], sp.OneMatrix):
            _, cols = matrices.pop().shape
            tail.append(None if cols != 1 and matrices[-1].shape[1] == 1 else 1)
        reductions = [axis for axis in (*head, *tail) if axis is not None]
        einsum = self._sum_of_product(matrices, reductions)
        if einsum is not None:
            return self._coefficient(coeff, einsum)
        body = " @ ".join(self._operand(m) for m in matrices)
        if reductions:
            body = self._operand_text(body, len(matrices) > 1)
            for axis in reductions:
                summed = matrices[0].shape[0] if axis == 0 else matrices[-1].shape[1]
                if coeff == 1 / summed and len(reductions) == 1:
                    coeff, method = 1, "mean"
                else:
                    method = "sum"
                body = f"{body}.{method}(axis={self._axis(axis)}, keepdims=True)"
        return self._coefficient(coeff, body)

    def _operand_text(self, text, compound):
        return f"({text})" if compound else text

    def _operand(self, expr):
        text = self._print(expr)
        return text if re.fullmatch(r"[\w.]+", text) else super()._operand(expr)

    def _is_group(self, expr) -> bool:
        if self.fused and isinstance(expr, sp.MatMul):  # a sum or broadcast of one array: ``M.sum(...)``, ``b``
            coeff, matrices = _flat_coeff_matrices(expr)
            if coeff == 1 and sum(not isinstance(m, sp.OneMatrix) for m in matrices) == 1:
                return False
        return super()._is_group(expr)

    def _scaled(self, coeff, body):
        return f"{self._print(coeff)} * {body}"

    def _print_Mul(self, expr):
        num, den = expr.as_numer_denom()
        if den == 1:
            return super()._print_Mul(expr)
        below = self._print(den)
        return f"{self._print(num)} / {below if den.is_Atom else f'({below})'}"

    grouped = (sp.MatAdd, sp.HadamardProduct, sp.MatMul, sp.HadamardPower)

    def _print_HadamardProduct(self, expr):
        upstream, *factors = sorted(expr.args, key=_factor_order)
        if not (self.in_place and isinstance(upstream, sp.MatrixSymbol) and len(factors) == 1
                and not _is_reciprocal(factors[0])):
            return self._print_terms(self._terms(expr)) if self.fused else super()._print_HadamardProduct(expr)
        return self._multiply_in_place(self._print(upstream), self._print(factors[0]))

    def _print_MatAdd(self, expr):
        if self.fused and concatenated(expr) is None:
            return self._print_terms(self._terms(expr))
        return super()._print_MatAdd(expr)

    def _sum_of_product(self, matrices, reductions) -> str | None:
        """``1ᵀ (A ⊙ B)`` as one ``np.einsum`` pass over A and B, ``(A ⊙ B) 1`` as the module's ``row_dots`` (a
        batched matrix product: 0.05 against einsum's 0.11 ms on a cached 512 x 1024 float32 pair), when fused;
        else None."""
        if not (self.fused and self.positions is None and len(matrices) == 1 and reductions in ([0], [1])):
            return None
        product = matrices[0]
        if isinstance(product, sp.HadamardPower) and product.exp == 2:
            factors = [product.base, product.base]
        elif isinstance(product, sp.HadamardProduct) and len(product.args) == 2:
            factors = list(product.args)
        else:
            return None
        if any(spread_vector(f) or _constant(f) is not None or _is_reciprocal(f) for f in factors):
            return None
        a, b = (self._print(f) for f in factors)
        return f'np.einsum("ij,ij->j", {a}, {b})[None]' if reductions == [0] else f"row_dots({a}, {b})"

    def _terms(self, expr) -> list[tuple]:
        """``expr`` as a sum of terms ``(number, full arrays, broadcast vectors)``: each term costs NumPy one pass
        per full array and one for its numbers and vectors together (multiplied first, as small arrays). A
        number or vector that multiplies a sum is spread over the sum's terms where that saves a pass (every
        full term of the sum already pays for a factor of its own: batch norm's
        ``rstd/N ⊙ (N dxhat - 1 s - xhat ⊙ 1 t)`` -> ``dxhat ⊙ rstd - xhat ⊙ (rstd t / N) - rstd s / N``)."""
        if isinstance(expr, sp.MatAdd) and concatenated(expr) is None:
            return [term for arg in expr.args for term in self._terms(arg)]
        spread = spread_vector(expr)
        if spread is not None:
            return [(spread[0], [], [spread[1]])]
        if _constant(expr) is not None:
            return [(_constant(expr), [], [])]
        if isinstance(expr, sp.MatMul):
            coeff, matrices = _flat_coeff_matrices(expr)
            if len(matrices) == 1:
                return _spread_over(coeff, [], matrices[0], self._terms(matrices[0]))
            return [(coeff, [sp.MatMul(*matrices)], [])]
        if isinstance(expr, sp.HadamardProduct):
            coeff, fulls, rows, sums = sp.Integer(1), [], [], []
            for arg in sorted(expr.args, key=_factor_order):
                terms = self._terms(arg)
                if len(terms) == 1:
                    coeff, fulls, rows = coeff * terms[0][0], fulls + terms[0][1], rows + terms[0][2]
                else:
                    sums.append(arg)
            if len(sums) == 1 and not fulls:
                return _spread_over(coeff, rows, sums[0], self._terms(sums[0]))
            return [(coeff, fulls + sums, rows)]
        return [(sp.Integer(1), [expr], [])]

    def _print_terms(self, terms) -> str:
        """A sum of ``_terms``: full terms first (a positive one leading), each scaled once, then the broadcast
        ones."""
        terms = sorted(terms, key=lambda term: (not term[1], term[0].could_extract_minus_sign()))
        out = ""
        for coeff, fulls, rows in terms:
            negative = coeff.could_extract_minus_sign()
            text = self._term(-coeff if negative and out else coeff, fulls, rows)
            out = (f"{out} - {text}" if negative else f"{out} + {text}") if out else text
        return out

    def _term(self, coeff, fulls, rows) -> str:
        factors = " * ".join(self._operand(f) for f in fulls)
        vector = " * ".join(self._operand(r) for r in rows)
        if not fulls:
            return self._coefficient(coeff, vector) if rows else self._print(coeff)
        if not rows:
            return self._coefficient(coeff, factors)
        scale = self._coefficient(coeff, vector)
        return f"{factors} * {self._grouped_if(scale, len(rows) > 1 or coeff != 1)}"

    def _multiply_in_place(self, name: str, factor: str) -> str:
        """``name ⊙ factor`` written into ``name``'s own array (a printer for another array library overrides it)."""
        return f"np.multiply({name}, {factor}, out={name})"

    def _print_HadamardPower(self, expr):
        exponent = int(expr.exp)
        if exponent < 0:
            power = self._print(sp.HadamardPower(expr.base, -exponent)) if exponent != -1 else self._operand(expr.base)
            return f"(1 / {power})"
        return f"{self._operand(expr.base)} ** {exponent}"

    def _print_Elementwise(self, expr):
        if expr.activation == "identity" and expr.order == 0:
            return self._print(expr.arg)
        if expr.order == 1 and expr.arg in self.local_gradients:
            return self.local_gradients[expr.arg]
        if expr.order == 1 and expr.arg in self.outputs and activation_rule(expr.activation).numpy_derivative_from_output:
            return f"{self.function(expr, from_output=True)}({self.outputs[expr.arg]})"
        return f"{self.function(expr)}({self._print(expr.arg)})"

    def function(self, node, from_output: bool = False) -> str:
        """The helper the module defines for an ``Elementwise`` node (``relu``, ``relu_grad``, ...)."""
        key = (node.key, node.order, from_output)
        return self.names.get(key) or function_name(node, from_output)

    def _print_Exp(self, expr):
        return f"np.exp({self._print(expr.arg)})"

    def _print_Log(self, expr):
        return f"np.log({self._print(expr.arg)})"

    def _print_Sigmoid(self, expr):
        return f"sigmoid({self._print(expr.arg)})"

    def _print_Softmax(self, expr):
        return f"softmax({self._print(expr.arg)}, axis={self._axis(expr.axis)})"

    def _print_LogSoftmax(self, expr):
        return f"log_softmax({self._print(expr.arg)}, axis={self._axis(expr.axis)})"

    def _print_CausalSoftmax(self, expr):
        return f"causal_softmax({self._print(expr.arg)})"

    def _print_Pow(self, expr, rational=False):
        # A Python float, not a NumPy one, so that float32 arrays stay float32.
        if expr.exp in (sp.S.Half, -sp.S.Half):
            return f"{self._print(expr.base)} ** {'-' if expr.exp < 0 else ''}0.5"
        return super()._print_Pow(expr, rational)

    def _slice(self, expr, width) -> str:
        """``start:stop`` of block ``expr.index`` of the given width (a size expression)."""
        numbers = {k: v for k, v in self.sizes.items() if isinstance(v, int)}
        start, stop = (sp.sympify(i * width).xreplace(numbers) for i in (expr.index, expr.index + 1))
        return f"{self._print(start) if start != 0 else ''}:{self._print(stop)}"

    def _print_Block(self, expr):
        if self._ids(expr) is not None:
            return self._ids(expr)
        rows, cols = expr.shape
        lead = "..., " if self.positions is not None else ""
        if expr.axis == 0:
            return f"{self._operand(expr.arg)}[{lead}{self._slice(expr, rows)}{', :' if lead else ''}]"
        return f"{self._operand(expr.arg)}[{lead or ':, '}{self._slice(expr, cols)}]"

    def _print_Place(self, expr):
        return f"place({self._print(expr.arg)}, {expr.index}, {expr.count}, axis={self._axis(expr.axis)})"

    def _print_Im2col(self, expr):
        return f"im2col({self._print(expr.arg)}, {expr.window.keywords()})"

    def _print_Col2im(self, expr):
        return f"col2im({self._print(expr.arg)}, {expr.window.keywords()})"

    def _print_Fold(self, expr):
        return f"fold({self._print(expr.arg)}, {expr.positions})"

    def _print_Unfold(self, expr):
        return f"unfold({self._print(expr.arg)}, {expr.positions})"

    def _print_RowMax(self, expr):
        if self.fused:  # the module's own helper, faster on short rows
            return f"row_max({self._print(expr.arg)})"
        return f"{self._operand(expr.arg)}.max(axis=1, keepdims=True)"

    def _print_MaxMask(self, expr):
        return f"first_max_mask({self._print(expr.arg)})"

    def _ids(self, expr):
        """The NumPy ids behind a one-hot input or one of its column blocks (``X[:, 1]``), else None."""
        if isinstance(expr, sp.MatrixSymbol) and expr.name in self.ids:
            return f"{expr.name}[:, 0]"
        if isinstance(expr, Block) and expr.axis == 1 and isinstance(expr.arg, sp.MatrixSymbol) \
                and expr.arg.name in self.ids:
            return f"{expr.arg.name}[:, {expr.index}]"
        return None

    def _concatenation(self, blocks, axis):
        return f"np.concatenate([{', '.join(self._print(b) for b in blocks)}], axis={self._axis(axis)})"


def spread_vector(expr):
    """``(c, v, axis)`` for a vector ``v`` repeated along ``axis`` of a full array (``c 1 v``: axis 0, ``c v 1ᵀ``:
    axis 1; ``1 1ᵀ M``: ``v = 1ᵀ M``, a sum repeated), else None."""
    if not isinstance(expr, sp.MatMul):
        return None
    coeff, matrices = _flat_coeff_matrices(expr)
    if len(matrices) < 2:
        return None
    first, last = matrices[0], matrices[-1]
    if isinstance(first, sp.OneMatrix) and first.shape[0] != 1:
        rest, axis = [sp.OneMatrix(1, first.shape[1])] * (first.shape[1] != 1) + list(matrices[1:]), 0
    elif isinstance(last, sp.OneMatrix) and last.shape[1] != 1:
        rest, axis = list(matrices[:-1]) + [sp.OneMatrix(last.shape[0], 1)] * (last.shape[0] != 1), 1
    else:
        return None
    return coeff, rest[0] if len(rest) == 1 else sp.MatMul(*rest), axis


def _spread_over(coeff, rows, whole, terms) -> list[tuple]:
    """``coeff ⊙ rows ⊙ whole`` as terms: spread over ``whole``'s ``terms`` when every full one already has a
    number or vector of its own to merge them with (a sign alone spreads for free), else one term."""
    free = not rows and coeff in (1, -1)
    if free or all(t_rows or t_coeff not in (1, -1) for t_coeff, fulls, t_rows in terms if fulls):
        return [(coeff * t_coeff, fulls, rows + t_rows) for t_coeff, fulls, t_rows in terms]
    return [(coeff, [whole], rows)]


def function_name(node, from_output: bool = False) -> str:
    """A readable default name for an Elementwise node's helper: ``relu``, ``relu_grad``,
    ``sigmoid_grad_from_output``. The module's own names (``rendering.py``) make them unique and valid."""
    return f"{node.activation}{'_grad' if node.order else ''}{'_from_output' if from_output else ''}"


def penalty_coefficient(settings) -> str:
    """The L2 penalty's factor as the spec states it: ``l2 / 2``, over ``N`` for ``l2_scale = batch_mean``."""
    return rf"\frac{{{settings.l2:g}}}{{{'2 N' if settings.l2_scale == 'batch_mean' else '2'}}}"


def penalty_latex(settings, weight: str) -> str:
    r"""One weight's share of the L2 penalty: ``\frac{0.001}{2} \lVert W^{[1]} \rVert_F^2``."""
    return rf"{penalty_coefficient(settings)} \left\lVert {latex_name(weight)} \right\rVert_{{F}}^{{2}}"


def latex(expr) -> str:
    return MathPrinter().doprint(expr)


def text(expr) -> str:
    return TextPrinter().doprint(expr)


def numpy_code(expr, sizes: dict | None = None, outputs: dict | None = None, in_place: bool = False,
               local_gradients: dict | None = None, names: dict | None = None) -> str:
    return NumPyPrinter(sizes, outputs, in_place, local_gradients, names).doprint(expr)


def shape_latex(shape) -> str:
    return r" \times ".join(latex(d) for d in shape)


def shape_text(shape) -> str:
    return " x ".join(str(d).replace("n_", "n") for d in shape)

