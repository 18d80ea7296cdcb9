"""Derivation -> Report: every formula checked against direct differentiation of the loss.

The oracle is independent of our chain rule: an explicit network whose entries are symengine symbols and
whose activations are opaque functions, differentiated by symengine. Three ways to compare, each named in
the report:

- ``expand``: per entry, the direct derivative minus the formula, expanded to the zero polynomial (an exact
  proof, used where the network is small enough for expansion to be cheap);
- ``schwartz-zippel``: both sides evaluated exactly, modulo a 61-bit prime, at a random point, every function
  given consistent random values; a wrong formula passes with probability below the bound printed;
- ``finite-difference``: central differences of the real loss in float64 at a random point (a sanity check
  that also exercises the rule table's NumPy forms; never the proof on its own).

Depth-independent local steps are proved exactly on their own: each activation's derivative rule (SymPy),
each linear step's ``dW``, ``db``, ``dA`` and the loss gradient (expansion).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass

import numpy as np
import symengine as se
import sympy as sp

from .evaluate import PRIME, Evaluator, FieldBackend, Float64Backend, OracleBackend, SymbolicBackend, Valuation
from .rules import ACTIVATIONS, LOSSES

# Expansion is exact but grows quickly with depth; above this many oracle symbols we evaluate instead.
EXPAND_LIMIT = 220
FD_STEP = 1e-6
FD_TOLERANCE = 1e-5


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
        return {"ok": self.ok, "seconds": round(self.seconds, 4), "sizes": self.sizes, "witness": self.witness,
                "note": self.note, "checks": [asdict(check) for check in self.checks]}

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
    ``budget`` seconds it says so and verifies at witness sizes instead. ``progress(done, total)`` is called
    as checks complete.
    """
    start = time.perf_counter()
    network = derivation.network
    note = ""
    if batch is not None:
        deadline = None if budget is None else start + budget
        try:
            checks = _Verifier(derivation, batch, network.spec.sizes, seed, deadline, progress).run()
            return Report(checks, time.perf_counter() - start,
                          _size_dict(network, batch, network.spec.sizes), "spec")
        except BudgetExceeded:
            note = (f"The exact check at the spec's sizes (batch {batch}) did not finish within the "
                    f"{budget:g} s budget; verified at witness sizes instead.")
    N, widths = witness_sizes(network.depth)
    checks = _Verifier(derivation, N, widths, seed, None, progress).run()
    return Report(checks, time.perf_counter() - start, _size_dict(network, N, widths), "witness", note)


def _size_dict(network, N, widths) -> dict:
    return {"N": N, **{str(symbol): int(width) for symbol, width in zip(network.widths, widths)}}


