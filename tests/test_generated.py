"""The generated NumPy module (``derive(spec).render("numpy")``), imported and run for every corpus spec.

Oracles: central finite differences of the module's own loss, and the gradient of an explicit symbolic
instance of the network written independently in ``tests/oracles.py`` (entries as numbers, one entry a
symbol) differentiated by symengine. Plus: float32 stays float32, the cache holds no pre-activation the
backward pass can do without, and ``python backprop.py`` exits 0 (1 when its gradient check fails).
"""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from oracles import symbolic_gradients, targets

from symbackprop import derive
from symbackprop.rules import ACTIVATIONS, LOSS_KINDS, LOSS_RULES, activation_rule
from symbackprop.spec import RELU_GRAD_AT_ZERO_VALUES, load_spec

SPECS = sorted(Path(__file__).parent.joinpath("specs").glob("*.toml"))
BATCH = 2


def load_module(source: str, directory: Path, name: str = "backprop"):
    path = directory / f"{name}.py"
    path.write_text(source, encoding="utf-8")
    module_spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module


def data(spec, rng, dtype=np.float64, batch=BATCH):
    """Inputs and targets in the spec's layout; targets valid for its loss."""
    X = rng.standard_normal((batch, spec.sizes[0]))
    Y = targets(spec, rng, batch)
    X, Y = X.astype(dtype), Y.astype(dtype)
    return (X, Y) if spec.layout == "batch-first" else (X.T.copy(), Y.T.copy())


def masks_of(module, X, spec):
    """The module's own dropout masks for this batch (empty when the network has no dropout)."""
    if not hasattr(module, "draw_masks"):
        return {}
    return module.draw_masks(X.shape[0 if spec.layout == "batch-first" else 1], seed=5, dtype=X.dtype)


def run(module, params, X, masks):
    return module.forward(params, X, masks) if masks else module.forward(params, X)


def relative_error(actual, expected) -> float:
    return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-12))


def finite_differences(module, params, X, Y, masks, eps=1e-6) -> dict:
    """Central differences of the module's own loss with respect to every parameter entry and X."""
    numeric = {}
    for name, array in [*params.items(), ("X", X)]:
        numeric[name] = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            saved = array[index]
            array[index] = saved + eps
            up = module.loss(run(module, params, X, masks)[0], Y, params)
            array[index] = saved - eps
            down = module.loss(run(module, params, X, masks)[0], Y, params)
            array[index] = saved
            numeric[name][index] = (up - down) / (2 * eps)
    return numeric


@pytest.fixture(scope="module")
def modules(tmp_path_factory):
    """Each corpus spec's generated module, rendered and imported once."""
    directory = tmp_path_factory.mktemp("generated")
    return {path.stem: (load_spec(path), load_module(derive(path).render("numpy"), directory, path.stem))
            for path in SPECS}


SYMBOLIC_MAX_PARAMETERS = 250


@pytest.mark.parametrize("path", SPECS, ids=[path.stem for path in SPECS])
def test_gradients_match_finite_differences_and_symbolic_differentiation(path, modules):
    spec, module = modules[path.stem]
    rng = np.random.default_rng(7)
    params = module.init_params(1)
    X, Y = data(spec, rng, batch=3 if any(layer.kind == "batchnorm" for layer in spec.layers) else BATCH)
    masks = masks_of(module, X, spec)
    grads = module.backward(params, run(module, params, X, masks)[1], Y)
    assert set(grads) == {*params, "X"}
    numeric = finite_differences(module, params, X, Y, masks)
    values = {**params, spec.input.name: X, "Y_true": Y, **masks}
    # SymPy's own differentiation of the scalar loss, where the network is small enough for it to take
    # seconds, not tens of seconds (the 6 x 8 ReLU net is checked by finite differences here, exactly by verify)
    small = sum(value.size for value in params.values()) <= SYMBOLIC_MAX_PARAMETERS
    symbolic = symbolic_gradients(spec, values, [*params, spec.input.name]) if small else {}
    symbolic["X"] = symbolic.pop(spec.input.name, None)
    scale = abs(module.loss(run(module, params, X, masks)[0], Y, params))
    for name in grads:
        assert grads[name].shape == (params[name] if name != "X" else X).shape
        assert fd_close(grads[name], numeric[name], scale), name
        if small:
            np.testing.assert_allclose(grads[name], symbolic[name], rtol=1e-9, atol=1e-12 * max(scale, 1),
                                       err_msg=name)


