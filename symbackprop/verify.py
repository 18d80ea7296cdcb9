"""Derivation -> Report: every formula checked against direct differentiation of the loss.

The oracle is independent of our chain rule: an explicit network whose entries are symengine symbols and
whose activations are opaque functions, differentiated by symengine. The report names how each row was
checked:

- ``sympy.diff``: an activation's derivative rule equals the derivative of its forward rule;
- local steps, ``expand``: what each forward step sends back to each operand equals direct differentiation
  of that step, with the upstream gradient a matrix of free symbols ``G`` (``dW = A^T G`` against
  ``d/dW sum(G ⊙ (A W + 1 b))``, ``delta = G ⊙ f'(Z)`` against ``d/dZ sum(G ⊙ f(Z))``, the loss gradient
  against ``d/dY_pred L``), expanded to the zero polynomial entry by entry: exact, and independent of depth;
- every composed formula, and every shorter equivalent form (batch norm's compact ``dX``, a fused
  sigmoid/softmax and cross-entropy gradient), against direct differentiation of the whole loss, entry by
  entry, with ``expand`` (an exact proof, where the network is small enough for expansion to be cheap) or
  ``schwartz-zippel`` (both sides evaluated exactly, modulo a 61-bit prime, at a random point, every
  function given consistent random values; a wrong formula passes with probability below the bound printed).
  Normalization layers stay exact: their inverse standard deviation ``r = (var + eps)^(-1/2)`` is an opaque
  value whose derivative is ``-r^3 / 2`` (a rule ``sympy.diff`` confirms), which proves the formulas for every
  ``eps``;
- finite differences: central differences of the real loss in float64 along a random direction, reported in
  every composed row as a sanity check of the NumPy forms. They never decide a row: where float64 cannot
  resolve a gradient (vanishing or overflowing), the row says so and the exact proof stands.

Differentiating the whole loss in one call is exponential in depth (symengine's ``diff`` and ``cse`` do not
share work across the expression DAG: 4 s for one diff of a 10-layer tanh net of width 4), so the oracle
names every entry of every forward quantity as a node: symengine differentiates each node's scalar
expression by each symbol in it, and the partials are combined along the DAG (reverse accumulation), which
gives every ``dL/d(entry)`` at once in time linear in the network's size.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
import time
from dataclasses import asdict, dataclass
from functools import cache

import numpy as np
import symengine as se
import sympy as sp
from sympy.matrices.exceptions import ShapeError

from . import formula
from .derivation import DISTRIBUTION, sum_of
from .evaluate import (
    PRIME,
    PRIME_TEXT,
    Evaluator,
    FieldBackend,
    Float64Backend,
    InexactRoot,
    OracleBackend,
    SymbolicBackend,
    Valuation,
)
from .expressions import Elementwise
from .printing import TextPrinter
from .rules import activation_rule, loss_rule

# Expansion is exact but grows quickly with depth and size; above this many matrix entries, or this many
# forward steps (a dense layer has two, a normalization layer six), we evaluate instead.
EXPAND_LIMIT = 220
EXPAND_MAX_STEPS = 8
FD_STEP = 1e-6
FD_TOLERANCE = 1e-5
# The finite-difference reruns travel side by side, as many at once as fit in this many float64 values.
FD_STACK_FLOATS = 4_000_000
# Internal symbols start with a character no user name can contain, so they never collide with one.
INTERNAL = "%"
# Measured cost of the exact check per scalar multiply-add of the forward pass (oracle, cse, partials,
# evaluation), and per term visited by the local steps' direct differentiation; used to refuse sizes that
# cannot fit a budget before starting.
SECONDS_PER_TERM = 2e-4
SECONDS_PER_LOCAL_TERM = 5e-8


class BudgetExceeded(Exception):
    """The verification did not finish within its time budget."""


@dataclass(frozen=True)
class Check:
    """One verified formula: its name, whether it holds, how it was checked, and what was found."""

    name: str
    ok: bool
    method: str
    detail: str


@dataclass(frozen=True)
class Report:
    """The outcome of verifying a derivation: one ``Check`` per formula."""

    checks: tuple[Check, ...]
    seconds: float
    witness: dict
    sizes: str  # "witness" (sizes chosen by the tool) or "spec" (the spec's own widths and a given batch)
    note: str = ""

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def to_dict(self) -> dict:
        return {"ok": self.ok, "seconds": round(self.seconds, 4), "sizes": self.sizes,
                "witness": self.witness, "note": self.note,
                "checks": [asdict(check) for check in self.checks]}

    def table(self) -> str:
        """A plain-text table, one line per check, for the terminal."""
        width = max(len(c.name) for c in self.checks)
        method = max(len(c.method) for c in self.checks)
        lines = [f"{'formula':<{width}}  {'ok':<4}  {'method':<{method}}  detail"]
        lines += [f"{c.name:<{width}}  {'yes' if c.ok else 'NO':<4}  {c.method:<{method}}  {c.detail}"
                  for c in self.checks]
        sizes = ", ".join(f"{k}={v}" for k, v in self.witness.items())
        verdict = "all formulas verified" if self.ok else "VERIFICATION FAILED"
        lines.append(f"{verdict} in {self.seconds:.2f} s ({self.sizes} sizes: {sizes})")
        if self.note:
            lines.append(self.note)
        return "\n".join(lines)


# Witness widths cycle through this many values: any run of that many consecutive layers has distinct widths,
# and the sizes (so the check's cost per layer) stay small however deep the network is.
WITNESS_CYCLE = 6
# The positions of a sequence in an attention network at witness sizes: more than two, so that a causal mask
# has rows of every length, and unlike every witness width.
WITNESS_POSITIONS = 9


def witness_sizes(depth: int) -> tuple[int, tuple[int, ...]]:
    """Batch and widths for checking: N = 2 and widths 3, 4, ..., 8, 3, 4, ... (>= 2 and different from N and
    from each other within any six consecutive layers), so a misplaced transpose cannot fit; a formula that
    mixes up farther layers still fails on its values."""
    return 2, tuple(3 + l % WITNESS_CYCLE for l in range(depth + 1))


def gradient_label(name: str) -> str:
    return f"dL/d{name}"


def form_check_name(name: str, label: str) -> str:
    """The report row of a shorter form of ``dL/d<name>``: ``dL/dZ3 (fused softmax cross entropy)``."""
    return f"{gradient_label(name)} ({label.replace('_', ' ')})"


def verify(derivation, *, batch: int | None = None, budget: float | None = None, seed: int = 0,
           progress=None) -> Report:
    """Verify every formula of ``derivation``.

    With ``batch``, the check runs at the spec's own widths and that batch size; if it cannot finish within
    ``budget`` seconds (refused up front when the estimate is already over, stopped when the time runs out)
    it says so in the report's note and verifies at witness sizes instead. ``progress(done, total)`` is
    called as checks complete. A ``budget`` must be a finite number of seconds > 0 (``None``: no limit).
    """
    if budget is not None and not (isinstance(budget, (int, float)) and math.isfinite(budget) and budget > 0):
        raise ValueError(f"budget must be a finite number of seconds > 0, got {budget!r}")
    start = time.perf_counter()
    network = derivation.network
    note = ""
    if batch is not None:
        widths = network.spec.sizes
        estimate = estimated_seconds(network, batch, widths)
        if budget is not None and estimate > budget:
            note = (f"The exact check at the spec's sizes (batch {batch}) would take about {estimate:.3g} s, "
                    f"more than the {budget:g} s budget; verified at witness sizes instead.")
        else:
            deadline = None if budget is None else start + budget
            try:
                checks = _Verifier(derivation, batch, widths, seed, deadline, progress).run()
                return Report(tuple(checks), time.perf_counter() - start,
                              _size_dict(network, batch, widths), "spec")
            except BudgetExceeded:
                note = (f"The exact check at the spec's sizes (batch {batch}) did not finish within the "
                        f"{budget:g} s budget; verified at witness sizes instead.")
            except InexactRoot as error:
                note = f"At the spec's sizes {error}; verified at witness sizes instead."
    N, widths = witness_sizes(network.depth)
    if network.attends:
        N = WITNESS_POSITIONS
    checks = _Verifier(derivation, N, widths, seed, None, progress).run()
    return Report(tuple(checks), time.perf_counter() - start, _size_dict(network, N, widths), "witness", note)


def estimated_seconds(network, N: int, widths) -> float:
    """A rough upper estimate of the exact check's time at batch ``N`` and ``widths`` (n_0, ..., n_L)."""
    total = 0.0
    for n_in, n_out in itertools.pairwise(widths):
        terms = N * n_in * n_out
        total += terms * SECONDS_PER_TERM
        total += terms * (n_in * n_out + N * n_in + N * n_out) * SECONDS_PER_LOCAL_TERM
    return total


