"""Lecture material beyond the formulas: the lecturer's options, a worked example worth teaching, the memory
table, each activation's definition and its convention at kinks, and the notation the documents explain.

The worked example is computed from the derivation itself: the network's forward steps and the
derivation's backward formulas evaluated by ``Evaluator`` in float64 (no SymPy substitution). Its data are
seeded and documented: inputs and parameters drawn uniformly from [-1, 1] with one decimal (scales from [0.5, 1.5]),
each layer redrawn
(a bounded number of times) until every unit with a kink is alive for some sample and no pre-activation sits
near a kink; targets are the outputs of a *teacher*, a second network of the same architecture drawn the same
way, so the rule behind the targets is one the network can learn (the batch is redrawn until they hold more
than one class). What the documents say about the example is measured on it (``example_facts``).

Nothing here branches on a layer kind: layers are walked through the forward steps the network gives, and
activations are found as the ``Elementwise`` nodes in those steps.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields

import numpy as np
import sympy as sp

from . import formula
from .evaluate import Evaluator, Float64Backend
from .expressions import Elementwise
from .layers import LAYER_KINDS
from .patterns import patterns
from .printing import latex, latex_name, shape_latex
from .rules import FUNCTIONS, PROBABILITIES, TRAINABLE_ACTIVATIONS, activation_rule, at_kinks, loss_rule
from .statements import Statement
from .verify import random_one_hot

EXAMPLE_BATCH = 2
# The batch where a layer computes statistics over it: over two samples batch norm's normalized values are all ±1.
STATISTICS_BATCH = 4
EXAMPLE_LR = 0.1
# The worked example prints every matrix; wider networks get the derivation without it.
EXAMPLE_MAX_WIDTH = 8
# A draw is redrawn while a pre-activation lies closer than this to a kink (ReLU at 0).
KINK_MARGIN = 0.05
# Redraws per layer; past this the last draw is kept (it is still a valid example, only a less tidy one).
MAX_DRAWS = 200
# A scale (batch norm's gamma) is drawn from here, never 0: a zero scale would stop its unit's gradient.
SCALE_RANGE = (0.5, 1.5)
# The teacher's units must be alive on this many samples, so its targets vary.
TEACHER_SAMPLES = 32
# Teachers drawn at most until one labels its samples with more than one class.
MAX_TEACHERS = 20
# The notebook's training set and loop.
TRAIN_SAMPLES = 64
TRAIN_STEPS = 500
TRAIN_LR = 1.0

_LAYERED = re.compile(r"^([A-Za-z]+?)(\d+)$")
# Activation parameters that have a conventional symbol; the others (relu_grad_at_zero) show in the
# kink convention instead.
_PARAMETER_SYMBOLS = {"alpha": r"\alpha"}


@dataclass(frozen=True)
class LectureOptions:
    """What a lecturer chooses beyond the spec: the title page (over the spec's own ``author``,
    ``institute``, ``date``), a handout deck without step-by-step reveals, and the worked example's seed."""

    author: str | None = None
    institute: str | None = None
    date: str | None = None
    handout: bool = False
    example_seed: int = 0


def document_title(spec, t: dict) -> str:
    """The spec's title, or where the spec leaves the default, the catalog's word for backpropagation."""
    default = next(f.default for f in fields(spec) if f.name == "title")
    return t["default_title"] if spec.title == default else spec.title


def title_page(spec, options: LectureOptions) -> dict:
    """Author, institute and date for the title page: the option where given, else the spec's, else empty."""
    return {key: next((value for value in (getattr(options, key), getattr(spec, key)) if value is not None), "")
            for key in ("author", "institute", "date")}


def parameter_names(network) -> list[str]:
    """The trainable parameters in the network's order (``W1``, ``b1``, ``gamma2``, ...)."""
    return network.parameters


def layer_of(name: str) -> int | None:
    """The layer a parameter belongs to, from its name (``W3``, ``gamma2`` -> 3, 2); None for other names."""
    match = _LAYERED.match(name)
    return int(match.group(2)) if match else None


# -- the worked example ---------------------------------------------------------------------------------------

# How targets are made from the teacher's output ``Y`` (rows are samples), as NumPy source: the worked example
# evaluates it and the notebook prints it, so the two cannot differ.
TARGET_RULES = {
    "onehot": "np.eye(Y.shape[-1])[np.argmax(Y, axis=-1)]",
    "binary": "(Y > 0).astype(float)",
    "probability": "(Y > 0.5).astype(float)",
    "regression": "np.round(Y, 2)",
}


def target_kind(network) -> str:
    """Which of ``TARGET_RULES`` suits the loss: one-hot classes, 0/1 labels (a probability thresholded at 0.5,
    a logit at 0), or the teacher's values."""
    rule = loss_rule(network.spec.loss)
    if rule.targets in ("distribution", "one_hot"):
        return "onehot"
    if rule.targets != "binary":
        return "regression"
    # Binary cross-entropy on logits takes any real targets, but is bounded below only for targets in [0, 1].
    return "probability" if PROBABILITIES in rule.inputs else "binary"


def classes_vary(network, targets: np.ndarray) -> bool:
    """Whether targets teach a rule: more than one class among one-hot targets, both labels in every output of
    0/1 targets; any values do for regression."""
    rows = targets if network.batch_first else targets.T
    kind = target_kind(network)
    if kind == "onehot":
        return len(np.unique(rows.argmax(axis=-1))) > 1
    if kind == "regression":
        return True
    return bool(((rows == 0).any(axis=0) & (rows == 1).any(axis=0)).all())


def make_targets(network, teacher_output: np.ndarray) -> np.ndarray:
    """Targets from a teacher's output, in the network's layout."""
    rows = teacher_output if network.batch_first else teacher_output.T
    targets = eval(TARGET_RULES[target_kind(network)], {"np": np, "Y": rows})  # our own constant source
    return targets if network.batch_first else targets.T


