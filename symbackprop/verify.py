"""Derivation -> Report: every formula checked against direct differentiation of the loss.

The oracle is independent of our chain rule: an explicit network whose entries are symengine symbols and
whose activations are opaque functions, differentiated by symengine. The report names how each row was
checked:

- ``sympy.diff``: an activation's derivative rule equals the derivative of its forward rule;
- local steps, ``expand``: each backward step equals direct differentiation of its own forward step, with
  the upstream gradient a matrix of free symbols ``G`` (``dW = A^T G`` against ``d/dW sum(G ⊙ (A W + 1 b))``,
  ``delta = G ⊙ f'(Z)`` against ``d/dZ sum(G ⊙ f(Z))``, the loss gradient against ``d/dY_pred L``), expanded
  to the zero polynomial entry by entry: exact, and independent of depth;
- every composed formula against direct differentiation of the whole loss, entry by entry, with
  ``expand`` (an exact proof, where the network is small enough for expansion to be cheap) or
  ``schwartz-zippel`` (both sides evaluated exactly, modulo a 61-bit prime, at a random point, every
  function given consistent random values; a wrong formula passes with probability below the bound printed);
- ``finite-difference``: central differences of the real loss in float64 along a random direction (a sanity
  check that also exercises the rule table's NumPy forms; never the proof on its own), in every composed row.

Differentiating the whole loss in one call is exponential in depth (symengine's ``diff`` and ``cse`` do not
share work across the expression DAG: 4 s for one diff of a 10-layer tanh net of width 4), so the oracle
names every entry of every forward quantity as a node: symengine differentiates each node's scalar
expression by each symbol in it, and the partials are combined along the DAG (reverse accumulation), which
gives every ``dL/d(entry)`` at once in time linear in the network's size.
"""

from __future__ import annotations

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
from .evaluate import (
    PRIME,
    Evaluator,
    FieldBackend,
    Float64Backend,
    OracleBackend,
    SymbolicBackend,
    Valuation,
)
from .printing import TextPrinter
from .rules import LOSSES, activation_rule

# Expansion is exact but grows quickly with depth and size; above this many matrix entries, or this many
# layers, we evaluate instead.
EXPAND_LIMIT = 220
EXPAND_MAX_DEPTH = 4
FD_STEP = 1e-6
FD_TOLERANCE = 1e-5
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


def witness_sizes(depth: int) -> tuple[int, tuple[int, ...]]:
    """Batch and widths for checking: all different and >= 2, so a misplaced transpose cannot fit."""
    return 2, tuple(range(3, depth + 4))


def gradient_label(name: str) -> str:
    return f"dL/d{name}"


def verify(derivation, *, batch: int | None = None, budget: float | None = None, seed: int = 0,
           progress=None) -> Report:
    """Verify every formula of ``derivation``.

    With ``batch``, the check runs at the spec's own widths and that batch size; if it cannot finish within
    ``budget`` seconds (refused up front when the estimate is already over, stopped when the time runs out)
    it says so in the report's note and verifies at witness sizes instead. ``progress(done, total)`` is
    called as checks complete.
    """
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
    N, widths = witness_sizes(network.depth)
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
    return {"N": N, **{str(symbol): int(width) for symbol, width in zip(network.widths, widths)}}


def evaluate_formulas(derivation, backend, env: dict, sizes: dict, skip=frozenset()) -> dict:
    """Forward values and every backward formula evaluated with ``backend`` (``env``: the inputs' values).

    Formulas named in ``skip`` (those that cannot be evaluated) are left out.
    """
    evaluator = Evaluator(backend, dict(env), sizes)
    evaluator.forward(derivation.network)
    evaluator.backward(derivation, skip)
    return evaluator.env


def random_float_inputs(network, sizes: dict, rng) -> dict:
    """Standard normal float64 values for every input; a softmax loss's targets become distributions."""
    inputs = {name: rng.standard_normal(tuple(int(d.xreplace(sizes)) for d in symbol.shape))
              for name, symbol in network.inputs.items()}
    if LOSSES[network.spec.loss.kind].targets_are_distributions:
        T = inputs["Y_true"] if network.batch_first else inputs["Y_true"].T
        T = np.exp(T) / np.exp(T).sum(axis=1, keepdims=True)
        inputs["Y_true"] = T if network.batch_first else T.T
    return inputs


def check_activation_rule(name: str, params: dict) -> Check:
    """Prove an activation's derivative rule equals ``sympy.diff`` of its forward rule on each side of every
    breakpoint, and at a breakpoint that is no kink; the value at a kink is a convention."""
    return _check_activation_rule(activation_rule(name), tuple(sorted(params.items())))