def _size_dict(network, N, widths) -> dict:
    sizes = network.sizes(N, widths)
    return {"N": N, **{str(symbol): int(sizes[symbol]) for symbol in network.size_symbols}}


def evaluate_formulas(derivation, backend, env: dict, sizes: dict, skip=frozenset(), alternatives=False) -> dict:
    """Forward values and every backward formula evaluated with ``backend`` (``env``: the inputs' values).

    Formulas named in ``skip`` (those that cannot be evaluated) are left out; with ``alternatives``, the
    shorter equivalent forms are evaluated too (as ``<symbol>@<label>``).
    """
    evaluator = Evaluator(backend, dict(env), sizes)
    evaluator.forward(derivation.network)
    evaluator.backward(derivation, skip, alternatives)
    return evaluator.env


def random_float_inputs(network, sizes: dict, rng) -> dict:
    """Standard normal float64 values for every input, with targets the loss accepts, 0/1 masks and the
    one-hot rows of random token ids."""
    inputs = {}
    for name, symbol in network.inputs.items():
        shape = tuple(int(d.xreplace(sizes)) for d in symbol.shape)
        if network.roles[name] == "ids":
            inputs[name] = random_one_hot(rng, shape, int(sizes[next(iter(symbol.shape[1].free_symbols))]))
            continue
        inputs[name] = (rng.random(shape) < 0.5).astype(float) if network.roles[name] == "mask" \
            else rng.standard_normal(shape)
    if "Y_true" in inputs:  # a forward pass written as code has no targets of a loss rule
        inputs["Y_true"] = float_targets(network, inputs["Y_true"], rng)
    return inputs


