"""Loading, checking and normalizing network specs (symbackprop.spec)."""

from __future__ import annotations

import copy
import json
import math
import pathlib
import tempfile
import tomllib

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st
from test_generated import specs as dense_specs

from symbackprop.cli import main as cli_main
from symbackprop.errors import SpecError
from symbackprop.rules import ACTIVATIONS, LOSS_KINDS, LOSS_RULES, CustomActivation
from symbackprop.spec import (
    LAYOUTS,
    PRESETS,
    InputSpec,
    LayerSpec,
    LossSpec,
    Spec,
    load_spec,
    seed_spec,
    spec_to_dict,
)

SPECS_DIR = pathlib.Path(__file__).parent / "specs"
CORPUS = sorted(SPECS_DIR.glob("*.toml"))


def seed_dict() -> dict:
    return spec_to_dict(seed_spec())


def spec_error(source) -> SpecError:
    with pytest.raises(SpecError) as info:
        load_spec(source)
    return info.value


# --- valid specs ---------------------------------------------------------------------------------


def test_seed_matches_file_and_round_trips():
    assert seed_spec() == load_spec(SPECS_DIR / "seed.toml")
    assert seed_spec() == load_spec(str(SPECS_DIR / "seed.toml"))
    assert seed_spec() == load_spec(seed_dict())
    assert PRESETS["seed"]() == seed_spec()


def test_seed_shape():
    spec = seed_spec()
    assert spec.sizes == (2, 3, 2, 1)
    assert spec.input == InputSpec(2, "X")
    assert [layer.params for layer in spec.layers] == [{"relu_grad_at_zero": 1}, {"relu_grad_at_zero": 1}, {}]
    assert (spec.loss, spec.title, spec.layout) == (LossSpec("half_sse"), "Backpropagation", "batch-first")


@pytest.mark.parametrize("path", CORPUS, ids=lambda path: path.stem)
def test_corpus_file_loads_and_round_trips(path):
    spec = load_spec(path)
    assert load_spec(spec_to_dict(spec)) == spec
    assert max(spec.sizes) <= 8


def test_corpus_coverage():
    specs = [load_spec(path) for path in CORPUS]
    assert len(specs) >= 32
    hidden = {layer.activation for spec in specs for layer in spec.layers[:-1]}
    assert hidden >= {*ACTIVATIONS, "prelu"}
    kinds = {layer.kind for spec in specs for layer in spec.layers}
    assert kinds == {"dense", "activation", "batchnorm", "layernorm", "dropout", "softmax", "log_softmax", "add"}
    for kind in ("batchnorm", "layernorm", "dropout", "softmax", "log_softmax", "add"):
        assert {spec.layout for spec in specs if any(layer.kind == kind for layer in spec.layers)} == set(LAYOUTS)
    assert any(not layer.bias for spec in specs for layer in spec.layers if layer.kind == "dense")
    sources = {spec.layers[index].source for spec in specs for index, layer in enumerate(spec.layers)
               if layer.kind == "add"}
    assert "X" in sources and len(sources) >= 2
    assert {spec.loss.kind for spec in specs} >= {"half_sse", "mse", "bce_logits", "softmax_cross_entropy"}
    assert len({custom.name for spec in specs for custom in spec.activations}) >= 6
    assert any(spec.activations and spec.layout == "column" for spec in specs)
    assert {spec.layout for spec in specs} == set(LAYOUTS)
    assert {1, 2, 3, 4, 5, 6} <= {len(spec.layers) for spec in specs}
    assert any(layer.size == 1 for spec in specs for layer in spec.layers[:-1])
    assert any(spec.layers[-1].size == 1 for spec in specs)
    assert any(spec.layers[-1].activation != "identity" for spec in specs)
    layers = [layer for spec in specs for layer in spec.layers]
    for name in ("leaky_relu", "elu"):
        default = dict(ACTIVATIONS[name].defaults)["alpha"]
        assert any(layer.activation == name and layer.alpha != default for layer in layers)
    assert {layer.relu_grad_at_zero for layer in layers if layer.activation == "relu"} == {0, 0.5, 1}
    softmax_outputs = {spec.layers[-1].size for spec in specs if spec.loss.kind == "softmax_cross_entropy"}
    assert {2, 4} <= softmax_outputs


def test_corpus_covers_every_loss_with_each_reduction_with_and_without_l2():
    specs = [load_spec(path) for path in CORPUS]
    pairs = {(spec.loss.rule, spec.loss.reduction) for spec in specs}
    assert pairs >= {(name, reduction) for name, rule in LOSS_RULES.items() for reduction in rule.reductions}
    for name in LOSS_RULES:
        assert {bool(spec.loss.l2) for spec in specs if spec.loss.rule == name} == {True, False}, name
    assert {spec.loss.l2_scale for spec in specs if spec.loss.l2} == {"none", "batch_mean"}
    assert any(spec.loss.scale == 0.5 and spec.loss.reduction == "batch_mean" for spec in specs)  # Nielsen


def test_dict_with_all_keys():
    spec = load_spec({
        "title": "Tiny", "layout": "column",
        "input": {"size": 3, "name": "inputs"},
        "layers": ({"size": 2, "activation": "elu", "alpha": 2}, {"size": 2, "activation": "identity"}),
        "loss": {"kind": "softmax_cross_entropy"},
    })
    assert spec == Spec(InputSpec(3, "inputs"), (LayerSpec(2, "elu", alpha=2.0), LayerSpec(2, "identity")),
                        LossSpec("softmax_cross_entropy"), title="Tiny", layout="column")


