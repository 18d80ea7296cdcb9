"""The generated NumPy module (``derive(spec).render("numpy")``), imported and run for every corpus spec.

Oracles: central finite differences of the module's own loss, and the gradient of an explicit symbolic
instance of the network (entries as numbers, one entry a symbol, activations and losses from their scalar
forward rules) differentiated by symengine. Plus: float32 stays float32, the cache holds no pre-activation
the backward pass can do without, and ``python backprop.py`` exits 0 (1 when its gradient check fails).
"""

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import symengine as se
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from symbackprop import derive
from symbackprop.rules import ACTIVATIONS, LOSSES, activation_rule
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


def data(spec, rng, dtype=np.float64):
    """Inputs and targets in the spec's layout; targets valid for its loss (distributions for softmax CE)."""
    n_in, n_out = spec.sizes[0], spec.sizes[-1]
    X = rng.standard_normal((BATCH, n_in))
    if LOSSES[spec.loss.kind].targets_are_distributions:
        Y = rng.random((BATCH, n_out)) + 0.1
        Y /= Y.sum(axis=1, keepdims=True)
    elif spec.loss.kind == "bce_logits":
        Y = rng.random((BATCH, n_out))
    else:
        Y = rng.standard_normal((BATCH, n_out))
    X, Y = X.astype(dtype), Y.astype(dtype)
    return (X, Y) if spec.layout == "batch-first" else (X.T.copy(), Y.T.copy())


def relative_error(actual, expected) -> float:
    return float(np.linalg.norm(actual - expected) / max(np.linalg.norm(expected), 1e-12))


def finite_differences(module, params, X, Y, eps=1e-6) -> dict:
    """Central differences of the module's own loss with respect to every parameter entry and X."""
    numeric = {}
    for name, array in [*params.items(), ("X", X)]:
        numeric[name] = np.zeros_like(array)
        for index in np.ndindex(array.shape):
            saved = array[index]
            array[index] = saved + eps
            up = module.loss(module.forward(params, X)[0], Y)
            array[index] = saved - eps
            down = module.loss(module.forward(params, X)[0], Y)
            array[index] = saved
            numeric[name][index] = (up - down) / (2 * eps)
    return numeric


def symbolic_gradients(spec, params, X, Y) -> dict:
    """dL/d(entry) of an explicit symbolic instance of the network, for every parameter entry and X entry.

    Each entry in turn becomes a symbol ``t`` while every other entry is a number; the loss is built from the
    rule table's scalar forward forms (``activation_rule(...).forward``, ``LOSSES[...].value``), differentiated by
    symengine (``Max`` rewritten by SymPy as the equal ``Piecewise``, which symengine differentiates) and
    evaluated at ``t`` = the entry's value.
    """
    z, t = sp.Symbol("z", real=True), se.Symbol("t")
    batch_first = spec.layout == "batch-first"
    forms = [se.sympify(activation_rule(layer.activation).forward(z, layer.params).rewrite(sp.Piecewise))
             for layer in spec.layers]

    def matmul(A, B):
        return [[sum((a * b for a, b in zip(row, col)), 0) for col in zip(*B)] for row in A]

    def loss(arrays):
        A = arrays["X"]
        for l, form in enumerate(forms, start=1):
            W, b = arrays[f"W{l}"], arrays[f"b{l}"]
            Z = ([[p + q for p, q in zip(row, b[0])] for row in matmul(A, W)] if batch_first
                 else [[p + b_i[0] for p in row] for row, b_i in zip(matmul(W, A), b)])
            A = [[form.subs({se.Symbol("z"): entry}) for entry in row] for row in Z]
        Y_pred, Y_true = (A, Y.tolist()) if batch_first else (list(map(list, zip(*A))), Y.T.tolist())
        return LOSSES[spec.loss.kind].value(Y_pred, Y_true, se)

    numbers = {name: array.tolist() for name, array in [*params.items(), ("X", X)]}
    gradients = {}
    for name, array in [*params.items(), ("X", X)]:
        gradients[name] = np.zeros_like(array)
        for i, j in np.ndindex(array.shape):
            entry = [row.copy() for row in numbers[name]]
            entry[i][j] = t
            L = loss({**numbers, name: entry})
            gradients[name][i, j] = float(se.diff(L, t).subs({t: array[i, j]}))
    return gradients


@pytest.fixture(scope="module")
def modules(tmp_path_factory):
    """Each corpus spec's generated module, rendered and imported once."""
    directory = tmp_path_factory.mktemp("generated")
    return {path.stem: (load_spec(path), load_module(derive(path).render("numpy"), directory, path.stem))
            for path in SPECS}