@dataclass(frozen=True)
class WorkedExample:
    """One training step on a tiny batch: inputs, forward values, loss, gradients, updated parameters.

    ``teacher`` holds the parameters of the network whose outputs gave ``Y_true``.
    """

    batch: int
    lr: float
    seed: int
    inputs: dict  # X, W1, b1, ..., Y_true -> array
    teacher: dict  # W1, b1, ... of the teacher
    forward: dict  # Z1, a1, ..., Y_pred -> array
    loss: float
    gradients: dict  # gradient symbol name (dY_pred, dZ3, dW3, ...) -> array
    updated: dict  # W1, b1, ... after one step
    loss_after: float


def _draw(rng, shape, low: float = -1.0, high: float = 1.0) -> np.ndarray:
    return np.round(rng.uniform(low, high, shape), 1)


def _scales(network) -> list[str]:
    """The parameters that scale a normalized value (batch norm's gamma): drawn from ``SCALE_RANGE``."""
    return [name for name in parameter_names(network) if network.initializers[name][0] == "scale"]


def _shape(symbol, sizes: dict) -> tuple[int, ...]:
    return tuple(int(sp.sympify(dim).xreplace(sizes)) for dim in symbol.shape)


def _kinked(steps) -> list[tuple]:
    """The activation steps with kinks among ``steps``: (input, its kinks, the step's own slope ``f'(Z)``, the
    step's name).

    The slope is the step's local gradient (for PReLU ``relu'(Z) + alpha min'(0, Z)``), so "alive" means that
    the step passes a gradient back, whatever functions it is made of."""
    found = []
    for step in steps:
        kinks = sorted({k for node in step.expr.atoms(Elementwise) for k in activation_rule(node.activation).kinks})
        if kinks and step.kind == "activation":
            local = step.locals[0]
            found.append((step.expr.atoms(Elementwise).pop().arg, kinks, local.factor, step.name))
    return found


def _kink_distance(evaluator, kinked) -> float:
    """How close the nearest pre-activation comes to a kink (infinite where there is none)."""
    return min((float(np.abs(evaluator(arg) - kink).min()) for arg, kinks, _, _ in kinked for kink in kinks),
               default=np.inf)


def _healthy(evaluator, kinked, margin: float) -> bool:
    """No pre-activation within ``margin`` of a kink, and for each activation with kinks every unit has a slope
    for some sample and every sample for some unit (nothing dead for the whole batch, no sample ignored)."""
    if _kink_distance(evaluator, kinked) <= margin:
        return False
    for _, _, slope, _ in kinked:
        alive = evaluator(slope) != 0
        if not (alive.any(axis=0).all() and alive.any(axis=1).all()):
            return False
    return True


def _draw_parameters(network, env: dict, sizes: dict, rng, margin: float = KINK_MARGIN) -> None:
    """Draw every parameter into ``env`` block by block, evaluating the forward steps as it goes; a block (a
    layer with parameters and the parameterless layers after it, such as a ReLU after batch norm) is redrawn
    (at most ``MAX_DRAWS`` times) until its activations are healthy on the samples in ``env``."""
    evaluator = Evaluator(Float64Backend(), env, sizes)
    names, scales = parameter_names(network), _scales(network)
    blocks = []
    for layer in sorted({step.layer for step in network.steps}):
        own = [name for name in names if layer_of(name) == layer]
        if own or not blocks:
            blocks.append((own, []))
        blocks[-1][1].extend(step for step in network.steps if step.layer == layer and step.kind != "loss")
    kinked = [_kinked(steps) for _, steps in blocks]

    def draw(index: int) -> bool:
        own, steps = blocks[index]
        env.update({name: _draw(rng, _shape(network.inputs[name], sizes), *(SCALE_RANGE if name in scales else ()))
                    for name in own})
        for step in steps:
            env[step.name] = evaluator(step.expr)
        return not own or _healthy(evaluator, kinked[index], margin)

    for index in range(len(blocks)):
        for attempt in range(MAX_DRAWS):
            # A block whose own parameters cannot move its kinks (PReLU's slope after a layer norm) gets new
            # inputs after a quarter of its draws: the block before it, redrawn until healthy.
            if attempt >= MAX_DRAWS // 4 and index:
                for _ in range(MAX_DRAWS):
                    if draw(index - 1):
                        break
            if draw(index):
                break


def _data(network, rng, count: int, dropout: bool = True) -> dict:
    """The input (with one decimal) and the dropout masks of ``count`` samples; the teacher drops nothing."""
    sizes = network.sizes(count, network.spec.sizes)
    rows, width = _shape(network.inputs[network.input_name], sizes)
    if network.roles[network.input_name] == "ids":
        X = random_one_hot(rng, (rows, width), network.spec.input.vocab)
    else:  # (a sequence: every step's rows)
        X = _draw(rng, (count if network.spec.input.steps is None else rows, network.spec.sizes[0]))
    data = {network.input_name: X if network.batch_first else X.T}
    for name in network.masks:
        shape = _shape(network.inputs[name], sizes)
        data[name] = (rng.random(shape) < network.initializers[name][1]).astype(float) if dropout else np.ones(shape)
    return data


def _evaluate(derivation, env: dict, sizes: dict) -> tuple[dict, float]:
    """Forward values, backward formulas (into one env) and the loss, in float64."""
    evaluator = Evaluator(Float64Backend(), dict(env), sizes)
    evaluator.forward(derivation.network)
    evaluator.backward(derivation)
    return evaluator.env, evaluator.loss(derivation.network)


def _batch_statistics(network, shape) -> bool:
    """Whether a value of this shape is a statistic of the whole batch (batch norm's mean): no batch size in it."""
    return network.N not in sp.prod(shape).free_symbols