def test_parameters_are_normalized():
    data = seed_dict()
    data["layers"] = [
        {"size": 2, "activation": "leaky_relu"},
        {"size": 2, "activation": "elu"},
        {"size": 2, "activation": "leaky_relu", "alpha": 1},
        {"size": 2, "activation": "relu"},
        {"size": 2, "activation": "relu", "relu_grad_at_zero": 0.0},
        {"size": 2, "activation": "relu", "relu_grad_at_zero": 0.5},
        {"size": 2, "activation": "tanh"},
    ]
    layers = load_spec(data).layers
    assert [layer.params for layer in layers] == [
        {"alpha": 0.01}, {"alpha": 1.0}, {"alpha": 1.0}, {"relu_grad_at_zero": 1},
        {"relu_grad_at_zero": 0}, {"relu_grad_at_zero": 0.5}, {},
    ]
    assert type(layers[2].alpha) is float
    assert [type(layer.relu_grad_at_zero) for layer in layers[3:6]] == [int, int, float]
    assert layers[0].relu_grad_at_zero is None and layers[3].alpha is None and layers[6].alpha is None


# --- file errors ---------------------------------------------------------------------------------


def test_missing_file(tmp_path):
    path = tmp_path / "absent.toml"
    error = spec_error(path)
    assert error.source == str(path) and "not found" in error.message


def test_unreadable_file(tmp_path):
    error = spec_error(tmp_path)  # a directory
    assert error.source == str(tmp_path) and "is a directory, not a regular file" in error.message


def test_not_utf8(tmp_path):
    path = tmp_path / "binary.toml"
    path.write_bytes(b"title = \"\xff\"\n")
    assert "UTF-8" in spec_error(path).message


def test_toml_syntax_error_has_line_and_column(tmp_path):
    path = tmp_path / "broken.toml"
    path.write_text("[input]\nsize = 2\n[[layers]\n")
    error = spec_error(path)
    assert "invalid TOML" in error.message and "line 3" in error.message and "column" in error.message
    assert error.source == str(path) and str(path) in str(error)


def test_source_of_wrong_kind():
    assert "mapping" in spec_error(42).message


def test_toml_is_never_executed(tmp_path):
    path = tmp_path / "sneaky.toml"
    title = "__import__('os').system('false')"
    path.write_text(f'title = "{title}"\n' + (SPECS_DIR / "seed.toml").read_text())
    assert load_spec(path).title == title


# --- content errors ------------------------------------------------------------------------------


def mutate(path: tuple, value=None, delete: bool = False) -> dict:
    """The seed dict with the entry at ``path`` replaced (or deleted)."""
    data = copy.deepcopy(seed_dict())
    target = data
    for step in path[:-1]:
        target = target[step]
    if delete:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return data


def check(data, key: str, *fragments: str) -> SpecError:
    error = spec_error(data)
    assert error.source == "<dict>"
    assert error.key == key
    for fragment in fragments:
        assert fragment in error.message, error.message
    return error


@pytest.mark.parametrize("piece", ["input", "loss"])
def test_piece_not_a_table(piece):
    check(mutate((piece,), 3), piece, "must be a table", "integer")


@pytest.mark.parametrize("value", [{"size": 3, "activation": "relu"}, 3, [1, 2], "relu"])
def test_layers_not_an_array_of_tables(value):
    check(mutate(("layers",), value), "layers", "array of tables")


def test_layer_not_a_table_in_toml(tmp_path):
    path = tmp_path / "inline.toml"
    path.write_text('layers = [1]\n[input]\nsize = 2\n[loss]\nkind = "mse"\n')
    assert spec_error(path).key == "layers"


def test_no_layers():
    check(mutate(("layers",), []), "layers", "at least one layer")


@pytest.mark.parametrize("path, key", [
    (("input",), "input"), (("layers",), "layers"), (("loss",), "loss"),
    (("input", "size"), "input.size"), (("loss", "kind"), "loss.kind"),
    (("layers", 1, "size"), "layers[1].size"), (("layers", 2, "activation"), "layers[2].activation"),
])
def test_missing_required_key(path, key):
    check(mutate(path, delete=True), key, "missing required key")


@pytest.mark.parametrize("path, key, suggestion", [
    (("tilte",), "tilte", "'title'"),
    (("input", "nmae"), "input.nmae", "'name'"),
    (("layers", 0, "actvation"), "layers[0].actvation", "'activation'"),
    (("layers", 2, "alhpa"), "layers[2].alhpa", "'alpha'"),
    (("loss", "knid"), "loss.knid", "'kind'"),
])
def test_unknown_key_suggests(path, key, suggestion):
    check(mutate(path, 1), key, "unknown key", "allowed:", f"did you mean {suggestion}?")


def test_unknown_key_without_close_match():
    error = check(mutate(("zzzz",), 1), "zzzz", "unknown key", "allowed: title, layout, input, layers, loss")
    assert "did you mean" not in error.message


def test_non_string_key():
    check(mutate(("input", 7), 1), "input.7", "unknown key 7")


def test_unknown_activation_suggests():
    check(mutate(("layers", 0, "activation"), "rleu"), "layers[0].activation",
          "unknown activation 'rleu'", "allowed: identity, relu,", "did you mean 'relu'?")


def test_unknown_loss_suggests():
    check(mutate(("loss", "kind"), "half_see"), "loss.kind",
          "unknown loss 'half_see'", "softmax_cross_entropy", "did you mean 'half_sse'?")


