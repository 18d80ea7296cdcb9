"""The mistakes the grader knows: rewrites of the derivation's backward formulas, each with words for it.

A mistake is one rewrite of one node of a backward step's SymPy expression, never an edit of its text:

- a matrix symbol transposed, a transpose left out, the whole result transposed;
- the factors of a matrix product in the other order;
- a quantity replaced by another of its kind from the same or a neighbouring layer (the pre-activation ``Z1``
  for the activation ``a1``, the previous layer's activation, ``da2`` for ``dZ2``), also inside ``f'(.)``;
- a factor or a term left out (``f'(Z)`` in ``dA * f'(Z)``, ``Y_true`` in ``Y_pred - Y_true``);
- a sum over the samples (a product with a ones matrix) left out, or taken over the other axis;
- an elementwise product where a matrix product belongs, and the reverse;
- a function node left out (softmax, sigmoid), an activation where its derivative belongs, the other
  ReLU'(0) convention, softmax over the other axis;
- the formula scaled: a missing or extra ``1/N``, ``1/k``, ``2`` or ``1/2``, or the sign flipped (for the loss
  gradient, which has no upstream factor, and for the gradients a student returns); ``1/n`` for ``1/(n - 1)``;
- the layer kinds' named mistakes, the same ``check`` names in formulas (``symbackprop/mistakes.py``): batch
  norm's mean or variance treated as constants, dropout's scaling left out, softmax's Jacobian taken as its
  diagonal, another activation's derivative, ...
- a convolution's or pooling's classic mistakes (``windows.py``): the kernel flipped (in dX or dW), the stride
  left out of the backward pass, the padding left on dX, the max-pool gradient given to every tied maximum or
  spread over the whole window;

Each rewrite belongs to a node type (matrix symbol, transpose, matrix product, elementwise product, sum, ones
matrix, function node), not to a layer kind, so formulas built from the same nodes get the same catalogue.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import sympy as sp
from sympy.matrices.expressions import MatrixExpr

from ..claims.explain import ClaimPrinter
from ..expressions import CausalSoftmax, Elementwise, LogSoftmax, MaxMask, Softmax
from ..spec import RELU_GRAD_AT_ZERO_VALUES
from .windows import window_mistakes, windows_of

# Ranks: which of several mistakes that give the same values to name (the more common one first); a layer
# kind's named mistakes (``symbackprop/mistakes.py``, shared with check) come before every generic rewrite.
NAMED, SCALE, SUM, DROP, TRANSPOSE, ORDER, CONFUSED, CONVENTION, PRODUCT, FUNCTION = range(-1, 9)
_ROLES = {"linear": "the pre-activation", "activation": "the activation"}


@dataclass(frozen=True)
class Mutation:
    """A backward step's formula with one mistake or more: the step's name, the formula, a phrase per mistake.

    ``rank`` orders mutations that give the same values: the lower, the more likely a student wrote it.
    """

    step: str
    expr: sp.Basic
    what: tuple[str, ...]
    rank: int


class FormulaPrinter(ClaimPrinter):
    """The claim checker's NumPy-like syntax (``a1.T @ dZ2``, ``relu'(Z1)``), with gradients by their own
    names (``dZ2``) and a ReLU derivative that is not the derivation's own written as the comparison a student
    writes (``(Z1 > 0)``, ``(a1 >= 0)``)."""

    def __init__(self, own_derivatives):
        super().__init__({})
        self.own = own_derivatives

    def _print_Elementwise(self, expr):
        if expr.order == 1 and expr.activation == "relu" and expr not in self.own:
            at_zero = expr.params["relu_grad_at_zero"]
            comparison = {0: ">", 1: ">="}.get(at_zero)
            if comparison:
                return f"({self._print(expr.arg)} {comparison} 0)"
            return f"relu'({self._print(expr.arg)}) with relu'(0) = {at_zero:g}"
        return super()._print_Elementwise(expr)

    def _print_Flipped(self, expr):
        return f"flip({self._print(expr.arg)})"

    def _print_Unstrided(self, expr):
        return f"im2col({self._print(expr.arg)}, stride left out)"

    def _print_UnstridedCol2im(self, expr):
        return f"col2im({self._print(expr.arg)}, stride left out)"

    def _print_Uncropped(self, expr):
        return f"col2im({self._print(expr.arg)}, padding kept)"

    def _print_TiedMaxMask(self, expr):
        return f"all_max_mask({self._print(expr.arg)})"

    def _scaled(self, coeff, body):
        text = self._print(coeff)
        return f"{text} * {body}" if coeff.is_Integer or coeff.is_Symbol else f"({text}) * {body}"


class Catalogue:
    """Every one-mistake rewrite of a derivation's backward steps, and the words for each."""

    def __init__(self, derivation):
        net = derivation.network
        self.net = net
        self.steps = {step.name: step for step in derivation.backward}
        self.index = {step.name: i for i, step in enumerate(derivation.backward)}
        gradient_names = {step.symbol.name for step in derivation.backward}
        self.reads = {step.name: {m.name for m in step.expr.atoms(sp.MatrixSymbol)} & gradient_names
                      for step in derivation.backward}
        read = set().union(*self.reads.values())
        self.leaves = {step.name for step in derivation.backward if step.symbol.name not in read}
        self.sources = {step.name for step in derivation.backward if not self.reads[step.name]}
        self.printer = FormulaPrinter({node for step in derivation.backward for node in step.expr.atoms(Elementwise)})
        self.kinds = {step.symbol.name: step.kind for step in net.steps if isinstance(step.symbol, sp.MatrixSymbol)}
        # (symbol, layer) of every quantity a symbol can be confused with: forward ones and gradients.
        # Targets only enter the loss, so they are not among them (Y_true for Y_pred is a flipped sign).
        forward = [step for step in net.steps if step.kind != "loss"]
        self.quantities = [(step.symbol, step.layer) for step in forward]
        self.quantities += [(symbol, min(s.layer for s in users)) for symbol in net.inputs.values()
                            if (users := [s for s in forward if symbol in s.expr.atoms(sp.MatrixSymbol)])]
        self.gradients = [(step.symbol, step.layer) for step in derivation.backward]
        self.gradient_names = gradient_names
        self.kernels, self.patches = windows_of(net)
        self.layers = {symbol.name: layer for symbol, layer in self.quantities + self.gradients}
        self._memo, self._all = {}, None

    def all(self) -> list[Mutation]:
        """Every one-mistake mutation of every step, most likely first (upstream steps first among equals)."""
        if self._all is None:
            found = [m for name in self.steps for m in self.mutations(name)]
            self._all = sorted(found, key=lambda m: (m.rank, self.index[m.step]))
        return self._all

    def mutations(self, name: str, base: Mutation | None = None) -> list[Mutation]:
        """The one-mistake rewrites of step ``name``'s formula, or of ``base``'s (adding to its mistakes)."""
        if (name, base) not in self._memo:
            self._memo[name, base] = self._mutations(name, base)
        return self._memo[name, base]

    def _mutations(self, name, base):
        step = self.steps[name]
        expr = step.expr if base is None else base.expr
        what, rank = (() if base is None else base.what), (0 if base is None else base.rank)
        found = {}
        candidates = [(m.expr, f"your code {m.words}", NAMED) for m in step.mistakes] if base is None else []
        candidates += list(self._whole(name, expr))
        for path, node, parent in _nodes(expr):
            candidates += [(_replace(expr, path, new), phrase, r) for new, phrase, r in self._rewrites(node, parent, name)]
        for new, phrase, r in candidates:
            if new != expr and new != step.expr and new not in found:
                found[new] = Mutation(name, new, (*what, phrase), rank + r)
        return sorted(found.values(), key=lambda m: m.rank)

    def formula(self, expr) -> str:
        return self.printer.doprint(expr)

    def lhs(self, name: str) -> str:
        return self.steps[name].symbol.name

    # -- words
    def words(self, symbol) -> str:
        """A quantity as a sentence names it: ``the pre-activation Z1``, ``the input X``, ``dZ2``."""
        name = symbol.name
        if name == self.net.input_name:
            return f"the input {name}"
        if name in ("Y_pred", "Y_true"):
            return f"the {'prediction' if name == 'Y_pred' else 'target'} {name}"
        role = _ROLES.get(self.kinds.get(name))
        return f"{role} {name}" if role else name

    # -- the rewrites
    def _whole(self, name, expr):
        """Rewrites of the whole formula: transposed, and (for the loss gradient and returned gradients) scaled."""
        yield sp.Transpose(expr), "the result is transposed", TRANSPOSE
        if name in self.sources or name in self.leaves:
            yield from self._scalings(expr, every_factor=name in self.sources)

    def _scalings(self, expr, every_factor):
        coeff, factors = expr.as_coeff_matrices() if isinstance(expr, sp.MatMul) else (sp.Integer(1), [expr])
        bases = [sp.Integer(2), self.net.N] + ([self.net.widths[-1]] if every_factor else [])
        if every_factor:
            changes = [c for c in itertools.product((-1, 0, 1), repeat=len(bases)) if any(c)]
        else:
            changes = [tuple(e if i == j else 0 for j in range(len(bases))) for i in range(len(bases)) for e in (-1, 1)]
        for change in changes:
            ratio = sp.Mul(*(base**e for base, e in zip(bases, change)))
            phrases = [_factor_phrase(base, _exponent(coeff, base), e) for base, e in zip(bases, change) if e]
            yield _product(coeff * ratio, factors), " and ".join(phrases), SCALE + len(phrases) - 1
        yield _product(-coeff, factors), "the sign is flipped", SCALE

    def _rewrites(self, node, parent, name):
        p = self.formula
        yield from ((new, phrase, NAMED) for new, phrase in window_mistakes(node, self.kernels, self.patches))
        if isinstance(node, sp.MatrixSymbol):
            if not isinstance(parent, sp.Transpose):
                yield node.T, f"{p(node)} is transposed", TRANSPOSE
            for other in self._confusable(node, name):
                yield other, self._confused(other, node, parent), CONFUSED
        elif isinstance(node, sp.Transpose):
            if isinstance(node.arg, sp.MatrixSymbol):
                yield node.arg, f"the transpose of {p(node.arg)} is missing", TRANSPOSE
        elif isinstance(node, sp.MatMul):
            yield from self._matrix_products(node)
        elif isinstance(node, sp.HadamardProduct):
            args = list(node.args)
            for i, factor in enumerate(args):
                rest = args[:i] + args[i + 1:]
                yield (rest[0] if len(rest) == 1 else _build(sp.HadamardProduct, *rest)), f"the factor {p(factor)} is left out", DROP
            if len(args) == 2:
                upstream_first = sorted(args, key=lambda a: isinstance(a, Elementwise))
                yield (_build(sp.MatMul, *upstream_first), "a matrix product (@) where the elementwise product (*) belongs",
                       PRODUCT)
        elif isinstance(node, sp.MatAdd):
            terms = list(node.args)
            for i, term in enumerate(terms):
                rest = terms[:i] + terms[i + 1:]
                through = " (the path through the max, to each row's first maximum)" if term.has(MaxMask) else ""
                yield (rest[0] if len(rest) == 1 else _build(sp.MatAdd, *rest)), f"the term {p(term)}{through} is left out", \
                    DROP
        elif not isinstance(node, sp.OneMatrix):
            yield from self._functions(node)

    def _matrix_products(self, node):
        p = self.formula
        coeff, factors = node.as_coeff_matrices()
        for base, power in coeff.as_powers_dict().items():  # 1/(n - 1), Bessel's correction, taken as 1/n
            if power < 0 and base.is_Add and len(base.args) == 2 and -1 in base.args:
                size = base + 1
                yield (_product(coeff.xreplace({base: size}), factors),
                       f"1/{size} where 1/({base}) belongs: Bessel's correction is dropped", SCALE)
        if len(factors) < 2:
            return
        ones = [i for i, factor in enumerate(factors) if isinstance(factor, sp.OneMatrix)]
        if ones and len(factors) == 2:  # a sum: 1ᵀ M sums over axis 0, M 1 over axis 1
            i, other = ones[0], factors[1 - ones[0]]
            yield _product(coeff, [other]), "the sum over the samples is left out", SUM
            moved = [other, sp.OneMatrix(other.shape[1], 1)] if i == 0 else [sp.OneMatrix(1, other.shape[0]), other]
            yield _product(coeff, moved), f"the sum is over axis={1 - min(i, 1)} where axis={min(i, 1)} belongs", SUM
            return
        yield _product(coeff, factors[::-1]), "the factors are in the wrong order", ORDER
        for i, factor in enumerate(factors):
            yield _product(coeff, factors[:i] + factors[i + 1:]), f"the factor {p(factor)} is left out", DROP
        if len(factors) == 2:
            yield (_product(coeff, [_build(sp.HadamardProduct, *factors)]),
                   "an elementwise product (*) where the matrix product (@) belongs", PRODUCT)

    def _functions(self, node):
        """Rewrites of a function node (an activation or its derivative, softmax, sigmoid, ...)."""
        p = self.formula
        arguments = [arg for arg in node.args if isinstance(arg, MatrixExpr)]
        if len(arguments) == 1 and arguments[0].shape == node.shape:
            yield arguments[0], f"{p(node)} is left out ({p(arguments[0])} where {p(node)} belongs)", FUNCTION
        if isinstance(node, Elementwise):
            params = node.params
            if node.order == 1:
                function = Elementwise(node.activation, node.arg, 0, tuple(params.items()))
                yield function, f"the activation {p(function)} where its derivative {p(node)} belongs", FUNCTION
            if "relu_grad_at_zero" in params:
                own = params["relu_grad_at_zero"]
                for value in RELU_GRAD_AT_ZERO_VALUES:
                    if value != own:
                        other = Elementwise(node.activation, node.arg, node.order,
                                            tuple({**params, "relu_grad_at_zero": value}.items()))
                        phrase = f"ReLU'(0) is taken as {value:g}, where this spec takes {own:g} (relu_grad_at_zero)"
                        yield other, phrase, CONVENTION
        axis = node.axis if isinstance(node, (Softmax, LogSoftmax)) and not isinstance(node, CausalSoftmax) else None
        if axis in (0, 1):  # a softmax over the other axis
            yield type(node)(node.arg, 1 - axis), f"it is taken over axis={1 - axis} where axis={axis} belongs", FUNCTION

    def _confusable(self, symbol, name):
        """The quantities a student may write instead of ``symbol`` in step ``name``: the same kind (forward
        quantity or gradient, per sample or not), a layer apart at most; gradients only once computed."""
        if symbol.name not in self.layers:
            return []
        if symbol.name in self.gradient_names:
            pool = self.gradients[:self.index[name]]
        else:
            pool = self.quantities
        layer, per_sample = self.layers[symbol.name], self.net.N in symbol.shape
        return [s for s, other in pool
                if s != symbol and abs(other - layer) <= 1 and (self.net.N in s.shape) == per_sample]

    def _confused(self, new, old, parent):
        if isinstance(parent, Elementwise) and parent.order == 1:
            return f"you took {parent.activation}' at {self.words(new)} instead of at {self.words(old)}"
        return f"you used {self.words(new)} instead of {self.words(old)}"


