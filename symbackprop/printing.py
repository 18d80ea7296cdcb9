"""Printers: the network's matrix expressions as LaTeX, as NumPy code and as plain text.

One printer per target, dispatching on the expression's type (``_print_<Class>``), so no output is made by
editing another printer's strings. Names follow the lecture: ``W1`` prints as ``W^{[1]}``, ``dZ1`` as
``\\delta^{[1]}``, ``Y_pred`` as ``Y_{pred}``.
"""

from __future__ import annotations

import re

import sympy as sp
from sympy.printing.latex import LatexPrinter
from sympy.printing.str import StrPrinter

from .rules import LOSSES, activation_rule

_LAYERED = re.compile(r"^([A-Za-z]+)(\d+)$")


def latex_name(name: str) -> str:
    """LaTeX for a quantity or gradient name: ``W1`` -> ``W^{[1]}``, ``dW1`` -> ``\\frac{\\partial L}{...}``."""
    if name.startswith("dZ") and _LAYERED.match(name[1:]):
        return rf"\delta^{{[{name[2:]}]}}"
    if name.startswith("d") and len(name) > 1 and name != "d":
        inner = name[1:]
        if _LAYERED.match(inner) or inner in ("Y_pred", "X") or "_" not in inner:
            return rf"\frac{{\partial L}}{{\partial {latex_name(inner)}}}"
    match = _LAYERED.match(name)
    if match:
        return rf"{match.group(1)}^{{[{match.group(2)}]}}"
    if "_" in name:
        base, _, rest = name.partition("_")
        rest = rest.replace("_", r"\_")
        return rf"{base}_{{{rest}}}"
    return name


def text_name(name: str) -> str:
    """Plain-text (Unicode) name for comments: ``dZ1`` -> ``δ1``, ``dW1`` -> ``dL/dW1``."""
    if name.startswith("dZ") and _LAYERED.match(name[1:]):
        return f"δ{name[2:]}"
    if name.startswith("d") and len(name) > 1 and (_LAYERED.match(name[1:]) or name[1:] in ("Y_pred", "X")):
        return f"dL/d{name[1:]}"
    return name


def _is_negative(term) -> bool:
    return term.as_coeff_mmul()[0].is_negative if isinstance(term, sp.MatMul) else False


class _MatrixLayout:
    """What the three printers share: term order (``Y_pred - Y_true``, ``dA ⊙ f'(Z)``) and parentheses."""

    hadamard = " * "
    grouped = (sp.MatAdd, sp.HadamardProduct)

    def _print_MatAdd(self, expr):
        terms = sorted(expr.args, key=_is_negative)
        out = self._print(terms[0])
        for term in terms[1:]:
            if _is_negative(term):
                out += f" - {self._print(-term)}"
            else:
                out += f" + {self._print(term)}"
        return out

    def _print_HadamardProduct(self, expr):
        # The upstream gradient first, the local derivative f'(Z) second, as the derivation reads.
        args = sorted(expr.args, key=lambda a: type(a).__name__ == "Elementwise")
        return self.hadamard.join(self._operand(arg) for arg in args)

    def _operand(self, expr):
        text = self._print(expr)
        return self._parenthesize_group(text) if isinstance(expr, self.grouped) else text

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
            if text.endswith("}") and "^{" in text and not text.startswith(r"\frac"):
                return text[:-1] + r"\top}"
            return f"{text}^{{\\top}}"
        return rf"\left({self._print(arg)}\right)^{{\top}}"

    def _print_OneMatrix(self, expr):
        rows, cols = expr.shape
        return rf"\mathbf{{1}}_{{{self._print(rows)}}}" if cols == 1 else rf"\mathbf{{1}}_{{{self._print(cols)}}}^{{\top}}"

    hadamard = r" \odot "

    def _print_MatMul(self, expr):
        coeff, matrices = expr.as_coeff_matrices()
        return self._coefficient(coeff, " ".join(self._operand(m) for m in matrices))

    def _scaled(self, coeff, body):
        return f"{self._print(coeff)} {body}"

    def _parenthesize_group(self, text):
        return rf"\left({text}\right)"

    def _print_Elementwise(self, expr):
        if expr.activation == "identity" and expr.order == 0:
            return self._print(expr.arg)
        name = activation_rule(expr.activation).latex
        prime = "'" if expr.order else ""
        return rf"{name}{prime}\left({self._print(expr.arg)}\right)"

    def _print_Sigmoid(self, expr):
        return rf"\sigma\left({self._print(expr.arg)}\right)"

    def _print_Softmax(self, expr):
        return rf"\operatorname{{softmax}}\left({self._print(expr.arg)}\right)"

    def _print_LossValue(self, expr):
        return LOSSES[expr.kind].latex


class TextPrinter(_MatrixLayout, StrPrinter):
    """Compact Unicode text for code comments: ``a2ᵀ δ3``, ``⊙``, ``relu'(Z1)``."""

    def _print_MatrixSymbol(self, expr):
        return text_name(expr.name)

    def _print_Transpose(self, expr):
        arg = expr.arg
        return f"{self._print(arg)}ᵀ" if isinstance(arg, sp.MatrixSymbol) else f"({self._print(arg)})ᵀ"

    def _print_OneMatrix(self, expr):
        return "1ᵀ" if expr.shape[0] == 1 else "1"

    hadamard = " ⊙ "

    def _print_MatMul(self, expr):
        coeff, matrices = expr.as_coeff_matrices()
        return self._coefficient(coeff, " ".join(self._operand(m) for m in matrices))

    def _scaled(self, coeff, body):
        return f"({self._print(coeff)}) {body}"

    def _print_Elementwise(self, expr):
        if expr.activation == "identity" and expr.order == 0:
            return self._print(expr.arg)
        return f"{activation_rule(expr.activation).name}{chr(39) if expr.order else ''}({self._print(expr.arg)})"

    def _print_Sigmoid(self, expr):
        return f"sigmoid({self._print(expr.arg)})"

    def _print_Softmax(self, expr):
        return f"softmax({self._print(expr.arg)})"