def test_unknown_layout_suggests():
    check(mutate(("layout",), "columns"), "layout", "batch-first, column", "did you mean 'column'?")


@pytest.mark.parametrize("path, value, key, kind", [
    (("input", "size"), True, "input.size", "an integer, got a boolean"),
    (("input", "size"), 2.0, "input.size", "an integer, got a float"),
    (("layers", 1, "size"), "2", "layers[1].size", "an integer, got a string"),
    (("input", "name"), 3, "input.name", "a string"),
    (("layers", 0, "activation"), ["relu"], "layers[0].activation", "a string, got an array"),
    (("loss", "kind"), None, "loss.kind", "a string"),
    (("title",), 1, "title", "a string, got an integer"),
    (("layout",), True, "layout", "a string, got a boolean"),
])
def test_wrong_type(path, value, key, kind):
    check(mutate(path, value), key, f"must be {kind}")


def test_alpha_wrong_type():
    data = mutate(("layers", 0), {"size": 3, "activation": "leaky_relu", "alpha": True})
    check(data, "layers[0].alpha", "must be a number", "boolean")
    data["layers"][0]["alpha"] = "0.1"
    check(data, "layers[0].alpha", "must be a number", "string")


@pytest.mark.parametrize("size", [0, -3])
def test_size_not_positive(size):
    check(mutate(("layers", 2, "size"), size), "layers[2].size", "positive integer")
    check(mutate(("input", "size"), size), "input.size", "positive integer")


def test_parameter_on_activation_without_it():
    check(mutate(("layers", 0, "alpha"), 0.1), "layers[0].alpha",
          "'relu' does not take parameter 'alpha'", "it takes: relu_grad_at_zero")
    data = mutate(("layers", 0), {"size": 3, "activation": "elu", "relu_grad_at_zero": 1})
    check(data, "layers[0].relu_grad_at_zero", "'elu' does not take", "it takes: alpha")
    check(mutate(("layers", 2, "alpha"), 0.1), "layers[2].alpha", "'identity'", "takes no parameters")


@pytest.mark.parametrize("value", [2, -1, 0.25, math.nan, "1", True])
def test_relu_grad_at_zero_not_allowed(value):
    check(mutate(("layers", 1, "relu_grad_at_zero"), value), "layers[1].relu_grad_at_zero", "0, 0.5, 1")


@pytest.mark.parametrize("value", [0, -0.1, math.inf, -math.inf, math.nan, 10**400])
def test_alpha_not_finite_positive(value):
    data = mutate(("layers", 0), {"size": 3, "activation": "elu", "alpha": value})
    check(data, "layers[0].alpha", "finite number > 0")


def test_loss_needs_more_outputs():
    check(mutate(("loss", "kind"), "softmax_cross_entropy"), "loss.kind",
          "needs at least 2 outputs", "layers[2]", "has 1")


@pytest.mark.parametrize("name", ["1X", "_X", "X-1", "X 1", "", "Xé", "X\n"])
def test_input_name_invalid(name):
    check(mutate(("input", "name"), name), "input.name", "invalid input name", "^[A-Za-z][A-Za-z0-9_]*$")


@pytest.mark.parametrize("name", ["W1", "b2", "Z10", "a3", "delta1", "Y_pred", "Y_true", "L", "N", "ones",
                                  "sum"])
def test_input_name_reserved(name):
    check(mutate(("input", "name"), name), "input.name", "clashes", "choose another")


@pytest.mark.parametrize("name", ["W", "a", "delta", "Wx", "L1", "ones_", "x1"])
def test_input_name_allowed(name):
    assert load_spec(mutate(("input", "name"), name)).input.name == name


def test_title_too_long():
    check(mutate(("title",), "t" * 201), "title", "at most 200 characters")
    assert load_spec(mutate(("title",), "t" * 200)).title == "t" * 200


@pytest.mark.parametrize("title", ["two\nlines", "tab\there", "bell\a", "sep\u2028"])
def test_title_control_characters(title):
    check(mutate(("title",), title), "title", "control characters")


# --- robustness ----------------------------------------------------------------------------------

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 10), st.integers(), st.floats(), st.text(max_size=8),
    st.sampled_from([*ACTIVATIONS, *LOSS_KINDS, *LAYOUTS, "X", "W1"]),
)
_keys = st.one_of(st.sampled_from(["size", "name", "activation", "alpha", "relu_grad_at_zero", "kind",
                                   "title", "layout", "input", "layers", "loss"]), st.text(max_size=6))
_values = st.recursive(_scalars, lambda inner: st.lists(inner, max_size=3)
                       | st.dictionaries(_keys, inner, max_size=4), max_leaves=12)
_layer = st.fixed_dictionaries(
    {"size": st.one_of(st.integers(1, 4), _scalars),
     "activation": st.one_of(st.sampled_from(list(ACTIVATIONS)), _scalars)},
    optional={"alpha": _scalars, "relu_grad_at_zero": st.one_of(st.sampled_from([0, 0.5, 1]), _scalars),
              "extra": _scalars},
)
_near_valid = st.fixed_dictionaries(
    {"input": st.one_of(st.fixed_dictionaries({"size": st.integers(1, 4)}, optional={"name": _scalars}),
                        _values),
     "layers": st.one_of(st.lists(_layer, max_size=4), _values),
     "loss": st.one_of(st.fixed_dictionaries({"kind": st.sampled_from(list(LOSS_KINDS))}), _values)},
    optional={"title": _scalars, "layout": _scalars, "other": _values},
)