@pytest.mark.parametrize("path", SPECS, ids=[path.stem for path in SPECS])
def test_gradients_match_finite_differences_and_symbolic_differentiation(path, modules):
    spec, module = modules[path.stem]
    rng = np.random.default_rng(7)
    params = module.init_params(1)
    X, Y = data(spec, rng)
    grads = module.backward(params, module.forward(params, X)[1], Y)
    assert set(grads) == {*params, "X"}
    numeric = finite_differences(module, params, X, Y)
    symbolic = symbolic_gradients(spec, params, X, Y)
    for name in grads:
        assert grads[name].shape == (params[name] if name != "X" else X).shape
        assert relative_error(grads[name], numeric[name]) < 1e-6, name
        assert relative_error(grads[name], symbolic[name]) < 1e-9, name


@pytest.mark.parametrize("path", SPECS, ids=[path.stem for path in SPECS])
def test_float32_stays_float32(path, modules):
    spec, module = modules[path.stem]
    params = module.init_params(0, dtype=np.float32)
    X, Y = data(spec, np.random.default_rng(3), dtype=np.float32)
    Y_pred, cache = module.forward(params, X)
    grads = module.backward(params, cache, Y)
    updated = module.sgd_step(params, grads, 0.1)
    arrays = {"Y_pred": Y_pred, **{f"cache {k}": v for k, v in cache.items()},
              **{f"d{k}": v for k, v in grads.items()}, **{f"new {k}": v for k, v in updated.items()}}
    # ReLU's kept local gradient is a 0/1 mask: bool (one byte an entry) multiplies any float dtype exactly.
    assert {name: a.dtype for name, a in arrays.items()
            if a.dtype != np.float32 and not (name.startswith("cache") and a.dtype == np.bool_)} == {}
    params64, X64 = module.init_params(0), X.astype(np.float64)
    reference = module.backward(params64, module.forward(params64, X64)[1], Y.astype(np.float64))
    for name in grads:
        assert relative_error(grads[name], reference[name]) < 1e-3, name


@pytest.mark.parametrize("path", SPECS, ids=[path.stem for path in SPECS])
def test_cache_keeps_no_preactivation_the_backward_pass_can_do_without(path, modules):
    spec, module = modules[path.stem]
    params = module.init_params(0)
    _, cache = module.forward(params, data(spec, np.random.default_rng(0))[0])
    for l, layer in enumerate(spec.layers, start=1):
        rule = activation_rule(layer.activation)
        if layer.activation == "identity" or rule.numpy_derivative_from_output:
            assert f"Z{l}" not in cache


@pytest.mark.parametrize("path", SPECS, ids=[path.stem for path in SPECS])
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


@st.composite
def specs(draw):
    """A random network: depth 1-4, widths 1-5, any activation, loss and layout."""
    loss = draw(st.sampled_from(sorted(LOSSES)))
    depth = draw(st.integers(1, 4))
    layers = []
    for l in range(depth):
        activation = draw(st.sampled_from(sorted(ACTIVATIONS)))
        low = LOSSES[loss].min_outputs if l == depth - 1 else 1
        layer = {"size": draw(st.integers(low, max(low, 5))), "activation": activation}
        if activation == "relu":
            layer["relu_grad_at_zero"] = draw(st.sampled_from(RELU_GRAD_AT_ZERO_VALUES))
        if activation in ("leaky_relu", "elu"):
            layer["alpha"] = draw(st.sampled_from([0.01, 0.2, 1.0]))
        layers.append(layer)
    return {"input": {"size": draw(st.integers(1, 5))}, "layers": layers, "loss": {"kind": loss},
            "layout": draw(st.sampled_from(["batch-first", "column"]))}


@settings(max_examples=15, deadline=None)
@given(spec_dict=specs(), seed=st.integers(0, 2**16))
def test_random_specs_derive_verify_and_match_finite_differences(spec_dict, seed, tmp_path_factory):
    derivation = derive(spec_dict)
    assert derivation.verify().ok
    module = load_module(derivation.render("numpy"), tmp_path_factory.mktemp("random"))
    params = module.init_params(seed)
    X, Y = data(derivation.spec, np.random.default_rng(seed))
    grads = module.backward(params, module.forward(params, X)[1], Y)
    numeric = finite_differences(module, params, X, Y)
    for name in grads:
        assert relative_error(grads[name], numeric[name]) < 1e-6, name


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
