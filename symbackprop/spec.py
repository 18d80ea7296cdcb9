"""Network specs: the TOML file (or mapping) a user writes, checked and normalized into frozen dataclasses.

Every problem raises :class:`SpecError` with the source, the key path (``layers[2].activation``) and
what is allowed. Spec files are only parsed as TOML; nothing in them is ever executed.
"""

from __future__ import annotations

import dataclasses
import keyword
import math
import numbers
import os
import re
import tomllib
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from symbackprop.errors import InputFileError, SpecError, suggestion
from symbackprop.errors import allowed as _allowed
from symbackprop.files import read_text
from symbackprop.formula import FUNCTIONS as FORMULA_FUNCTIONS
from symbackprop.formula import MAX_NUMBER, FormulaError
from symbackprop.layers import CONV_KINDS, IMAGE_KINDS, LAYER_KINDS, POOL_KINDS, image_output, image_window
from symbackprop.rules import (
    ACTIVATIONS,
    FUNCTIONS,
    L2_SCALES,
    LOSS_KINDS,
    LOSS_RULES,
    PROBABILITIES,
    REAL,
    SHORTCUTS,
    TRAINABLE_ACTIVATIONS,
    CustomActivation,
    LossSettings,
    activation_rule,
    custom_activation,
)

LAYOUTS = ("batch-first", "column")
MAX_TITLE_LENGTH = 200
# The largest network a spec may describe. Past 200 layers deriving and verifying take minutes and memory
# grows fast (1000 layers exhausted 17 GB); past 10^12 weights and biases no machine can hold the
# generated module's parameters (8 TB in float64), so a larger count is surely a mistake.
MAX_LAYERS = 200
MAX_PARAMETERS = 10**12
# The most entries an image (or a signal) may have per sample, at the input or after a convolution: 64 maps of
# 512 x 512 (VGG's largest, 64 x 224 x 224, has 3.2 million). Past it a spec is surely a mistake; verify's exact
# check, whose terms grow with the entries, exhausted memory on a 10^5 x 10^5 image before it was refused.
MAX_IMAGE_ENTRIES = 2**24
RELU_GRAD_AT_ZERO_VALUES = (0, 0.5, 1)
DEFAULT_EPS = 1e-5
DEFAULT_DROPOUT = 0.5

_TITLE_PAGE_KEYS = ("author", "institute", "date")  # optional strings for the lecture's title page
_TOP_KEYS = ("title", "layout", "input", "layers", "loss", "regularization", *_TITLE_PAGE_KEYS, "activations")
_INPUT_KEYS = ("size", "shape", "name", "vocab", "context", "steps")
# Kinds that act entry by entry, so that they may read an image as they read a vector.
_ENTRYWISE_KINDS = ("activation", "dropout", "add")
# Layer kinds for sequences and token ids: batch-first only.
SEQUENCE_KINDS = ("embedding", "attention", "rnn", "lstm", "gru")
RECURRENT_KINDS = ("rnn", "lstm", "gru")
RETURNS = ("last", "all")
MAX_STEPS = 64
_PARAMETER_KEYS = ("alpha", "relu_grad_at_zero")
_LOSS_KEYS = ("kind", "reduction", "scale", "margin", "hinge_grad_at_zero")
_REGULARIZATION_KEYS = ("l2", "l2_scale")
# The layer's own keys, by kind, beside "kind" (from the layer registry).
_LAYER_KEYS = {name: kind.keys for name, kind in LAYER_KINDS.items()}
_ALL_ACTIVATIONS = (*ACTIVATIONS, *TRAINABLE_ACTIVATIONS)
_ACTIVATION_KEYS = ("forward", "parameters", "latex", "grad_at_kinks")
MAX_CUSTOM_ACTIVATIONS = 16
MAX_NAME_LENGTH = 32
# A custom activation's LaTeX name: letters, digits, a few marks, and only these commands (no \input, no ^^).
_LATEX_COMMANDS = frozenset({
    "operatorname", "mathrm", "mathit", "mathsf", "mathbf", "mathcal", "text", "tanh", "log", "exp",
    "alpha", "beta", "gamma", "delta", "epsilon", "varepsilon", "zeta", "eta", "theta", "vartheta", "iota",
    "kappa", "lambda", "mu", "nu", "xi", "pi", "rho", "sigma", "tau", "upsilon", "phi", "varphi", "chi", "psi",
    "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi", "Pi", "Sigma", "Upsilon", "Phi", "Psi", "Omega",
})
_LATEX_TOKEN = re.compile(r"\\[A-Za-z]+|[A-Za-z0-9 ,.+\-/()_{}']|\^(?!\^)")
MAX_LATEX_LENGTH = 80


def _latex_tokens(reader, text: str, key: str):
    """The tokens of a LaTeX name, refusing any character or command outside the allowed set."""
    position = 0
    while position < len(text):
        match = _LATEX_TOKEN.match(text, position)
        if not match or (match.group().startswith("\\") and match.group()[1:] not in _LATEX_COMMANDS):
            shown = match.group() if match else text[position]
            reader.fail(f"at column {position + 1}: {shown!r} is not allowed in a LaTeX name; use letters, "
                        "digits, _ ^ { } and commands such as \\operatorname, \\mathrm, \\beta", key)
        yield match
        position = match.end()

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_LAYERED_NAMES = ("W|b|Z|a|delta|M|mu|xc|var|rstd|xhat|gamma|beta|alpha|C|Q|K|V|S|P|O|U|A|AX|AH|h|c|i|f|o|g|r|z|n"
                  "|Wq|Wk|Wv|Wo|bq|bk|bv|bo|Wx|Wh|bx|bh|Xcol|Zcol|Pcol")
_RESERVED_NAMES = re.compile(rf"d?(?:(?:{_LAYERED_NAMES})[0-9]+(?:_[0-9]+)?|Y_pred|Y_true)|L|N|V|ones|sum")
_RESERVED_DESCRIPTION = ("W<n>, b<n>, Z<n>, a<n>, delta<n>, M<n>, mu<n>, xc<n>, var<n>, rstd<n>, xhat<n>, gamma<n>, "
                         "beta<n>, alpha<n>, the names of embedding, attention and recurrent layers (C<n>, Q<n>, "
                         "Wq<n>, h<n>_<t>, ...), Y_pred, Y_true, their d-prefixed gradients, L, N, V, ones, sum")
