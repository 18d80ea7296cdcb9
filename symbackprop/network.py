"""Spec -> Network: the forward pass as ordered SymPy matrix steps with symbolic shapes.

Each layer kind of the registry (``layers.py``) adds its steps through a ``Builder``, which knows the layout
and hands out the symbols: ``N`` samples, a width ``n_l`` for every layer that sets one (width-preserving
layers reuse their input's), parameters named after their layer (``W3``, ``b3``, ``gamma2``), dropout masks
``M<l>``. The loss is the last step.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass, field

import sympy as sp

from .expressions import LossValue
from .layers import LAYER_KINDS, WITNESS_VOCAB, Local
from .rules import LossTerms, l2_coefficient, loss_rule, per_sample_total
from .spec import Spec

# A vocabulary or head width up to this keeps its spec value at witness sizes.
SMALL_EXTRA_SIZE = 8


@dataclass(frozen=True)
class Step:
    """One forward quantity: ``symbol = expr``, written in earlier steps' symbols and the inputs.

    ``kind`` names the operation (``linear``, ``activation``, ``mean``, ..., ``loss``); ``locals`` say how the
    output depends on each operand (see ``layers.Local``); ``fusion`` tags a last step whose gradient
    simplifies with some losses (``sigmoid``, ``softmax``).
    """

    name: str
    symbol: sp.Basic
    expr: sp.Basic
    layer: int
    kind: str
    locals: tuple[Local, ...] = field(default=(), repr=False, compare=False)
    fusion: str = ""


@dataclass(frozen=True)
class Compact:
    """A shorter formula for what a layer's steps send back to ``wrt`` (batch norm's textbook ``dX``).

    It replaces the contributions of the steps named in ``replaces``; ``expr`` is written with gradient
    symbols of that layer (``dxhat2``) and its forward values. ``label`` is the catalog key of the form
    (``compact``; ``steps_stacked``: a sum over steps as one product).
    """

    wrt: str
    replaces: tuple[str, ...]
    expr: sp.Basic
    label: str = "compact"
    # Built when first asked (check, grade and the lecture ask; a deep network's derivation need not wait for them):
    build_mistakes: Callable[[], tuple] = tuple  # NamedMistakes: the form with a typical mistake in it
    build_walk: Callable[[], tuple] = tuple  # WalkLines (layers.py): the substitutions that lead to it

    @functools.cached_property
    def walk(self) -> tuple:
        return tuple(self.build_walk())


@dataclass(frozen=True)
class Network:
    """The forward pass of a spec: symbols for every quantity and the steps that define them.

    Shapes are symbolic: ``N`` samples and the widths ``n_l`` (an embedding of k ids: ``k e_l``), and
    ``extra_sizes`` (symbol -> spec value and witness value) for a vocabulary ``V`` or a head width ``d_l``; in the batch-first layout rows are samples
    (``X`` is N x n_0), in the column layout columns are. ``widths[l]`` is the width symbol of layer ``l``'s
    output (``widths[0]``: the input's); width-preserving layers repeat their input's symbol.
    ``roles`` says what each input is: ``data``, ``target``, ``parameter`` or ``mask``; ``initializers`` how
    the generated module draws each parameter (``weight``, ``bias``, ``scale``, ``shift``, ``slope``, with the
    fan-in of weights) and each mask (``mask``, with the probability of keeping an entry).
    """

    spec: Spec
    N: sp.Symbol
    widths: tuple[sp.Symbol, ...]
    inputs: dict
    steps: tuple[Step, ...]
    roles: dict = field(default_factory=dict)
    initializers: dict = field(default_factory=dict)
    compacts: tuple[Compact, ...] = ()
    extra_sizes: dict = field(default_factory=dict)
    # name -> the shape the generated module gives an input or a parameter where it is not the derivation's
    # matrix: an image batch's sample (C, H, W), a convolution's weights (F, C, kh, kw)
    module_shapes: dict = field(default_factory=dict)

    @property
    def images(self) -> bool:
        """Whether the network reads images (or signals): convolution, pooling, flatten."""
        return self.spec.input.shape is not None

    @property
    def depth(self) -> int:
        return len(self.spec.layers)

    @property
    def batch_first(self) -> bool:
        return self.spec.layout == "batch-first"

    @property
    def attends(self) -> bool:
        """Whether the network has attention: its rows are then the positions of one sequence."""
        return any(layer.kind == "attention" for layer in self.spec.layers)

    @property
    def input_name(self) -> str:
        return self.spec.input.name

    @property
    def parameters(self) -> list[str]:
        """Trainable parameters in layer order (``W1``, ``b1``, ``gamma2``, ...)."""
        return [name for name in self.inputs if self.roles[name] == "parameter"]

    @property
    def masks(self) -> list[str]:
        return [name for name in self.inputs if self.roles[name] == "mask"]

    @property
    def size_symbols(self) -> tuple[sp.Symbol, ...]:
        """The distinct width symbols, in order, then the other sizes."""
        return tuple(w for w in dict.fromkeys((*self.widths, *self.extra_sizes)) if isinstance(w, sp.Symbol))

    def symbol(self, name: str) -> sp.Basic:
        """The symbol of an input or a forward step, by name."""
        if name in self.inputs:
            return self.inputs[name]
        for step in self.steps:
            if step.name == name:
                return step.symbol
        raise KeyError(name)

    def step(self, name: str) -> Step:
        return next(step for step in self.steps if step.name == name)

    def activation_name(self, layer: int) -> str:
        """The name of layer ``layer``'s output (1-based): ``a<l>``, or ``Y_pred`` for the last layer."""
        return "Y_pred" if layer == self.depth else f"a{layer}"

    def layer_input(self, layer: int) -> str:
        return self.input_name if layer == 1 else self.activation_name(layer - 1)

    def sizes(self, N: int, widths) -> dict:
        """Values for the size symbols: batch ``N`` and the layer widths ``widths`` (n_0, ..., n_L); the other
        sizes (a vocabulary, a head width) take the spec's values with the spec's widths or where they are
        small, else their witness (so that a claim judged at other widths still sees the spec's head width)."""
        own = tuple(widths) == tuple(self.spec.sizes)
        return {self.N: N, **{w: v for w, v in zip(self.widths, widths) if isinstance(w, sp.Symbol)},
                **{symbol: value if own or value <= SMALL_EXTRA_SIZE else witness
                   for symbol, (value, witness) in self.extra_sizes.items()}}


class Builder:
    """What a layer kind needs to add its steps: the layout's shapes and helpers, and symbol bookkeeping."""

    def __init__(self, spec: Spec):
        self.spec = spec
        self.width_symbols = _width_symbols(spec)
        self.N = sp.Symbol("N", positive=True, integer=True)
        self.batch_first = spec.layout == "batch-first"
        self.inputs, self.roles, self.initializers = {}, {}, {}
        self.steps, self.compacts, self.widths = [], [], {}
        self.extra_sizes = {}
        self.module_shapes = {}

    @property
    def axis(self) -> int:
        """The axis along which one sample's features lie (1 batch-first, 0 column)."""
        return 1 if self.batch_first else 0

    # -- shapes and symbols
    def sample_shape(self, n) -> tuple:
        return (self.N, n) if self.batch_first else (n, self.N)

    def feature_shape(self, n) -> tuple:
        """The shape of a per-feature parameter or statistic: a row (batch-first) or a column."""
        return (1, n) if self.batch_first else (n, 1)

    def new_width(self, l: int) -> sp.Symbol:
        """The width symbol of layer ``l``'s output (``l = 0``: the input)."""
        return self.width_symbols[l]

    def width_of(self, name: str) -> sp.Symbol:
        return self.widths[name]

    def value(self, name: str) -> sp.MatrixSymbol:
        if name in self.inputs:
            return self.inputs[name]
        return next(step.symbol for step in self.steps if step.name == name)

    def gradient(self, name: str) -> sp.MatrixSymbol:
        """The symbol of ``dL/d<name>``."""
        return sp.MatrixSymbol(f"d{name}", *self.value(name).shape)

    def data(self, name: str, n, role: str, rows=None) -> sp.MatrixSymbol:
        """An input with ``n`` features per row: ``data`` (real), ``target``, or ``ids`` (integer ids, one-hot
        encoded in the derivation); ``rows`` where it is not one row per sample (a sequence stacked by step)."""
        shape = self.sample_shape(n) if rows is None else (rows, n)
        symbol = self.inputs[name] = sp.MatrixSymbol(name, *shape)
        self.roles[name], self.widths[name] = role, n
        return symbol

    def size(self, name: str, value: int, witness: int) -> sp.Symbol:
        """A size symbol beside the layer widths (a vocabulary, a head width): ``value`` in the spec, and
        ``witness`` where the exact check picks small sizes."""
        symbol = sp.Symbol(name, positive=True, integer=True)
        self.extra_sizes[symbol] = (value, witness)
        return symbol

    def parameter(self, name: str, shape, init: str, fan_in=None) -> sp.MatrixSymbol:
        symbol = self.inputs[name] = sp.MatrixSymbol(name, *shape)
        self.roles[name], self.initializers[name] = "parameter", (init, fan_in)
        return symbol

    def mask(self, name: str, shape, keep: float) -> sp.MatrixSymbol:
        """A dropout mask input: entries 1 (kept, with probability ``keep``) or 0."""
        symbol = self.inputs[name] = sp.MatrixSymbol(name, *shape)
        self.roles[name], self.initializers[name] = "mask", ("mask", keep)
        return symbol

    def step(self, name, expr, layer, kind, locals_, fusion="") -> sp.MatrixSymbol:
        """Add ``name = expr``; ``locals_`` may be a function of the new symbol (for rules written with it)."""
        symbol = sp.MatrixSymbol(name, *expr.shape)
        if callable(locals_):
            locals_ = locals_(symbol)
        self.steps.append(Step(name, symbol, expr, layer, kind, tuple(locals_), fusion))
        if self.feature_axis_length(expr.shape) is not None:
            self.widths[name] = self.feature_axis_length(expr.shape)
        return symbol

    def feature_axis_length(self, shape):
        """The width of a per-sample quantity of this shape, or None for statistics and parameters."""
        samples, features = (shape[0], shape[1]) if self.batch_first else (shape[1], shape[0])
        return features if samples == self.N or (samples / self.N).is_Integer else None

    def compact(self, wrt, replaces, expr, label: str = "compact", mistakes=tuple, walk=tuple) -> None:
        """A shorter form of what ``replaces`` send back to ``wrt``; ``mistakes`` and ``walk`` build its
        mistakes and its lecture walk when they are first needed."""
        self.compacts.append(Compact(wrt, tuple(replaces), expr, label, mistakes, walk))

    # -- layout helpers: sums and broadcasts over the batch, over features, per sample
    def broadcast_batch(self, v, rows=None):
        """A per-feature row (column) repeated for every sample: ``1_N v`` (``v 1_N^T``); ``rows`` for a value
        with another number of rows than ``N`` (a sequence stacked by time step)."""
        rows = self.N if rows is None else rows
        return sp.OneMatrix(rows, 1) * v if self.batch_first else v * sp.OneMatrix(1, rows)

    def batch_sum(self, M):
        """``M`` summed over the batch: ``1_N^T M`` (``M 1_N``)."""
        return sp.OneMatrix(1, M.shape[0]) * M if self.batch_first else M * sp.OneMatrix(M.shape[1], 1)

    def feature_sum(self, M, n):
        """``M`` summed over each sample's ``n`` features: ``M 1_n`` (``1_n^T M``)."""
        return M * sp.OneMatrix(n, 1) if self.batch_first else sp.OneMatrix(1, n) * M

    def broadcast_features(self, v, n):
        """A per-sample column (row) repeated for each of ``n`` features: ``v 1_n^T`` (``1_n v``)."""
        return v * sp.OneMatrix(1, n) if self.batch_first else sp.OneMatrix(n, 1) * v

    def per_sample_total(self, M, n):
        """Each sample's sum of ``M``, repeated over its ``n`` features (see ``rules.per_sample_total``)."""
        return per_sample_total(M, n, self.batch_first)


def _width_symbols(spec: Spec) -> list[sp.Symbol]:
    """A width symbol per layer output (index 0: the input): ``n_l`` where layer ``l`` sets a width, shared by
    width-preserving layers and by the two values a skip connection adds (their widths must be equal)."""
    parent = list(range(len(spec.layers) + 1))

    def root(i):
        while parent[i] != i:
            i = parent[i]
        return i

    names = {spec.input.name: 0, **{f"a{l}": l for l in range(1, len(spec.layers) + 1)}}
    for l, layer in enumerate(spec.layers, start=1):
        if LAYER_KINDS[layer.kind].preserves_width:
            parent[l] = root(l - 1)
        tied = LAYER_KINDS[layer.kind].ties(layer)
        if tied is not None:
            first, second = sorted((root(l - 1), root(names[tied])))
            parent[second] = first
    return [sp.Symbol(f"n_{root(l)}", positive=True, integer=True) for l in range(len(parent))]


def build_network(spec: Spec) -> Network:
    """Build the forward pass of ``spec``: each layer's steps from the registry, then the loss."""
    b = Builder(spec)
    n_0 = b.new_width(0)
    steps = spec.input.steps
    rows = None if steps is None else steps * b.N
    if spec.input.vocab:  # token ids, one-hot in the derivation: k ids per sample, each one of V
        V = b.size("V", spec.input.vocab, WITNESS_VOCAB)
        b.data(spec.input.name, spec.input.context * V, "ids", rows)
    elif spec.input.shape is not None:  # images: each sample flattened in C order, its sizes fixed by the spec
        b.data(spec.input.name, spec.input.size, "data")
        b.module_shapes[spec.input.name] = spec.input.shape
    else:
        b.data(spec.input.name, n_0, "data", rows)
    source = spec.input.name
    for l, layer in enumerate(spec.layers, start=1):
        out = "Y_pred" if l == len(spec.layers) else f"a{l}"
        LAYER_KINDS[layer.kind].build(b, layer, l, source, out)
        source = out
    k = b.width_of(source)
    Y = b.value(source)
    T = b.data("Y_true", k, "target", Y.shape[0] if b.batch_first else None)
    settings = spec.loss
    weights = [b.inputs[name] for name in b.inputs
               if settings.l2 and b.initializers.get(name, ("",))[0] == "weight"]
    terms = LossTerms(Y, T, b.batch_first, k)
    gradient = loss_rule(settings).scaled_gradient(terms, settings)
    penalty = l2_coefficient(settings, terms.N)
    locals_ = [Local(source, gradient, "loss", lambda G: gradient),
               *(Local(W.name, penalty * W, "loss", lambda G, W=W: penalty * W) for W in weights)]
    loss = LossValue(settings.to_basic(), Y, T, b.axis, weights)
    b.steps.append(Step("L", sp.Symbol("L"), loss, len(spec.layers), "loss", tuple(locals_)))
    widths = tuple(b.widths[name] for name in (spec.input.name, *(f"a{l}" for l in range(1, len(spec.layers)))))
    widths += (k,)
    return Network(spec, b.N, widths, b.inputs, tuple(b.steps), b.roles, b.initializers, tuple(b.compacts),
                   b.extra_sizes, b.module_shapes)
