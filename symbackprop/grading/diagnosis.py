"""Which mistakes explain a student's gradients: the backward pass evaluated with mistakes put in, compared
with what the student's code returned on every instance.

The gradients a student returns (``W1``, ``b1``, ..., ``X``) are the leaves of the backward pass; the steps in
between (``dY_pred``, ``dZ2``, ``da1``) are hidden in their code. The search looks for the fewest mutations
(``mistakes.py``) that reproduce every returned gradient to float64 precision on every instance: one mutation
of any step; else two, the first among those that explain some gradients and spoil none, the second
anywhere (a second mistake in the same formula included); else as many such mutations as keep explaining
more. Among explanations that fit equally well, the most common mistakes win, and upstream steps before
downstream ones.
"""

from __future__ import annotations

from collections import ChainMap
from dataclasses import dataclass

import numpy as np

from ..evaluate import Float64Backend, Magnitude
from .mistakes import Catalogue, Mutation
from .views import student_value
from .windows import MistakeEvaluator

RTOL = 1e-8  # relative to the array's own scale; float64 formulas in another order agree to ~1e-15 of it
# The rounding floor, relative to the scale of a formula's terms: about 4500 float64 epsilons, room for the
# rounding of every step before it (deep nets included), far below what float32 or any mistake gives.
FLOOR = 1e-12
PAIR_CANDIDATES = 8  # first mutations tried in pairs


def same(actual, expected, atol: float = 0.0) -> bool:
    """Equal shapes and entries equal to RTOL of the larger magnitude of the two arrays, or to ``atol`` (the
    array's own rounding floor, see ``rounding_floors``); NaN and inf are never equal to anything (the expected
    values are finite)."""
    if actual.shape != expected.shape:
        return False
    if actual.size == 0:
        return True
    difference = float(np.max(np.abs(actual - expected)))
    if not np.isfinite(difference):
        return False
    return difference <= RTOL * max(float(np.max(np.abs(actual))), float(np.max(np.abs(expected)))) + atol


def rounding_floors(derivation, instance, symbols: dict) -> dict:
    """Per returned gradient, the absolute tolerance below which two float64 computations of it cannot be told
    apart: FLOOR times the largest entry of its formula's magnitude (``Magnitude``), its own terms' scale.

    Each gradient is judged on its own scale, never on another's: a small early-layer gradient of a deep net
    that is wrong is wrong, however large the others are. An entry that cancels to nearly 0 (a bias before batch
    norm) is allowed the rounding of the terms that cancel."""
    steps = {step.symbol.name: step for step in derivation.backward}
    magnitude = Magnitude(instance.env, instance.sizes)
    with np.errstate(all="ignore"):
        return {name: FLOOR * float(np.max(magnitude(steps[symbol].expr), initial=0))
                for name, symbol in symbols.items()}


class Passes:
    """The backward pass with mutations put in, evaluated on the instances (one-mutation passes memoised).

    ``returned`` maps each returned gradient's name (``W1``, ``X``) to its backward step's name (``W1``, the
    input's name). Only the steps that a mutation changes, and those computed from them, are evaluated again.
    Values are the derivation's matrices (see ``views.py`` for the student's shapes).
    """

    def __init__(self, derivation, instances, returned: dict, reads: dict):
        self.network = derivation.network
        self.steps = derivation.backward
        self.instances = instances
        self.returned = returned
        self.symbols = {name: derivation.step(step).symbol.name for name, step in returned.items()}
        self.reads = reads  # step -> the gradients its formula reads (the catalogue's)
        self.atol = [rounding_floors(derivation, instance, self.symbols) for instance in instances]
        self.memo = {}

    def expected(self, name: str, index: int):
        """The right value of the returned gradient ``name`` at instance ``index``, shaped as the student's code
        returns it."""
        return student_value(self.network, self.returned[name], self.instances[index].env[self.symbols[name]])

    def values(self, mutations: tuple, index: int) -> dict | None:
        """The returned gradients that these mutations recompute at instance ``index`` (name -> value; the
        others keep their expected values); None when a mutated formula cannot be evaluated there (the factors
        do not fit)."""
        key = (mutations, index)
        if key in self.memo:
            return self.memo[key]
        instance = self.instances[index]
        formulas = {m.step: m.expr for m in mutations}
        changed = {}
        evaluator = MistakeEvaluator(Float64Backend(), ChainMap(changed, instance.env), instance.sizes)
        try:
            with np.errstate(all="ignore"):
                for step in self.steps:
                    if step.name in formulas:
                        expr = formulas[step.name]
                    elif self.reads[step.name] & changed.keys():
                        expr = step.expr
                    else:
                        continue
                    changed[step.symbol.name] = np.asarray(evaluator(expr), dtype=float)
        except (ValueError, TypeError, ArithmeticError, IndexError, KeyError):
            result = None
        else:
            result = {name: changed[symbol] for name, symbol in self.symbols.items() if symbol in changed}
        if len(mutations) == 1:
            self.memo[key] = result
        return result