def _has_statistics(network) -> bool:
    """Whether a layer computes statistics over the batch (batch norm)."""
    return any(_batch_statistics(network, step.symbol.shape) for step in network.steps if step.kind != "loss")


def example_batch(network) -> int:
    """The worked example's batch size: ``EXAMPLE_BATCH``, or ``STATISTICS_BATCH`` where a layer computes
    statistics over the batch."""
    return STATISTICS_BATCH if _has_statistics(network) else EXAMPLE_BATCH


def _teacher(network, rng) -> dict:
    """A teacher's parameters, drawn like the example's (without the kink margin: only its targets are shown)
    on ``TEACHER_SAMPLES`` samples, and redrawn (at most ``MAX_TEACHERS`` times) until those samples' targets
    hold more than one class."""
    for _ in range(MAX_TEACHERS):
        env = _data(network, rng, TEACHER_SAMPLES, dropout=False)
        _draw_parameters(network, env, network.sizes(TEACHER_SAMPLES, network.spec.sizes), rng, margin=0)
        if classes_vary(network, make_targets(network, env["Y_pred"])):
            break
    return {name: env[name] for name in parameter_names(network)}


def _teach(network, teacher: dict, data: dict, sizes: dict) -> np.ndarray:
    """The targets the teacher gives the input in ``data`` (it drops nothing)."""
    unmasked = {name: np.ones_like(data[name]) for name in network.masks}
    prediction = Evaluator(Float64Backend(), {network.input_name: data[network.input_name], **teacher, **unmasked},
                           sizes)
    prediction.forward(network)
    return make_targets(network, prediction.env["Y_pred"])


def worked_example(derivation, seed: int = 0, batch: int | None = None) -> WorkedExample:
    """Seeded data, a teacher's targets, one forward pass, every backward formula and one descent step.

    The batch (``example_batch`` unless given) is redrawn (at most ``MAX_DRAWS`` times) until its targets hold
    more than one class. The step size starts at ``EXAMPLE_LR`` and is halved (at most ten times) until the step
    lowers the loss.
    """
    network = derivation.network
    rng = np.random.default_rng(seed)
    names = parameter_names(network)
    teacher = _teacher(network, rng)
    batch = batch or example_batch(network)
    sizes = network.sizes(batch, network.spec.sizes)
    for _ in range(MAX_DRAWS):
        env = _data(network, rng, batch)
        env["Y_true"] = _teach(network, teacher, env, sizes)
        if classes_vary(network, env["Y_true"]):
            break
    _draw_parameters(network, env, sizes, rng)
    inputs = {name: env[name] for name in network.inputs}

    values, loss = _evaluate(derivation, inputs, sizes)
    forward = {step.name: values[step.name] for step in network.steps if step.kind != "loss"}
    gradients = {step.symbol.name: values[step.symbol.name] for step in derivation.backward}
    lr = EXAMPLE_LR
    for _ in range(10):
        updated = {name: inputs[name] - lr * gradients[f"d{name}"] for name in names}
        _, loss_after = _evaluate(derivation, {**inputs, **updated}, sizes)
        if loss_after < loss:
            break
        lr /= 2
    return WorkedExample(batch, lr, seed, inputs, teacher, forward, loss, gradients, updated, loss_after)


def has_worked_example(derivation) -> bool:
    """Whether the network is small enough for a worked example whose matrices can be read (its widths, and a
    vocabulary or head width)."""
    network = derivation.network
    return max((*network.spec.sizes, *(value for value, _ in network.extra_sizes.values()))) <= EXAMPLE_MAX_WIDTH


# -- the memory table -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MemoryRow:
    """One layer's share of what the forward pass keeps: quantities, floats per sample, bytes at a batch."""

    layer: int
    kept: tuple[str, ...]
    floats_per_sample: int
    bytes32: int
    bytes64: int


def memory_table(derivation, batch: int = 64) -> list[MemoryRow]:
    """Per layer (0 = the input), the forward quantities the backward formulas read, and their size.

    Parameters are not counted: they are kept anyway. A quantity is kept if some backward formula
    mentions it (``Z`` for ``f'(Z)``, the layer input for ``dW``, ``Y_pred`` for the loss gradient).
    """
    network = derivation.network
    read = set()
    for step in derivation.backward:
        read |= {symbol.name for symbol in step.expr.atoms(sp.MatrixSymbol)}
    per_layer = {0: [network.input_name]}
    shapes = {network.input_name: network.inputs[network.input_name].shape}
    for step in network.steps:
        if step.kind != "loss":
            per_layer.setdefault(step.layer, []).append(step.name)
            shapes[step.name] = step.symbol.shape
    sizes = network.sizes(batch, network.spec.sizes)
    rows = []
    for layer, names in sorted(per_layer.items()):
        kept = tuple(name for name in names if name in read)
        floats = sum(_per_sample(network, shapes[name], sizes) for name in kept)
        total = sum(int(sp.prod(shapes[name]).xreplace(sizes)) for name in kept)
        rows.append(MemoryRow(layer, kept, floats, 4 * total, 8 * total))
    return rows


def _per_sample(network, shape, sizes) -> int:
    """Floats one sample adds to a kept quantity of this shape (0 for batch statistics: batch norm's mean);
    a sequence stacked by step keeps T rows per sample, attention's N x N weights N floats per position."""
    if _batch_statistics(network, shape):
        return 0
    return int(sp.prod(shape).xreplace(sizes)) // int(sizes[network.N])


# -- numbers and matrices -------------------------------------------------------------------------------------

def number(value: float, digits: int = 4) -> str:
    """A value rounded for reading: at most ``digits`` decimals, no trailing zeros, no ``-0``."""
    text = f"{value:.{digits}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def entry(value: float, digits: int = 4) -> str:
    """A printed matrix entry: ``number``, or for a nonzero value below 10^-3 in magnitude (which would round
    to 0 or to one digit), ``scientific``."""
    return scientific(value) if 0 < abs(value) < 1e-3 else number(value, digits)