# Names the generated NumPy module binds itself, and Python's keywords: an input may not shadow them.
_MODULE_NAMES = frozenset({
    "np", "erf", "math", "SIZES", "BATCH_FIRST", "params", "cache", "grads", "lr", "rng", "seed", "dtype", "eps",
    "masks", "init_params", "draw_masks", "forward", "loss", "backward", "sgd_step", "gradient_check", "softmax",
    "log_softmax", "sigmoid", "penalty", "causal_softmax", "place", "scatter_rows", "shape", "im2col", "col2im",
    "fold", "unfold", "first_max_mask", "row_max", "unfold_t_dot", "unfold_sums", "col2im_unfold_dot", "row_dots",
    "time_step", "release_buffers",
    *ACTIVATIONS, *FUNCTIONS, *(f"{name}_grad" for name in (*ACTIVATIONS, *FUNCTIONS)), *keyword.kwlist,
    *keyword.softkwlist,
})


@dataclass(frozen=True)
class InputSpec:
    """The network input: its width and the matrix name used in the derivation.

    With ``vocab`` the input is ``context`` integer token ids per sample (one-hot, ``size = context vocab``
    wide, in the derivation); with ``steps`` it is a sequence of that many steps per sample.
    """

    size: int
    name: str = "X"
    vocab: int | None = None
    context: int = 1
    steps: int | None = None
    shape: tuple[int, ...] | None = None  # an image (C, H, W) or a signal (C, L); size is their product


@dataclass(frozen=True)
class LayerSpec:
    """One layer: its kind (``dense`` by default) and the keys that kind takes.

    Dense layers have a ``size``, an ``activation`` (its parameters set exactly when it takes them) and a
    ``bias``; ``batchnorm``/``layernorm`` an ``eps``; ``dropout`` a drop probability ``p``; ``add`` the
    ``source`` value it adds (the spec's ``from``). Width-preserving kinds have ``size`` None.
    """

    size: int | None = None
    activation: str | None = None
    alpha: float | None = None
    relu_grad_at_zero: float | None = None
    kind: str = "dense"
    bias: bool = True
    eps: float | None = None
    p: float | None = None
    source: str | None = None
    context: int = 1  # embedding: ids per sample, whose embeddings are concatenated
    vocab: int | None = None
    heads: int | None = None
    head_size: int | None = None
    causal: bool = False
    returns: str | None = None  # recurrent: "last" state or "all" states
    # convolution and pooling (size: the output's C H W): output channels, and per spatial axis (height and
    # width; a signal's height is 1) the kernel, stride and padding; ``image`` is the input's (C, H, W) or (C, L)
    channels: int | None = None
    kernel: tuple[int, int] | None = None
    stride: tuple[int, int] | None = None
    padding: tuple[int, int] | None = None
    image: tuple[int, ...] | None = None

    @property
    def params(self) -> dict:
        """The activation's parameters, e.g. ``{"alpha": 0.01}``; empty when it takes none."""
        return {key: getattr(self, key) for key in _PARAMETER_KEYS if getattr(self, key) is not None}


# The loss applied to the last layer's output, with its reduction, scale and regularization.
LossSpec = LossSettings


@dataclass(frozen=True)
class Spec:
    """A whole network: input, layers in order, loss, document title and matrix layout."""

    input: InputSpec
    layers: tuple[LayerSpec, ...]
    loss: LossSpec
    title: str = "Backpropagation"
    layout: str = "batch-first"
    # The lecture's title page (optional): who gives it, where, when.
    author: str | None = None
    institute: str | None = None
    date: str | None = None
    activations: tuple[CustomActivation, ...] = ()  # the spec's [activations.<name>] tables

    def __post_init__(self):
        for definition in self.activations:  # so that the layers' keys resolve, however the Spec was made
            custom_activation(definition)

    @property
    def sizes(self) -> tuple[int, ...]:
        """The input width followed by every layer's output width."""
        return _widths(self.input.size, self.layers)

    @property
    def parameter_count(self) -> int:
        """How many trainable numbers the network has (weights, biases, scales, shifts, slopes)."""
        total = 0
        for fan_in, width, layer in zip(self.sizes, self.sizes[1:], self.layers):
            if layer.kind == "dense":
                total += (fan_in + layer.bias) * width
            if layer.kind in ("batchnorm", "layernorm"):
                total += 2 * width
            if layer.activation in TRAINABLE_ACTIVATIONS:
                total += width
            if layer.kind == "embedding":
                total += layer.vocab * layer.size
            if layer.kind == "attention":
                inner = layer.heads * layer.head_size
                total += (3 * inner + width) * (fan_in + layer.bias)
            if layer.kind in CONV_KINDS:
                total += layer.channels * (image_window(layer).patch + layer.bias)
            if layer.kind in RECURRENT_KINDS:
                gates = {"rnn": 1, "lstm": 4, "gru": 3}[layer.kind]
                total += gates * width * (fan_in + width + (2 if layer.kind == "gru" else 1))
        return total


def _widths(input_size: int, layers) -> tuple[int, ...]:
    """The input width, then each layer's: its ``size``, or its input's for width-preserving kinds."""
    widths = [input_size]
    for layer in layers:
        widths.append(widths[-1] if layer.size is None else layer.size * layer.context)
    return tuple(widths)


def seed_spec() -> Spec:
    """The built-in example: 2 inputs, ReLU 3, ReLU 2, identity 1, half sum of squared errors."""
    return Spec(
        input=InputSpec(2),
        layers=(LayerSpec(3, "relu", relu_grad_at_zero=1), LayerSpec(2, "relu", relu_grad_at_zero=1),
                LayerSpec(1, "identity")),
        loss=LossSpec("half_sse"),
    )


PRESETS: dict[str, Callable[[], Spec]] = {"seed": seed_spec}