_ENTRYWISE = ["identity", "relu", "tanh", "sigmoid", "leaky_relu", "elu", "softplus", "gelu", "silu"]


@st.composite
def _image_specs(draw) -> dict:
    """conv2d or conv1d (kernel, stride, padding within the image), a skip connection where the conv keeps the
    shape, an optional pool, flatten, dense."""
    signal = draw(st.booleans())
    shape = [draw(st.integers(1, 2)), draw(st.integers(3, 8))] if signal else \
        [draw(st.integers(1, 2)), draw(st.integers(3, 5)), draw(st.integers(3, 5))]
    skip = draw(st.booleans())  # a conv that keeps the shape, and a skip connection over it
    padding = draw(st.integers(0, 1))
    kernel, stride = (2 * padding + 1, 1) if skip else (draw(st.integers(1, 3)), draw(st.integers(1, 2)))
    conv = {"kind": "conv1d" if signal else "conv2d", "channels": shape[0] if skip else draw(st.integers(1, 2)),
            "kernel": kernel, "stride": stride, "padding": padding, "activation": draw(st.sampled_from(_ENTRYWISE)),
            "bias": draw(st.booleans())}
    layers = [conv, {"kind": "add", "from": "X"}] if skip else [conv]
    spatial = [(size + 2 * padding - kernel) // stride + 1 for size in shape[1:]]
    if draw(st.booleans()) and min(spatial) >= 2:
        layers.append({"kind": draw(st.sampled_from(["maxpool", "avgpool"])), "kernel": 2, "stride": 1})
    layers += [{"kind": "flatten"}, {"size": draw(st.integers(1, 3)), "activation": "identity"}]
    return {"input": {"shape": shape}, "layers": layers, "loss": {"kind": draw(st.sampled_from(["half_sse", "mse"]))}}


@st.composite
def _sequence_specs(draw) -> dict:
    """Token ids or real steps through a recurrent layer, or one sequence through causal or full attention."""
    kind = draw(st.sampled_from(["rnn", "lstm", "gru", "attention"]))
    head = {"size": draw(st.integers(1, 3)), "activation": "identity"}
    if kind == "attention":
        heads, head_size = draw(st.integers(1, 2)), draw(st.integers(1, 2))
        width = draw(st.integers(2, 4))
        layers = [{"kind": "attention", "heads": heads, "head_size": head_size, "causal": draw(st.booleans()),
                   "bias": draw(st.booleans()), "size": width}]
        if draw(st.booleans()):
            layers += [{"kind": "add", "from": "X"}, {"kind": "layernorm"}]
        return {"input": {"size": width}, "layers": [*layers, head], "loss": {"kind": "half_sse"}}
    recurrent = {"kind": kind, "size": draw(st.integers(1, 3)), "return": draw(st.sampled_from(["last", "all"]))}
    if draw(st.booleans()):
        source = {"vocab": draw(st.integers(2, 4))}
        layers = [{"kind": "embedding", "size": draw(st.integers(1, 3))}, recurrent]
    else:
        source, layers = {"size": draw(st.integers(1, 3))}, [recurrent]
    return {"input": {**source, "steps": draw(st.integers(2, 3))}, "layers": [*layers, head],
            "loss": {"kind": "half_sse"}}


def valid_specs():
    """Spec mappings that load: dense stacks of every width-keeping kind and loss (tests/test_generated.py's
    strategy), image networks, recurrent networks and attention."""
    return st.one_of(dense_specs(), _image_specs(), _sequence_specs())


@st.composite
def _perturbed(draw, specs) -> tuple[dict, bool]:
    """A valid mapping, or (a fifth of the time) the same with one value replaced by a random one."""
    data = copy.deepcopy(draw(specs))
    if draw(st.integers(0, 4)):
        return data, True
    tables = [data, data["input"], data["loss"], *data["layers"]]
    table = draw(st.sampled_from(tables))
    table[draw(st.sampled_from(sorted(table)))] = draw(_values)
    return data, False


@settings(max_examples=300, deadline=None)
@given(st.one_of(_near_valid, st.dictionaries(_keys, _values, max_size=5)))
def test_random_mappings_give_spec_or_spec_error(data):
    try:
        spec = load_spec(data)
    except SpecError:
        return
    assert load_spec(spec_to_dict(spec)) == spec


def test_mostly_valid_mappings_load_and_round_trip():
    """Valid mappings of every family, a fifth of them with one value replaced at random: each unperturbed one
    loads and round-trips, a perturbed one loads and round-trips or is refused with a SpecError, and at least
    60 % of the draws load (so the round trip is what the test exercises)."""
    loaded = []

    @settings(max_examples=150, deadline=None)
    @given(_perturbed(valid_specs()))
    def draw(case):
        data, valid = case
        try:
            spec = load_spec(data)
        except SpecError:
            assert not valid, data
            loaded.append(False)
            return
        loaded.append(True)
        assert load_spec(spec_to_dict(spec)) == spec

    draw()
    assert sum(loaded) >= 0.6 * len(loaded), f"{sum(loaded)} of {len(loaded)} draws loaded"


_toml_fragments = st.sampled_from([
    "[input]\n", "[[layers]]\n", "[loss]\n", "size = 2\n", "size = 0\n", 'activation = "relu"\n',
    'kind = "mse"\n', "alpha = 0.5\n", "relu_grad_at_zero = 0.5\n", 'title = "t"\n', "layers = []\n",
    "[[[\n", '"\n', "x = [[[[[[1]]]]]]\n", "size = inf\n", "input = 1\n",
])


@settings(max_examples=200, deadline=None)
@given(st.one_of(st.binary(max_size=200),
                 st.lists(_toml_fragments, max_size=14).map(lambda parts: "".join(parts).encode())))
def test_random_files_give_spec_or_spec_error(content):
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "random.toml"
        path.write_bytes(content)
        try:
            assert isinstance(load_spec(path), Spec)
        except SpecError as error:
            assert error.source == str(path)


@settings(max_examples=100, deadline=None)
@given(st.builds(
    Spec,
    input=st.builds(InputSpec, st.integers(1, 8), st.sampled_from(["X", "inputs", "x_1"])),
    layers=st.lists(st.sampled_from([
        LayerSpec(2, "relu", relu_grad_at_zero=0), LayerSpec(3, "relu", relu_grad_at_zero=0.5),
        LayerSpec(1, "leaky_relu", alpha=0.2), LayerSpec(2, "elu", alpha=1.0), LayerSpec(4, "gelu"),
        LayerSpec(2, "sigmoid"), LayerSpec(2, "identity"),
    ]), min_size=1, max_size=6).map(tuple),
    loss=st.sampled_from([LossSpec("half_sse"), LossSpec("mse"), LossSpec("bce_logits")]),
    title=st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp")), max_size=30),
    layout=st.sampled_from(LAYOUTS),
))
def test_valid_specs_round_trip(spec):
    assert load_spec(spec_to_dict(spec)) == spec


# --- layer kinds and losses ----------------------------------------------------------------------

def _with_layers(*layers, loss=None, **extra) -> dict:
    data = {"input": {"size": 3}, "layers": list(layers), "loss": loss or {"kind": "half_sse"}}
    return {**data, **extra}


DENSE3 = {"size": 3, "activation": "tanh"}
DENSE4 = {"size": 4, "activation": "tanh"}


@pytest.mark.parametrize("layers, key, fragments", [
    ((DENSE4, {"kind": "add", "from": "X"}), "layers[1].from", ("width 3", "width 4", "equal widths")),
    ((DENSE3, {"kind": "add", "from": "a2"}), "layers[1].from", ("unknown value 'a2'", "X, a1")),
    ((DENSE3, {"kind": "add", "from": "Z1"}), "layers[1].from", ("unknown value 'Z1'",)),
    ((DENSE3, {"kind": "add"}), "layers[1].from", ("missing required key 'from'",)),
    ((DENSE3, {"kind": "dropout", "p": 1}), "layers[1].p", ("[0, 1)",)),
    ((DENSE3, {"kind": "dropout", "p": -0.1}), "layers[1].p", ("[0, 1)",)),
    ((DENSE3, {"kind": "batchnorm", "eps": 0}), "layers[1].eps", ("> 0",)),
    ((DENSE3, {"kind": "layernorm", "eps": -1e-5}), "layers[1].eps", ("> 0",)),
    ((DENSE3, {"kind": "batchnorm", "size": 3}), "layers[1].size", ("keeps the width of its input",)),
    ((DENSE3, {"kind": "softmax", "eps": 0.1}), "layers[1].eps", ("belongs to batchnorm, layernorm",)),
    ((DENSE3, {"kind": "batchnrom"}), "layers[1].kind", ("did you mean 'batchnorm'",)),
    (({"size": 3, "activation": "prelu", "alpha": 0.2},), "layers[0].alpha", ("trained parameter",)),
    (({"size": 3, "activation": "tanh", "bias": "no"},), "layers[0].bias", ("true or false",)),
    (({"kind": "activation", "activation": "relu", "size": 2},), "layers[0].size", ("keeps the width",)),
])
def test_bad_layer_combinations_name_the_key(layers, key, fragments):
    check(_with_layers(*layers), key, *fragments)


@pytest.mark.parametrize("layers, loss, key, fragments", [
    ((DENSE3,), {"kind": "bce"}, "loss.kind", ("needs probabilities", "gives real")),
    ((DENSE3,), {"kind": "nll"}, "loss.kind", ("log-probabilities",)),
    ((DENSE3, {"kind": "softmax"}), {"kind": "nll"}, "loss.kind", ("log_softmax layer last",)),
    ((DENSE3, {"kind": "softmax"}), {"kind": "cross_entropy", "reduction": "mean"}, "loss.reduction",
     ("does not apply", "sum, batch_mean")),
    ((DENSE3,), {"kind": "half_sse", "reduction": "sum"}, "loss.reduction", ("use kind = 'squared_error'",)),
    ((DENSE3,), {"kind": "squared_error", "scale": 0}, "loss.scale", ("> 0",)),
    ((DENSE3,), {"kind": "squared_error", "margin": 1}, "loss.margin", ("only hinge",)),
    ((DENSE3,), {"kind": "hinge", "hinge_grad_at_zero": 2}, "loss.hinge_grad_at_zero", ("0, 0.5, 1",)),
    ((DENSE3,), {"kind": "hinge", "margin": -2}, "loss.margin", ("> 0", "-2")),
    ((DENSE3,), {"kind": "hinge", "margin": 0}, "loss.margin", ("> 0",)),
    ((DENSE3,), {"kind": "hinge", "margin": float("nan")}, "loss.margin", ("> 0",)),
    ((DENSE3,), {"kind": "hinge", "margin": "1"}, "loss.margin", ("number",)),
    ((DENSE3,), {"kind": "MSE"}, "loss.kind", ("did you mean 'mse'",)),
    (({"size": 1, "activation": "tanh"}, {"kind": "softmax"}), {"kind": "bce"}, "loss.kind",
     ("softmax over one output", "infinite", "use a sigmoid")),
])
def test_bad_losses_name_the_key(layers, loss, key, fragments):
    check(_with_layers(*layers, loss=loss), key, *fragments)


@pytest.mark.parametrize("regularization, key, fragment", [
    ({"l2": -0.1}, "regularization.l2", ">= 0"),
    ({"l2": 0.1, "l2_scale": "mean"}, "regularization.l2_scale", "batch_mean"),
    ({"lambda": 0.1}, "regularization.lambda", "unknown key"),
])
def test_bad_regularization_names_the_key(regularization, key, fragment):
    check(_with_layers(DENSE3, regularization=regularization), key, fragment)


def test_new_keys_round_trip_and_normalize():
    data = _with_layers({"size": 3, "activation": "identity", "bias": False}, {"kind": "batchnorm"},
                        {"kind": "activation", "activation": "prelu"}, {"kind": "dropout", "p": 0.25},
                        {"kind": "add", "from": "a1"}, {"size": 2, "activation": "identity"}, {"kind": "log_softmax"},
                        loss={"kind": "nll", "reduction": "sum", "scale": 2},
                        regularization={"l2": 0.5, "l2_scale": "batch_mean"}, layout="column")
    spec = load_spec(data)
    assert load_spec(spec_to_dict(spec)) == spec
    assert spec.sizes == (3, 3, 3, 3, 3, 3, 2, 2)
    assert [layer.kind for layer in spec.layers] == ["dense", "batchnorm", "activation", "dropout", "add", "dense",
                                                    "log_softmax"]
    assert spec.layers[1].eps == 1e-5 and spec.layers[3].p == 0.25 and spec.layers[4].source == "a1"
    assert (spec.loss.rule, spec.loss.reduction, spec.loss.scale, spec.loss.l2, spec.loss.l2_scale) == (
        "nll", "sum", 2, 0.5, "batch_mean")
    assert spec.parameter_count == 3 * 3 + 2 * 3 + 3 + 3 * 2 + 2  # W1 (no bias), gamma2/beta2, alpha3, W6, b6


# --- every validation rule: the bad value refused, by the API and by the CLI ----------------------------

def _image(*layers, shape=(1, 5, 5), **extra) -> dict:
    return {"input": {"shape": list(shape)}, "layers": list(layers), "loss": {"kind": "half_sse"}, **extra}


def _sequence(*layers, loss=None, **input_keys) -> dict:
    return {"input": input_keys, "layers": list(layers), "loss": loss or {"kind": "half_sse"}}


def _custom(definitions, activation="f", **layer) -> dict:
    return _with_layers({"size": 2, "activation": activation, **layer}, activations=definitions)


CONV2 = {"kind": "conv2d", "channels": 2, "kernel": 3, "activation": "relu"}
FLAT = {"kind": "flatten"}
ATTENTION = {"kind": "attention"}
RNN = {"kind": "rnn", "size": 2}
EMBED = {"kind": "embedding", "size": 2}
SWISH = {"forward": "z * sigmoid(z)"}

# (mapping, key, fragment of the message): one row per check in symbackprop/spec.py that the tests above do not
# already exercise, and the families the issue names (margins, probabilities, widths, names, image geometry,
# attention heads).
REFUSALS = {
    # input
    "context-without-vocab": ({"input": {"size": 3, "context": 2}, "layers": [DENSE3], "loss": {"kind": "mse"}},
                              "input.context", "it needs 'vocab'"),
    "vocab-with-size": (_sequence(EMBED, vocab=5, size=3), "input.size", "remove it"),
    "vocab-zero": (_sequence(EMBED, vocab=0), "input.vocab", "positive integer"),
    "steps-too-many": (_sequence(RNN, size=3, steps=65), "input.steps", "at most 64"),
    "steps-one": (_sequence(RNN, size=3, steps=1), "input.steps", "at least 2"),
    "context-and-steps": (_sequence(EMBED, RNN, vocab=5, context=2, steps=3), "input.context", "do not combine"),
    "shape-with-size": ({"input": {"shape": [1, 4, 4], "size": 16}, "layers": [FLAT], "loss": {"kind": "mse"}},
                        "input.size", "takes no 'size'"),
    "shape-one-axis": (_image(FLAT, shape=(4,)), "input.shape", "[C, H, W]"),
    "shape-zero": (_image(FLAT, shape=(1, 0, 4)), "input.shape[1]", "positive integer"),
    # widths, probabilities, margins, scales
    "dense-width-zero": (_with_layers({"size": 0, "activation": "tanh"}), "layers[0].size", "positive integer"),
    "dropout-p-string": (_with_layers(DENSE3, {"kind": "dropout", "p": "0.5"}), "layers[1].p", "must be a number"),
    "dropout-p-nan": (_with_layers(DENSE3, {"kind": "dropout", "p": float("nan")}), "layers[1].p", "finite"),
    "leaky-alpha-negative": (_with_layers({"size": 3, "activation": "leaky_relu", "alpha": -0.1}), "layers[0].alpha",
                             "> 0"),
    "norm-eps-inf": (_with_layers(DENSE3, {"kind": "layernorm", "eps": float("inf")}), "layers[1].eps", "finite"),
    "loss-scale-negative": (_with_layers(DENSE3, loss={"kind": "squared_error", "scale": -1}), "loss.scale",
                            "> 0"),
    "hinge-one-output": (_with_layers({"size": 1, "activation": "identity"}, loss={"kind": "hinge"}), "loss.kind",
                         "at least 2 outputs"),
    "l2-nan": (_with_layers(DENSE3, regularization={"l2": float("nan")}), "regularization.l2", "finite"),
    "too-many-layers": (_with_layers(*[DENSE3] * 201), "layers", "at most 200"),
    "too-many-parameters": (_with_layers({"size": 10**7, "activation": "tanh"}, {"size": 10**6, "activation": "tanh"}),
                            "layers", "trainable parameters"),
    # images: kernels, strides, padding, channels, where the kinds may stand
    "kernel-missing": (_image({k: v for k, v in CONV2.items() if k != "kernel"}), "layers[0].kernel", "missing required key"),
    "channels-missing": (_image({k: v for k, v in CONV2.items() if k != "channels"}), "layers[0].channels", "missing required key"),
    "channels-zero": (_image({**CONV2, "channels": 0}), "layers[0].channels", "positive integer"),
    "kernel-zero": (_image({**CONV2, "kernel": 0}), "layers[0].kernel", "a positive integer"),
    "kernel-three-axes": (_image({**CONV2, "kernel": [3, 3, 3]}), "layers[0].kernel", "[height, width]"),
    "kernel-list-on-signal": (_image({**CONV2, "kind": "conv1d", "kernel": [3]}, shape=(1, 8)), "layers[0].kernel",
                              "must be an integer, got [3]"),
    "kernel-float": (_image({**CONV2, "kernel": 2.5}), "layers[0].kernel", "got 2.5"),
    "stride-zero": (_image({**CONV2, "stride": 0}), "layers[0].stride", "a positive integer"),
    "stride-axis-zero": (_image({**CONV2, "stride": [1, 0]}), "layers[0].stride[1]", "a positive integer"),
    "padding-negative": (_image({**CONV2, "padding": -1}), "layers[0].padding", "a non-negative integer"),
    "padding-boolean": (_image({**CONV2, "padding": True}), "layers[0].padding", "got True"),
    "kernel-larger-than-image": (_image({**CONV2, "kernel": 6}), "layers[0].kernel", "larger than the input"),
    "kernel-larger-than-padded": (_image({**CONV2, "kernel": [8, 3], "padding": 1}), "layers[0].kernel",
                                  "5 + 2 x 1 = 7"),
    "pool-kernel-zero": (_image({"kind": "maxpool", "kernel": 0}), "layers[0].kernel", "a positive integer"),
    "pool-stride-float": (_image({"kind": "avgpool", "kernel": 2, "stride": 1.0}), "layers[0].stride", "got 1.0"),
    "pool-channels": (_image({"kind": "maxpool", "kernel": 2, "channels": 2}), "layers[0].channels",
                      "does not apply to a maxpool layer"),
    "conv-size": (_image({**CONV2, "size": 4}), "layers[0].size", "follows from its input image"),
    "image-too-large": (_image(shape=(1, 10**5, 10**5)), "input.shape", "10,000,000,000 entries per sample"),
    "maps-too-large": (_image({**CONV2, "channels": 2**16 + 1, "padding": 1}, shape=(1, 16, 16)), "layers[0].kind",
                       "16,777,472 entries per sample; at most 16,777,216"),
    "conv1d-on-image": (_image({**CONV2, "kind": "conv1d"}), "layers[0].kind", "use conv2d"),
    "conv2d-on-signal": (_image(CONV2, shape=(1, 8)), "layers[0].kind", "use conv1d"),
    "conv-on-vector": (_with_layers(CONV2), "layers[0].kind", "give [input] shape"),
    "conv-after-flatten": (_image(FLAT, CONV2), "layers[1].kind", "earlier flatten"),
    "dense-on-image": (_image(DENSE3), "layers[0].kind", 'add a layer of kind "flatten"'),
    "ends-on-image": (_image(CONV2), "layers[0].kind", "ends on an image"),
    "prelu-on-image": (_image({**CONV2, "activation": "prelu"}, FLAT), "layers[0].activation", "one slope per entry"),
    "image-column-layout": (_image(CONV2, FLAT, layout="column"), "layout", "batch-first only"),
    # attention: heads, head size, where it may stand
    "heads-zero": (_with_layers({**ATTENTION, "heads": 0}), "layers[0].heads", "positive integer"),
    "heads-not-dividing": (_with_layers({**ATTENTION, "heads": 2}), "layers[0].heads", "not a multiple of heads"),
    "head-size-zero": (_with_layers({**ATTENTION, "head_size": 0}), "layers[0].head_size", "positive integer"),
    "attention-size-float": (_with_layers({**ATTENTION, "size": 2.0}), "layers[0].size", "an integer, got a float"),
    "causal-string": (_with_layers({**ATTENTION, "causal": "yes"}), "layers[0].causal", "true or false"),
    "attention-bias-int": (_with_layers({**ATTENTION, "bias": 1}), "layers[0].bias", "true or false"),
    "attention-with-steps": (_sequence(ATTENTION, RNN, size=3, steps=2), "input.steps", "takes no [input] steps"),
    "attention-with-batchnorm": (_with_layers(ATTENTION, {"kind": "batchnorm"}), "layers[1].kind",
                                 "mixes the positions"),
    "attention-column-layout": (_with_layers(ATTENTION, layout="column"), "layout", "batch-first only"),
    # embeddings and recurrent layers
    "embedding-without-vocab": (_with_layers(EMBED), "layers[0].kind", "give [input] vocab"),
    "embedding-vocab-differs": (_sequence({**EMBED, "vocab": 4}, vocab=5), "layers[0].vocab", "must equal [input] vocab = 5"),
    "embedding-size-missing": (_sequence({"kind": "embedding"}, vocab=5), "layers[0].size", "missing required key 'size'"),
    "embedding-not-first": (_sequence(EMBED, EMBED, vocab=5), "layers[1].kind", "must be the first layer"),
    "ids-without-embedding": (_sequence(DENSE3, vocab=5), "layers[0].kind", "through an embedding layer first"),
    "rnn-size-missing": (_sequence({"kind": "lstm"}, size=3, steps=2), "layers[0].size", "the lstm state's width"),
    "rnn-without-steps": (_with_layers(RNN), "layers[0].kind", "give [input] steps"),
    "rnn-return-unknown": (_sequence({**RNN, "return": "first"}, size=3, steps=2), "layers[0].return",
                           "unknown return 'first'"),
    "rnn-after-last-state": (_sequence(RNN, {"kind": "gru", "size": 2}, size=3, steps=2), "layers[1].kind",
                             "no sequence is left"),
    "steps-without-recurrent": (_sequence(DENSE3, size=3, steps=2), "input.steps", "needs a recurrent layer"),
    # custom activations: names, parameters, LaTeX, formulas
    "activations-not-a-table": (_custom(3), "activations", "[activations.<name>] tables"),
    "activations-too-many": (_custom({f"f{i}": SWISH for i in range(17)}, "f0"), "activations", "at most 16"),
    "activation-name-invalid": (_custom({"1f": SWISH}, "1f"), "activations", "invalid activation name '1f'"),
    "activation-name-built-in": (_custom({"relu": SWISH}, "relu"), "activations", "a built-in activation"),
    "activation-name-reserved": (_custom({"W1": SWISH}, "W1"), "activations", "a name the derivation uses"),
    "parameters-not-a-table": (_custom({"f": {**SWISH, "parameters": [1.5]}}), "activations.f.parameters",
                               "table of numbers"),
    "parameter-named-z": (_custom({"f": {**SWISH, "parameters": {"z": 1}}}), "activations.f.parameters",
                          "invalid parameter name 'z'"),
    "parameter-too-large": (_custom({"f": {**SWISH, "parameters": {"beta": 1e300}}}), "activations.f.parameters.beta",
                            "of size at most"),
    "latex-empty": (_custom({"f": {**SWISH, "latex": ""}}), "activations.f.latex", "1 to 80 characters"),
    "latex-command": (_custom({"f": {**SWISH, "latex": "\\input{x}"}}), "activations.f.latex", "not allowed"),
    "formula-unfinished": (_custom({"f": {"forward": "z +"}}), "activations.f.forward", "column"),
    "grad-at-kinks-string": (_custom({"f": {**SWISH, "grad_at_kinks": "0"}}), "activations.f.grad_at_kinks",
                             "must be a number"),
    "custom-with-alpha": (_custom({"f": SWISH}, alpha=0.1), "layers[0].alpha", "takes no layer parameters"),
    "custom-unknown": (_custom({"f": SWISH}, "g"), "layers[0].activation", "unknown activation 'g'"),
    "input-named-like-the-module-functions": (
        {**_custom({"f": SWISH}), "input": {"size": 3, "name": CustomActivation("f", SWISH["forward"]).key + "_x"}},
        "input.name", "clashes with the generated module's functions for activation 'f'"),
}


def _toml(mapping: dict) -> str:
    """A spec mapping as TOML text: each top-level key one line, tables inline."""
    def value(item) -> str:
        if isinstance(item, bool):
            return "true" if item else "false"
        if isinstance(item, float) and not math.isfinite(item):
            return "nan" if math.isnan(item) else ("inf" if item > 0 else "-inf")
        if isinstance(item, (int, float)):
            return repr(item)
        if isinstance(item, str):
            return json.dumps(item)
        if isinstance(item, list):
            return "[" + ", ".join(map(value, item)) + "]"
        return "{" + ", ".join(f"{json.dumps(str(key))} = {value(entry)}" for key, entry in item.items()) + "}"

    return "".join(f"{json.dumps(key)} = {value(entry)}\n" for key, entry in mapping.items())


@pytest.mark.parametrize("name", REFUSALS)
def test_every_validation_rule_refuses_its_bad_value_in_the_api_and_the_cli(name, tmp_path):
    """The mapping is refused naming the key, and the same spec as a file makes the CLI exit 2 with that one
    line on stderr (nothing on stdout)."""
    mapping, key, fragment = REFUSALS[name]
    error = check(mapping, key, fragment)
    path = tmp_path / f"{name}.toml"
    path.write_text(_toml(mapping), encoding="utf-8")
    assert json.dumps(tomllib.loads(path.read_text(encoding="utf-8")), sort_keys=True) == json.dumps(mapping,
                                                                                                    sort_keys=True)
    from_file = spec_error(path)
    assert (from_file.source, from_file.key, from_file.message) == (str(path), error.key, error.message)
    result = CliRunner().invoke(cli_main, ["verify", "--spec", str(path)])
    assert result.exit_code == 2, result.output
    assert result.stdout == ""
    assert result.stderr == f"symbackprop: error: {from_file}\n"