MAX_MATRIX_COLUMNS = 10


def _kept(count: int, limit: int | None) -> list[int | None]:
    """Indices shown of ``count`` under ``limit``: the first ones, None for the elided run, then the last."""
    if limit is None or count <= limit:
        return list(range(count))
    return [*range(limit - 2), None, count - 1]


def latex_matrix(array: np.ndarray, digits: int = 4, max_rows: int | None = None,
                 max_cols: int | None = None) -> str:
    """A matrix of rounded values (``entry``) as an amsmath ``bmatrix``; past ``max_rows`` rows or ``max_cols`` columns
    the middle ones are elided with ``\\vdots`` / ``\\cdots`` (``\\ddots`` where both meet). A ``bmatrix`` holds
    at most ``MAX_MATRIX_COLUMNS`` columns (amsmath's MaxMatrixCols), so wider ones are always elided."""
    array = np.atleast_2d(array)
    max_cols = MAX_MATRIX_COLUMNS if max_cols is None else min(max_cols, MAX_MATRIX_COLUMNS)
    rows = []
    for i in _kept(array.shape[0], max_rows):
        cells = []
        for j in _kept(array.shape[1], max_cols):
            if i is None:
                cells.append(r"\ddots" if j is None else r"\vdots")
            else:
                cells.append(r"\cdots" if j is None else entry(array[i, j], digits))
        rows.append(" & ".join(cells))
    return r"\begin{bmatrix}" + r" \\ ".join(rows) + r"\end{bmatrix}"


def scientific(value: float) -> str:
    """``7.0e-13`` as LaTeX: ``7.0 \\times 10^{-13}``."""
    mantissa, exponent = f"{value:.1e}".split("e")
    return rf"{mantissa} \times 10^{{{int(exponent)}}}"


# -- activations ----------------------------------------------------------------------------------------------

_Z = sp.Symbol("z", real=True)


def _condition(where, z) -> str:
    """A set of reals as a condition on ``z``: ``z > 0``, ``z \\le 1``, ``z = 0``."""
    z = sp.latex(z)
    if isinstance(where, sp.FiniteSet) and len(where) == 1:
        return f"{z} = {sp.latex(next(iter(where)))}"
    if isinstance(where, sp.Interval) and where.end is sp.oo:
        relation = ">" if where.left_open else r"\ge"
        return f"{z} {relation} {sp.latex(where.start)}"
    if isinstance(where, sp.Interval) and where.start is -sp.oo:
        relation = "<" if where.right_open else r"\le"
        return f"{z} {relation} {sp.latex(where.end)}"
    return rf"{z} \in {sp.latex(where)}"


class _ScalarPrinter(formula.FormulaLatexPrinter):
    """Scalar rules as a lecture writes them: cases with conditions in math only (no 'otherwise': the last
    row states the remaining set; a branch that applies nowhere is left out); decimals and named functions as
    custom formulas print them."""

    def _print_Piecewise(self, expr):
        rows, covered = [], sp.S.EmptySet
        for value, condition in expr.args:
            where = (sp.S.Reals if condition is sp.true else condition.as_set()) - covered
            if where is sp.S.EmptySet:  # a branch that earlier rows cover wholly applies nowhere
                continue
            covered = covered | where
            rows.append(f"{self._print(value)} & {_condition(where, _Z)}")
        return r"\begin{cases} " + r" \\ ".join(rows) + r" \end{cases}"

    def _as_ordered_terms(self, expr, order=None):
        # Positive terms first, the simpler first: 1 - \sigma(z), e^{z} - 1, \Phi(z) + z \varphi(z).
        return sorted(super()._as_ordered_terms(expr, order),
                      key=lambda term: (term.could_extract_minus_sign(), len(sp.Mul.make_args(term))))


# Elementary forms the notes print by name, each with the named form equal to it: the logistic function, and
# the standard normal distribution function and density (GELU's z Φ(z) and Φ(z) + z φ(z)).
_NAMED = ((1 / (1 + sp.exp(-_Z)), formula.sigmoid(_Z)),
          (sp.erf(_Z / sp.sqrt(2)), 2 * formula.normal_cdf(_Z) - 1),
          (sp.exp(-_Z**2 / 2), sp.sqrt(2 * sp.pi) * formula.normal_pdf(_Z)))


def _named(expr) -> sp.Basic:
    """``expr`` with the functions of ``_NAMED`` written by name."""
    for elementary, named in _NAMED:
        expr = expr.subs(elementary, named)
    return expr


def _scalar_latex(expr) -> str:
    """A scalar rule in LaTeX, as the activation notes print it."""
    return _ScalarPrinter().doprint(expr)


def _slope(derivative, at: float) -> sp.Basic:
    """A one-sided slope, as an exact number where it is one (read from a float64 evaluation)."""
    return sp.nsimplify(round(float(derivative.subs(_Z, at)), 9), rational=True)


def activation_notes(network) -> list[dict]:
    """Each elementwise function the network applies (the identity aside), once per parameter setting: its
    definition and derivative in LaTeX, its parameters, the named functions they use (``functions``: name and
    definition), and at each kink the two one-sided slopes and the value this derivation takes there.
    ``layers`` lists where it is applied."""
    notes = {}
    for step in network.steps:
        for node in sorted(step.expr.atoms(Elementwise), key=str):
            if node.activation in ("identity", *FUNCTIONS) or node.order:
                continue
            note = notes.get(node.key)
            if note is None:
                note = notes[node.key] = _note(activation_rule(node.activation), node.params)
            if step.layer not in note["layers"]:
                note["layers"].append(step.layer)
    return list(notes.values())


