"""The instances a student's code is run on, and the gradients the derivation expects there.

An instance is a seeded point: parameters, an input, targets, and the ``cache`` that the generated NumPy
module's ``forward`` makes from them (so the cache has the generated module's keys; for an image network also
every per-sample forward value by its name, images as ``(N, C, H, W)``, for code that loops over positions).
What the student's code receives has the shapes of ``views.py``. The expected gradients are the derivation's
backward formulas evaluated in float64 by the ``Evaluator``; they never come from the generated module. Points
at which a ReLU input is exactly 0 or a pooling window ties have entries that are multiples of 1/64 in an
image network, so that every product and sum up to there is exact, in any order a student's loops take. The
instances:

- the spec's widths, parameters from the generated module's ``init_params``, at two batch sizes that differ
  from every width;
- when the network has ReLU layers, the spec's widths with every other ReLU input exactly 0 for the first
  sample, where conventions for ReLU'(0) differ;
- when it has max pooling, the spec's widths with the first sample's image all 0, so that a convolution gives
  its bias at every position and pooling windows hold tied maxima (where routing the gradient to the first
  maximum and to every maximum differ); kept only where a tie reaches a gradient;
- distinct small widths (3, 4, 5, ...) at two batch sizes, where a misplaced transpose or a factor from the
  wrong layer cannot fit by accident. The grader uses these only where the student's code runs at widths
  other than the spec's.
"""

from __future__ import annotations

import types
from dataclasses import dataclass

import numpy as np
import sympy as sp

from ..codegen import module_value
from ..evaluate import Evaluator, Float64Backend
from ..expressions import Elementwise, Fold, MaxMask
from ..verify import random_float_inputs
from .diagnosis import same
from .views import derivation_value, image_shapes, student_value
from .windows import MistakeEvaluator, TiedMaxMask

OTHER_WIDTHS_START = 3
TIE_SEEDS = (5, 6, 7, 8)  # seeds tried for an instance at which a max-pool tie reaches a gradient
EXACT_STEP = 64  # values at kinks and ties are multiples of 1/EXACT_STEP in image networks


@dataclass(frozen=True)
class Instance:
    """One point the student's function is called at, and everything the derivation computes there.

    ``params``, ``cache``, ``input`` and ``targets`` are what the student's function receives; ``env`` maps
    every forward quantity and every gradient symbol (``dW1``, ``dZ2``, ...) to its float64 value, as the
    derivation's matrix.
    """

    label: str
    spec_widths: bool
    sizes: dict
    params: dict
    cache: dict
    input: np.ndarray
    targets: np.ndarray
    env: dict

    def files(self) -> dict:
        """The arrays the student's process reads (see ``child.py``), named for an ``.npz`` file."""
        return {**{f"params/{k}": v for k, v in self.params.items()},
                **{f"cache/{k}": v for k, v in self.cache.items()}, "input": self.input, "Y_true": self.targets}


def reference_module(derivation) -> types.ModuleType:
    """The generated NumPy module of ``derivation``, executed from its rendered source (our code, not the
    student's, so it runs in the grader's process)."""
    module = types.ModuleType("symbackprop_reference")
    source = compile(derivation.render("numpy"), "<symbackprop reference module>", "exec")
    exec(source, module.__dict__)  # noqa: S102 - our own generated code
    return module


def build_instances(derivation, reference) -> tuple[Instance, ...]:
    """The grading instances of ``derivation`` (see the module's docstring), in a fixed order."""
    net = derivation.network
    widths = net.spec.sizes
    first, second = _batch_sizes(widths)
    params = reference.init_params
    instances = [_instance(derivation, reference, widths, first, 0, params(0)),
                 _instance(derivation, reference, widths, second, 1, params(1))]
    if _relu_steps(net):
        instances.append(_instance(derivation, reference, widths, first, 2, params(2), kinked=True))
    if any(step.expr.has(MaxMask) for step in derivation.backward):
        tied = (_instance(derivation, reference, widths, first, seed, params(seed), tied=True) for seed in TIE_SEEDS)
        found = next((instance for instance in tied if _ties_matter(derivation, instance)), None)
        if found is not None:
            instances.append(found)
    names = list(params(0))
    # Random parameters of other widths need the network's own names, and widths alone to vary (a vocabulary
    # or a head width is fixed in the module's code).
    if set(names) <= set(net.inputs) and not net.extra_sizes:
        # A new width for each distinct width symbol: layers that keep their input's width still do, and the
        # widths an image network's spec fixes stay.
        new = {symbol: OTHER_WIDTHS_START + i for i, symbol in enumerate(net.size_symbols)}
        other = tuple(new.get(width, width) for width in net.widths)
        for seed, N in ((3, other[-1] + 1), (4, other[-1] + 3)) if other != tuple(widths) else ():
            instances.append(_instance(derivation, reference, other, N, seed, names))
    return tuple(instances)


