"""Network -> Derivation: local gradients and backward formulas, each with its chain-rule factors.

The backward pass is one generic reverse walk over the forward steps: each step sends its upstream gradient
back to every operand through the operand's ``Local`` rule (``layers.py``), and a value that feeds several
steps (a skip connection, a weight with an L2 penalty) receives the sum of what each sends. A gradient has
the shape of what it differentiates, and ``delta[l] = dL/dZ[l]``. Batch-first dense layers give
``dW = A^T delta``, ``db = 1^T delta``, ``dA = delta W^T``, ``delta = dA (.) f'(Z)``; column layout
``dW = delta A^T``, ``db = delta 1``, ``dA = W^T delta``.

Some gradients also have a shorter equivalent form, kept beside the step-by-step one as an ``Alternative``:
batch norm's compact ``dX``, a sigmoid or softmax output combined with its cross-entropy loss, and the
softmax cross-entropy gradient when every sample's targets sum to 1. Verification proves each; the generated
code uses the ones that hold without assumptions.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable
from dataclasses import dataclass, field

import sympy as sp

from .expressions import LossValue
from .layers import FUSIONS
from .mistakes import Mistake, NamedMistake
from .network import Network, build_network
from .rules import loss_coefficient, loss_rule, loss_terms, scaled
from .spec import Spec, load_spec

# The assumption of an alternative that holds only when each sample's targets sum to 1.
DISTRIBUTION = "distribution"


@dataclass(frozen=True)
class LocalGradient:
    """One entry of the local-gradient table: how ``of`` changes with ``wrt``, as the factor it contributes.

    ``side`` says where the factor meets the upstream gradient: ``left`` / ``right`` (matrix product),
    ``elementwise`` (Hadamard product), ``identity`` (passed on unchanged), ``vjp`` (no single factor: ``expr``
    is the whole contribution, written with the upstream gradient) or ``loss`` (the loss's own gradient).
    """

    of: str
    wrt: str
    expr: sp.Basic
    side: str
    layer: int


@dataclass(frozen=True)
class Term:
    """What one consumer sends back: ``expr``, the upstream gradient of ``upstream`` through ``local``;
    ``mistakes`` the typical wrong rules for it (``mistakes.Mistake``), applied to ``gradient``, the upstream
    gradient's symbol."""

    upstream: str | None
    local: LocalGradient
    expr: sp.Basic
    mistakes: tuple[Mistake, ...] = ()
    gradient: sp.MatrixSymbol | None = None

    def wrong(self) -> list[tuple[str, sp.Basic]]:
        """The typical wrong contributions, as (words, expression)."""
        return [(m.words, m.vjp(self.gradient)) for m in self.mistakes]


@dataclass(frozen=True)
class Alternative:
    """An equivalent, shorter form of a backward formula: ``label`` (a catalog key), its expression, and the
    assumption it needs (``""`` or ``"distribution"``: every sample's targets sum to 1)."""

    label: str
    expr: sp.Basic
    assumes: str = ""


@dataclass(frozen=True)
class BackwardStep:
    """``symbol = expr``: the gradient of the loss with respect to ``name``, the sum of its ``terms``.

    ``mistakes`` are the step's formula with one typical mistake of its layer kind in it (``mistakes.py``),
    named for check and grade; ``build_mistakes`` makes them when they are first asked for."""

    name: str
    symbol: sp.MatrixSymbol
    expr: sp.Basic
    terms: tuple[Term, ...]
    layer: int
    alternatives: tuple[Alternative, ...] = ()
    build_mistakes: Callable[[], list[NamedMistake]] = field(default=list, repr=False)

    @functools.cached_property
    def mistakes(self) -> tuple[NamedMistake, ...]:
        return tuple(self.build_mistakes())

    @property
    def shape(self):
        return self.symbol.shape

    @property
    def upstream(self) -> str | None:
        """The one consumer whose gradient this step reads (None for the loss gradient or a sum)."""
        return self.terms[0].upstream if len(self.terms) == 1 else None

    @property
    def local(self) -> LocalGradient:
        return self.terms[0].local

    @property
    def code_expr(self) -> sp.Basic:
        """The form the generated code computes: a shorter alternative that needs no assumption, if any."""
        return next((alt.expr for alt in self.alternatives if not alt.assumes), self.expr)


def gradient_symbol(network: Network, name: str) -> sp.MatrixSymbol:
    """The symbol standing for dL/d``name`` (same shape as ``name``)."""
    return sp.MatrixSymbol(f"d{name}", *network.symbol(name).shape)


@dataclass
class Derivation:
    """The derivation of one network: forward pass, local gradients, backward pass and composed gradients."""

    network: Network
    local_gradients: tuple[LocalGradient, ...]
    backward: tuple[BackwardStep, ...]
    _reports: dict = field(default_factory=dict, repr=False)

    @property
    def spec(self) -> Spec:
        return self.network.spec

    @property
    def forward(self) -> dict:
        """Forward quantities in order, name -> SymPy expression (``Z1``, ``a1``, ..., ``Y_pred``, ``L``)."""
        return {step.name: step.expr for step in self.network.steps}

    @property
    def gradients(self) -> dict:
        """dL/d(name) for every quantity, with upstream gradients substituted: name -> matrix expression."""
        composed, result = {}, {}
        for step in self.backward:
            expr = step.expr.xreplace(composed)
            composed[step.symbol] = expr
            result[step.name] = expr
        return result

    def step(self, name: str) -> BackwardStep:
        for step in self.backward:
            if step.name == name:
                return step
        raise KeyError(name)

    def verify(self, **options):
        """Check every formula against direct differentiation; see ``verify.verify`` for the options."""
        from .verify import verify

        key = tuple(sorted(options.items()))
        if key not in self._reports:
            self._reports[key] = verify(self, **options)
        return self._reports[key]

    def render(self, fmt: str, **options) -> str:
        """The derivation as text: ``markdown``, ``latex``, ``beamer`` or ``numpy`` (see ``rendering.py``)."""
        from .rendering import render

        return render(self, fmt, **options)


def derive(spec: Spec | dict | str | None = None, *, forward=None, function: str = "forward",
           sizes=None) -> Derivation:
    """Derive the backward pass of ``spec`` (a Spec, a dict, a TOML path; default: the seed network), or with
    ``forward`` (a path) of the function ``function`` written as code in that file (``forward_code.py``;
    ``sizes``: {"N": 32, ...} or "N=32,..." for its generated module)."""
    from .spec import seed_spec

    if forward is not None:
        if spec is not None:
            raise ValueError("give a spec or forward=, not both")
        from .forward_code import load_forward

        return _Walk(load_forward(forward, function, sizes)).run()

    if spec is None:
        spec = seed_spec()
    elif not isinstance(spec, Spec):
        spec = load_spec(spec)
    return _Walk(build_network(spec)).run()


def sum_of(exprs):
    """The sum of the contributions a value receives (one term is itself)."""
    return functools.reduce(operator.add, exprs)


def _kept(terms, replaces) -> list:
    """The contributions of ``terms`` that a shorter form replacing the consumers ``replaces`` leaves as they are."""
    return [term.expr for term in terms if term.upstream not in replaces]


class _Walk:
    """The reverse walk: emits each value's gradient once every step that reads the value has sent its share."""

    def __init__(self, net: Network):
        self.net = net
        self.pending: dict[str, list[Term]] = {}
        self.readers: dict[str, int] = {}
        for step in net.steps:
            for local in step.locals:
                self.readers[local.wrt] = self.readers.get(local.wrt, 0) + 1
        self.outputs = {step.name for step in net.steps}
        self.local, self.backward = [], []
        self.extra = self._shorter_forms()

    def run(self) -> Derivation:
        for step in reversed(self.net.steps):
            if step.kind != "loss":
                self._emit(step.name, step.layer)
            upstream = None if step.kind == "loss" else gradient_symbol(self.net, step.name)
            for local in step.locals:
                contribution = local.vjp(upstream)
                lg = LocalGradient(step.name, local.wrt, contribution if local.factor is None else local.factor,
                                   local.side, step.layer)
                self.local.append(lg)
                self.pending.setdefault(local.wrt, []).append(
                    Term(None if upstream is None else step.name, lg, contribution, local.mistakes, upstream))
                self.readers[local.wrt] -= 1
                if not self.readers[local.wrt] and local.wrt not in self.outputs:
                    self._emit(local.wrt, step.layer)
        return Derivation(self.net, tuple(self.local), tuple(self.backward))

    def _emit(self, name: str, layer: int) -> None:
        terms = tuple(self.pending.pop(name))
        extra = self.extra.get(name, ())
        alternatives = [Alternative(label, sum_of([expr, *_kept(terms, replaces)]), assumes)
                        for label, replaces, expr, assumes, _ in extra]

        def mistakes():
            named = [NamedMistake(m.words, sum_of([m.expr, *_kept(terms, replaces)]))
                     for _, replaces, _, _, wrong in extra for m in wrong()]
            for i, term in enumerate(terms):
                named += [NamedMistake(words, sum_of(wrong if j == i else t.expr for j, t in enumerate(terms)))
                          for words, wrong in term.wrong()]
            return named

        self.backward.append(BackwardStep(name, gradient_symbol(self.net, name), sum_of(t.expr for t in terms),
                                          terms, layer, tuple(alternatives), mistakes))

    def _shorter_forms(self) -> dict:
        """value -> [(label, consumers it replaces, shorter contribution, assumption, a function giving its named
        mistakes)]."""
        net, extra = self.net, {}
        for compact in net.compacts:
            extra.setdefault(compact.wrt, []).append((compact.label, compact.replaces, compact.expr, "",
                                                      compact.build_mistakes))
        loss = net.steps[-1]
        if not isinstance(loss.expr, LossValue):  # a forward pass written as code: its loss is its own line
            return extra
        last = net.steps[-2]
        settings = net.spec.loss
        rule = loss_rule(settings)
        Y, T = loss.expr.prediction, loss.expr.target
        terms = loss_terms(loss.expr)
        k = loss_coefficient(settings, terms.N, terms.k)
        if rule.simplified is not None:
            extra.setdefault(last.name, []).append(
                ("targets_sum_to_one", (None,), scaled(k, rule.simplified(terms, settings.parameters)), DISTRIBUTION,
                 tuple))
        fusion = FUSIONS.get((last.fusion, rule.name))
        if fusion is not None:
            operand = last.locals[0].wrt
            simplified = fusion.simplified(Y, T, terms, k, net.symbol(operand))
            extra.setdefault(operand, []).append((fusion.label, (last.name,), simplified, "", tuple))
            if fusion.distribution is not None:
                extra[operand].append(("targets_sum_to_one", (last.name,), fusion.distribution(Y, T, terms, k,
                                       net.symbol(operand)), DISTRIBUTION, tuple))
        return extra