def _note(rule, params: dict) -> dict:
    """One activation's note (see ``activation_notes``). A custom activation prints its formula and derivative
    with the parameters as symbols (z σ(β z)), their values stated beside them."""
    derivative = rule.derivative(_Z, params)
    kinks = []
    for kink in rule.kinks:
        left, right = _slope(derivative, kink - 1e-12), _slope(derivative, kink + 1e-12)
        if left != right:
            kinks.append({"at": _scalar_latex(sp.nsimplify(kink)), "left": _scalar_latex(left),
                          "right": _scalar_latex(right),
                          "value": _scalar_latex(sp.nsimplify(derivative.subs(_Z, kink)))})
    d = rule.derivation
    if d is None:
        forward, values = rule.forward(_Z, params), [
            (_PARAMETER_SYMBOLS[key], value) for key, value in params.items() if key in _PARAMETER_SYMBOLS]
    else:
        forward, derivative = d.formula, sp.piecewise_fold(at_kinks(d.simplified, d.kinks, rule.grad_at_kinks, d.smooth))
        values = [(_scalar_latex(sp.Symbol(name)), value) for name, value in d.parameters]
    shown, derivative = _named(forward), _named(derivative)
    # A named function's own definition stays elementary (sigmoid: 1 / (1 + e^{-z}), not sigma(z)).
    own = type(shown) if type(shown) in formula.DEFINITIONS else None
    forward = forward if own else shown
    return {"name": rule.latex, "forward": _scalar_latex(forward), "derivative": _scalar_latex(derivative),
            "kinks": kinks, "layers": [],
            "params": [{"symbol": symbol, "value": number(value, 6)} for symbol, value in values],
            "functions": [(function.__name__, formula.DEFINITIONS[function])
                          for function in formula.named(forward, derivative) if function is not own]}


# -- notation -------------------------------------------------------------------------------------------------

# The math the convention sentences quote, per layout (the sentences themselves are in the catalogs).
_LAYOUT_MATH = {
    "batch-first": {"forward": r"Z^{[l]} = A^{[l-1]} W^{[l]} + \mathbf{1}_N b^{[l]}",
                    "W_shape": r"n_{l-1} \times n_l", "backward": r"\frac{\partial L}{\partial W^{[l]}} = "
                    r"A^{[l-1]\top} \delta^{[l]}"},
    "column": {"forward": r"Z^{[l]} = W^{[l]} A^{[l-1]} + b^{[l]} \mathbf{1}_N^{\top}",
               "W_shape": r"n_l \times n_{l-1}", "backward": r"\frac{\partial L}{\partial W^{[l]}} = "
               r"\delta^{[l]} A^{[l-1]\top}"},
}


def notation_math(network) -> dict:
    """Math pieces the convention sentences quote, each wrapped in ``$...$`` (Markdown and LaTeX alike)."""
    pieces = {"X": latex_name(network.input_name), "N": "N", "n": "n_l", "l": "l", "W": "W^{[l]}",
              "b": "b^{[l]}", "Z": "Z^{[l]}", "delta": r"\delta^{[l]}", "A": "A^{[l-1]}",
              "delta_def": r"\delta^{[l]} = \frac{\partial L}{\partial Z^{[l]}}",
              **_LAYOUT_MATH[network.spec.layout]}
    return {key: f"${value}$" for key, value in pieces.items()}


def _describe(t: dict, keys: tuple[str, ...], **values) -> str:
    """The first catalog sentence of ``keys`` the catalog has (the last is a fallback, e.g. for a new layer kind)."""
    return t[next(key for key in keys if key in t)].format(**values)


def symbol_rows(network, derivation, t: dict) -> list[dict]:
    """The notation, one row per symbol (``symbol``, ``meaning``, ``shape`` in LaTeX, ``layer``): the input,
    every forward quantity, every parameter, the targets, the loss and each delta."""
    rows = [{"symbol": latex_name(network.input_name), "meaning": t["symbol_input"], "layer": 0,
             "shape": shape_latex(network.inputs[network.input_name].shape)}]
    params = parameter_names(network)
    for layer in sorted({step.layer for step in network.steps}):
        for step in network.steps:
            if step.layer == layer and step.kind != "loss":
                # A step's kind within its layer's kind where they differ (batch norm's mean is over the batch).
                keys = ("step_prediction",) if step.name == "Y_pred" else (
                    f"step_{step.kind}_{network.spec.layers[layer - 1].kind}", f"step_{step.kind}")
                rows.append({"symbol": latex_name(step.name), "layer": layer,
                             "meaning": _describe(t, (*keys, "step_other"), layer=layer),
                             "shape": shape_latex(step.symbol.shape)})
        for name in params:
            if layer_of(name) == layer:
                key = f"param_{_LAYERED.match(name).group(1)}"
                kind = network.spec.layers[layer - 1].kind
                rows.append({"symbol": latex_name(name), "layer": layer,
                             "meaning": _describe(t, (f"{key}_{kind}", key, "param_other"), layer=layer),
                             "shape": shape_latex(network.inputs[name].shape)})
    rows.append({"symbol": "Y_{true}", "meaning": t["symbol_targets"], "layer": network.depth,
                 "shape": shape_latex(network.inputs["Y_true"].shape)})
    rows.append({"symbol": "L", "meaning": t["symbol_loss"], "layer": network.depth, "shape": "1 \\times 1"})
    for step in derivation.backward:
        symbol = latex_name(step.symbol.name)
        if symbol.startswith(r"\delta"):
            rows.append({"symbol": symbol, "layer": step.layer, "shape": shape_latex(step.shape),
                         "meaning": t["symbol_delta"].format(of=f"${latex_name(step.name)}$")})
    return rows


# -- verification, in the catalog's words ---------------------------------------------------------------------

_FD_ERROR = re.compile(r"finite differences: rel\. error ([0-9.]+e[+-]?[0-9]+)")