@dataclass(frozen=True)
class Explanation:
    """Mutations that reproduce the gradients ``explained``; ``changes[m]``: the gradients mutation m changes."""

    mutations: tuple[Mutation, ...]
    explained: frozenset
    changes: dict


class Search:
    """The search for one student's mistakes.

    ``observed[i]`` maps a returned gradient's name to the student's array at instance ``i`` (None: not to
    be compared there); ``wrong`` and ``correct`` are the names the student got wrong and right.
    """

    def __init__(self, catalogue: Catalogue, passes: Passes, observed: dict, wrong, correct):
        self.catalogue, self.passes, self.observed = catalogue, passes, observed
        self.wrong, self.correct = frozenset(wrong), frozenset(correct)
        self.target = self.wrong | self.correct
        self.atol = passes.atol
        # per instance, the gradients the student's value agrees with the expected one (or is not compared)
        self.agrees = {i: {name for name in self.target if observed[i].get(name) is None
                           or same(observed[i][name], self._expected(name, i), self.atol[i][name])} for i in observed}
        self._matched = {}

    def matched(self, mutations: tuple, required=frozenset()) -> frozenset:
        """The gradients these mutations reproduce on every instance (checking stops early once a gradient
        in ``required`` fails)."""
        key = (mutations, required)
        if key not in self._matched:
            names = set(self.target)
            for index in self.observed:
                values = self.passes.values(mutations, index)
                if values is None:
                    names = set()
                    break
                names = {name for name in names if self._agrees(name, index, values)}
                if not required <= names:
                    break
            self._matched[key] = frozenset(names)
        return self._matched[key]

    def _agrees(self, name, index, values) -> bool:
        """Whether the student's value of ``name`` at instance ``index`` is the mutated pass's ``values``."""
        if name not in values:
            return name in self.agrees[index]
        observed = self.observed[index].get(name)
        return observed is None or same(observed, values[name], self.atol[index][name])

    def _expected(self, name, index):
        return self.passes.instances[index].env[self.passes.symbols[name]]

    def run(self) -> Explanation | None:
        singles = self.catalogue.all()
        for mutation in singles:
            if self.target <= self.matched((mutation,), self.target):
                return self._explanation((mutation,))
        helpful = [m for m in singles if self._helps(m)]
        helpful += self._double_mistakes_in_returned_gradients(singles, helpful)
        helpful.sort(key=lambda m: (-len(self.matched((m,)) & self.wrong), m.rank))
        pairs = []
        for first in helpful[:PAIR_CANDIDATES]:
            seconds = [m for m in singles if m.step != first.step]
            for second in seconds + self.catalogue.mutations(first.step, first):
                mutations = (first, second) if second.step != first.step else (second,)
                if self.target <= self.matched(mutations, self.target):
                    pairs.append(mutations)
        if pairs:
            return self._explanation(min(pairs, key=self._cost))
        return self._greedy(helpful)

    def _helps(self, mutation) -> bool:
        """Reproduces some wrong gradient and spoils none of the right ones."""
        matched = self.matched((mutation,), self.correct)
        return self.correct <= matched and bool(matched & self.wrong)

    def _double_mistakes_in_returned_gradients(self, singles, helpful):
        """Two mistakes in the formula of a returned gradient that nothing else explains (cheap: no other
        step reads it)."""
        explained = set().union(*(self.matched((m,)) for m in helpful)) & self.wrong
        found = []
        for name in self.wrong - explained:
            step, required = self.passes.returned[name], self.correct | {name}
            if step not in self.catalogue.leaves:
                continue
            double = next((m for first in singles if first.step == step
                           for m in self.catalogue.mutations(step, first)
                           if required <= self.matched((m,), required)), None)
            if double is not None:
                found.append(double)
        return found

    def _greedy(self, helpful) -> Explanation | None:
        chosen, explained = (), frozenset()
        for mutation in helpful:
            if not (self.matched((mutation,)) & self.wrong) - explained:
                continue
            if any(m.step == mutation.step for m in chosen):
                continue
            trial = (*chosen, mutation)
            matched = self.matched(trial, self.correct)
            if self.correct <= matched and (matched & self.wrong) > explained:
                chosen, explained = trial, matched & self.wrong
        return self._explanation(chosen) if chosen else None

    def _cost(self, mutations):
        return (sum(len(m.what) for m in mutations), sum(m.rank for m in mutations),
                sorted(self.catalogue.index[m.step] for m in mutations))

    def _explanation(self, mutations) -> Explanation:
        changes = {}
        for mutation in mutations:
            changes[mutation] = frozenset(
                name for name in self.target
                if any((values := self.passes.values((mutation,), index)) is None
                       or name in values and not same(values[name], self._expected(name, index), self.atol[index][name])
                       for index in self.observed))
        return Explanation(tuple(mutations), self.matched(tuple(mutations)) & self.wrong, changes)