class NumPyPrinter(_MatrixLayout, StrPrinter):
    """NumPy code for a backward formula, written against the generated module's local names.

    Sizes print as the expressions ``sizes`` gives them (``N`` -> ``N``, ``n_3`` -> ``3``); activation
    derivatives call the module's ``<name>_grad`` helpers; ``1ᵀ M`` prints as a sum over the batch.
    ``outputs`` maps a pre-activation symbol to its activation's name: a derivative whose rule can be written
    in the output prints as ``<name>_grad_from_output(a)``. ``local_gradients`` maps a pre-activation symbol
    to the variable holding ``f'(Z)`` that the forward pass computed and kept. With ``in_place``, ``dA ⊙ f'(Z)`` prints as an
    update of the upstream gradient's array (``np.multiply(dA, f'(Z), out=dA)``), which backward owns.
    """

    def __init__(self, sizes: dict | None = None, outputs: dict | None = None, in_place: bool = False,
                 local_gradients: dict | None = None):
        super().__init__()
        self.sizes = sizes or {}
        self.outputs = outputs or {}
        self.in_place = in_place
        self.local_gradients = local_gradients or {}

    def _print_Symbol(self, expr):
        return str(self.sizes.get(expr, expr.name))

    def _print_MatrixSymbol(self, expr):
        return expr.name

    def _print_Transpose(self, expr):
        return f"{self._operand(expr.arg)}.T"

    def _print_MatMul(self, expr):
        coeff, matrices = expr.as_coeff_matrices()
        first, last = matrices[0], matrices[-1]
        if len(matrices) == 2 and isinstance(first, sp.OneMatrix):
            # 1_N b broadcasts a bias over the batch; 1_N^T M sums M over the batch.
            body = (self._operand(last) if first.shape[1] == 1
                    else f"{self._operand(last)}.sum(axis=0, keepdims=True)")
        elif len(matrices) == 2 and isinstance(last, sp.OneMatrix):
            body = (self._operand(first) if last.shape[0] == 1
                    else f"{self._operand(first)}.sum(axis=1, keepdims=True)")
        else:
            body = " @ ".join(self._operand(m) for m in matrices)
        return self._coefficient(coeff, body)

    def _scaled(self, coeff, body):
        return f"({self._print(coeff)}) * {body}"

    def _print_Mul(self, expr):
        num, den = expr.as_numer_denom()
        return f"{self._print(num)} / ({self._print(den)})" if den != 1 else super()._print_Mul(expr)

    grouped = (sp.MatAdd, sp.HadamardProduct, sp.MatMul)

    def _print_HadamardProduct(self, expr):
        upstream, *factors = sorted(expr.args, key=lambda a: type(a).__name__ == "Elementwise")
        if not (self.in_place and isinstance(upstream, sp.MatrixSymbol) and len(factors) == 1):
            return super()._print_HadamardProduct(expr)
        name = self._print(upstream)
        return f"np.multiply({name}, {self._print(factors[0])}, out={name})"

    def _print_Elementwise(self, expr):
        if expr.activation == "identity" and expr.order == 0:
            return self._print(expr.arg)
        if expr.order == 1 and expr.arg in self.local_gradients:
            return self.local_gradients[expr.arg]
        from_output = expr.order == 1 and expr.arg in self.outputs
        if from_output and activation_rule(expr.activation).numpy_derivative_from_output:
            return f"{function_name(expr, from_output=True)}({self.outputs[expr.arg]})"
        return f"{function_name(expr)}({self._print(expr.arg)})"

    def _print_Sigmoid(self, expr):
        return f"sigmoid({self._print(expr.arg)})"

    def _print_Softmax(self, expr):
        return f"softmax({self._print(expr.arg)}, axis={expr.axis})"


def function_name(node, from_output: bool = False) -> str:
    """The generated module's function for an Elementwise node: ``relu``, ``relu_grad``, ``elu_0_5_grad``;
    ``sigmoid_grad_from_output`` for a derivative computed from the activation's output."""
    suffix = "".join(f"_{v:g}".replace(".", "_").replace("-", "m") for _, v in sorted(node.params.items())
                     if node.activation in ("leaky_relu", "elu"))
    return f"{node.activation}{suffix}{'_grad' if node.order else ''}{'_from_output' if from_output else ''}"


def latex(expr) -> str:
    return MathPrinter().doprint(expr)


def text(expr) -> str:
    return TextPrinter().doprint(expr)


def numpy_code(expr, sizes: dict | None = None, outputs: dict | None = None, in_place: bool = False,
               local_gradients: dict | None = None) -> str:
    return NumPyPrinter(sizes, outputs, in_place, local_gradients).doprint(expr)


def shape_latex(shape) -> str:
    return r" \times ".join(latex(d) for d in shape)


def shape_text(shape) -> str:
    return " x ".join(str(d).replace("n_", "n") for d in shape)