def _function_names(network) -> dict:
    """The LaTeX of each elementwise function the network applies, by the name a report row gives it."""
    rules = {activation_rule(node.activation) for step in network.steps for node in step.expr.atoms(Elementwise)}
    return {rule.name: rule.latex for rule in rules}


def _check_name(name: str, t: dict, functions: dict) -> str:
    """A report row's name in the document's language: math for formulas, a catalog phrase otherwise."""
    shorter = re.fullmatch(r"dL/d(\S+) \((.+)\)", name)  # a shorter form: "dL/da1 (compact)"
    if shorter:
        label = t.get("form_" + shorter.group(2).replace(" ", "_"), shorter.group(2))
        return f"${latex_name('d' + shorter.group(1))}$ ({label})"
    if name.startswith("dL/d"):
        return f"${latex_name('d' + name[4:])}$"
    if name.endswith("'(z)") and name[:-4] in functions:
        return f"${functions[name[:-4]]}'(z)$"
    local = re.fullmatch(r"local: layer (\d+)", name)
    if local:
        return t["check_local_layer"].format(layer=local.group(1))
    if name == "local: loss gradient":
        return t["check_local_loss"]
    return f"`{name}`"


def method_text(method: str, t: dict) -> str:
    """A verification method in the catalog's words (``expand``: exact expansion ...), else its own name."""
    return t.get("method_" + re.sub(r"\W", "_", method), f"`{method}`")


def verification_rows(report, t: dict, network) -> list[dict]:
    """One row per check: the formula (``name``, TeX/Markdown-ready), ``ok``, the method as a catalog sentence
    (``method``) and the relative error of the finite-difference sanity check where the report gives one
    (``fd``, math)."""
    rows, functions = [], _function_names(network)
    for check in report.checks:
        fd = _FD_ERROR.search(check.detail)
        rows.append({"name": _check_name(check.name, t, functions), "ok": check.ok,
                     "method": method_text(check.method, t),
                     "fd": f"${scientific(float(fd.group(1)))}$" if fd else ""})
    return rows


def witness_text(report) -> str:
    """The sizes the verifier used, as math: ``N = 2, n_{0} = 3, ...``."""
    return ", ".join(f"{latex_name(key) if not key.startswith('n_') else f'n_{{{key[2:]}}}'} = {value}"
                     for key, value in report.witness.items())


# -- the network picture --------------------------------------------------------------------------------------

DIAGRAM_MAX_UNITS = 5  # past this many units a column shows three, a vertical ellipsis and the last
DIAGRAM_MAX_COLUMNS = 10  # past this many columns the middle layers give way to a horizontal ellipsis
# The picture's columns share this width (cm, the slide's text width less room for the outer labels), at most
# 2.2 cm apart; closer than DIAGRAM_STAGGER cm, every other column's labels move to rows of their own.
DIAGRAM_WIDTH = 9.0
DIAGRAM_STAGGER = 1.8


def layer_summary(network, index: int) -> dict:
    """Layer ``index`` (0: the input) in a few words of math: its width, the values it computes (first and
    last where there are more than two), the activations it applies and its parameters."""
    steps = [step for step in network.steps if step.layer == index and step.kind != "loss"]
    values = [latex_name(network.input_name)] if index == 0 else [latex_name(step.name) for step in steps]
    # The activation a layer applies, as the spec names it (PReLU, not the ReLU and min it is made of); the
    # functions inside other layers (batch norm's inverse square root) are no activation.
    activation = network.spec.layers[index - 1].activation if index else None
    functions = [] if activation in (None, "", "identity") else [
        TRAINABLE_ACTIVATIONS.get(activation) or activation_rule(activation).latex]
    return {"index": index, "size": network.spec.sizes[index],
            "kind": network.spec.layers[index - 1].kind if index else "input",
            # A skip connection's other input: the layer whose output it adds (0 for the network's input).
            "skip_from": _source_layer(network, network.spec.layers[index - 1].source) if index else None,
            "names": ",\\ ".join(values if len(values) <= 2 else [values[0], r"\ldots", values[-1]]),
            "functions": ",\\ ".join(functions),
            "params": ",\\ ".join(latex_name(name) for name in parameter_names(network) if layer_of(name) == index)}


def _source_layer(network, source: str | None) -> int | None:
    if source is None:
        return None
    return 0 if source == network.input_name else network.step(source).layer


def diagram(network) -> dict:
    """Positions and labels of the TikZ picture (units of the picture's x and y steps; ``x_step`` in cm), so
    that labels sit on their own rows (``row`` 1: the staggered row of every other column where columns are
    close) and the picture is symmetric about its centre."""
    sizes, depth = network.spec.sizes, network.depth
    indices = list(range(depth + 1))
    if len(indices) > DIAGRAM_MAX_COLUMNS:
        indices = [0, 1, 2, None, depth - 1, depth]
    slots = max(min(size, DIAGRAM_MAX_UNITS) for size in sizes)
    columns = []
    for x, index in enumerate(indices):
        if index is None:
            columns.append({"x": x, "gap": True})
            continue
        size = sizes[index]
        shown = min(size, DIAGRAM_MAX_UNITS)
        top = (shown - 1) / 2
        units = [{"y": top - k, "id": k} for k in range(shown)
                 if not (size > DIAGRAM_MAX_UNITS and k == shown - 2)]
        summary = layer_summary(network, index)
        columns.append({
            **summary, "x": x, "gap": False, "units": units,
            "one_to_one": index > 0 and LAYER_KINDS[summary["kind"]].per_unit,
            "skip_x": indices.index(summary["skip_from"]) if summary["skip_from"] is not None
            and summary["skip_from"] in indices else None, "skip_units": None,
            "dots": top - (shown - 2) if size > DIAGRAM_MAX_UNITS else None,
            "role": "input" if index == 0 else ("output" if index == depth else "hidden"),
        })
    skips = [col for col in columns if not col["gap"] and col["skip_x"] is not None]
    for col in skips:  # the arc of a skip connection joins the bottom units of the two columns
        col["skip_units"] = (columns[col["skip_x"]]["units"][-1]["id"], col["units"][-1]["id"])
    x_step = min(2.2, DIAGRAM_WIDTH / max(1, len(indices) - 1))
    stagger = x_step < DIAGRAM_STAGGER
    for col in columns:
        col["row"] = col["x"] % 2 if stagger else 0
    return {"columns": columns, "top": (slots - 1) / 2, "width": len(indices) - 1, "skips": bool(skips),
            "x_step": round(x_step, 2), "stagger": stagger}


