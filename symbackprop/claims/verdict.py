"""Judge parsed claims against the derivation of one spec's network, exactly.

A claim is judged on the spec's own network: its widths (or, where they are too large to evaluate exactly,
smaller ones with the same pattern: which widths are 1 and which are equal), with the batch size free. The
verdict comes from exact arithmetic (``semantics.ExactField``) at several random points and batch sizes (drawn
for each claim), plus a point where ReLU-like inputs are exactly 0; a float comparison never decides it, so nothing can
underflow or overflow into a wrong verdict. A claim right for this network is then tried with the widths it
touches made distinct, to say when it is right only because, say, ``n_2 = 1``.

Verdicts: ``correct``; ``wrong`` with a reason (``shape``, ``value``, ``convention``: right under another
ReLU'(0) or another scaling of the loss, the factor named); ``undecided`` where the claim leans on an
identity the exact semantics do not model (see ``semantics.py``) and float64 disagrees with them; ``error``
for a claim that cannot be parsed.
"""

from __future__ import annotations

import itertools
import random
import zlib
from dataclasses import dataclass

import numpy as np
import sympy as sp

from ..derivation import derive
from ..errors import one_line
from ..evaluate import PRIME_TEXT, Evaluator, InexactRoot, Mod
from ..expressions import Elementwise
from ..rules import loss_rule
from ..spec import RELU_GRAD_AT_ZERO_VALUES, Spec
from ..verify import random_float_inputs
from .diagnose import mistake, named_mistake
from .errors import ClaimError
from .explain import (
    definition,
    factor_candidates,
    formula,
    rational,
    relations_text,
    scaling_words,
    sizes_text,
)
from .names import Names
from .operators import Windows
from .parse import parse
from .semantics import ExactField, Float64, TreeEvaluator, Undefined, as_truth_shape
from .shapes import ShapeInference, ShapeMismatch, result_problem
from .syntax import FORWARD, Claim

EXACT_WIDTH = 16         # widths up to this are evaluated as they are
BATCH_SIZES = 64         # the batch sizes a claim is judged at are drawn from this many, above the widths
IMAGE_BATCH_SIZES = 16   # ... in an image network, whose exact evaluation costs more per sample
EXACT_TERMS = 40_000     # above this many products per point, widths are reduced further
FLOAT_EQUAL = 1e-9       # float64 agreement, relative to the largest entry (a cross-check only)
FLOAT_DIFFERENT = 1e-6
KINKED = ("relu", "leaky_relu", "elu")
MAX_RELATIONS_TRIED = 12  # width relations tried one by one to name the one a claim relies on
MAX_DRAWS = 1024          # exact points drawn for one where every normalization's var + eps is a square
MAX_DRAW_STEPS = 50_000   # forward steps those draws may take in all (a deep network draws fewer times)
DRAW_STRIDE = 7919


@dataclass(frozen=True)
class Verdict:
    """One claim's outcome. ``verdict``: ``correct``, ``wrong``, ``undecided`` or ``error`` (unparsable);
    ``reason``: ``shape``, ``value``, ``convention`` or ``parse``; ``note``: what a correct verdict relies on;
    ``assumes``: the assumption it holds under, for a program to read (``targets_sum_to_one``: each sample's
    targets sum to 1), else ""; ``source``/``line``/``column``: where the claim (or its parse error) is."""

    claim: str
    verdict: str
    reason: str = ""
    detail: str = ""
    expected: str = ""
    note: str = ""
    source: str = ""
    line: int | None = None
    column: int | None = None
    assumes: str = ""

    @property
    def ok(self) -> bool:
        return self.verdict == "correct"

    def to_dict(self) -> dict:
        out = {"claim": self.claim, "verdict": self.verdict, "reason": self.reason, "expected": self.expected,
               "detail": self.detail}
        out.update({key: value for key, value in (("note", self.note), ("assumes", self.assumes), ("source", self.source),
                                                  ("line", self.line), ("column", self.column)) if value})
        return out

    def where(self) -> str:
        parts = [self.source] if self.source else []
        if self.line is not None:
            parts.append(f"line {self.line}")
        if self.column is not None:
            parts.append(f"column {self.column}")
        return ", ".join(parts)

    def text(self) -> str:
        """A few lines for the terminal."""
        label = {"correct": "correct", "wrong": "WRONG", "undecided": "UNDECIDED", "error": "ERROR"}[self.verdict]
        lines = [f"{label:<10}{self.claim}"]
        if self.verdict == "error":
            lines.append(f"  parse: {self.where()}: {self.detail}" if self.where() else f"  parse: {self.detail}")
        elif self.detail:
            lines.append(f"  {self.reason or self.verdict}: {self.detail}")
        if self.expected and not self.ok:
            lines.append(f"  expected: {self.expected}")
        if self.note:
            lines.append(f"  note: {self.note}")
        return "\n".join(one_line(line) for line in lines)  # a claim's escape bytes never reach the terminal


