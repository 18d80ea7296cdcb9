"""Name the typical mistake behind a wrong gradient claim, each candidate checked exactly at the checker's points.

A candidate is a variant of the truth or of the claim, and the mistake is named when the claim equals it at
every point where the truth is evaluated:

- a term left out: one consumer's contribution to a value used twice (a skip connection, the L2 penalty);
- paths left out: the gradient with the paths through one or two of a layer's intermediate values cut, as
  when batch norm's mean and variance are treated as constants;
- a layer kind's named mistake (``symbackprop/mistakes.py``, the catalogue ``grade`` uses too): softmax's
  Jacobian taken as its diagonal, dropout's scaling left out or doubled, batch norm's statistics treated as
  constants, another activation's derivative;
- the wrong count or axis: the claim right with another size in place of one it writes (``N`` for ``n_1``),
  or with its sums along the other axis (statistics over the samples where they are over the features).
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import numpy as np

from ..evaluate import Evaluator
from ..mistakes import constants_words
from .semantics import Undefined, as_truth_shape
from .tree import Node


def mistake(checker, claim, target) -> str:
    """Why ``claim`` is wrong, where it is a typical mistake; '' otherwise."""
    if claim.of != "L":
        return ""
    named = named_mistake(checker, claim, target)
    if named:
        return f"the claim {named}"
    instances = [i for i in checker._spec_instances(claim) if not i.kinked]
    for check in (_left_out_term, _left_out_paths, _wrong_count_or_axis):
        detail = check(checker, claim, target, instances)
        if detail:
            return detail
    return ""


def named_mistake(checker, claim, target) -> str:
    """The words of the layer kinds' named mistake (``symbackprop/mistakes.py``, shared with ``grade``) whose
    gradient the claim equals at every spec instance, or ''."""
    if claim.of != "L":
        return ""
    instances = [i for i in checker._spec_instances(claim) if not i.kinked]
    backward = checker.derivation.backward
    last = next((index for index, step in enumerate(backward) if step.name == claim.wrt), len(backward) - 1)
    for step in backward[:last + 1]:
        for named in step.mistakes:
            if _equal_everywhere(claim, instances, lambda instance, step=step, named=named:
                                 _mistaken_truth(checker, instance, target, step.name, named.expr)):
                return named.words
    return ""


# -- the candidates -----------------------------------------------------------------------------------------

def _equal_everywhere(claim, instances, truth_of) -> bool:
    """Whether the claim equals ``truth_of(instance)`` at every instance (False where either is undefined)."""
    for instance in instances:
        try:
            truth = np.asarray(truth_of(instance))
            value = as_truth_shape(instance.value(claim.tree), truth)
        except Undefined:
            return False
        if not np.all(instance.sem.equal(value, truth)):
            return False
    return True


def _left_out_term(checker, claim, target, instances) -> str:
    step = checker.derivation.step(claim.wrt)
    if len(step.terms) < 2:
        return ""
    for term in step.terms:
        def without(instance, term=term):
            evaluate = Evaluator(instance.sem, instance.env, instance.sizes)
            return evaluate(step.symbol) - evaluate(term.expr)

        if _equal_everywhere(claim, instances, without):
            if term.local.side == "loss":
                return (f"the claim leaves out the L2 penalty's gradient (l2 = {checker.spec.loss.l2:g}): "
                        f"{claim.wrt} feeds both its layer and the penalty, and the two gradients add up")
            return (f"the claim leaves out the gradient that reaches {claim.wrt} through {term.local.of}: "
                    f"{claim.wrt} is used {len(step.terms)} times, and the gradients of its uses add up")
    return ""


def _left_out_paths(checker, claim, target, instances) -> str:
    step = checker.derivation.step(claim.wrt)
    layers = {term.local.layer for term in step.terms}
    with_gradient = set(checker.names.with_gradient)
    candidates = [s for s in checker.network.steps
                  if s.layer in layers and s.name in with_gradient and s.name != claim.wrt and s.kind != "loss"]
    for size in (1, 2):
        for cut in itertools.combinations(candidates, size):
            names = frozenset(s.name for s in cut)
            if _equal_everywhere(claim, instances,
                                 lambda instance, names=names: _cut_truth(checker, instance, target, names)):
                return "the claim " + constants_words([(s.name, s.kind) for s in cut], claim.wrt)
    return ""


def _cut_truth(checker, instance, target, names):
    """The truth with the gradients of ``names`` set to zero (their paths cut)."""
    env = dict(instance.env)
    for step in checker.derivation.backward:
        if step.name in names:
            env[step.symbol.name] = env[step.symbol.name] * instance.sem.scalar(0)
    evaluator = Evaluator(instance.sem, env, instance.sizes)
    evaluator.backward(checker.derivation, skip=frozenset(names))
    return evaluator(target.expr)


def _mistaken_truth(checker, instance, target, name, expr):
    """The truth with step ``name``'s formula replaced by ``expr`` (and every later step computed from it)."""
    evaluator = Evaluator(instance.sem, dict(instance.env), instance.sizes)
    evaluator.backward(checker.derivation, formulas={name: expr})
    return evaluator(target.expr)


def _wrong_count_or_axis(checker, claim, target, instances) -> str:
    net = checker.network
    sizes = [net.N, *dict.fromkeys(net.widths)]
    written = [s for s in sizes if any(n.op == "size" and n.value == s for n in claim.tree.walk())]
    swaps = [(s, t) for s in written for t in sizes if t != s]
    summed = any(n.op == "sum" and n.value[0] is not None for n in claim.tree.walk())
    for axis, swap in itertools.product((False, True) if summed else (False,), [None, *swaps]):
        if not axis and swap is None:
            continue
        rewritten = replace(claim, tree=_rewrite(claim.tree, swap, axis))
        if checker._shape_problem(rewritten, target, checker._spec_dims):
            continue
        if _equal_everywhere(rewritten, instances, lambda instance: instance.truth(target)):
            parts = ([f"{swap[1]} in place of {swap[0]}"] if swap else []) + (
                ["its sums along the other axis"] if axis else [])
            return (f"the claim is right with {' and '.join(parts)}: a count or a sum in it runs over the wrong "
                    "axis (over the samples where it should be over each sample's features, or the reverse)")
    return ""


def _rewrite(tree: Node, swap, axis: bool) -> Node:
    """``tree`` with the size ``swap[0]`` replaced by ``swap[1]`` and, with ``axis``, every sum along the other
    axis."""
    args = tuple(_rewrite(arg, swap, axis) for arg in tree.args)
    value = tree.value
    if tree.op == "size" and swap and value == swap[0]:
        value = swap[1]
    if tree.op == "sum" and axis and value[0] is not None:  # the other axis, kept as a row or column
        value = (1 - value[0], True, value[2])
    return replace(tree, args=args, value=value)
