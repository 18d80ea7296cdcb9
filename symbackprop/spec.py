"""Network specs: the TOML file (or mapping) a user writes, checked and normalized into frozen dataclasses.

Every problem raises :class:`SpecError` with the source, the key path (``layers[2].activation``) and
what is allowed. Spec files are only parsed as TOML; nothing in them is ever executed.
"""

from __future__ import annotations

import difflib
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

from symbackprop.errors import SpecError
from symbackprop.formula import FUNCTIONS, MAX_NUMBER, FormulaError
from symbackprop.rules import ACTIVATIONS, LOSSES, CustomActivation, activation_rule, custom_activation

LAYOUTS = ("batch-first", "column")
MAX_TITLE_LENGTH = 200
RELU_GRAD_AT_ZERO_VALUES = (0, 0.5, 1)

_TOP_KEYS = ("title", "layout", "input", "layers", "loss", "activations")
_INPUT_KEYS = ("size", "name")
_PARAMETER_KEYS = ("alpha", "relu_grad_at_zero")
_LAYER_KEYS = ("size", "activation", *_PARAMETER_KEYS)
_LOSS_KEYS = ("kind",)
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

_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_RESERVED_NAMES = re.compile(r"d?(?:(?:W|b|Z|a|delta)[0-9]+|Y_pred|Y_true)|L|N|ones|sum")
_RESERVED_DESCRIPTION = "W<n>, b<n>, Z<n>, a<n>, delta<n>, Y_pred, Y_true, their d-prefixed gradients, L, N, ones, sum"
# Names the generated NumPy module binds itself, and Python's keywords: an input may not shadow them.
_MODULE_NAMES = frozenset({
    "np", "erf", "math", "SIZES", "BATCH_FIRST", "params", "cache", "grads", "lr", "rng", "seed", "dtype", "eps",
    "init_params", "forward", "loss", "backward", "sgd_step", "gradient_check", "softmax", "sigmoid",
    *ACTIVATIONS, *(f"{name}_grad" for name in ACTIVATIONS), *keyword.kwlist, *keyword.softkwlist,
})


@dataclass(frozen=True)
class InputSpec:
    """The network input: its width and the matrix name used in the derivation."""

    size: int
    name: str = "X"


@dataclass(frozen=True)
class LayerSpec:
    """One dense layer; a parameter is set exactly when its activation takes it."""

    size: int
    activation: str
    alpha: float | None = None
    relu_grad_at_zero: float | None = None

    @property
    def params(self) -> dict:
        """The activation's parameters, e.g. ``{"alpha": 0.01}``; empty when it takes none."""
        return {key: getattr(self, key) for key in _PARAMETER_KEYS if getattr(self, key) is not None}


@dataclass(frozen=True)
class LossSpec:
    """The loss applied to the last layer's output."""

    kind: str


@dataclass(frozen=True)
class Spec:
    """A whole network: input, layers in order, loss, document title and matrix layout."""

    input: InputSpec
    layers: tuple[LayerSpec, ...]
    loss: LossSpec
    title: str = "Backpropagation"
    layout: str = "batch-first"
    activations: tuple[CustomActivation, ...] = ()  # the spec's [activations.<name>] tables

    def __post_init__(self):
        for definition in self.activations:  # so that the layers' keys resolve, however the Spec was made
            custom_activation(definition)

    @property
    def sizes(self) -> tuple[int, ...]:
        """The input width followed by every layer's width."""
        return (self.input.size, *(layer.size for layer in self.layers))


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
    custom = {"activations": {d.name: d.to_dict() for d in spec.activations}} if spec.activations else {}
    return {
        "title": spec.title,
        "layout": spec.layout,
        "input": {"size": spec.input.size, "name": spec.input.name},
        **custom,
        "layers": [{"size": layer.size, "activation": activation_rule(layer.activation).name, **layer.params}
                   for layer in spec.layers],
        "loss": {"kind": spec.loss.kind},
    }