def looks_like_latex(text: str) -> bool:
    """A backslash, a brace or a caret: NumPy-like code has none of them (``**`` is its power)."""
    return any(mark in text for mark in ("\\", "{", "^"))


def exit_code(verdicts) -> int:
    """1 if any claim is wrong, else 2 if any could not be parsed or decided, else 0."""
    if any(v.verdict == "wrong" for v in verdicts):
        return 1
    return 2 if any(v.verdict in ("error", "undecided") for v in verdicts) else 0


@dataclass(frozen=True)
class _Target:
    """What a claim is compared with: its label, the shape it must have, the truth at an instance."""

    label: str
    shape: tuple
    broadcasts: bool  # a scalar, row or column that broadcasts to the shape will do
    expr: sp.Basic  # the right value: a gradient symbol or a local gradient's expression


class _Instance:
    """The network evaluated at one point: sizes, inputs, forward and backward values (exact or float).

    Where the network normalizes, ``rsqrt`` is an exact inverse square root where ``var + eps`` is a square in
    the field, and a consistent random value elsewhere. A claim equal to the truth there is correct whatever
    those values are; one that differs may lean on ``r^2 (var + eps) = 1``, so for it (``redraw``) points are
    drawn again until every ``var + eps`` is a square (``algebraic``), within ``MAX_DRAWS`` draws and
    ``MAX_DRAW_STEPS`` forward steps, and not at all where that is hopeless (more squares needed than draws
    can give); a point that stays not ``algebraic`` leaves the claim to the float64 cross-check."""

    def __init__(self, checker, widths, N, seed, exact=True, kinked=False, relu_at_zero=None, redraw=False,
                 free_targets=False):
        net = checker.network
        self.checker, self.kinked, self.N = checker, kinked, N
        self.sizes = net.sizes(N, widths)
        draws = min(MAX_DRAWS, MAX_DRAW_STEPS // len(net.steps)) if exact and redraw and checker.roots else 1
        for draw in range(draws):
            self.sem = ExactField(seed + DRAW_STRIDE * draw, relu_at_zero) if exact else Float64()
            inputs = checker.random_inputs(self.sem, self.sizes, seed, free_targets) if exact else \
                random_float_inputs(net, self.sizes, np.random.default_rng(seed))
            if kinked:
                inputs = checker.kink(self.sem, inputs, self.sizes)
            evaluator = Evaluator(self.sem, dict(inputs), self.sizes)
            evaluator.forward(net)
            roots = [x for root in checker.roots for x in np.ravel(evaluator(root))] if exact else []
            self.algebraic = all(self.sem.residue(x) for x in roots)
            if self.algebraic or 2 ** len(roots) > draws:  # each is a square with probability 1/2
                break
        evaluator.backward(checker.derivation)
        self.env = evaluator.env
        self.gradients = {step.name: self.env[step.symbol.name] for step in checker.derivation.backward}

    def value(self, tree, scale=None):
        """The claim tree's value; with ``scale``, every upstream gradient multiplied by it first."""
        gradients = self.gradients
        if scale is not None:
            factor = self.sem.scalar(sp.Rational(sp.sympify(scale).xreplace(self.sizes)))
            gradients = {name: value * factor for name, value in gradients.items()}
        return TreeEvaluator(self.sem, self.env, gradients, self.sizes)(tree)

    def truth(self, target, scale=None):
        value = Evaluator(self.sem, self.env, self.sizes)(target.expr)
        if scale is not None:
            value = value * self.sem.scalar(sp.Rational(sp.sympify(scale).xreplace(self.sizes)))
        return np.asarray(value)

    def describe(self) -> str:
        where = "where some ReLU-like inputs are exactly 0" if self.kinked else "at a random point"
        return f"{where} ({sizes_text({str(symbol): value for symbol, value in self.sizes.items()})})"


def _products(widths) -> int:
    """Products in one forward pass at these widths (batch: one more than the widest), a cost measure."""
    N = max(widths) + 1
    return sum(N * a * b for a, b in itertools.pairwise(widths))


class Checker:
    """Checks claims about one spec's network; derives once and keeps the instances it evaluates."""

    def __init__(self, spec: Spec | dict | str | None = None, *, derivation=None):
        self.derivation = derive(spec) if derivation is None else derivation
        self.network = self.derivation.network
        self.spec = self.network.spec
        self.names = Names(self.derivation)
        self.gradient_names = {step.symbol.name: step.name for step in self.derivation.backward}
        # Widths an image fixes (a convolution's C H W) stay: an image network is judged at its own widths.
        self.fixed = {w for w, symbol in zip(self.spec.sizes, self.network.widths) if not isinstance(symbol, sp.Symbol)}
        self.widths, self.substitution = (tuple(self.spec.sizes), "") if self.fixed else \
            self._exact_widths(tuple(self.spec.sizes))
        self.windows = Windows(self.network, self._spec_dims)  # the image operators' windows, for claims
        self._instances = {}
        self._redrawn = set()  # the texts of claims judged at points where every var + eps is a square
        # The arguments of the inverse square roots (var + eps) of normalization layers.
        self.roots = [step.expr.arg for step in self.network.steps
                      if isinstance(step.expr, Elementwise) and step.expr.activation == "rsqrt"]

    # -- parsing (the parser asks for names and local gradients through this object)
    def parse(self, text: str, latex: bool | None = None) -> Claim:
        """The claim as a tree, each image operator with its window; raises ``ClaimError`` (with the column) when
        it cannot be read."""
        return self.windows(parse(text, self, looks_like_latex(text) if latex is None else latex))

    def local_factor(self, of: str, wrt: str):
        lg = self._local(of, wrt)
        return None if lg is None else lg.expr

    def _local(self, of: str, wrt: str):
        """The local-gradient entry for ``d<of>/d<wrt>``; an identity layer's output stands for its Z."""
        candidates = [of] + [node.arg.name for node in self.names.activations.values()
                             if node.activation == "identity" and self._output_of(node) == of]
        for candidate in candidates:
            for lg in self.derivation.local_gradients:
                if (lg.of, lg.wrt) == (candidate, wrt):
                    return lg
        return None

    def _output_of(self, node):
        return next((s.name for s in self.network.steps if s.expr == node), None)

    # -- verdicts
    def check(self, text: str, latex: bool | None = None, *, source: str = "", line: int | None = None,
              offset: int = 0) -> Verdict:
        """The verdict on one claim; a claim that cannot be parsed gets an ``error`` verdict (never raises
        for the claim's content). ``offset``: the claim's column in its line, for error positions."""
        try:
            claim = self.parse(text, latex)
        except ClaimError as error:
            column = None if error.column is None else error.column + offset
            return Verdict(text, "error", "parse", error.message, source=source, line=line, column=column)
        return self.judge(claim, source=source, line=line)

    def judge(self, claim: Claim, **where) -> Verdict:
        """The verdict on a parsed claim: shapes (symbolic, then at the spec's widths), exact values, and
        the reason or the note that goes with them; ``where``: the claim's source and line."""
        target = self._target(claim)
        if target is None:
            return self._no_dependence(claim, **where)
        expected = self._expected(claim)

        def verdict(kind, reason="", detail="", note="", assumes=""):
            return Verdict(claim.text, kind, reason, detail, expected if kind != "correct" else "", note, **where,
                           assumes=assumes)

        general = self._shape_problem(claim, target, self._symbolic)
        if general and self._shape_problem(claim, target, self._spec_dims):
            return verdict("wrong", "shape", general)
        try:
            wide = self._spec_instances(claim)
            difference = self._difference(claim, target, wide)
            if difference is not None and not all(instance.algebraic for instance in wide):
                # Judged again at points where every var + eps is a square (smaller batches: each sample's
                # variance must be one), with float64 at the first points as a check on what those miss.
                self._redrawn.add(claim.text)
                difference = self._difference(claim, target, self._spec_instances(claim))
                disagreement = difference is None and self._float_disagreement(claim, target, True, wide)
                if disagreement:
                    return verdict("undecided", "", disagreement)
        except Undefined as error:
            return verdict("wrong", "value", f"the claim is undefined: {error} (at the spec's sizes)")
        except InexactRoot as error:
            return verdict("undecided", "", f"{error}: the exact judge cannot evaluate this network's attention "
                                            "scale; choose a head width without such a factor")
        exact_ok = difference is None
        # equal where rsqrt is a free value, equal where it is the square root: only a difference may be an artefact
        algebraic = exact_ok or all(instance.algebraic for instance in self._spec_instances(claim))
        if not (algebraic and self._exactly_modelled(claim.tree)):
            disagreement = self._float_disagreement(claim, target, exact_ok)
            if disagreement:
                return verdict("undecided", "", disagreement)
        if exact_ok:
            assumption = self._assumption(claim, target)
            if assumption:
                return verdict("correct", note=assumption, assumes="targets_sum_to_one")
            note = ""
            if general:
                relations = self._relations_needed(claim, target, shape_only=False)
                note = (f"correct for this network, but only because {relations_text(relations)}: in general "
                        f"{general}")
            else:
                relations = self._reliance(claim, target)
                if relations:
                    note = f"correct for this network, but only because {relations_text(relations)}"
            return verdict("correct", note=note)
        if general:
            relations = self._relations_needed(claim, target, shape_only=True)
            detail = f"{general}; the factors fit here only because {relations_text(relations)}"
            if self._is_transpose(difference):
                detail += f", and the claim is the transpose of {target.label}"
            return verdict("wrong", "shape", detail)
        reason, detail = self._explain(claim, target, difference)
        return verdict("wrong", reason, detail)

    # -- what a claim is compared with
    def _forward(self, claim) -> tuple:
        """A forward definition's quantity and formula: the step's symbol and expression, or for the loss its
        1 x 1 matrix definition (both)."""
        if claim.wrt == "L":
            loss = self.network.steps[-1].expr.definition
            return loss, loss
        step = self.network.step(claim.wrt)
        return step.symbol, step.expr

    def _target(self, claim) -> _Target | None:
        if claim.of == FORWARD:  # the value itself: the forward step's symbol, or the loss as a 1 x 1 matrix
            value, _ = self._forward(claim)
            return _Target(claim.wrt, tuple(value.shape), claim.wrt == "L", value)
        if claim.of == "L":
            step = self.derivation.step(claim.wrt)
            return _Target(f"dL/d{claim.wrt}", tuple(step.symbol.shape), False, step.symbol)
        lg = self._local(claim.of, claim.wrt)
        if lg is None:
            return None
        shape = tuple(lg.expr.shape) if hasattr(lg.expr, "shape") else ()
        return _Target(f"d{claim.of}/d{claim.wrt}", shape, lg.side in ("elementwise", "vjp"), lg.expr)

    def _no_dependence(self, claim, **where) -> Verdict:
        suggestion = next((lg for lg in self.derivation.local_gradients if lg.wrt == claim.wrt), None)
        detail = f"{claim.of} does not depend directly on {claim.wrt}"
        expected = ""
        if suggestion is not None:
            expected = formula(suggestion.of, suggestion.wrt, suggestion.expr, claim.latex, self.gradient_names)
            detail += f"; the local gradient of {claim.wrt} is d{suggestion.of}/d{claim.wrt}"
        return Verdict(claim.text, "wrong", "value", detail, expected, **where)

    def _expected(self, claim) -> str:
        if claim.of == FORWARD:
            return definition(claim.wrt, self._forward(claim)[1], claim.latex, self.gradient_names)
        if claim.of != "L":
            return formula(claim.of, claim.wrt, self._local(claim.of, claim.wrt).expr, claim.latex,
                           self.gradient_names)
        step = self.derivation.step(claim.wrt)
        expr = step.expr if claim.gradients else self.derivation.gradients[claim.wrt]
        for alternative in step.alternatives if claim.gradients else ():
            # a shorter form written with the claim's own upstream gradients (batch norm's compact dX)
            used = {self.gradient_names[s.name] for s in alternative.expr.atoms(sp.MatrixSymbol)
                    if s.name in self.gradient_names}
            if not alternative.assumes and used and used <= claim.gradients:
                expr = alternative.expr
                break
        return formula("L", claim.wrt, expr, claim.latex, self.gradient_names)

    # -- shapes
    def _symbolic(self, size):
        return size

    def _spec_dims(self, size):
        return self._dims(self.spec.sizes)(size)

    def _dims(self, widths):
        values = dict(zip(self.network.widths, (sp.Integer(w) for w in widths)))
        return lambda size: sp.sympify(size).xreplace(values)

    def _shape_problem(self, claim, target, dims) -> str:
        try:
            shape = ShapeInference(claim.text, self.network, dims)(claim.tree)
        except ShapeMismatch as mismatch:
            return str(mismatch)
        want = tuple(dims(d) for d in target.shape)
        return result_problem(shape, want, target.label, target.broadcasts or want == (1, 1),
                              self.network.batch_first)

    def _fits(self, claim, target, widths) -> bool:
        return not self._shape_problem(claim, target, self._dims(widths))

    # -- instances
    @staticmethod
    def _exact_widths(widths, keep=frozenset()):
        """Widths small enough for exact evaluation with the same pattern (ones and equalities kept), and a
        note saying what was replaced; the widths at the indices in ``keep`` stay as they are."""
        limit = EXACT_WIDTH
        while True:
            kept = {w for i, w in enumerate(widths) if w <= limit or i in keep}
            mapping, value = {}, 2
            for w in sorted(set(widths) - kept):
                while value in kept or value in mapping.values():
                    value += 1
                mapping[w] = value
            reduced = tuple(mapping.get(w, w) for w in widths)
            if limit <= 2 or _products(reduced) <= EXACT_TERMS:
                break
            limit -= 1
        if reduced == widths:
            return widths, ""
        changed = ", ".join(f"n_{i} = {r} (not {w})" for i, (w, r) in enumerate(zip(widths, reduced)) if w != r)
        return reduced, (f"the widths are too large for exact evaluation: claims are checked at {changed}, "
                         "keeping which widths are 1 and which are equal")

    def _claim_widths(self, claim) -> tuple:
        """The exact widths for ``claim``: a width the claim writes as a number (``/ 10``) keeps its value
        where that stays affordable."""
        numbers = {int(n.value) for n in claim.tree.walk() if n.op == "number" and n.value.is_Integer}
        keep = frozenset(i for i, (w, r) in enumerate(zip(self.spec.sizes, self.widths)) if w != r and w in numbers)
        if not keep:
            return self.widths
        widths, _ = self._exact_widths(tuple(self.spec.sizes), keep)
        return widths if _products(widths) <= 10 * EXACT_TERMS else self.widths

    def _instance(self, widths, N, seed, **options) -> _Instance:
        """The instance at these sizes and seed, evaluated once per checker."""
        key = (tuple(widths), N, seed, tuple(sorted(options.items())))
        if key not in self._instances:
            self._instances[key] = _Instance(self, widths, N, seed, **options)
        return self._instances[key]

    def _assumption(self, claim, target) -> str:
        """The note for a claim right only because each sample's targets sum to 1 (the points draw such targets
        for a loss on class distributions): '' where it holds for any targets, or the loss reads none."""
        if self.spec.loss.rule is None or loss_rule(self.spec.loss).targets != "distribution":
            return ""
        widths = self._claim_widths(claim)
        free = self._instance(widths, self._batch_sizes(claim, widths)[0], 0, free_targets=True)
        try:
            if self._difference(claim, target, [free]) is None:
                return ""
        except Undefined:
            pass
        return ("correct when each sample's targets sum to 1 (one-hot labels or class probabilities), as they do "
                f"for a {self.spec.loss.kind} loss on class labels; for targets that do not, {target.label} has "
                "another term (the step-by-step form holds for any targets)")

    def _batch_sizes(self, claim, widths) -> tuple[int, int]:
        """Two batch sizes for judging ``claim`` at ``widths``: above every width, drawn for each claim from
        BATCH_SIZES sizes (seeded by its text, so a verdict is reproducible), so that no factor such as
        ``(N - 4) (N - 5)`` vanishes at sizes the judge always uses. Points redrawn until every var + eps is a
        square take the two smallest (a per-sample variance needs a square for each sample). In an image network,
        the widths an image fixes are large and not symbols: the sizes start above the others and skip them."""
        low = max((w for w in widths if w not in self.fixed), default=1) + 1
        count = IMAGE_BATCH_SIZES if self.fixed else BATCH_SIZES
        sizes = [N for N in range(low, low + count) if N not in self.fixed]
        if claim.text in self._redrawn:
            return sizes[0], sizes[1]
        first, second = random.Random(zlib.crc32(claim.text.encode())).sample(sizes, 2)
        return first, second

    def _spec_instances(self, claim):
        """Two random points at two batch sizes, and a kinked point when the network has ReLU-like layers;
        drawn again where every ``var + eps`` is a square for a claim that needs it (see ``_Instance``)."""
        widths = self._claim_widths(claim)
        N, other = self._batch_sizes(claim, widths)
        redraw = claim.text in self._redrawn
        instances = [self._instance(widths, N, 0, redraw=redraw), self._instance(widths, other, 1, redraw=redraw)]
        if self._kinked_layers():
            instances.append(self._instance(widths, N, 0, kinked=True, redraw=redraw))
        return instances

    def _kinked_layers(self):
        return [node for node in self.names.activations.values() if node.activation in KINKED]

    def random_inputs(self, field, sizes, seed, free_targets=False) -> dict:
        """Random field values for every input, 0 or 1 for a dropout mask, one-hot targets for a loss on class
        labels; targets of a loss on class distributions sum to 1 in each sample (the shorter gradients people write, ``softmax(Y) - T``, hold for
        those), unless ``free_targets``."""
        net = self.network
        inputs = {}
        masks = set(net.masks)
        for name, symbol in net.inputs.items():
            rows, cols = (int(sp.sympify(d).xreplace(sizes)) for d in symbol.shape)
            # A dropout mask is 0/1, so that identities of masks (M ⊙ M = M) hold as they do in the network.
            draw = (lambda: Mod(field.random().v & 1)) if name in masks else field.random
            inputs[name] = np.array([[draw() for _ in range(cols)] for _ in range(rows)], dtype=object)
        if "Y_true" not in inputs or self.spec.loss.rule is None:  # no targets, or no loss rule to read them
            return inputs
        targets = loss_rule(self.spec.loss).targets
        T = inputs["Y_true"] if net.batch_first else inputs["Y_true"].T  # a view: one sample per row
        if targets == "distribution" and not free_targets:
            T[:, -1] = [Mod(1) - sum(row[:-1], Mod(0)) for row in T]
        elif targets == "one_hot":  # a class label per sample, as a hinge loss reads it
            for row in T:
                row[:] = Mod(0)
                row[field.random().v % len(row)] = Mod(1)
        return inputs

    def kink(self, sem, inputs, sizes) -> dict:
        """``inputs`` with biases moved so that every other unit of a ReLU-like layer has an input of exactly 0
        in the first sample, where ReLU'(0) conventions differ."""
        inputs = {name: value.copy() for name, value in inputs.items()}
        for node in self._kinked_layers():
            step = next((s for s in self.network.steps if s.symbol == node.arg), None)
            if step is None:
                continue
            biases = [s for s in step.expr.atoms(sp.MatrixSymbol) if s.name in inputs and 1 in s.shape]
            if len(biases) != 1:
                continue
            evaluator = Evaluator(sem, dict(inputs), sizes)
            evaluator.forward(self.network)
            Z, b = evaluator.env[step.name], inputs[biases[0].name]
            first = Z[0, :] if b.shape[0] == 1 else Z[:, 0]
            for j in range(0, len(first), 2):
                if b.shape[0] == 1:
                    b[0, j] = b[0, j] - first[j]
                else:
                    b[j, 0] = b[j, 0] - first[j]
        return inputs

    # -- comparing values
    def _difference(self, claim, target, instances, scale=None):
        """None if the claim equals the target at every instance; else (instance, claim value, truth)."""
        for instance in instances:
            truth = instance.truth(target, scale)
            value = as_truth_shape(instance.value(claim.tree, scale), truth)
            if not np.all(instance.sem.equal(value, truth)):
                return instance, value, truth
        return None

    def _reliance(self, claim, target) -> list:
        """Width equalities of the spec that a claim right here needs (none when it holds at distinct widths)."""
        relations = self._relations(claim, target)
        if not relations or self._holds(claim, target, self._witness(claim, target, ())):
            return []
        return self._relations_needed(claim, target, shape_only=False)

    def _relations(self, claim, target) -> list:
        """The spec's width relations (``n_i = 1``, ``n_i = n_j``, ``n_i = 2`` where the claim writes 2) that involve
        a width the claim touches."""
        touched = self._touched(claim, target)
        widths = self.spec.sizes
        # A width the claim writes as a number (``/ 2`` for n_2 = 2) comes first: it is the likeliest cause.
        numbers = {int(n.value) for n in claim.tree.walk() if n.op == "number" and n.value.is_Integer}
        relations = [("value", i, w) for i, w in enumerate(widths) if w > 1 and w in numbers and i in touched]
        relations += [("one", i) for i, w in enumerate(widths) if w == 1 and i in touched]
        relations += [("equal", i, j) for i in range(len(widths)) for j in range(i + 1, len(widths))
                      if widths[i] == widths[j] != 1 and (i in touched or j in touched)]
        return relations

    def _touched(self, claim, target) -> set:
        symbols = set()
        for tree in claim.tree.walk():
            if tree.op in ("name", "grad"):
                symbols |= set().union(*(sp.sympify(d).free_symbols for d in self.network.symbol(tree.value).shape))
            elif tree.op in ("size", "number") and isinstance(tree.value, sp.Basic):
                symbols |= tree.value.free_symbols
            elif tree.op == "local" and hasattr(tree.value[2], "shape"):
                symbols |= set().union(*(sp.sympify(d).free_symbols for d in tree.value[2].shape))
        symbols |= set().union(*(sp.sympify(d).free_symbols for d in target.shape))
        symbols.add(self.network.widths[-1])  # the loss's width: a scaling by 1/k
        return {i for i, w in enumerate(self.network.widths) if w in symbols}

    def _witness(self, claim, target, relations) -> tuple:
        """The exact widths with every touched width made distinct from all others, then ``relations`` imposed."""
        widths = list(self._claim_widths(claim))
        fresh = max((w for w in widths if w not in self.fixed), default=0) + 2
        for i in sorted(self._touched(claim, target)):
            while fresh in self.fixed:
                fresh += 1
            widths[i] = fresh
            fresh += 1
        for relation in relations:
            if relation[0] == "one":
                widths[relation[1]] = 1
            elif relation[0] == "value":
                widths[relation[1]] = relation[2]
            else:
                widths[relation[2]] = widths[relation[1]]
        return tuple(widths)

    def _holds(self, claim, target, widths, shape_only=False) -> bool:
        if not self._fits(claim, target, widths):
            return False
        if shape_only:
            return True
        try:
            return self._difference(claim, target, [self._instance(widths, self._batch_sizes(claim, widths)[0], 2)]) \
                is None
        except Undefined:
            return False

    def _relations_needed(self, claim, target, shape_only) -> list:
        """The single spec relation that makes the claim hold (the first found among the first
        ``MAX_RELATIONS_TRIED``), or all of them together."""
        relations = self._relations(claim, target)
        for relation in relations[:MAX_RELATIONS_TRIED]:
            if self._holds(claim, target, self._witness(claim, target, (relation,)), shape_only):
                return [relation]
        return relations

    @staticmethod
    def _is_transpose(difference) -> bool:
        _, value, truth = difference
        return value.shape == truth.shape[::-1] and value.shape[0] == value.shape[1] and bool(
            np.all(difference[0].sem.equal(value, truth.T)))

    # -- why a claim is wrong
    def _explain(self, claim, target, difference) -> tuple[str, str]:
        instance = difference[0]
        if instance.kinked:
            convention = self._relu_convention(claim, target)
            if convention:
                return "convention", convention
        else:
            factor = self._constant_factor(claim, target)
            if factor is not None:
                return self._factor_reason(claim, target, factor)
        if self._is_transpose(difference):
            return "value", f"the claim is the transpose of {target.label} (square here, so the shapes fit)"
        return "value", mistake(self, claim, target) or self._counterexample(claim, target, difference)

    def _constant_factor(self, claim, target):
        """The factor c with claim = c * truth at every random instance: a loss scaling 2^a N^b k^c (one that
        also holds with the claim's widths made distinct, when one does), -1, or another small number."""
        spec_ratios = self._ratios(claim, target, [i for i in self._spec_instances(claim) if not i.kinked])
        if spec_ratios is None:
            return None
        witness = self._witness(claim, target, ())
        witness_ratios = self._ratios(claim, target, [self._instance(witness, self._batch_sizes(claim, witness)[0], 2)]) \
            if self._fits(claim, target, witness) else None
        net = self.network
        matching = [c for c in [*factor_candidates(net.N, net.widths[-1]), sp.Integer(-1)]
                    if self._matches(c, spec_ratios)]
        for candidate in matching:
            if witness_ratios is not None and self._matches(candidate, witness_ratios):
                return candidate
        if matching:
            return matching[0]
        values = {rational(r.v) for _, r in spec_ratios}
        return values.pop() if len(values) == 1 and None not in values else None

    @staticmethod
    def _matches(candidate, ratios) -> bool:
        return all(instance.sem.scalar(sp.Rational(candidate.xreplace(instance.sizes))) == r for instance, r in ratios)

    @staticmethod
    def _ratios(claim, target, instances):
        """(instance, r) with claim = r * truth entrywise at each instance, or None where no such r exists."""
        ratios = []
        for instance in instances:
            try:
                truth = instance.truth(target)
                value = as_truth_shape(instance.value(claim.tree), truth)
            except Undefined:
                return None
            nonzero = [k for k, t in enumerate(truth.flat) if t.v != 0]
            if not nonzero:
                return None
            r = value.flat[nonzero[0]] * truth.flat[nonzero[0]] ** -1
            if not all((v - r * t).v == 0 for v, t in zip(value.flat, truth.flat)):
                return None
            ratios.append((instance, r))
        return ratios

    def _factor_reason(self, claim, target, factor) -> tuple[str, str]:
        net = self.network
        shown = str(factor).replace("*", " ")
        if factor == 0:
            return "value", f"the claim is zero everywhere, and {target.label} is not"
        if factor == -1:
            return "value", f"the claim is the negative of {target.label} (a sign error)"
        named = named_mistake(self, claim, target)  # dropout's scaling left out or doubled, ...
        if named:
            return "value", f"the claim is {shown} times {target.label}: it {named}"
        words = scaling_words(factor, net.N, net.widths[-1]) if factor.free_symbols or factor in (2, sp.Rational(1, 2)) \
            else ""
        if not words or claim.of != "L":
            return "value", f"the claim is {shown} times {target.label}"
        rescaled = self._difference(claim, target, [i for i in self._spec_instances(claim) if not i.kinked], scale=factor)
        if claim.gradients and rescaled is not None:
            upstream = ", ".join(f"dL/d{name}" for name in sorted(claim.gradients))
            return "value", (f"the claim is {shown} times {target.label}, but {upstream} already carries the "
                             f"loss's scaling, so no factor {shown} belongs here")
        loss = self.spec.loss
        return "convention", (f"the claim is {shown} times {target.label}: right for the loss {words}, but this "
                              f"spec's loss is {loss.kind} (reduction {loss.reduction}, scale {loss.scale:g})")

    def _relu_convention(self, claim, target) -> str:
        own = sorted({node.params.get("relu_grad_at_zero") for node in self._kinked_layers()
                      if node.activation == "relu"})
        if not own:
            return ""
        for value in RELU_GRAD_AT_ZERO_VALUES:
            if [value] == own:
                continue
            widths = self._claim_widths(claim)
            instance = self._instance(widths, self._batch_sizes(claim, widths)[0], 0, kinked=True, relu_at_zero=value)
            try:
                if self._difference(claim, target, [instance]) is None:
                    shown = ", ".join(f"{v:g}" for v in own)
                    return (f"correct if ReLU'(0) = {value:g}, but this spec takes ReLU'(0) = {shown} "
                            "(relu_grad_at_zero)")
            except Undefined:
                continue
        return ""

    def _counterexample(self, claim, target, difference) -> str:
        instance, value, truth = difference
        unequal = ~instance.sem.equal(value, truth)
        i, j = (int(x) for x in np.argwhere(unequal)[0])
        where = f"the shapes fit but the values differ {instance.describe()}: entry ({i}, {j})"
        floats = self._float_values(claim, target, instance)
        if floats is not None:
            got, want = floats[0][i, j], floats[1][i, j]
            scale = max(abs(got), abs(want))
            if np.isfinite(scale) and abs(got - want) > FLOAT_DIFFERENT * scale:
                return f"{where} is {got:.6g}, {target.label} is {want:.6g} (float64)"
            return (f"{where} differs in exact arithmetic (modulo {PRIME_TEXT}); float64 cannot show it here "
                    f"({got:.3g} and {want:.3g})")
        return f"{where} differs in exact arithmetic (modulo {PRIME_TEXT})"

    # -- float64, only as a cross-check and for readable numbers
    def _float_values(self, claim, target, like):
        """The claim and the truth in float64 at ``like``'s sizes (None if float64 cannot evaluate them)."""
        widths = tuple(int(like.sizes.get(w, w)) for w in self.network.widths)  # an image fixes some widths
        instance = self._instance(widths, like.N, 0, exact=False, kinked=like.kinked)
        with np.errstate(all="ignore"):
            try:
                truth = instance.truth(target).astype(float)
                value = as_truth_shape(instance.value(claim.tree), truth).astype(float)
            except (ArithmeticError, ValueError, TypeError):
                return None
        return value, truth

    def _float_disagreement(self, claim, target, exact_ok: bool, instances=None) -> str:
        """Where the exact semantics may miss an identity the claim uses: '' unless float64 clearly says the
        opposite of the exact comparison at the same random points (or at ``instances``' sizes)."""
        for instance in instances or self._spec_instances(claim):
            if instance.kinked:
                continue
            floats = self._float_values(claim, target, instance)
            if floats is None:
                continue
            value, truth = floats
            scale = np.max(np.abs(truth), initial=0.0)
            error = np.max(np.abs(value - truth), initial=0.0)
            if not (np.isfinite(scale) and np.isfinite(error)) or scale == 0:
                continue
            if exact_ok and error > FLOAT_DIFFERENT * scale:
                return (f"exact arithmetic finds the claim equal to {target.label}, but float64 differs by "
                        f"{error / scale:.2g} (relative) at a random point; the claim uses exp, log or a function "
                        "of a composite argument, where the exact check does not model every identity")
            if not exact_ok and error <= FLOAT_EQUAL * scale:
                return (f"exact arithmetic finds the claim different from {target.label}, but float64 agrees at "
                        f"random points (relative difference {error / scale:.1e}): the claim may rely on an identity "
                        "of exp or log "
                        "the exact check does not model (it knows exp(-z) = 1/exp(z), log(exp(z)) = z, "
                        "sigmoid = 1/(1 + exp(-z)), tanh = (exp(z) - exp(-z))/(exp(z) + exp(-z)))")
        return ""

    @staticmethod
    def _exactly_modelled(tree) -> bool:
        """Whether every function in ``tree`` is applied where the exact semantics know all identities: no
        log, and exp, activations, comparisons and the like only of a quantity (possibly negated, transposed)
        or a constant."""
        def simple(arg):
            while arg.op in ("neg", "T"):
                arg = arg.args[0]
            return arg.op in ("name", "grad", "local", "number", "size")

        for node in tree.walk():
            if node.op == "log":
                return False
            if node.op in ("exp", "fn", "softmax", "abs", "sign", "rowmax", "maxmask") and not simple(node.args[0]):
                return False
            if node.op in ("cmp", "maximum") and not all(simple(arg) for arg in node.args):
                return False
        return True


def check(claims, spec: Spec | dict | str | None = None, *, latex: bool | None = None):
    """Verdicts on ``claims`` (one string, or a list) about ``spec``'s network (a Spec, a dict, a TOML path or a
    preset name; default: the seed network). LaTeX when a claim has a backslash, unless ``latex`` says."""
    checker = Checker(spec)
    if isinstance(claims, str):
        return checker.check(claims, latex)
    return [checker.check(claim, latex) for claim in claims]