def _nodes(expr, path=(), parent=None):
    """Every matrix-valued node of ``expr`` with its path (argument indices) and its parent, root first."""
    yield path, expr, parent
    if isinstance(expr, (sp.MatrixSymbol, sp.OneMatrix)):
        return
    for i, arg in enumerate(expr.args):
        if isinstance(arg, MatrixExpr):
            yield from _nodes(arg, (*path, i), expr)


def _replace(expr, path, new):
    """``expr`` with the node at ``path`` replaced by ``new`` (rebuilt without evaluation or shape checks)."""
    if not path:
        return new
    args = list(expr.args)
    args[path[0]] = _replace(args[path[0]], path[1:], new)
    return _build(expr.func, *args)


def _build(func, *args):
    """The node ``func`` with these arguments as they are: no shape check (sizes that a spec fixes, an image's,
    may not fit in a mistaken formula, which then fails to evaluate instead) and no conversion by the node's
    constructor (an image operator's window is kept as the tuple it holds)."""
    return sp.Basic.__new__(func, *args)


def _product(coeff, factors):
    if coeff == 1 and len(factors) == 1:
        return factors[0]
    return _build(sp.MatMul, *([] if coeff == 1 else [coeff]), *factors)


def _exponent(coeff, base) -> int:
    """The power of ``base`` (2, or a size symbol) in a scalar coefficient such as ``2/(N*n_3)``."""
    if base == 2:
        rational = sp.Rational(coeff.as_coeff_Mul()[0])
        return sp.multiplicity(2, abs(rational.p)) - sp.multiplicity(2, rational.q)
    return int(coeff.as_powers_dict().get(base, 0))


def _factor_phrase(base, have: int, change: int) -> str:
    """Words for multiplying by ``base**change`` a coefficient that holds ``base**have``."""
    def power(e):
        return str(base) if e == 1 else f"1/{base}" if e == -1 else f"{base}^{e}"
    after = have + change
    if after == 0:
        return f"the factor {power(have)} is missing"
    if have == 0 or abs(after) > abs(have) and after * have > 0:
        return f"an extra factor {power(change)}"
    return f"{power(after)} where {power(have)} belongs"