def _batch_sizes(widths) -> tuple[int, int]:
    """Two batch sizes, 5 or more and apart, that are none of the widths (so no shape fits by accident)."""
    first = next(n for n in range(5, 1000) if n not in widths)
    return first, next(n for n in range(first + 3, 1000) if n not in widths)


def _instance(derivation, reference, widths, N, seed, params, kinked=False, tied=False) -> Instance:
    """The instance at ``widths`` and batch ``N``; ``params`` is a dict (as the generated module's
    ``init_params`` makes it), or the names to draw at random."""
    net = derivation.network
    sizes = net.sizes(N, widths)
    values = random_float_inputs(net, sizes, np.random.default_rng(seed))
    if isinstance(params, dict):
        values.update({name: derivation_value(net, name, value) for name, value in params.items()})
    else:
        values.update({name: 0.5 * values[name] for name in params})
    images = image_shapes(net)
    if images and (kinked or tied):
        for name, role in net.roles.items():
            if role in ("data", "parameter"):
                values[name] = np.round(values[name] * EXACT_STEP) / EXACT_STEP
    if tied:
        values[net.input_name][0] = 0
    if kinked:
        _put_relu_inputs_at_zero(net, values, sizes)
    params = {name: student_value(net, name, values[name]) for name in params}
    X, Y = (module_value(net, name, values[name]) for name in (net.input_name, "Y_true"))
    masks = {name: values[name].copy() for name in net.masks}
    _, cache = reference.forward({name: value.copy() for name, value in params.items()}, X.copy(),
                                 *([masks] if masks else []))
    evaluator = Evaluator(Float64Backend(), dict(values), sizes)
    evaluator.forward(net)
    evaluator.backward(derivation)
    cache = {name: np.array(value) for name, value in cache.items()}
    if images:  # every per-sample forward value, for code that computes its own im2col or loops over positions
        per_sample = [net.input_name] + [step.name for step in net.steps if step.kind != "loss"
                                         and isinstance(step.symbol, sp.MatrixSymbol) and step.symbol.shape[0] == net.N]
        cache.update({name: student_value(net, name, evaluator.env[name], images)
                      for name in per_sample if name not in cache})
    label = f"widths {'-'.join(map(str, widths))}, N={N}, seed {seed}"
    if kinked:
        label += ", ReLU inputs exactly 0 for the first sample"
    if tied:
        label += ", the first sample's image all 0 (max-pool windows with ties)"
    return Instance(label, tuple(widths) == tuple(net.spec.sizes), sizes, params, cache, X, Y, evaluator.env)


def _ties_matter(derivation, instance) -> bool:
    """Whether giving every tied maximum of a pooling window the gradient changes the gradient of a parameter
    or of the input at ``instance`` (beyond rounding), so that the instance tells the two conventions apart."""
    tied = {step.name: step.expr.xreplace({mask: TiedMaxMask(mask.arg) for mask in step.expr.atoms(MaxMask)})
            for step in derivation.backward if step.expr.has(MaxMask)}
    evaluator = MistakeEvaluator(Float64Backend(), dict(instance.env), instance.sizes)
    evaluator.backward(derivation, formulas=tied)
    leaves = [step.symbol.name for step in derivation.backward if step.name in derivation.network.inputs]
    return any(not same(evaluator.env[name], instance.env[name]) for name in leaves)


def _relu_steps(net):
    return [step for step in net.steps if isinstance(step.expr, Elementwise) and step.expr.activation == "relu"]


def _put_relu_inputs_at_zero(net, values: dict, sizes: dict) -> None:
    """Set the bias of each ReLU layer so that every other unit's input is exactly 0 for the first sample.

    The bias entry becomes minus the product it is added to, and x + (-x) is exactly 0 in float64; the
    generated module computes the same product from the same arrays, so it sees the same zeros.
    """
    for step in _relu_steps(net):
        linear = next((s for s in net.steps if s.symbol == step.expr.arg), None)
        if linear is not None and isinstance(linear.expr, Fold):  # a convolution: its rows before the fold
            linear = next((s for s in net.steps if s.symbol == linear.expr.arg), None)
        parts = _product_and_bias(linear.expr) if linear is not None else None
        if parts is None:
            continue
        product, bias = parts
        evaluator = Evaluator(Float64Backend(), dict(values), sizes)
        evaluator.forward(net)
        first_sample = evaluator(product)[0] if net.batch_first else evaluator(product)[:, 0]
        values[bias.name].flat[::2] = -first_sample[::2]  # the bias is (1, n) or (n, 1)


def _product_and_bias(expr):
    """``(A W, b)`` for a linear step ``A W + 1 b`` (or ``W A + b 1ᵀ``); None for other expressions."""
    if not isinstance(expr, sp.MatAdd) or len(expr.args) != 2:
        return None
    product, bias_term = sorted(expr.args, key=lambda term: term.has(sp.OneMatrix))
    biases = list(bias_term.atoms(sp.MatrixSymbol))
    if product.has(sp.OneMatrix) or not bias_term.has(sp.OneMatrix) or len(biases) != 1:
        return None
    return product, biases[0]