@cache
def _check_activation_rule(rule, items: tuple) -> Check:
    """``check_activation_rule``, once per process for each rule object and setting."""
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
    detail = f"f' = d/dz f {where}" + (f" ({settings})" if settings else "")
    return Check(f"{rule.name}'(z)", ok, "sympy.diff", detail if ok else "derivative rule differs from d/dz f")


def _symbols(name: str, shape) -> np.ndarray:
    """A matrix of symengine symbols ``name[i,j]`` (brackets keep them apart from every generated name)."""
    rows, cols = shape
    return np.array([[se.Symbol(f"{name}[{i},{j}]") for j in range(cols)] for i in range(rows)], dtype=object)


class _Oracle:
    """The loss as an explicit symengine expression DAG, every quantity shifted by symbols of its own.

    Inputs are matrices of symbols; every entry of every forward quantity ``q`` is a node, a symbol defined
    by its scalar expression in the previous quantities' entries plus a perturbation symbol ``P_q[i,j]``
    (valued 0), so ``dL/dq_ij = dL/dP_q[i,j]`` at ``P = 0`` for inputs and intermediate quantities alike; the
    loss is the last node. symengine differentiates each node by each symbol in it once, and ``gradients``
    accumulates those partials backwards along the DAG.
    """

    def __init__(self, verifier, names):
        network = verifier.network
        self.shifts = {name: _symbols(f"P_{name}", verifier.shapes[name]) for name in names}
        self.nodes = []
        env = {name: self._node(name, verifier.symbols[name]) for name in network.inputs}
        evaluator = Evaluator(OracleBackend(), env, verifier.sizes)
        for step in network.steps:
            if step.kind != "loss":
                env[step.name] = self._node(step.name, evaluator(step.expr))
                verifier.check_deadline()
        self.root = se.Symbol("L[root]")
        self.nodes.append((self.root, evaluator.loss(network)))
        active = {symbol for symbol, _ in self.nodes}
        active.update(s for shift in self.shifts.values() for s in shift.flat)
        self.partials = [_partials(expr, active) for _, expr in self.nodes]

    def _node(self, name, value):
        """Name every entry of ``value`` (shifted, if ``name`` is checked) as a node; their symbols."""
        if name not in self.shifts:
            return value
        symbols = _symbols(f"{name}'", value.shape)
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

    def _target_constraint(self, T, backend):
        """Targets of a softmax loss are distributions: each sample's last entry is 1 minus the others."""
        if LOSSES[self.network.spec.loss.kind].targets_are_distributions:
            T = T.copy() if self.network.batch_first else T.T.copy()
            T[:, -1] = -T[:, :-1].sum(axis=1) + backend.scalar(1) if T.shape[1] > 1 else backend.scalar(1)
            T = T if self.network.batch_first else T.T
        return T

    def _formulas(self, backend, env):
        """Forward values and every backward formula evaluated with ``backend`` (env: inputs' values)."""
        return evaluate_formulas(self.derivation, backend, env, self.sizes, self.skip)

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

        checks = self._rule_checks()
        groups = self._local_groups([step for step in steps if not problems[step.name]])
        total = len(checks) + len(groups) + 1 + len(steps)
        self._tick(len(checks), total)
        for label, group in groups:
            checks.append(self._local_check(label, group))
            self._tick(len(checks), total)

        entries = sum(rows * cols for rows, cols in self.shapes.values())
        exact = entries <= EXPAND_LIMIT and network.depth <= EXPAND_MAX_DEPTH
        oracle = _Oracle(self, [step.name for step in steps if step.name not in blocked])
        if exact:
            backend = SymbolicBackend()
            inputs = {name: self.symbols[name] for name in network.inputs}
        else:
            backend = FieldBackend(self.seed)
            inputs = {name: self._random_array(backend, name) for name in network.inputs}
        inputs["Y_true"] = self._target_constraint(inputs["Y_true"], backend)
        leaves = {s: v for name in network.inputs for s, v in zip(self.symbols[name].flat, inputs[name].flat)}
        env = self._formulas(backend, inputs)
        direct = oracle.gradients(backend, leaves, self.check_deadline)
        self._tick(len(checks) + 1, total)

        fd = _FiniteDifferences(self, self.rng)
        for done, step in enumerate(steps, start=len(checks) + 2):
            label = gradient_label(step.name)
            if problems[step.name]:
                checks.append(Check(label, False, "shape", problems[step.name]))
            elif step.name in blocked:
                problem = "built on a formula whose shapes do not fit"
                checks.append(Check(label, False, "not checked", problem))
            else:
                compare = self._expand if exact else self._schwartz_zippel
                check = compare(direct[step.name], env[step.symbol.name], backend)
                fd_error = fd.error(step)
                fd_ok = fd_error <= FD_TOLERANCE
                detail = f"{check.detail}; finite differences: rel. error {fd_error:.1e}"
                if not fd_ok:
                    detail += f" > {FD_TOLERANCE:g}"
                checks.append(Check(label, check.ok and fd_ok, check.method, detail))
            self._tick(done, total)
        return checks

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
        degree = 2 * self.network.depth + int(self.sizes[self.network.widths[-1]]) + 4
        applications = len(backend.table) + 1
        bound = degree * (1 + applications**2) / PRIME
        return Check("", True, "schwartz-zippel",
                     f"all {direct.size} entries equal at a random point mod 2^61-1 "
                     f"(false pass <= {bound:.0e})")

    # -- rules and local steps ----------------------------------------------------------------------------
    def _rule_checks(self) -> list[Check]:
        checks, seen = [], set()
        for layer in self.network.spec.layers:
            key = (layer.activation, tuple(sorted(layer.params.items())))
            if key not in seen:
                seen.add(key)
                checks.append(check_activation_rule(layer.activation, layer.params))
        return checks

    def _local_groups(self, steps) -> list[tuple[str, list]]:
        """The steps to prove locally: the loss gradient, then each layer's steps, in backward order."""
        groups = {}
        for step in steps:
            label = "local: loss gradient" if step.upstream is None else f"local: layer {step.layer}"
            groups.setdefault(label, []).append(step)
        return list(groups.items())

    def _local_check(self, label, steps) -> Check:
        """Each step against direct differentiation of the forward step it reverses (``G``: free symbols)."""
        printer, entries, claims = TextPrinter(), 0, []
        for step in steps:
            objective, formula, backend = self._local_sides(step)
            partials = dict(_partials(objective, set(self.symbols[step.name].flat)))
            valuation = Valuation(backend, {symbol: symbol for symbol in objective.free_symbols})
            claim = f"{printer.doprint(step.symbol)} = {printer.doprint(step.expr)}"
            claims.append(claim)
            for (i, j), q in np.ndenumerate(self.symbols[step.name]):
                difference = se.expand(valuation(partials.get(q, se.Integer(0))) - formula[i, j])
                if difference != 0:
                    return Check(label, False, "expand",
                                 f"{claim}: entry ({i}, {j}): direct minus formula = {_short(difference)}")
                self.check_deadline()
            entries += self.symbols[step.name].size
        what = ("direct differentiation of the loss" if steps[0].upstream is None else
                "direct differentiation of sum(G ⊙ its forward step), G a matrix of free symbols")
        return Check(label, True, "expand", f"{'; '.join(claims)}: each equals {what}, "
                                            f"identically in all {entries} entries")

    def _local_sides(self, step):
        """The objective to differentiate (symengine), the step's formula, and the backend of its values."""
        network = self.network
        symbols = dict(self.symbols)
        if step.upstream is None:
            symbols["Y_true"] = self._target_constraint(symbols["Y_true"], SymbolicBackend())
            objective = Evaluator(OracleBackend(), symbols, self.sizes).loss(network)
        else:
            upstream = next(s for s in network.steps if s.name == step.upstream)
            G = _symbols("G", self.shapes[step.upstream])
            values = Evaluator(OracleBackend(), symbols, self.sizes)(upstream.expr)
            objective = se.Add(*(g * z for g, z in zip(G.flat, values.flat)))
            symbols[f"d{step.upstream}"] = G
        backend = SymbolicBackend()
        return objective, Evaluator(backend, symbols, self.sizes)(step.expr), backend


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
    """Central differences of the real float64 loss along random directions, against each formula."""

    def __init__(self, verifier, rng):
        self.network, self.verifier = verifier.network, verifier
        self.sizes = verifier.sizes
        shapes = verifier.shapes
        self.inputs = random_float_inputs(self.network, self.sizes, rng)
        self.env = verifier._formulas(Float64Backend(), self.inputs)
        self.directions = {name: rng.standard_normal(shape) for name, shape in shapes.items()}

    def _loss(self, quantity, value):
        env = dict(self.inputs)
        env[quantity] = value
        start_after = None
        if quantity not in self.network.inputs:
            env.update({k: v for k, v in self.env.items() if k in self.verifier.shapes})
            env[quantity] = value
            start_after = quantity
        evaluator = Evaluator(Float64Backend(), env, self.sizes)
        evaluator.forward(self.network, start_after)
        return evaluator.loss(self.network)

    def error(self, step) -> float:
        name = step.name
        x, v = self.env[name], self.directions[name]
        numeric = (self._loss(name, x + FD_STEP * v) - self._loss(name, x - FD_STEP * v)) / (2 * FD_STEP)
        analytic = float(np.sum(self.env[step.symbol.name] * v))
        scale = max(abs(numeric) + abs(analytic), 1e-8)
        return abs(numeric - analytic) / scale if math.isfinite(numeric) else math.inf


def _short(expr, limit: int = 120) -> str:
    text = str(expr)
    return text if len(text) <= limit else text[: limit - 3] + "..."