# -- everything the lecture formats print ---------------------------------------------------------------------

def _entries(values: dict, digits: int = 4) -> list[dict]:
    """Printed values: ``lhs``, ``value`` (a matrix), and the whole ``equation`` and ``update`` lines."""
    entries = []
    for name, value in values.items():
        lhs, matrix = latex_name(name), latex_matrix(value, digits)
        entries.append({"name": name, "lhs": lhs, "value": matrix, "equation": f"{lhs} = {matrix}",
                        "update": rf"{lhs} \leftarrow {matrix}"})
    return entries


def example_facts(network, example: WorkedExample) -> dict:
    """What the documents say about the example, measured on it: the activations with kinks (``kinked``), their
    units that pass no gradient for any sample (``dead``: name -> 1-based unit numbers), how close the nearest
    pre-activation comes to a kink, whether the targets hold more than one class, and whether the batch size
    comes from statistics over the batch."""
    sizes = network.sizes(example.batch, network.spec.sizes)
    evaluator = Evaluator(Float64Backend(), {**example.inputs, **example.forward}, sizes)
    kinked = _kinked(network.steps)
    units = 0 if network.batch_first else 1  # the samples' axis: a unit is dead if no sample moves it
    dead = {name: [int(unit) + 1 for unit in np.flatnonzero(~(evaluator(slope) != 0).any(axis=units))]
            for _, _, slope, name in kinked}
    return {"kinked": [name for _, _, _, name in kinked], "dead": {name: found for name, found in dead.items() if found},
            "kink_distance": _kink_distance(evaluator, kinked),
            "classes": classes_vary(network, example.inputs["Y_true"]),
            "statistics": _has_statistics(network) and example.batch > 2}


def example_sentences(network, example: WorkedExample, t: dict, digits: int) -> list[str]:
    """The sentences before the example's data: how it was drawn, and each fact of ``example_facts`` that holds
    (every unit active or which are not, no pre-activation near a kink, the classes, the dropout masks)."""
    facts = example_facts(network, example)
    kind = target_kind(network)
    sentences = [t["worked_intro"].format(batch=example.batch, seed=example.seed, digits=digits)]
    if _scales(network):
        sentences.append(t["worked_scales"].format(names=", ".join(f"${latex_name(name)}$" for name in _scales(network)),
                                                   low=SCALE_RANGE[0], high=SCALE_RANGE[1]))
    if facts["statistics"]:
        sentences.append(t["worked_statistics"].format(batch=example.batch))
    if facts["dead"]:
        sentences.append(t["worked_dead"].format(units="; ".join(
            t["worked_dead_units"].format(units=", ".join(map(str, found)), value=f"${latex_name(name)}$")
            for name, found in facts["dead"].items())))
    elif facts["kinked"]:
        sentences.append(t["worked_alive"].format(values=", ".join(f"${latex_name(name)}$"
                                                                   for name in facts["kinked"])))
    if facts["kinked"] and facts["kink_distance"] > KINK_MARGIN:
        sentences.append(t["worked_off_kink"].format(margin=KINK_MARGIN))
    sentences.append(t[f"targets_{kind}"])
    if facts["classes"] and kind != "regression":
        rows = example.inputs["Y_true"] if network.batch_first else example.inputs["Y_true"].T
        sentences.append(t["worked_classes_onehot"].format(count=len(np.unique(rows.argmax(axis=-1))))
                         if kind == "onehot" else t["worked_classes_binary"])
    if network.masks:
        sentences.append(t["worked_masks"].format(masks=", ".join(f"${latex_name(name)}$" for name in network.masks)))
    return sentences


def example_data(network, example: WorkedExample) -> dict:
    """The example's data as printed: the input, the targets and the dropout masks."""
    return {name: example.inputs[name] for name in (network.input_name, "Y_true", *network.masks)}


def example_view(derivation, example: WorkedExample, t: dict) -> dict:
    """The worked example as printed matrices for the article and Markdown, parameters grouped by layer."""
    network = derivation.network
    names = parameter_names(network)
    layers = sorted({layer_of(name) for name in names})
    return {
        "batch": example.batch, "seed": example.seed, "lr": number(example.lr), "digits": 4,
        "intro": " ".join(example_sentences(network, example, t, 4)),
        "data": _entries(example_data(network, example)),
        "layers": [{"layer": layer,
                    "params": _entries({n: example.inputs[n] for n in names if layer_of(n) == layer}),
                    "updated": _entries({n: example.updated[n] for n in names if layer_of(n) == layer}),
                    "gradients": _entries({step.symbol.name: example.gradients[step.symbol.name]
                                           for step in derivation.backward if step.layer == layer})}
                   for layer in layers],
        "forward": _entries(example.forward), "loss": number(example.loss),
        "loss_after": number(example.loss_after),
    }