@pytest.mark.parametrize("path", SPECS, ids=[path.stem for path in SPECS])
def test_float32_stays_float32(path, modules):
    spec, module = modules[path.stem]
    params = module.init_params(0, dtype=np.float32)
    X, Y = data(spec, np.random.default_rng(3), dtype=np.float32, batch=4)
    masks = masks_of(module, X, spec)
    Y_pred, cache = run(module, params, X, masks)
    grads = module.backward(params, cache, Y)
    updated = module.sgd_step(params, grads, 0.1)
    arrays = {"Y_pred": Y_pred, **{f"cache {k}": v for k, v in cache.items()},
              **{f"d{k}": v for k, v in grads.items()}, **{f"new {k}": v for k, v in updated.items()}}
    # ReLU's kept local gradient is a 0/1 mask: bool (one byte an entry) multiplies any float dtype exactly.
    assert {name: a.dtype for name, a in arrays.items()
            if a.dtype != np.float32 and not (name.startswith("cache") and a.dtype == np.bool_)} == {}
    params64, X64 = module.init_params(0), X.astype(np.float64)
    masks64 = {name: mask.astype(np.float64) for name, mask in masks.items()}
    reference = module.backward(params64, run(module, params64, X64, masks64)[1], Y.astype(np.float64))
    largest = max(np.linalg.norm(g) for g in reference.values())
    for name in grads:  # float32 rounding, measured against the largest gradient (some are exactly 0 in float64)
        assert np.linalg.norm(grads[name] - reference[name]) <= 1e-3 * np.linalg.norm(reference[name]) + 1e-5 * largest, name


@pytest.mark.parametrize("path", SPECS, ids=[path.stem for path in SPECS])
def test_cache_keeps_no_preactivation_the_backward_pass_can_do_without(path, modules):
    spec, module = modules[path.stem]
    params = module.init_params(0)
    _, cache = module.forward(params, data(spec, np.random.default_rng(0))[0])
    for l, layer in enumerate(spec.layers, start=1):
        if layer.activation is None or layer.activation == "prelu":
            continue
        rule = activation_rule(layer.activation)
        if layer.activation == "identity" or rule.numpy_derivative_from_output:
            assert f"Z{l}" not in cache


# A subprocess per spec costs a fraction of a second: by default one spec of each kind of layer and loss,
# every spec with SYMBACKPROP_FULL_LECTURE=1 (the modules of all are imported and checked above).
RUN = SPECS if os.environ.get("SYMBACKPROP_FULL_LECTURE") == "1" else [path for path in SPECS if path.stem in (
    "seed", "batchnorm_after_dense_column", "layernorm_column", "dropout_hidden", "mixed_norms_dropout",
    "prelu_column", "residual_block", "softmax_layer_cross_entropy", "log_softmax_nll_column",
    "loss_cs231n_svm_l2", "loss_ng_bce_l2_column", "bce_logits_multilabel_silu_column", "formula_swish_beta",
    "lecture_layernorm_dropout_gelu", "custom_input_name", "width_1_everywhere_column")]