def spec_to_dict(spec: Spec) -> dict:
    """The mapping (same keys as the TOML) that :func:`load_spec` turns back into ``spec``."""
    loss = spec.loss
    data = {
        "title": spec.title,
        "layout": spec.layout,
        "input": _input_to_dict(spec.input),
        "layers": [_layer_to_dict(layer) for layer in spec.layers],
        "loss": {"kind": loss.kind, **({} if loss.kind in SHORTCUTS else
                                      {"reduction": loss.reduction, "scale": loss.scale}), **dict(loss.params)},
        **{key: getattr(spec, key) for key in _TITLE_PAGE_KEYS if getattr(spec, key) is not None},
        **({"activations": {d.name: d.to_dict() for d in spec.activations}} if spec.activations else {}),
    }
    if loss.l2:
        data["regularization"] = {"l2": loss.l2, "l2_scale": loss.l2_scale}
    return data


def _input_to_dict(input_spec: InputSpec) -> dict:
    data = ({"vocab": input_spec.vocab, "context": input_spec.context} if input_spec.vocab
            else {"shape": list(input_spec.shape)} if input_spec.shape else {"size": input_spec.size})
    data["name"] = input_spec.name
    if input_spec.steps is not None:
        data["steps"] = input_spec.steps
    return data


_LAYER_FIELDS = {"from": "source", "return": "returns"}


def _layer_to_dict(layer: LayerSpec) -> dict:
    activation = None if layer.activation in (None, *TRAINABLE_ACTIVATIONS) else activation_rule(layer.activation).name
    if layer.kind in IMAGE_KINDS:
        if layer.kind == "flatten":
            return {"kind": "flatten"}
        pick = (lambda pair: list(pair)) if len(layer.image) == 3 else (lambda pair: pair[1])
        data = {"kind": layer.kind, "kernel": pick(layer.kernel), "stride": pick(layer.stride)}
        if layer.kind in CONV_KINDS:
            data.update(channels=layer.channels, padding=pick(layer.padding),
                        activation=activation or layer.activation, **layer.params,
                        **({} if layer.bias else {"bias": False}))
        return data
    if layer.kind == "dense":
        return {"size": layer.size, "activation": activation or layer.activation, **layer.params,
                **({} if layer.bias else {"bias": False})}
    if layer.kind == "activation":
        return {"kind": "activation", "activation": activation or layer.activation, **layer.params}
    return {"kind": layer.kind, **{key: getattr(layer, _LAYER_FIELDS.get(key, key))
                                   for key in _LAYER_KEYS[layer.kind]}}


def check_title_page_text(value: str, key: str) -> str:
    """A title-page string given outside a spec (a command-line option), checked like the spec's own."""
    return _Reader("<command line>").title(value, key)


def load_spec(source: str | os.PathLike | Mapping) -> Spec:
    """Read, check and normalize a spec: a preset name (``"seed"``), a TOML file path, or a mapping with
    the same keys as the TOML. A preset name wins over a file of that name (write ``./seed`` for the file)."""
    if isinstance(source, str) and source in PRESETS:
        return PRESETS[source]()
    if isinstance(source, Mapping):
        return _within_limits(_Reader("<dict>").spec(source), "<dict>")
    if isinstance(source, (str, os.PathLike)):
        name = os.fsdecode(source)
        return _within_limits(_Reader(name).spec(_read_toml(source, name)), name)
    raise SpecError(f"expected a preset name, a path to a TOML file or a mapping, got {type(source).__name__}")


def _read_toml(path: str | os.PathLike, name: str) -> dict:
    """The parsed TOML document at ``path`` (at most ``files.MAX_INPUT_BYTES``); every failure becomes a
    SpecError, with a did-you-mean when ``name`` looks like a misspelled preset."""
    if not name:
        raise SpecError(f"the spec path is empty; give a TOML file or a preset name ({', '.join(PRESETS)})")
    try:
        text = read_text(path)
    except InputFileError as error:
        reason = error.reason
        if reason == "file not found" and os.sep not in name and not name.endswith(".toml"):
            guess = suggestion(name, PRESETS)
            reason = f"no such spec file or preset; presets: {', '.join(PRESETS)}" + (
                f"; did you mean {guess!r}?" if guess else "")
        raise SpecError(reason, source=name) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"invalid TOML: {exc}", source=name) from None
    except RecursionError:
        raise SpecError("invalid TOML: values nested too deeply", source=name) from None