def random_one_hot(rng, shape: tuple[int, int], vocab: int) -> np.ndarray:
    """The one-hot rows of random token ids: ``shape[1] // vocab`` ids of ``vocab`` per row, side by side."""
    ids = rng.integers(0, vocab, (shape[0], shape[1] // vocab))
    return np.concatenate([np.eye(vocab)[ids[:, j]] for j in range(ids.shape[1])], axis=1)


def float_targets(network, draw: np.ndarray, rng) -> np.ndarray:
    """Targets of the kind the loss expects, from a standard normal ``draw`` in the network's layout."""
    kind = loss_rule(network.spec.loss).targets
    T = draw if network.batch_first else draw.T
    if kind == "distribution":
        T = np.exp(T) / np.exp(T).sum(axis=1, keepdims=True)
    elif kind == "one_hot":
        T = np.eye(T.shape[1])[np.argmax(T, axis=1)]
    elif kind == "binary":
        T = rng.random(T.shape)
    return T if network.batch_first else T.T


def check_activation_rule(name: str, params: dict) -> Check:
    """Prove an activation's derivative rule equals ``sympy.diff`` of its forward rule on each side of every
    breakpoint, and at a breakpoint that is no kink; the value at a kink is a convention."""
    return _check_activation_rule(activation_rule(name), tuple(sorted(params.items())))


@cache
def _check_activation_rule(rule, items: tuple) -> Check:
    """``check_activation_rule``, once per process for each rule object and setting.

    A rule whose derivative the exact checks compute from its value (``exact_derivative``) has that form
    checked too, since the proofs rely on it."""
    params = dict(items)
    z = formula.Z
    forward, derivative = rule.forward(z, params), rule.derivative(z, params)
    breakpoints = sorted({*formula.breakpoints(forward), *formula.breakpoints(derivative)}, key=float)
    slopes = []  # sympy.diff of the forward branch between consecutive breakpoints
    ok = True
    for interval in formula.intervals(breakpoints):
        x = formula.inside(interval)
        slopes.append(sp.diff(formula.branch_at(forward, x), z))
        ok = ok and sp.simplify(slopes[-1] - formula.branch_at(derivative, x)) == 0
    kinks = []
    for k, left, right in zip(breakpoints, slopes, slopes[1:]):
        sides = sp.limit(left, z, k, "-"), sp.limit(right, z, k, "+")
        if sp.simplify(sides[0] - sides[1]) == 0:  # no kink: the rule must take the slope's value
            ok = ok and sp.simplify(derivative.subs(z, k) - sides[0]) == 0
        else:
            kinks.append(k)
            if rule.grad_at_kinks is not None:
                ok = ok and sp.simplify(derivative.subs(z, k) - sp.Rational(str(rule.grad_at_kinks))) == 0
    settings = ", ".join(f"{k}={v:g}" for k, v in params.items())
    if rule.grad_at_kinks is not None:
        settings = f"grad_at_kinks={rule.grad_at_kinks:g}"
    sides = [formula.describe(interval) for interval in formula.intervals(breakpoints)]
    where = f"for {', '.join(sides[:-1])} and {sides[-1]}" if breakpoints else "for all real z"
    if kinks:
        where += f"; the value at {', '.join(map(str, sorted(kinks, key=float)))} is a convention"
    if rule.exact_derivative:
        ok = ok and sp.simplify(rule.exact_derivative(forward, z) - derivative) == 0
        where += ", and f' written with f itself agrees"
    detail = f"f' = d/dz f {where}" + (f" ({settings})" if settings else "")
    return Check(f"{rule.name}'(z)", ok, "sympy.diff", detail if ok else "derivative rule differs from d/dz f")


def _symbols(name: str, shape) -> np.ndarray:
    """A matrix of symengine symbols ``name[i,j]`` (brackets keep them apart from every generated name)."""
    rows, cols = shape
    return np.array([[se.Symbol(f"{name}[{i},{j}]") for j in range(cols)] for i in range(rows)], dtype=object)


class _Oracle:
    """The loss as an explicit symengine expression DAG, every quantity shifted by symbols of its own.

    Inputs are matrices of symbols; every entry of every forward quantity ``q`` is a node, a symbol defined
    by its scalar expression in the previous quantities' entries plus a perturbation symbol ``%P_q[i,j]``
    (valued 0), so ``dL/dq_ij = dL/d%P_q[i,j]`` at ``P = 0`` for inputs and intermediate quantities alike; the
    loss is the last node. symengine differentiates each node by each symbol in it once, and ``gradients``
    accumulates those partials backwards along the DAG.
    """

    def __init__(self, verifier, names):
        network = verifier.network
        self.shifts = {name: _symbols(f"{INTERNAL}P_{name}", verifier.shapes[name]) for name in names}
        self.nodes = []
        env = {name: self._node(name, verifier.symbols[name]) for name in network.inputs}
        evaluator = Evaluator(OracleBackend(), env, verifier.sizes)
        for step in network.steps:
            if step.kind != "loss":
                env[step.name] = self._node(step.name, evaluator(step.expr))
                verifier.check_deadline()
        self.root = se.Symbol(f"{INTERNAL}L")
        self.nodes.append((self.root, evaluator.loss(network)))
        active = {symbol for symbol, _ in self.nodes}
        active.update(s for shift in self.shifts.values() for s in shift.flat)
        self.partials = [_partials(expr, active) for _, expr in self.nodes]

    def _node(self, name, value):
        """Name every entry of ``value`` (shifted, if ``name`` is checked) as a node; their symbols."""
        if name not in self.shifts:
            return value
        symbols = _symbols(f"{INTERNAL}{name}'", value.shape)
        self.nodes += zip(symbols.flat, (value + self.shifts[name]).flat)
        return symbols

    def gradients(self, backend, values: dict, check_deadline) -> dict:
        """``dL/d(entry)`` of every shifted quantity in ``backend`` (``values``: the inputs' values)."""
        zero = backend.scalar(0)
        values = dict(values)
        values.update((s, zero) for shift in self.shifts.values() for s in shift.flat)
        valuation = Valuation(backend, values)
        partials = []
        for (symbol, expr), derivatives in zip(self.nodes, self.partials):
            if symbol is not self.root:
                values[symbol] = valuation(expr)
            partials.append([(s, valuation(d)) for s, d in derivatives])
            check_deadline()
        adjoint = {self.root: backend.scalar(1)}
        for (symbol, _), local in zip(reversed(self.nodes), reversed(partials)):
            weight = adjoint.get(symbol)
            if weight is None:
                continue
            for s, d in local:
                adjoint[s] = adjoint[s] + weight * d if s in adjoint else weight * d
        return {name: np.array([[adjoint.get(s, zero) for s in row] for row in shift], dtype=object)
                for name, shift in self.shifts.items()}


class _Verifier:
    """One verification run at fixed sizes: builds the oracle once and checks every formula against it."""

    def __init__(self, derivation, N, widths, seed, deadline, progress):
        self.derivation, self.network = derivation, derivation.network
        self.sizes = self.network.sizes(N, widths)
        self.seed, self.deadline, self.progress = seed, deadline, progress
        self.rng = np.random.default_rng(seed)
        self.shapes = {}
        for name in [*self.network.inputs, *(s.name for s in self.network.steps if s.kind != "loss")]:
            symbol = self.network.symbol(name)
            self.shapes[name] = tuple(int(d.xreplace(self.sizes)) for d in symbol.shape)
        self.symbols = {name: _symbols(name, shape) for name, shape in self.shapes.items()}
        self.skip = frozenset()
        self.proved = set()  # the keys of the local checks that hold (``_local_key``)

    def _distributions(self, T, backend):
        """Targets whose samples sum to 1: each sample's last entry is 1 minus the others."""
        T = T.copy() if self.network.batch_first else T.T.copy()
        T[:, -1] = -T[:, :-1].sum(axis=1) + backend.scalar(1) if T.shape[1] > 1 else backend.scalar(1)
        return T if self.network.batch_first else T.T

    def _formulas(self, backend, env):
        """Forward values, every backward formula and its shorter forms, evaluated with ``backend``."""
        return evaluate_formulas(self.derivation, backend, env, self.sizes, self.skip, alternatives=True)

    # -- the run ------------------------------------------------------------------------------------------
    def run(self) -> list[Check]:
        network, steps = self.network, self.derivation.backward
        problems = {step.name: self._shape_problem(step) for step in steps}
        # A formula whose factors do not fit cannot be evaluated, nor can any formula built on it.
        blocked = {name for name, problem in problems.items() if problem}
        for step in steps:
            if {s.name for s in step.expr.free_symbols} & {f"d{name}" for name in blocked}:
                blocked.add(step.name)
        self.skip = frozenset(blocked)
        alternatives = [(step, alt) for step in steps if step.name not in blocked for alt in step.alternatives]

        checks = self._rule_checks()
        groups = self._local_groups(steps, blocked)
        total = len(checks) + len(groups) + 1 + len(steps) + len(alternatives)
        self._tick(len(checks), total)
        for label, terms in groups:
            checks.append(self._local_check(label, terms))
            self._tick(len(checks), total)

        entries = sum(rows * cols for rows, cols in self.shapes.values())
        self.exact = entries <= EXPAND_LIMIT and len(network.steps) - 1 <= EXPAND_MAX_STEPS
        self.oracle = _Oracle(self, [step.name for step in steps if step.name not in blocked])
        self.points = {}
        self._point("expand" if self.exact else "field")
        self._tick(len(checks) + 1, total)

        fd = _FiniteDifferences(self, self.rng, [step.name for step in steps if step.name not in blocked],
                                self.check_deadline)
        for done, step in enumerate(steps, start=len(checks) + 2):
            label = gradient_label(step.name)
            if problems[step.name]:
                checks.append(Check(label, False, "shape", problems[step.name]))
            elif step.name in blocked:
                problem = "built on a formula whose shapes do not fit"
                checks.append(Check(label, False, "not checked", problem))
            else:
                check = self._decide(step.name, step.symbol.name)
                checks.append(Check(label, check.ok, check.method, f"{check.detail}; {fd.describe(step)}"))
            self._tick(done, total)
        for step, alt in alternatives:
            check = self._decide(step.name, f"{step.symbol.name}@{alt.label}", alt.assumes)
            note = "; every sample's targets summing to 1" if alt.assumes == DISTRIBUTION else ""
            checks.append(Check(form_check_name(step.name, alt.label), check.ok, check.method, check.detail + note))
            self._tick(len(checks) + 1, total)
        return checks

    def _point(self, kind: str, assumes: str = "") -> tuple:
        """``(backend, formulas' values, direct gradients)`` at the symbolic point (``expand``) or a random
        point mod p (``field``), with targets whose samples sum to 1 where ``assumes`` says so; made once."""
        if (kind, assumes) not in self.points:
            network = self.network
            if kind == "expand":
                backend = SymbolicBackend()
                inputs = {name: self.symbols[name] for name in network.inputs}
            else:
                backend = FieldBackend(self.seed)
                inputs = {name: self._random_array(backend, name) for name in network.inputs}
            if assumes == DISTRIBUTION:
                inputs["Y_true"] = self._distributions(inputs["Y_true"], backend)
            leaves = {s: v for name in network.inputs for s, v in zip(self.symbols[name].flat, inputs[name].flat)}
            self.points[kind, assumes] = (backend, self._formulas(backend, inputs),
                                          self.oracle.gradients(backend, leaves, self.check_deadline))
        return self.points[kind, assumes]

    def _decide(self, name: str, formula: str, assumes: str = "") -> Check:
        """A formula (``formula``: its key among the evaluated values) against ``dL/d<name>``, exactly.

        Expansion treats a reciprocal as an opaque value, so it cannot cancel ``x (1/x)``; where expansion
        leaves a difference, the row is decided at a random point mod p instead (a wrong formula still fails
        there)."""
        backend, values, direct = self._point("expand" if self.exact else "field", assumes)
        compare = self._expand if self.exact else self._schwartz_zippel
        check = compare(direct[name], values[formula], backend)
        if check.ok or not self.exact:
            return check
        backend, values, direct = self._point("field", assumes)
        second = self._schwartz_zippel(direct[name], values[formula], backend)
        if not second.ok:
            return check
        return Check("", True, second.method, second.detail + " (expansion alone cannot cancel its reciprocals)")

    def check_deadline(self):
        if self.deadline is not None and time.perf_counter() > self.deadline:
            raise BudgetExceeded

    def _tick(self, done, total):
        self.check_deadline()
        if self.progress:
            self.progress(done, total)

    def _random_array(self, field, name):
        rows, cols = self.shapes[name]
        return np.array([[field.random() for _ in range(cols)] for _ in range(rows)], dtype=object)

    def _shape_problem(self, step) -> str:
        try:
            shape = step.expr.shape
        except (ShapeError, ValueError, TypeError) as error:  # SymPy's ways of saying factors do not fit
            return f"the formula's factors do not fit together: {error}"
        if tuple(shape) != tuple(step.symbol.shape):
            want = " x ".join(map(str, step.symbol.shape))
            return f"the formula has shape {' x '.join(map(str, shape))}, the gradient must be {want}"
        return ""

    # -- comparisons --------------------------------------------------------------------------------------
    def _expand(self, direct, formula, backend) -> Check:
        for (i, j), value in np.ndenumerate(direct):
            difference = se.expand(value - formula[i, j])
            if difference != 0:
                detail = f"entry ({i}, {j}): direct minus formula = {_short(difference)}"
                return Check("", False, "expand", detail)
            self.check_deadline()
        return Check("", True, "expand", f"identically zero in all {direct.size} entries")

    def _schwartz_zippel(self, direct, formula, backend) -> Check:
        for (i, j), value in np.ndenumerate(direct):
            if value != formula[i, j]:
                return Check("", False, "schwartz-zippel",
                             f"entry ({i}, {j}) differs from direct differentiation at a random point")
        bound = false_pass_bound(self.network, backend)
        return Check("", True, "schwartz-zippel",
                     f"all {direct.size} entries equal at a random point mod {PRIME_TEXT} "
                     f"(false pass <= {bound:.0e})")

    # -- rules and local steps ----------------------------------------------------------------------------
    def _rule_checks(self) -> list[Check]:
        """Every elementwise function the forward steps apply, once per setting."""
        checks, seen = [], set()
        for step in self.network.steps:
            new = [node for node in step.expr.atoms(Elementwise)
                   if (node.activation, tuple(sorted(node.params.items()))) not in seen]
            for node in sorted(new, key=str):  # (printing a node takes time: only the new ones)
                key = (node.activation, tuple(sorted(node.params.items())))
                if key not in seen:
                    seen.add(key)
                    checks.append(check_activation_rule(node.activation, node.params))
        return checks

    def _local_groups(self, steps, blocked) -> list[tuple[str, list]]:
        """What each forward step sends to each operand, grouped: the loss, then each layer in backward order."""
        groups = {}
        for step in steps:
            if step.name in blocked:
                continue
            by_consumer = {}  # a step that reads a value twice (a + a) sends it the sum of both
            for term in step.terms:
                by_consumer.setdefault(term.upstream, []).append(term)
            for upstream, terms in by_consumer.items():
                label = "local: loss gradient" if upstream is None else f"local: layer {terms[0].local.layer}"
                # With a single consumer the step's own formula is what it sends back (the formula checked).
                expr = step.expr if len(by_consumer) == 1 else sum_of(t.expr for t in terms)
                groups.setdefault(label, []).append((step, dataclasses.replace(terms[0], expr=expr)))
        return list(groups.items())

    def _local_check(self, label, terms) -> Check:
        """Each contribution against direct differentiation of the step it reverses (``G``: free symbols)."""
        printer, entries, claims = TextPrinter(), 0, []
        for step, term in terms:
            sign = "=" if len({t.upstream for t in step.terms}) == 1 else "∋"
            claim = f"{printer.doprint(step.symbol)} {sign} {printer.doprint(term.expr)}"
            claims.append(claim)
            key = self._local_key(step, term)
            if key not in self.proved:
                difference = self._local_difference(step, term)
                if difference:
                    return Check(label, False, "expand", f"{claim}: {difference}")
                self.proved.add(key)
            entries += self.symbols[step.name].size
        what = ("direct differentiation of the loss" if terms[0][1].upstream is None else
                "direct differentiation of sum(G ⊙ its forward step), G a matrix of free symbols")
        return Check(label, True, "expand", f"{'; '.join(claims)}: each equals {what}, "
                                            f"identically in all {entries} entries")

    def _local_key(self, step, term):
        """What a local check computes, up to the names of the quantities: the step it reverses and the
        contribution, every matrix symbol renamed by its order of appearance and every size given its value.
        Layers of the same kind and widths have the same key, and the proof of one holds for the others."""
        consumer = self._consumer(term)
        leaves = (self.network.symbol(step.name), consumer.symbol, consumer.expr, term.expr)
        names = {}
        for node in sp.preorder_traversal(leaves):
            if isinstance(node, sp.MatrixSymbol) and node not in names:
                names[node] = sp.MatrixSymbol(f"{INTERNAL}{len(names)}", *(d.xreplace(self.sizes) for d in node.shape))
        return tuple(leaf.xreplace(names).xreplace(self.sizes) for leaf in leaves)

    def _local_difference(self, step, term) -> str:
        """Nothing where the contribution equals direct differentiation of its step in every entry, else the
        first entry that differs and by what."""
        objective, formula, backend = self._local_sides(step, term)
        partials = dict(_partials(objective, set(self.symbols[step.name].flat)))
        valuation = Valuation(backend, {symbol: symbol for symbol in objective.free_symbols})
        for (i, j), q in np.ndenumerate(self.symbols[step.name]):
            difference = se.expand(valuation(partials.get(q, se.Integer(0))) - formula[i, j])
            if difference != 0:
                return f"entry ({i}, {j}): direct minus formula = {_short(difference)}"
            self.check_deadline()
        return ""

    def _consumer(self, term):
        """The forward step whose output's gradient ``term`` sends back (the loss for the loss gradient)."""
        return self.network.steps[-1] if term.upstream is None else self.network.step(term.upstream)

    def _local_sides(self, step, term):
        """The objective to differentiate (symengine), the contribution's value, and the backend of its values.

        Every quantity is a matrix of free symbols, except the forward step's own output, which is computed
        from them (some contributions are written with it: batch norm's ``r``, softmax's ``S``)."""
        symbols = dict(self.symbols)
        backend = SymbolicBackend()
        consumer = self._consumer(term)
        value = Evaluator(OracleBackend(), symbols, self.sizes)(consumer.expr)
        if term.upstream is None:
            objective = value
        else:
            G = _symbols(f"{INTERNAL}G", self.shapes[term.upstream])
            objective = se.Add(*(g * z for g, z in zip(G.flat, value.flat)))
            symbols[f"d{term.upstream}"] = G
            symbols[term.upstream] = Evaluator(backend, dict(symbols), self.sizes)(consumer.expr)
        return objective, Evaluator(backend, symbols, self.sizes)(term.expr), backend


def false_pass_bound(network, backend) -> float:
    """The chance that a formula which is not the one checked still agrees with it (or a formula that is not
    identically 0 vanishes) at one random point of ``backend``'s field: Schwartz-Zippel, with a degree
    bound for the network's steps and a term for the opaque functions' random values."""
    degree = 4 * len(network.steps) + 8
    applications = len(backend.table) + 1
    return degree * (1 + applications**2) / PRIME


def _partials(expr, wanted: set) -> list:
    """``(symbol, d expr / d symbol)`` for the ``wanted`` symbols in ``expr``, from the terms holding them."""
    containing = {}
    for term in _summands(expr):
        for symbol in term.free_symbols & wanted:
            containing.setdefault(symbol, []).append(term)
    return [(symbol, se.Add(*terms).diff(symbol)) for symbol, terms in containing.items()]


def _summands(expr) -> list:
    """Terms that add up to ``expr`` (a number times a sum is distributed), so each can be indexed."""
    if isinstance(expr, se.Add):
        return list(expr.args)
    if isinstance(expr, se.Mul) and len(expr.args) == 2:
        number, rest = expr.args
        if number.is_Number and isinstance(rest, se.Add):
            return [number * term for term in rest.args]
    return [expr]


class _FiniteDifferences:
    """Central differences of the real float64 loss along random directions, against each formula.

    Each quantity is perturbed by +-h along its direction and the forward pass rerun from the first step that
    reads it (the values before are the unperturbed ones). The reruns of many quantities share one pass: the
    variants travel side by side as a stack of matrices, each perturbation entering at its own first reader,
    so a deep network costs a few passes instead of a pass per quantity."""

    def __init__(self, verifier, rng, names, check_deadline):
        self.network, self.verifier = verifier.network, verifier
        self.sizes = verifier.sizes
        shapes = verifier.shapes
        self.inputs = random_float_inputs(self.network, self.sizes, rng)
        with np.errstate(all="ignore"):
            self.env = verifier._formulas(Float64Backend(), self.inputs)
        self.directions = {name: rng.standard_normal(shape) for name, shape in shapes.items()}
        # The indices of the first and the last step that read each quantity (the number of steps for what the
        # loss reads: Y_pred, whose first reader no rerun may overwrite, and any weight in an L2 penalty).
        self.steps = [step for step in self.network.steps if step.kind != "loss"]
        readers = {}
        for index, step in enumerate(self.network.steps):
            for symbol in step.expr.atoms(sp.MatrixSymbol):
                readers.setdefault(symbol.name, []).append(min(index, len(self.steps)))
        self.first = {name: readers.get(name, [len(self.steps)])[0] for name in shapes}
        self.last = {name: readers.get(name, [len(self.steps)])[-1] for name in shapes}
        # Variants per pass: the quantities held at once (from the step that makes one, or its first reader, to its
        # last reader) take at most this many floats per variant.
        born = {name: self.first[name] for name in self.network.inputs}
        born.update((step.name, index) for index, step in enumerate(self.steps))
        held = np.zeros(len(self.steps) + 2, dtype=np.int64)
        for name, (rows, cols) in shapes.items():
            held[born[name]:self.last[name] + 1] += rows * cols
        size = max(1, FD_STACK_FLOATS // (2 * int(held.max())))
        ordered = sorted(names, key=self.first.get)
        self.slopes = {}
        for start in range(0, len(ordered), size):
            self.slopes.update(self._slopes(ordered[start:start + size], check_deadline))

    def _slopes(self, names, check_deadline) -> dict:
        """Central differences of the loss along each quantity's direction, for the quantities ``names``.

        The stack grows as quantities enter, two variants each (plus and minus ``h`` times the direction); a
        variant that has not entered yet would equal the unperturbed pass, so it is not computed."""
        base = {name: self.env[name] for name in self.verifier.shapes}
        env, stacked, variant = dict(base), set(), {}  # stacked: the names whose value is a stack
        entering, done = {}, {}
        for name in names:
            entering.setdefault(self.first[name], []).append(name)
        for name, last in self.last.items():
            done.setdefault(last, []).append(name)
        evaluator = Evaluator(Float64Backend(), env, self.sizes)
        with np.errstate(all="ignore"):
            for index in range(min(entering), len(self.steps) + 1):
                new = 2 * len(entering.get(index, ()))
                for name in stacked if new else ():
                    env[name] = np.concatenate([env[name], np.broadcast_to(base[name], (new, *base[name].shape))])
                count = 2 * len(variant) + new
                for name in entering.get(index, ()):
                    if name not in stacked:
                        env[name] = np.repeat(base[name][None], count, axis=0)
                        stacked.add(name)
                    variant[name] = k = len(variant) * 2
                    env[name][k] = base[name] + FD_STEP * self.directions[name]
                    env[name][k + 1] = base[name] - FD_STEP * self.directions[name]
                if index < len(self.steps) and stacked:
                    step = self.steps[index]
                    env[step.name] = evaluator(step.expr)
                    if env[step.name].ndim == 3:
                        stacked.add(step.name)
                    for name in done.get(index, ()):  # read no more
                        env[name] = base[name]
                        stacked.discard(name)
                    check_deadline()
            loss = self.network.steps[-1]
            read = [symbol.name for symbol in loss.expr.atoms(sp.MatrixSymbol) if symbol.name in stacked]
            losses = [Evaluator(Float64Backend(), {**env, **{name: env[name][v] for name in read}},
                                self.sizes).loss(self.network) for v in range(2 * len(variant))]
        return {name: (losses[k] - losses[k + 1]) / (2 * FD_STEP) for name, k in variant.items()}

    def error(self, step) -> float:
        """The relative difference between the formula and central differences along a random direction."""
        numeric = self.slopes[step.name]
        with np.errstate(all="ignore"):
            analytic = float(np.sum(self.env[step.symbol.name] * self.directions[step.name]))
        if not (math.isfinite(numeric) and math.isfinite(analytic)):
            return math.nan
        scale = max(abs(numeric) + abs(analytic), 1e-8)
        return abs(numeric - analytic) / scale

    def describe(self, step) -> str:
        """The finite-difference sanity row's words: its error, or why float64 cannot resolve it here."""
        error = self.error(step)
        if math.isnan(error):
            return "finite differences: not resolvable in float64 here (a value overflows); the exact check decides"
        if error > FD_TOLERANCE:
            return (f"finite differences: rel. error {error:.1e} > {FD_TOLERANCE:g}, beyond what float64 resolves "
                    "for this gradient here; the exact check decides")
        return f"finite differences: rel. error {error:.1e}"


def _short(expr, limit: int = 120) -> str:
    text = str(expr)
    return text if len(text) <= limit else text[: limit - 3] + "..."