def chain_example(derivation) -> dict | None:
    """The chain rule at the first parameter gradient of the backward pass, its factors in the order of the
    matrix formula: the shorthand factors braced over the matrices they are, and their shapes."""
    params = set(parameter_names(derivation.network))
    step = next((s for s in derivation.backward if s.name in params and s.local.side in ("left", "right")), None)
    if step is None:
        return None
    local, upstream = step.local, derivation.network.symbol(step.upstream)
    of, wrt = latex_name(local.of), latex_name(local.wrt)
    factor = (rf"\underbrace{{\frac{{\partial {of}}}{{\partial {wrt}}}}}_{{{latex(local.expr)}}}",
              f"({shape_latex(local.expr.shape)})")
    # The upstream gradient's name as its label; a name that is itself a fraction is written with a slash,
    # since a fraction in a label sets its parts a size below the legible minimum.
    name = re.sub(r"^\\frac\{\\partial L\}\{(.*)\}$", r"\\partial L / \1", latex_name('d' + step.upstream))
    incoming = (rf"\underbrace{{\frac{{\partial L}}{{\partial {of}}}}}_{{{name}}}",
                f"({shape_latex(upstream.shape)})")
    first, second = (factor, incoming) if local.side == "left" else (incoming, factor)
    lhs = latex_name(step.symbol.name)
    return {"layer": step.layer, "braced": rf"{lhs} = {first[0]} \, {second[0]} = {latex(step.expr)}",
            "shapes": rf"({shape_latex(step.shape)}) = {first[1]} \, {second[1]}",
            # What the two braces say: the factor's value, and the upstream gradient's name.
            "statements": [Statement("local", local.of, local.wrt, local.expr),
                           Statement("upstream", "L", step.upstream, upstream)]}


def _activation_view(note: dict, t: dict) -> dict:
    """An activation note with its sentences: where it is used, its parameters, the named functions it uses,
    each kink's convention."""
    f = note["name"]
    return {**note, "used": t["activation_used"].format(layers=", ".join(map(str, note["layers"]))),
            "definitions": [t[f"named_{name}"].format(definition=f"${definition}$")
                            for name, definition in note["functions"]],
            "parameters": t["activation_parameters"].format(values=", ".join(
                f"${p['symbol']} = {p['value']}$" for p in note["params"])) if note["params"] else "",
            "conventions": [t["kink_convention"].format(
                f=f"${f}$", at=f"$z = {k['at']}$", left=f"${k['left']}$", right=f"${k['right']}$",
                prime=f"${f}'({k['at']}) = {k['value']}$") for k in note["kinks"]]}


def _has_hangul(*texts: str) -> bool:
    return any("\u1100" <= ch <= "\u11ff" or "\u3130" <= ch <= "\u318f" or "\uac00" <= ch <= "\ud7a3"
               for text in texts for ch in text)


def _pattern_view(pattern, t: dict) -> dict:
    """A layer's general backward form (``patterns.py``) with its catalog text; each equation's range as
    LaTeX (``t = 1, 2, 3``, ``t = 1, \\ldots, 9``), empty where it names no index."""
    index = "h" if pattern.kind == "attention" else "t"
    return {"layer": pattern.layer, "title": t[f"pattern_{pattern.kind}_title"],
            "intro": t[f"pattern_{pattern.kind}_intro"].format(count=pattern.count) + (
                " " + t["pattern_attention_heads"].format(count=pattern.count)
                if pattern.kind == "attention" and pattern.count > 1 else ""),
            "equations": [{"lhs": eq.lhs, "rhs": eq.rhs,
                           "range": "" if eq.first is None else (
                               rf"{index} = {', '.join(map(str, range(eq.first, eq.last + 1)))}"
                               if eq.last - eq.first < 3 else rf"{index} = {eq.first}, \ldots, {eq.last}")}
                          for eq in pattern.equations],
            "picture": pattern.picture, "caption": pattern.picture and (
                t["patch_caption"].format(y=pattern.picture["y"], x=pattern.picture["x"])
                + (" " + t["patch_caption_more"] if pattern.picture["more"] else ""))}


def lecture_context(derivation, *, t: dict, lang: str, report, batch: int, options: LectureOptions) -> dict:
    """What the lecture formats (Markdown, article, deck, notebook) print beyond the formulas (``t``: the
    catalog of ``lang``)."""
    network = derivation.network
    page = title_page(network.spec, options)
    example = worked_example(derivation, seed=options.example_seed) if has_worked_example(derivation) else None
    rows = memory_table(derivation, batch)
    names = [network.input_name, *parameter_names(network), "Y_true", *network.masks,
             *(step.name for step in network.steps if step.kind != "loss")]
    return {
        "title": document_title(network.spec, t), "title_page": page, "handout": options.handout,
        "hangul": lang == "ko" or _has_hangul(network.spec.title, *page.values()),
        "notation": notation_math(network), "symbols": symbol_rows(network, derivation, t),
        "activations": [_activation_view(note, t) for note in activation_notes(network)],
        "diagram": diagram(network), "chain_example": chain_example(derivation),
        "layer_rows": [layer_summary(network, index) for index in range(network.depth + 1)],
        "layer_indices": sorted({step.layer for step in network.steps}),
        "verification": verification_rows(report, t, network), "witness": witness_text(report),
        "example": example and example_view(derivation, example, t), "example_values": example,
        "names": {name: latex_name(name) for name in names},
        "param_layers": {name: layer_of(name) for name in parameter_names(network)},
        "patterns": [_pattern_view(pattern, t) for pattern in patterns(derivation)],
        "memory": {
            "batch": batch,
            "rows": [{"layer": row.layer, "kept": ", ".join(latex_name(name) for name in row.kept),
                      "kept_names": [latex_name(name) for name in row.kept],
                      "floats": row.floats_per_sample, "bytes32": f"{row.bytes32:,}",
                      "bytes64": f"{row.bytes64:,}"} for row in rows],
            "floats": sum(row.floats_per_sample for row in rows),
            "bytes32": f"{sum(row.bytes32 for row in rows):,}",
            "bytes64": f"{sum(row.bytes64 for row in rows):,}",
        },
    }