@pytest.mark.parametrize("path", RUN, ids=[path.stem for path in RUN])
def test_running_the_module_exits_0(path, tmp_path):
    target = tmp_path / "backprop.py"
    target.write_text(derive(path).render("numpy"), encoding="utf-8")
    result = subprocess.run([sys.executable, str(target)], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "gradient check: max relative error" in result.stdout


def test_running_a_module_with_a_wrong_gradient_exits_1(tmp_path):
    source = derive().render("numpy")
    assert "    dY_pred = " in source
    target = tmp_path / "backprop.py"
    target.write_text(source.replace("    dY_pred = ", "    dY_pred = 1.5 * "), encoding="utf-8")
    result = subprocess.run([sys.executable, str(target)], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stdout + result.stderr


def fd_close(analytic, numeric, scale, largest=0.0) -> bool:
    """Within 1e-6 relative error, or within the error of central differences themselves: their rounding
    (loss scale ``scale``) and their truncation, which grows with the largest gradient of the network
    (``largest``: a gradient that is exactly 0 next to a huge one is resolved only that well)."""
    return np.linalg.norm(analytic - numeric) <= (1e-6 * np.linalg.norm(numeric) + 1e-8 * max(scale, 1.0)
                                                  + 1e-7 * largest)


_OUTPUT_LOSSES = {  # what the last layer gives -> losses that read it (besides those that take any scores)
    "probabilities": ["bce", "cross_entropy"], "log_probabilities": ["nll"], "real": [],
}


@st.composite
def specs(draw):
    """A random stack mixing every layer kind (depth 1-5, widths 1-4), a loss it allows, either layout."""
    size = draw(st.integers(1, 4))
    earlier, layers, output = {"X": size}, [], "real"
    for l in range(1, draw(st.integers(1, 5)) + 1):
        kind = draw(st.sampled_from(["dense", "dense", "batchnorm", "layernorm", "dropout", "add", "softmax",
                                     "log_softmax"]))
        same = [name for name, width in earlier.items() if width == size]
        if kind == "add" and same:
            layer = {"kind": "add", "from": draw(st.sampled_from(same))}
        elif kind in ("batchnorm", "layernorm"):
            layer = {"kind": kind, "eps": draw(st.sampled_from([1e-5, 0.1]))}
        elif kind == "dropout":
            layer = {"kind": kind, "p": draw(st.sampled_from([0.0, 0.25, 0.5]))}
        elif kind in ("softmax", "log_softmax"):
            layer = {"kind": kind}
        else:
            activation = draw(st.sampled_from([*sorted(ACTIVATIONS), "prelu"]))
            size = draw(st.integers(1, 4))
            layer = {"size": size, "activation": activation, "bias": draw(st.booleans())}
            if activation == "relu":
                layer["relu_grad_at_zero"] = draw(st.sampled_from(RELU_GRAD_AT_ZERO_VALUES))
            if activation in ("leaky_relu", "elu"):
                layer["alpha"] = draw(st.sampled_from([0.01, 0.2, 1.0]))
        output = {"softmax": "probabilities", "log_softmax": "log_probabilities"}.get(
            layer.get("kind"), "probabilities" if layer.get("activation") == "sigmoid" else "real")
        layers.append(layer)
        earlier[f"a{l}"] = size
    allowed = [kind for kind in LOSS_KINDS if LOSS_RULES.get(kind) is None or "real" in LOSS_RULES[kind].inputs]
    allowed += _OUTPUT_LOSSES[output]
    allowed = [kind for kind in allowed if size >= (LOSS_RULES[kind].min_outputs if kind in LOSS_RULES else 1)
               and not (kind == "bce" and size == 1 and layers[-1].get("kind") == "softmax")]  # a spec error
    kind = draw(st.sampled_from(allowed))
    loss = {"kind": kind}
    if kind in LOSS_RULES:
        loss["reduction"] = draw(st.sampled_from(LOSS_RULES[kind].reductions))
    spec = {"input": {"size": earlier["X"]}, "layers": layers, "loss": loss,
            "layout": draw(st.sampled_from(["batch-first", "column"]))}
    if draw(st.booleans()):
        spec["regularization"] = {"l2": 0.1, "l2_scale": draw(st.sampled_from(["none", "batch_mean"]))}
    return spec


@settings(max_examples=25, deadline=None)
@given(spec_dict=specs(), seed=st.integers(0, 2**16))
def test_random_stacks_derive_verify_and_match_finite_differences(spec_dict, seed, tmp_path_factory):
    derivation = derive(spec_dict)
    assert derivation.verify().ok, derivation.verify().table()
    spec = derivation.spec
    module = load_module(derivation.render("numpy"), tmp_path_factory.mktemp("random"))
    params = module.init_params(seed)
    X, Y = data(spec, np.random.default_rng(seed), batch=3)
    masks = masks_of(module, X, spec)
    grads = module.backward(params, run(module, params, X, masks)[1], Y)
    numeric = finite_differences(module, params, X, Y, masks)
    scale = abs(module.loss(run(module, params, X, masks)[0], Y, params))
    largest = max(np.linalg.norm(gradient) for gradient in numeric.values())
    for name in grads:
        assert fd_close(grads[name], numeric[name], scale, largest), name


@pytest.mark.parametrize("name, params", [("sigmoid", {}), ("tanh", {}), ("leaky_relu", {"alpha": 0.2}),
                                          ("elu", {"alpha": 0.5}), ("elu", {"alpha": 1.0})])
def test_derivatives_written_in_the_output_equal_the_sympy_derivative(name, params):
    rule = ACTIVATIONS[name]
    z = sp.Symbol("z", real=True)
    points = np.array([-3.1, -1.2, -0.3, 0.4, 1.7, 2.9])
    a = np.array([float(rule.forward(z, params).subs(z, p)) for p in points])
    from_output = eval(rule.numpy_from_output(params, a="a"), {"np": np, "a": a})
    expected = [float(rule.derivative(z, params).subs(z, p)) for p in points]
    np.testing.assert_allclose(from_output, expected, rtol=1e-12)