def load_spec(source: str | os.PathLike | Mapping) -> Spec:
    """Read, check and normalize a spec from a TOML file path or from a mapping with the same keys."""
    if isinstance(source, Mapping):
        return _Reader("<dict>").spec(source)
    if isinstance(source, (str, os.PathLike)):
        name = os.fsdecode(source)
        return _Reader(name).spec(_read_toml(source, name))
    raise SpecError(f"expected a path to a TOML file or a mapping, got {type(source).__name__}")


def _read_toml(path: str | os.PathLike, name: str) -> dict:
    """The parsed TOML document at ``path``; every failure becomes a SpecError."""
    try:
        with open(path, "rb") as handle:
            data = handle.read()
    except FileNotFoundError:
        raise SpecError("spec file not found", source=name) from None
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SpecError(f"cannot read spec file: {reason}", source=name) from None
    try:
        return tomllib.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        reason = f"spec file is not UTF-8 text ({exc.reason} at byte {exc.start})"
        raise SpecError(reason, source=name) from None
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


def _allowed(word: Any, allowed: tuple[str, ...]) -> str:
    """'allowed: a, b, c' plus a did-you-mean suggestion for a near miss."""
    text = "allowed: " + ", ".join(allowed)
    close = difflib.get_close_matches(word, allowed, n=1) if isinstance(word, str) else []
    return text + (f"; did you mean {close[0]!r}?" if close else "")


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

    def alpha(self, value: Any, key: str) -> float:
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            self.fail(f"must be a number, got {_describe(value)}", key)
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number) or number <= 0:
            self.fail(f"must be a finite number > 0, got {value!r}", key)
        return number

    def relu_grad_at_zero(self, value: Any, key: str) -> int | float:
        allowed = ", ".join(map(str, RELU_GRAD_AT_ZERO_VALUES))
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            self.fail(f"must be a number, one of {allowed}; got {_describe(value)}", key)
        if value not in RELU_GRAD_AT_ZERO_VALUES:
            self.fail(f"must be one of {allowed}, got {value!r}", key)
        return int(value) if value in (0, 1) else float(value)

    def input(self, value: Any) -> InputSpec:
        table = self.table(value, "input", _INPUT_KEYS, ("size",))
        size = self.size(table["size"], "input.size")
        if "name" not in table:
            return InputSpec(size)
        name = self.string(table["name"], "input.name")
        if not _NAME.fullmatch(name):
            self.fail(f"invalid input name {name!r}; it must match ^{_NAME.pattern}$ "
                      "(a letter, then letters, digits or underscores)", "input.name")
        if _RESERVED_NAMES.fullmatch(name) or name in _MODULE_NAMES:
            self.fail(f"input name {name!r} clashes with a name the derivation or the generated module uses "
                      f"({_RESERVED_DESCRIPTION}, Python keywords, and module names such as np, params, "
                      "forward); choose another", "input.name")
        return InputSpec(size, name)

    def layer(self, value: Any, key: str) -> LayerSpec:
        table = self.table(value, key, _LAYER_KEYS, ("size", "activation"))
        size = self.size(table["size"], f"{key}.size")
        activation = self.choice(table["activation"], f"{key}.activation", "activation",
                                 (*ACTIVATIONS, *self.custom))
        if activation in self.custom:
            return self.custom_layer(table, key, size, activation)
        defaults = dict(ACTIVATIONS[activation].defaults)
        for name in _PARAMETER_KEYS:
            if name in table and name not in defaults:
                takes = f"it takes: {', '.join(defaults)}" if defaults else "it takes no parameters"
                self.fail(f"activation {activation!r} does not take parameter {name!r}; {takes}",
                          f"{key}.{name}")
        params = {name: getattr(self, name)(table.get(name, default), f"{key}.{name}")
                  for name, default in defaults.items()}
        return LayerSpec(size, activation, **params)

    def layers(self, value: Any) -> tuple[LayerSpec, ...]:
        if not isinstance(value, (list, tuple)) or not all(isinstance(item, Mapping) for item in value):
            self.fail(f"must be an array of tables ([[layers]]), got {_describe(value)}", "layers")
        if not value:
            self.fail("needs at least one layer", "layers")
        return tuple(self.layer(item, f"layers[{index}]") for index, item in enumerate(value))

    def title(self, value: Any) -> str:
        title = self.string(value, "title")
        if len(title) > MAX_TITLE_LENGTH:
            self.fail(f"must be at most {MAX_TITLE_LENGTH} characters, got {len(title)}", "title")
        for position, char in enumerate(title):
            if unicodedata.category(char) in ("Cc", "Zl", "Zp"):
                self.fail(f"must not contain control characters (newline, tab, ...); found {char!r} "
                          f"at position {position}", "title")
        return title

    def spec(self, value: Any) -> Spec:
        table = self.table(value, None, _TOP_KEYS, ("input", "layers", "loss"))
        input_spec = self.input(table["input"])
        if "activations" in table:
            self.custom = self.activations(table["activations"], input_spec.name)
        layers = self.layers(table["layers"])
        loss = self.table(table["loss"], "loss", _LOSS_KEYS, ("kind",))
        kind = self.choice(loss["kind"], "loss.kind", "loss", tuple(LOSSES))
        needed, last = LOSSES[kind].min_outputs, len(layers) - 1
        if layers[last].size < needed:
            self.fail(f"loss {kind!r} needs at least {needed} outputs, but the last layer "
                      f"(layers[{last}]) has {layers[last].size}", "loss.kind")
        extras = {}
        if "title" in table:
            extras["title"] = self.title(table["title"])
        if "layout" in table:
            extras["layout"] = self.choice(table["layout"], "layout", "layout", LAYOUTS)
        if self.custom:
            extras["activations"] = tuple(self.custom.values())
        return Spec(input_spec, layers, LossSpec(kind), **extras)

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
        taken = ("a built-in activation" if name in ACTIVATIONS else
                 "a function of the formula language" if name in FUNCTIONS else
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
            if not _NAME.fullmatch(name) or len(name) > MAX_NAME_LENGTH or name == "z" or name in FUNCTIONS:
                self.fail(f"invalid parameter name {name!r}; it must match ^{_NAME.pattern}$, have at most "
                          f"{MAX_NAME_LENGTH} characters, and be neither z nor a function's name", key)
        return tuple(sorted((name, self.finite(number, f"{key}.{name}")) for name, number in value.items()))

    def finite(self, value: Any, key: str) -> int | float:
        """A number a formula can hold exactly: finite, at most MAX_NUMBER in size."""
        if isinstance(value, bool) or not isinstance(value, numbers.Real):
            self.fail(f"must be a number, got {_describe(value)}", key)
        if not (math.isfinite(float(value)) and abs(value) <= MAX_NUMBER):
            self.fail(f"must be a finite number of size at most {MAX_NUMBER:g}, got {value!r}", key)
        return value

    def latex_name(self, value: Any, key: str) -> str:
        """A custom activation's LaTeX name, such as ``\\operatorname{Mish}``: letters, digits, a few marks,
        balanced braces and a short list of commands, so it cannot run TeX code."""
        text = self.string(value, key)
        if not text or len(text) > MAX_LATEX_LENGTH:
            self.fail(f"must have 1 to {MAX_LATEX_LENGTH} characters, got {len(text)}", key)
        position, depth = 0, 0
        while position < len(text):
            match = _LATEX_TOKEN.match(text, position)
            if not match or (match.group().startswith("\\") and match.group()[1:] not in _LATEX_COMMANDS):
                shown = match.group() if match else text[position]
                self.fail(f"at column {position + 1}: {shown!r} is not allowed in a LaTeX name; use letters, "
                          "digits, _ ^ { } and commands such as \\operatorname, \\mathrm, \\beta", key)
            depth += {"{": 1, "}": -1}.get(match.group(), 0)
            if depth < 0:
                self.fail(f"at column {position + 1}: unbalanced '}}'", key)
            position = match.end()
        if depth:
            self.fail("unbalanced '{'", key)
        return text

    def custom_layer(self, table: Mapping, key: str, size: int, name: str) -> LayerSpec:
        """A layer with a custom activation: its parameters live in [activations.<name>], not in the layer."""
        for parameter in _PARAMETER_KEYS:
            if parameter in table:
                self.fail(f"activation {name!r} takes no layer parameters; set its parameters in "
                          f"[activations.{name}]", f"{key}.{parameter}")
        return LayerSpec(size, self.custom[name].key)