def _describe(value: Any) -> str:
    """A value's kind in TOML words, for messages."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, numbers.Integral):
        return "an integer"
    if isinstance(value, numbers.Real):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "a table"
    if isinstance(value, (list, tuple)):
        return "an array"
    return f"a {type(value).__name__}"


def _within_limits(spec: Spec, source: str) -> Spec:
    """``spec``, unless it has more than ``MAX_LAYERS`` layers or ``MAX_PARAMETERS`` trainable numbers."""
    if len(spec.layers) > MAX_LAYERS:
        raise SpecError(f"{len(spec.layers)} layers; at most {MAX_LAYERS} are supported", source=source,
                        key="layers")
    parameters = spec.parameter_count
    if parameters > MAX_PARAMETERS:
        count = f"{parameters:.4g}" if parameters < 1e300 else f"about 10^{int(parameters.bit_length() * math.log10(2))}"
        raise SpecError(f"{count} trainable parameters; at most {MAX_PARAMETERS:.0e} are supported",
                        source=source, key="layers")
    return spec


def _join(prefix: str | None, key: Any) -> str:
    return f"{prefix}.{key}" if prefix else str(key)


class _Reader:
    """Checks one parsed spec, raising SpecError at the first problem with its source and key path."""

    def __init__(self, source: str):
        self.source = source
        self.custom: dict[str, CustomActivation] = {}  # the spec's custom activations, by name

    def fail(self, message: str, key: str | None = None) -> NoReturn:
        raise SpecError(message, source=self.source, key=key)

    def table(self, value: Any, key: str | None, allowed: tuple[str, ...],
              required: tuple[str, ...]) -> Mapping:
        """``value`` as a table holding only ``allowed`` keys and every ``required`` one."""
        if not isinstance(value, Mapping):
            self.fail(f"must be a table, got {_describe(value)}", key)
        for name in value:
            if name not in allowed:
                self.fail(f"unknown key {name!r}; {_allowed(name, allowed)}", _join(key, name))
        for name in required:
            if name not in value:
                self.fail(f"missing required key {name!r}", _join(key, name))
        return value

    def size(self, value: Any, key: str) -> int:
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            self.fail(f"must be an integer, got {_describe(value)}", key)
        if value <= 0:
            self.fail(f"must be a positive integer, got {value}", key)
        return int(value)

    def string(self, value: Any, key: str) -> str:
        if not isinstance(value, str):
            self.fail(f"must be a string, got {_describe(value)}", key)
        return value

    def choice(self, value: Any, key: str, what: str, allowed: tuple[str, ...]) -> str:
        if self.string(value, key) not in allowed:
            self.fail(f"unknown {what} {value!r}; {_allowed(value, allowed)}", key)
        return value

    def number(self, value: Any, key: str, requirement: str = "a finite number") -> float:
        """A finite real number (TOML integer or float) as a float."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            self.fail(f"must be a number, got {_describe(value)}", key)
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            self.fail(f"must be {requirement}, got {value!r}", key)
        return number

    def positive(self, value: Any, key: str) -> float:
        number = self.number(value, key, "a finite number > 0")
        if number <= 0:
            self.fail(f"must be a finite number > 0, got {value!r}", key)
        return number

    alpha = eps = scale = margin = positive

    def p(self, value: Any, key: str) -> float:
        number = self.number(value, key)
        if not 0 <= number < 1:
            self.fail(f"must be a probability in [0, 1), got {value!r}", key)
        return number

    def boolean(self, value: Any, key: str) -> bool:
        if not isinstance(value, bool):
            self.fail(f"must be true or false, got {_describe(value)}", key)
        return value

    def relu_grad_at_zero(self, value: Any, key: str) -> int | float:
        allowed = ", ".join(map(str, RELU_GRAD_AT_ZERO_VALUES))
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            self.fail(f"must be a number, one of {allowed}; got {_describe(value)}", key)
        if value not in RELU_GRAD_AT_ZERO_VALUES:
            self.fail(f"must be one of {allowed}, got {value!r}", key)
        return int(value) if value in (0, 1) else float(value)

    hinge_grad_at_zero = relu_grad_at_zero

    def input(self, value: Any) -> InputSpec:
        table = self.table(value, "input", _INPUT_KEYS, ())
        extras = {}
        if "shape" in table:
            for other in ("size", "vocab", "steps"):
                if other in table:
                    self.fail(f"an image input ('shape') takes no {other!r}: its size is the product of its shape",
                              f"input.{other}")
            shape = table["shape"]
            if not isinstance(shape, (list, tuple)) or len(shape) not in (2, 3):
                self.fail(f"must be [C, H, W] (an image) or [C, L] (a signal), got {_describe(shape)}"
                          + (f" of {len(shape)}" if isinstance(shape, (list, tuple)) else ""), "input.shape")
            extras["shape"] = tuple(self.size(dim, f"input.shape[{i}]") for i, dim in enumerate(shape))
            table = {key: item for key, item in table.items() if key != "shape"}
            size = self.image_entries(extras["shape"], "input.shape")
            if "name" not in table:
                return InputSpec(size, **extras)
        elif "vocab" in table:
            extras["vocab"] = self.size(table["vocab"], "input.vocab")
            extras["context"] = self.size(table.get("context", 1), "input.context")
            if "size" in table:
                self.fail("token ids (vocab) have no 'size': the one-hot width is context x vocab; remove it",
                          "input.size")
            size = extras["context"] * extras["vocab"]
        else:
            if "context" in table:
                self.fail("'context' counts token ids per sample; it needs 'vocab'", "input.context")
            if "size" not in table:
                self.fail("missing required key 'size' (or 'vocab' for token ids)", "input.size")
            size = self.size(table["size"], "input.size")
        if "steps" in table:
            extras["steps"] = self.size(table["steps"], "input.steps")
            if extras["steps"] < 2:
                self.fail("must be at least 2: over one step a recurrent layer never reads its state weights Wh",
                          "input.steps")
            if extras["steps"] > MAX_STEPS:
                self.fail(f"must be at most {MAX_STEPS} (the derivation unrolls every step), got {extras['steps']}",
                          "input.steps")
            if extras.get("context", 1) != 1:
                self.fail("a sequence has one token id per step; 'context' and 'steps' do not combine",
                          "input.context")
        if "name" not in table:
            return InputSpec(size, **extras)
        name = self.string(table["name"], "input.name")
        if not _NAME.fullmatch(name):
            self.fail(f"invalid input name {name!r}; it must match ^{_NAME.pattern}$ "
                      "(a letter, then letters, digits or underscores)", "input.name")
        if _RESERVED_NAMES.fullmatch(name) or name in _MODULE_NAMES:
            self.fail(f"input name {name!r} clashes with a name the derivation or the generated module uses "
                      f"({_RESERVED_DESCRIPTION}, Python keywords, and module names such as np, params, "
                      "forward); choose another", "input.name")
        return InputSpec(size, name, **extras)

    def layer(self, value: Any, key: str, earlier: dict) -> LayerSpec:
        """One ``[[layers]]`` table; ``earlier`` maps the values before it (input, a1, ...) to their widths."""
        return self.image_layer(self.any_layer(value, key, earlier), value, key)

    def any_layer(self, value: Any, key: str, earlier: dict) -> LayerSpec:
        kind = self.choice(value.get("kind", "dense"), f"{key}.kind", "layer kind", tuple(LAYER_KINDS))
        own = _LAYER_KEYS[kind]
        for name in value:
            if name != "kind" and name not in own:
                self.fail(self._misplaced(name, kind), f"{key}.{name}")
        if kind in SEQUENCE_KINDS:
            return self.sequence_layer(kind, value, key, list(earlier.values())[-1])
        if "activation" not in own:
            values = {name: getattr(self, name)(value.get(name, default), f"{key}.{name}")
                      for name, default in (("eps", DEFAULT_EPS), ("p", DEFAULT_DROPOUT)) if name in own}
            if "from" in own:
                values["source"] = self.added_value(value, key, earlier)
            return LayerSpec(kind=kind, **values)
        dense = kind == "dense"
        table = self.table(value, key, ("kind", *own), ("size", "activation") if dense else ("activation",))
        size = self.size(table["size"], f"{key}.size") if dense else None
        activation = self.choice(table["activation"], f"{key}.activation", "activation",
                                 (*_ALL_ACTIVATIONS, *self.custom))
        bias = self.boolean(table["bias"], f"{key}.bias") if "bias" in table else True
        if activation in self.custom:
            return self.custom_layer(table, key, activation, LayerSpec(size, kind=kind, bias=bias))
        defaults = dict(ACTIVATIONS[activation].defaults) if activation in ACTIVATIONS else {}
        for name in _PARAMETER_KEYS:
            if name in table and name not in defaults:
                takes = f"it takes: {', '.join(defaults)}" if defaults else "it takes no parameters"
                if activation in TRAINABLE_ACTIVATIONS:
                    takes = "its slope is a trained parameter (alpha<layer>), starting near 0.25"
                self.fail(f"activation {activation!r} does not take parameter {name!r}; {takes}",
                          f"{key}.{name}")
        params = {name: getattr(self, name)(table.get(name, default), f"{key}.{name}")
                  for name, default in defaults.items()}
        return LayerSpec(size, activation, kind=kind, bias=bias, **params)

    def image_layer(self, layer: LayerSpec, table: Mapping, key: str) -> LayerSpec:
        """A layer where images may be: a convolution or pooling with its geometry checked against the image it
        reads, a flatten, or a kind that acts entry by entry. ``self.image`` follows the image along the layers
        (None once flat)."""
        kind, shape = layer.kind, self.image
        if shape is not None and layer.activation in TRAINABLE_ACTIVATIONS:
            self.fail(f"a {layer.activation} on an image would learn one slope per entry (C H W of them), not one "
                      "per channel as PyTorch's does; use a fixed activation such as leaky_relu here",
                      f"{key}.activation")
        if kind not in IMAGE_KINDS:
            if shape is not None and kind not in _ENTRYWISE_KINDS:
                self.fail(f"a {kind} layer reads a vector, but its input is an image of shape {list(shape)}; "
                          "add a layer of kind \"flatten\" before it", f"{key}.kind")
            return layer
        if shape is None:
            self.fail(f"a {kind} layer reads an image: give [input] shape = [C, H, W] (or [C, L] for a signal)"
                      if self.input_spec.shape is None else
                      f"a {kind} layer reads an image, but an earlier flatten layer made it a vector", f"{key}.kind")
        if kind == "flatten":
            self.image = None
            return dataclasses.replace(layer, image=shape)
        dims = len(shape) - 1
        wants = {"conv2d": 2, "conv1d": 1}.get(kind, dims)
        if dims != wants:
            other = "conv1d" if dims == 1 else "conv2d"
            self.fail(f"a {kind} layer reads {'images [C, H, W]' if wants == 2 else 'signals [C, L]'}, but its input "
                      f"has shape {list(shape)}; use {other}", f"{key}.kind")
        if "kernel" not in table:
            self.fail("missing required key 'kernel' (an integer, or [kh, kw])", f"{key}.kernel")
        kernel = self.window_pair(table["kernel"], f"{key}.kernel", dims, 1)
        stride = self.window_pair(table["stride"], f"{key}.stride", dims, 1) if "stride" in table else \
            (kernel if kind in POOL_KINDS else (1, 1))
        padding = (0, 0)
        if kind in CONV_KINDS:
            if "channels" not in table:
                self.fail("missing required key 'channels' (the number of output channels F)", f"{key}.channels")
            layer = dataclasses.replace(layer, channels=self.size(table["channels"], f"{key}.channels"))
            if "padding" in table:
                padding = self.window_pair(table["padding"], f"{key}.padding", dims, 0)
        layer = dataclasses.replace(layer, kernel=kernel, stride=stride, padding=padding, image=shape)
        spatial = shape[1:] if dims == 2 else (1, shape[1])
        axes = ("height", "width") if dims == 2 else ("", "length")
        for axis, size, k, p in zip(axes, spatial, kernel, padding):
            if axis and k > size + 2 * p:
                padded = f"{size} + 2 x {p} = {size + 2 * p}" if p else f"{size}"
                self.fail(f"kernel {k} is larger than the {'padded ' if p else ''}input along its {axis} ({padded})",
                          f"{key}.kernel")
        self.image = image_output(layer)
        return dataclasses.replace(layer, size=self.image_entries(self.image, f"{key}.kind"))

    def image_entries(self, shape: tuple[int, ...], key: str) -> int:
        """The entries of an image of ``shape`` per sample, at most ``MAX_IMAGE_ENTRIES``."""
        entries = math.prod(shape)
        if entries > MAX_IMAGE_ENTRIES:
            self.fail(f"an image of shape {list(shape)} has {entries:,} entries per sample; at most "
                      f"{MAX_IMAGE_ENTRIES:,} are supported", key)
        return entries

    def window_pair(self, value: Any, key: str, dims: int, least: int) -> tuple[int, int]:
        """A kernel, stride or padding: one integer for every axis, or one per axis ([kh, kw]); as (height,
        width), a signal's height being 1 (kernel, stride) or 0 (padding)."""
        def one(item, where):
            if isinstance(item, bool) or not isinstance(item, numbers.Integral) or item < least:
                self.fail(f"must be {'a positive' if least else 'a non-negative'} integer"
                          + (" or a list of one per axis" if dims == 2 else "") + f", got {item!r}", where)
            return int(item)

        if isinstance(value, (list, tuple)):
            if dims == 1 or len(value) != 2:
                self.fail(f"must be an integer{' or [height, width]' if dims == 2 else ''}, got {value!r}", key)
            return one(value[0], f"{key}[0]"), one(value[1], f"{key}[1]")
        value = one(value, key)
        return (value, value) if dims == 2 else (least, value)

    def sequence_layer(self, kind: str, table: Mapping, key: str, width: int) -> LayerSpec:
        """An embedding, attention or recurrent layer; ``width`` is its input's."""
        if kind == "embedding":
            vocab = self.input_spec.vocab
            if vocab is None:
                self.fail("an embedding reads token ids: give [input] vocab = V (and context = k ids per sample)",
                          f"{key}.kind")
            if "vocab" in table and self.size(table["vocab"], f"{key}.vocab") != vocab:
                self.fail(f"must equal [input] vocab = {vocab}, got {table['vocab']}", f"{key}.vocab")
            if "size" not in table:
                self.fail("missing required key 'size' (the embedding width)", f"{key}.size")
            return LayerSpec(self.size(table["size"], f"{key}.size"), kind=kind, vocab=vocab,
                             context=self.input_spec.context)
        if kind == "attention":
            heads = self.size(table.get("heads", 1), f"{key}.heads")
            size = self.size(table.get("size", width), f"{key}.size")
            if "head_size" in table:
                head_size = self.size(table["head_size"], f"{key}.head_size")
            elif size % heads:
                self.fail(f"size {size} is not a multiple of heads = {heads}; set head_size", f"{key}.heads")
            else:
                head_size = size // heads
            causal = self.boolean(table.get("causal", False), f"{key}.causal")
            bias = self.boolean(table.get("bias", False), f"{key}.bias")
            return LayerSpec(size, kind=kind, heads=heads, head_size=head_size, causal=causal, bias=bias)
        if "size" not in table:
            self.fail(f"missing required key 'size' (the {kind} state's width)", f"{key}.size")
        if self.input_spec.steps is None:
            self.fail(f"a {kind} layer runs over a sequence: give [input] steps = T", f"{key}.kind")
        returns = self.choice(table.get("return", "last"), f"{key}.return", "return", RETURNS)
        return LayerSpec(self.size(table["size"], f"{key}.size"), kind=kind, returns=returns)

    def sequence_network(self, layers: tuple[LayerSpec, ...]) -> None:
        """Where the sequence kinds may stand: an embedding first and only on token ids, recurrent layers while
        the input is still a sequence, attention on one sequence without steps or batch statistics."""
        kinds = [layer.kind for layer in layers]
        if self.input_spec.vocab is not None and kinds[0] != "embedding":
            self.fail("token ids (input vocab) must go through an embedding layer first", "layers[0].kind")
        for index, kind in enumerate(kinds[1:], start=1):
            if kind == "embedding":
                self.fail("an embedding reads the token ids: it must be the first layer", f"layers[{index}].kind")
        sequence = self.input_spec.steps is not None
        stepped = {self.input_spec.name: sequence}  # value -> whether it has a row block per step of the sequence
        for index, layer in enumerate(layers):
            if layer.kind == "add":
                self.added_rows(layer.source, stepped[layer.source], sequence, f"layers[{index}].from")
            if layer.kind in RECURRENT_KINDS:
                if not sequence:
                    self.fail("no sequence is left here: an earlier recurrent layer returns only its last "
                              "state; set return = \"all\" on it", f"layers[{index}].kind")
                sequence = layer.returns == "all"
            stepped[f"a{index + 1}"] = sequence
        if self.input_spec.steps is not None and not any(kind in RECURRENT_KINDS for kind in kinds):
            self.fail("'steps' makes the input a sequence, which needs a recurrent layer (rnn, lstm, gru)",
                      "input.steps")
        if "attention" in kinds:
            if self.input_spec.steps is not None:
                self.fail("an attention layer's rows are the positions of one sequence; it takes no [input] steps",
                          "input.steps")
            if self.input_spec.shape is not None:
                self.fail("an attention layer's rows are the positions of one sequence, and an image input's rows "
                          "are images; give [input] size = n for a sequence of n-vectors", "input.shape")
            for index, kind in enumerate(kinds):
                if kind in ("batchnorm", *RECURRENT_KINDS):
                    self.fail(f"a {kind} layer mixes the positions of a sequence in an attention network "
                              "(its rows are positions, not samples)", f"layers[{index}].kind")

    def added_rows(self, source: str, stepped: bool, sequence: bool, key: str) -> None:
        """A skip connection adds a value with the rows of the layer's input: not token ids, and a row block per
        step of the sequence on both sides or on neither."""
        if source == self.input_spec.name and self.input_spec.vocab is not None:
            self.fail(f"{source!r} holds token ids, which cannot be added; add a value after the embedding", key)
        if stepped != sequence:
            rows = ("one row per sample (an earlier recurrent layer returns only its last state)",
                    "a row per sample and step")
            self.fail(f"{source!r} has {rows[stepped]} but this layer's input has {rows[sequence]}; an add layer "
                      "needs the same rows", key)

    @staticmethod
    def _misplaced(name: str, kind: str) -> str:
        """Why ``name`` is not a key of a ``kind`` layer, naming the kinds that take it."""
        owners = [other for other, keys in _LAYER_KEYS.items() if name in keys]
        if name == "size" and kind in (*CONV_KINDS, *POOL_KINDS):
            return (f"a {kind} layer's size follows from its input image and its "
                    f"{'channels, kernel, stride and padding' if kind in CONV_KINDS else 'kernel and stride'}; "
                    "remove 'size'")
        if name == "size":
            return f"a {kind} layer keeps the width of its input and takes no 'size'; remove it"
        if owners:
            return (f"key {name!r} does not apply to a {kind} layer (it belongs to {', '.join(owners)} layers); "
                    f"{kind} takes: {', '.join(('kind', *_LAYER_KEYS[kind]))}")
        return f"unknown key {name!r}; {_allowed(name, ('kind', *_LAYER_KEYS[kind]))}"

    def added_value(self, table: Mapping, key: str, earlier: dict) -> str:
        """The ``from`` of a skip connection: an earlier value of the same width as the layer's input."""
        if "from" not in table:
            self.fail("missing required key 'from' (the earlier value to add)", f"{key}.from")
        name = self.string(table["from"], f"{key}.from")
        if name not in earlier:
            self.fail(f"unknown value {name!r}: an add layer adds an earlier value; {_allowed(name, tuple(earlier))}",
                      f"{key}.from")
        width, previous = earlier[name], list(earlier.values())[-1]
        if width != previous:
            self.fail(f"{name!r} has width {width} but this layer's input has width {previous}; "
                      "an add layer needs equal widths", f"{key}.from")
        return name

    def layers(self, value: Any, input_spec: InputSpec) -> tuple[LayerSpec, ...]:
        if not isinstance(value, (list, tuple)) or not all(isinstance(item, Mapping) for item in value):
            self.fail(f"must be an array of tables ([[layers]]), got {_describe(value)}", "layers")
        if not value:
            self.fail("needs at least one layer", "layers")
        layers, earlier = [], {input_spec.name: input_spec.size}
        self.input_spec, self.image = input_spec, input_spec.shape
        for index, item in enumerate(value):
            layer = self.layer(item, f"layers[{index}]", earlier)
            layers.append(layer)
            earlier[f"a{index + 1}"] = layer.size * layer.context if layer.size else list(earlier.values())[-1]
        if self.image is not None:
            self.fail(f"the network ends on an image of shape {list(self.image)}; add a layer of kind \"flatten\" "
                      "(and a dense layer) before the loss", f"layers[{len(layers) - 1}].kind")
        self.sequence_network(tuple(layers))
        return tuple(layers)

    def loss(self, value: Any, layers: tuple[LayerSpec, ...], regularization: Any, input_size: int) -> LossSpec:
        table = self.table(value, "loss", _LOSS_KEYS, ("kind",))
        kind = self.choice(table["kind"], "loss.kind", "loss", LOSS_KINDS)
        settings = LossSettings(kind)
        rule = LOSS_RULES[settings.rule]
        if kind in SHORTCUTS:
            for name in ("reduction", "scale"):
                if name in table:
                    self.fail(f"loss {kind!r} fixes reduction = {settings.reduction!r} and scale = "
                              f"{settings.scale:g}; use kind = {settings.rule!r} to choose them", f"loss.{name}")
        reduction = table.get("reduction", settings.reduction)
        if reduction not in rule.reductions:
            self.string(reduction, "loss.reduction")
            self.fail(f"reduction {reduction!r} does not apply to loss {kind!r}; {_allowed(reduction, rule.reductions)}",
                      "loss.reduction")
        scale = self.scale(table["scale"], "loss.scale") if "scale" in table else settings.scale
        defaults = dict(rule.defaults)
        for name in ("margin", "hinge_grad_at_zero"):
            if name in table and name not in defaults:
                self.fail(f"loss {kind!r} does not take {name!r} (only hinge does)", f"loss.{name}")
        params = tuple((name, getattr(self, name)(table.get(name, default), f"loss.{name}"))
                       for name, default in sorted(defaults.items()))
        self._check_output(kind, rule, layers, input_size)
        l2, l2_scale = self.regularization(regularization)
        return LossSpec(kind, settings.rule, reduction, scale, params, l2, l2_scale)

    def _check_output(self, kind: str, rule, layers: tuple[LayerSpec, ...], input_size: int) -> None:
        """The last layer must give the loss what it reads (probabilities, enough outputs)."""
        last = len(layers) - 1
        produces = LAYER_KINDS[layers[last].kind].output(layers[last])
        if REAL not in rule.inputs and produces not in rule.inputs:
            needs = {"probabilities": "probabilities (a sigmoid activation or a softmax layer last)",
                     "log_probabilities": "log-probabilities (a log_softmax layer last)"}
            wanted = " or ".join(needs.get(name, "real scores") for name in rule.inputs)
            self.fail(f"loss {kind!r} needs {wanted}, but the last layer (layers[{last}]) gives "
                      f"{produces.replace('_', '-')}", "loss.kind")
        width = _widths(input_size, layers)[-1]
        if width < rule.min_outputs:
            self.fail(f"loss {kind!r} needs at least {rule.min_outputs} outputs, but the last layer "
                      f"(layers[{last}]) has {width}", "loss.kind")
        if rule.inputs == (PROBABILITIES,) and rule.targets == "binary" and layers[last].kind == "softmax" \
                and width == 1:
            self.fail(f"loss {kind!r} reads log(1 - Y_pred), and a softmax over one output (layers[{last}]) is 1 "
                      "for every sample, so the loss is infinite; for one binary output use a sigmoid activation",
                      "loss.kind")

    def regularization(self, value: Any) -> tuple[float, str]:
        if value is None:
            return 0.0, "none"
        table = self.table(value, "regularization", _REGULARIZATION_KEYS, ("l2",))
        l2 = self.number(table["l2"], "regularization.l2")
        if l2 < 0:
            self.fail(f"must be a finite number >= 0, got {table['l2']!r}", "regularization.l2")
        l2_scale = table.get("l2_scale", "none")
        self.choice(l2_scale, "regularization.l2_scale", "l2_scale", L2_SCALES)
        return l2, l2_scale

    def title(self, value: Any, key: str = "title") -> str:
        title = self.string(value, key)
        if len(title) > MAX_TITLE_LENGTH:
            self.fail(f"must be at most {MAX_TITLE_LENGTH} characters, got {len(title)}", key)
        for position, char in enumerate(title):
            if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
                self.fail(f"must not contain control characters (newline, tab, ...); found {char!r} "
                          f"at position {position}", key)
        return title

    def spec(self, value: Any) -> Spec:
        table = self.table(value, None, _TOP_KEYS, ("input", "layers", "loss"))
        input_spec = self.input(table["input"])
        if "activations" in table:
            self.custom = self.activations(table["activations"], input_spec.name)
        layers = self.layers(table["layers"], input_spec)
        loss = self.loss(table["loss"], layers, table.get("regularization"), input_spec.size)
        extras = {}
        if "title" in table:
            extras["title"] = self.title(table["title"])
        if "layout" in table:
            extras["layout"] = self.choice(table["layout"], "layout", "layout", LAYOUTS)
            sequence_kinds = [layer.kind for layer in layers if layer.kind in SEQUENCE_KINDS]
            if extras["layout"] == "column" and input_spec.shape is not None:
                self.fail("image inputs are written batch-first only; remove layout = \"column\"", "layout")
            if extras["layout"] == "column" and sequence_kinds:
                self.fail(f"{sequence_kinds[0]} layers are written batch-first only; remove layout = \"column\"",
                          "layout")
        extras.update({key: self.title(table[key], key) for key in _TITLE_PAGE_KEYS if key in table})
        if self.custom:
            extras["activations"] = tuple(self.custom.values())
        return Spec(input_spec, layers, loss, **extras)

    # -- custom activations ([activations.<name>]) ----------------------------------------------------------
    def activations(self, value: Any, input_name: str) -> dict[str, CustomActivation]:
        """The spec's custom activations, each checked and its rule built (SymPy derives the derivative)."""
        if not isinstance(value, Mapping):
            self.fail(f"must be a table of [activations.<name>] tables, got {_describe(value)}", "activations")
        if len(value) > MAX_CUSTOM_ACTIVATIONS:
            self.fail(f"at most {MAX_CUSTOM_ACTIVATIONS} custom activations, got {len(value)}", "activations")
        custom = {}
        for name, table in value.items():
            key = self.custom_name(name, input_name)
            table = self.table(table, key, _ACTIVATION_KEYS, ("forward",))
            definition = CustomActivation(
                name, self.string(table["forward"], f"{key}.forward"),
                self.formula_parameters(table.get("parameters", {}), f"{key}.parameters"),
                self.latex_name(table["latex"], f"{key}.latex") if "latex" in table else None,
                self.finite(table["grad_at_kinks"], f"{key}.grad_at_kinks") if "grad_at_kinks" in table else None)
            try:
                custom_activation(definition)
            except FormulaError as error:
                self.fail(str(error), f"{key}.{error.field}")
            if input_name.startswith(definition.key):
                self.fail(f"input name {input_name!r} clashes with the generated module's functions for "
                          f"activation {name!r}; choose another", "input.name")
            custom[name] = definition
        return custom

    def custom_name(self, name: str, input_name: str) -> str:
        """The key path of a custom activation, after checking its name is an identifier no one else uses."""
        if not _NAME.fullmatch(name) or len(name) > MAX_NAME_LENGTH:
            self.fail(f"invalid activation name {name!r}; it must match ^{_NAME.pattern}$ and have at most "
                      f"{MAX_NAME_LENGTH} characters", "activations")
        taken = ("a built-in activation" if name in (*ACTIVATIONS, *TRAINABLE_ACTIVATIONS, *FUNCTIONS) else
                 "a function of the formula language" if name in FORMULA_FUNCTIONS else
                 "the input's name" if name == input_name else
                 "a name the derivation uses" if name in ("z", "softmax", "np") or _RESERVED_NAMES.fullmatch(name)
                 else None)
        if taken:
            self.fail(f"activation name {name!r} is {taken}; choose another", "activations")
        return f"activations.{name}"

    def formula_parameters(self, value: Any, key: str) -> tuple[tuple[str, float], ...]:
        """A formula's parameters (``{ beta = 1.5 }``), sorted by name."""
        if not isinstance(value, Mapping):
            self.fail(f"must be a table of numbers, e.g. {{ beta = 1.5 }}, got {_describe(value)}", key)
        for name in value:
            if not _NAME.fullmatch(name) or len(name) > MAX_NAME_LENGTH or name == "z" or name in FORMULA_FUNCTIONS:
                self.fail(f"invalid parameter name {name!r}; it must match ^{_NAME.pattern}$, have at most "
                          f"{MAX_NAME_LENGTH} characters, and be neither z nor a function's name", key)
        return tuple(sorted((name, self.finite(number, f"{key}.{name}")) for name, number in value.items()))

    def finite(self, value: Any, key: str) -> int | float:
        """A number a formula can hold exactly: finite, at most MAX_NUMBER in size (kept as written, int or float)."""
        requirement = f"a finite number of size at most {MAX_NUMBER:g}"
        self.number(value, key, requirement)
        if abs(value) > MAX_NUMBER:
            self.fail(f"must be {requirement}, got {value!r}", key)
        return value

    def latex_name(self, value: Any, key: str) -> str:
        """A custom activation's LaTeX name, such as ``\\operatorname{Mish}``: letters, digits, a few marks,
        balanced braces and a short list of commands, so it cannot run TeX code."""
        text = self.string(value, key)
        if not text or len(text) > MAX_LATEX_LENGTH:
            self.fail(f"must have 1 to {MAX_LATEX_LENGTH} characters, got {len(text)}", key)
        pending, text_mode, text_depths = None, False, []
        scripts = [set()]  # per open group, the scripts (^, _) its current base already has
        for match in _latex_tokens(self, text, key):
            token, column, depth = match.group(), match.start() + 1, len(scripts) - 1
            if token == " ":
                continue
            if token in ("^", "_"):
                if text_depths and depth >= text_depths[-1]:
                    self.fail(f"at column {column}: {token!r} inside \\text{{...}}, where TeX allows no scripts", key)
                if pending:
                    self.fail(f"at column {column}: {token!r} right after {pending!r}, which needs an argument", key)
                if token in scripts[-1]:
                    self.fail(f"at column {column}: a second {'superscript' if token == '^' else 'subscript'} on "
                              "one base, which TeX refuses; group the first: {a^b}^c", key)
                scripts[-1].add(token)
                pending = token
                continue
            if token == "{":
                if not pending:
                    scripts[-1] = set()  # a group as a new base
                if text_mode:
                    text_depths.append(depth + 1)
                scripts.append(set())
            elif token == "}":
                if depth == 0:
                    self.fail(f"at column {column}: unbalanced '}}'", key)
                if text_depths and text_depths[-1] == depth:
                    text_depths.pop()
                scripts.pop()
            elif token == "'":
                if "^" in scripts[-1]:
                    self.fail(f"at column {column}: a prime after a superscript, which TeX refuses", key)
            elif not pending:
                scripts[-1] = set()  # a new base
            pending = None
            text_mode = token == r"\text"  # the one text-mode command a LaTeX name may use
        if pending:
            self.fail(f"ends with {pending!r}, which needs an argument", key)
        if len(scripts) > 1:
            self.fail("unbalanced '{'", key)
        if "^" in scripts[0]:
            self.fail("ends with a superscript, and the derivative's prime (') would be a second one, which TeX "
                      f"refuses; write it in braces: {{{text}}}", key)
        return text

    def custom_layer(self, table: Mapping, key: str, name: str, layer: LayerSpec) -> LayerSpec:
        """A layer with a custom activation: its parameters live in [activations.<name>], not in the layer."""
        for parameter in _PARAMETER_KEYS:
            if parameter in table:
                self.fail(f"activation {name!r} takes no layer parameters; set its parameters in "
                          f"[activations.{name}]", f"{key}.{parameter}")
        return dataclasses.replace(layer, activation=self.custom[name].key)