def check_activation_rule(name: str, params: dict) -> Check:
    """Prove an activation's derivative rule equals ``sympy.diff`` of its forward rule (away from kinks)."""
    rule = ACTIVATIONS[name]
    z = sp.Symbol("z", real=True)
    p = sp.Symbol("p", positive=True)
    forward, derivative = rule.forward(z, params), rule.derivative(z, params)
    regions = (z,) if not rule.kinks else (p, -p)
    ok = all(sp.simplify(sp.diff(forward, z).subs(z, r) - derivative.subs(z, r)) == 0 for r in regions)
    settings = ", ".join(f"{k}={v:g}" for k, v in params.items())
    where = "for z > 0 and z < 0; the value at 0 is a convention" if rule.kinks else "for all real z"
    detail = f"f' = d/dz f {where}" + (f" ({settings})" if settings else "")
    return Check(f"{name}'(z)", ok, "sympy.diff", detail if ok else "derivative rule differs from d/dz f")


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
            self.shapes[name] = tuple(int(d.subs(self.sizes)) for d in symbol.shape)

    # -- the oracle ---------------------------------------------------------------------------------------
    def _symbols(self, name, prefix=""):
        rows, cols = self.shapes[name]
        return np.array([[se.Symbol(f"{prefix}{name}_{i}_{j}") for j in range(cols)] for i in range(rows)],
                        dtype=object)

    def _oracle_loss(self, quantity):
        """The loss as a symengine expression of ``quantity``'s entries (perturbed along ``v`` by ``t``)."""
        env = {name: self.base[name] + self.t[name] * self.v[name] for name in self.network.inputs}
        start_after = None
        if quantity not in self.network.inputs:
            env[quantity] = self.base[quantity] + self.t[quantity] * self.v[quantity]
            start_after = quantity
        evaluator = Evaluator(OracleBackend(), env, self.sizes)
        evaluator.forward(self.network, start_after)
        return evaluator.loss(self.network)

    # -- values -------------------------------------------------------------------------------------------
    def _leaf_values(self, backend, inputs, forward, directions=None):
        """Values for every oracle symbol: base entries, perturbation parameters (0) and directions."""
        values = {}
        zero = backend.scalar(0)
        for name, base in self.base.items():
            source = inputs[name] if name in inputs else forward[name]
            values.update(zip(base.flat, source.flat))
            values[self.t[name]] = zero
            values.update((v, directions[name].flat[k] if directions else zero)
                          for k, v in enumerate(self.v[name].flat))
        return values

    def _target_constraint(self, T, backend):
        """Targets of a softmax loss are distributions: each sample's last entry is 1 minus the others."""
        if LOSSES[self.network.spec.loss.kind].targets_are_distributions:
            T = T.copy() if self.network.batch_first else T.T.copy()
            T[:, -1] = -T[:, :-1].sum(axis=1) + backend.scalar(1) if T.shape[1] > 1 else backend.scalar(1)
            T = T if self.network.batch_first else T.T
        return T

    def _formulas(self, backend, env):
        """Forward values and every backward formula evaluated with ``backend`` (env: inputs' values)."""
        evaluator = Evaluator(backend, dict(env), self.sizes)
        evaluator.forward(self.network)
        for step in self.derivation.backward:
            evaluator.env[step.symbol.name] = evaluator(step.expr)
        return evaluator.env

    # -- the run ------------------------------------------------------------------------------------------
    def run(self) -> list[Check]:
        network = self.network
        names = list(self.shapes)
        self.base = {name: self._symbols(name) for name in names}
        self.v = {name: self._symbols(name, "v_") for name in names}
        self.t = {name: se.Symbol(f"t_{name}") for name in names}
        steps = self.derivation.backward
        checks = self._local_checks()
        total = len(checks) + len(steps)
        self._tick(len(checks), total)

        shape_failures = {step.name: self._shape_problem(step) for step in steps}
        n_symbols = sum(a.size for a in self.base.values())
        exact = n_symbols <= EXPAND_LIMIT

        field = FieldBackend(self.seed)
        inputs = {name: self._random_array(field, name) for name in network.inputs}
        inputs["Y_true"] = self._target_constraint(inputs["Y_true"], field)
        self.direction = {name: self._random_array(field, name) for name in names}
        field_env = self._formulas(field, inputs) if not any(shape_failures.values()) else None
        field_values = Valuation(field, self._leaf_values(field, inputs, field_env, self.direction)) if field_env else None

        if exact and field_env:
            symbolic = SymbolicBackend()
            sym_inputs = {name: self.base[name] for name in network.inputs}
            sym_inputs["Y_true"] = self._target_constraint(sym_inputs["Y_true"], symbolic)
            sym_env = self._formulas(symbolic, sym_inputs)
            sym_values = Valuation(symbolic, self._leaf_values(symbolic, sym_inputs, sym_env))

        fd = _FiniteDifferences(self, self.rng) if field_env else None
        for done, step in enumerate(steps, start=len(checks) + 1):
            label = gradient_label(step.name)
            if shape_failures[step.name]:
                checks.append(Check(label, False, "shape", shape_failures[step.name]))
                continue
            loss = self._oracle_loss(step.name)
            if exact:
                check = self._expand(step, loss, sym_env, sym_values)
            else:
                check = self._schwartz_zippel(step, loss, field_env, field_values)
            fd_error = fd.error(step)
            fd_ok = fd_error <= FD_TOLERANCE
            detail = f"{check.detail}; finite differences: rel. error {fd_error:.1e}"
            if not fd_ok:
                detail += f" > {FD_TOLERANCE:g}"
            checks.append(Check(label, check.ok and fd_ok, check.method, detail))
            self._tick(done, total)
        return checks

    def _tick(self, done, total):
        if self.deadline is not None and time.perf_counter() > self.deadline:
            raise BudgetExceeded
        if self.progress:
            self.progress(done, total)

    def _random_array(self, field, name):
        rows, cols = self.shapes[name]
        return np.array([[field.random() for _ in range(cols)] for _ in range(rows)], dtype=object)

    def _shape_problem(self, step) -> str:
        try:
            shape = step.expr.shape
        except Exception as error:  # SymPy raises ShapeError (and others) for products that do not fit
            return f"the formula's factors do not fit together: {error}"
        if tuple(shape) != tuple(step.symbol.shape):
            want = " x ".join(map(str, step.symbol.shape))
            return f"the formula has shape {' x '.join(map(str, shape))}, the gradient must be {want}"
        return ""

    def _entry(self, step, i, j, loss, values, formula):
        """Direct derivative and formula at entry (i, j), in the valuation's backend."""
        direct = values(loss.diff(self.base[step.name][i, j]))
        return direct, formula[i, j]

    def _expand(self, step, loss, env, values) -> Check:
        formula = env[step.symbol.name]
        rows, cols = self.shapes[step.name]
        for i in range(rows):
            for j in range(cols):
                direct, claimed = self._entry(step, i, j, loss, values, formula)
                difference = se.expand(direct - claimed)
                if difference != 0:
                    return Check("", False, "expand", f"entry ({i}, {j}): direct minus formula = {_short(difference)}")
        return Check("", True, "expand", f"identically zero in all {rows * cols} entries")

    def _schwartz_zippel(self, step, loss, env, values) -> Check:
        formula = env[step.symbol.name]
        direct = values(loss.diff(self.t[step.name]))
        claimed = sum((d * f for d, f in zip(self.direction[step.name].flat, formula.flat)), values.backend.scalar(0))
        if direct == claimed:
            degree = 2 * self.network.depth + int(self.sizes[self.network.widths[-1]]) + 4
            applications = len(values.backend.table) + 1
            bound = degree * (1 + applications**2) / PRIME
            return Check("", True, "schwartz-zippel",
                         f"equal at a random point mod 2^61-1 (false pass <= {bound:.0e})")
        rows, cols = self.shapes[step.name]
        for i in range(rows):
            for j in range(cols):
                d, f = self._entry(step, i, j, loss, values, formula)
                if d != f:
                    return Check("", False, "schwartz-zippel", f"entry ({i}, {j}) differs from direct differentiation")
        return Check("", False, "schwartz-zippel", "differs from direct differentiation")

    def _local_checks(self) -> list[Check]:
        network, checks = self.network, []
        seen = set()
        for layer in network.spec.layers:
            key = (layer.activation, tuple(sorted(layer.params.items())))
            if key not in seen:
                seen.add(key)
                checks.append(check_activation_rule(layer.activation, layer.params))
        return checks


class _FiniteDifferences:
    """Central differences of the real float64 loss along random directions, against each formula."""

    def __init__(self, verifier, rng):
        self.network, self.verifier = verifier.network, verifier
        self.sizes = verifier.sizes
        shapes = verifier.shapes
        self.inputs = {name: rng.standard_normal(shapes[name]) for name in self.network.inputs}
        rule = LOSSES[self.network.spec.loss.kind]
        if rule.targets_are_distributions:
            T = self.inputs["Y_true"] if self.network.batch_first else self.inputs["Y_true"].T
            T = np.exp(T) / np.exp(T).sum(axis=1, keepdims=True)
            self.inputs["Y_true"] = T if self.network.batch_first else T.T
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
