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
from symbackprop.rules import ACTIVATIONS, LOSSES

LAYOUTS = ("batch-first", "column")
MAX_TITLE_LENGTH = 200
RELU_GRAD_AT_ZERO_VALUES = (0, 0.5, 1)

_TITLE_PAGE_KEYS = ("author", "institute", "date")  # optional strings for the lecture's title page
_TOP_KEYS = ("title", "layout", "input", "layers", "loss", *_TITLE_PAGE_KEYS)
_INPUT_KEYS = ("size", "name")
_PARAMETER_KEYS = ("alpha", "relu_grad_at_zero")
_LAYER_KEYS = ("size", "activation", *_PARAMETER_KEYS)
_LOSS_KEYS = ("kind",)

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
    # The lecture's title page (optional): who gives it, where, when.
    author: str | None = None
    institute: str | None = None
    date: str | None = None

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
    return {
        "title": spec.title,
        "layout": spec.layout,
        "input": {"size": spec.input.size, "name": spec.input.name},
        "layers": [{"size": layer.size, "activation": layer.activation, **layer.params}
                   for layer in spec.layers],
        "loss": {"kind": spec.loss.kind},
        **{key: getattr(spec, key) for key in _TITLE_PAGE_KEYS if getattr(spec, key) is not None},
    }


def check_title_page_text(value: str, key: str) -> str:
    """A title-page string given outside a spec (a command-line option), checked like the spec's own."""
    return _Reader("<command line>").title(value, key)


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
        activation = self.choice(table["activation"], f"{key}.activation", "activation", tuple(ACTIVATIONS))
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
        extras.update({key: self.title(table[key], key) for key in _TITLE_PAGE_KEYS if key in table})
        return Spec(input_spec, layers, LossSpec(kind), **extras)
