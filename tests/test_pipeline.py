"""The pipeline stage by stage, and the public API, against independent oracles.

The oracle here is plain SymPy: an explicit network with the real activation functions, differentiated with
``sympy.diff`` and evaluated at a random point, independent of our rule table's derivatives and of the
verifier.
"""

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import sympy as sp

from symbackprop import derive, load_spec, seed_spec
from symbackprop.derivation import gradient_symbol
from symbackprop.evaluate import Evaluator, Float64Backend
from symbackprop.network import build_network
from symbackprop.printing import latex, numpy_code
from symbackprop.rules import LOSSES, activation_rule


def test_seed_network_forward_steps_and_shapes():
    net = build_network(seed_spec())
    assert [s.name for s in net.steps] == ["Z1", "a1", "Z2", "a2", "Z3", "Y_pred", "L"]
    N, n = net.N, net.widths
    assert net.symbol("Z1").shape == (N, n[1])
    assert net.inputs["W2"].shape == (n[1], n[2])
    assert net.inputs["b3"].shape == (1, n[3])
    assert net.symbol("Y_pred").shape == (N, n[3])


def test_column_layout_shapes():
    spec = dataclasses.replace(seed_spec(), layout="column")
    net = build_network(spec)
    assert net.inputs["X"].shape == (net.widths[0], net.N)
    assert net.inputs["W1"].shape == (net.widths[1], net.widths[0])
    assert net.inputs["b1"].shape == (net.widths[1], 1)


def test_batch_first_backward_order_and_transposes():
    d = derive(seed_spec())
    net = d.network
    delta1 = gradient_symbol(net, "Z1")
    assert d.step("W1").expr == net.inputs["X"].T * delta1
    assert d.step("b1").expr == sp.OneMatrix(1, net.N) * delta1
    assert d.step("X").expr == delta1 * net.inputs["W1"].T
    assert isinstance(d.step("Z1").expr, sp.HadamardProduct)
    for step in d.backward:
        assert step.expr.shape == step.symbol.shape == net.symbol(step.name).shape


def test_column_backward_order_and_transposes():
    d = derive(dataclasses.replace(seed_spec(), layout="column"))
    net = d.network
    delta1 = gradient_symbol(net, "Z1")
    assert d.step("W1").expr == delta1 * net.inputs["X"].T
    assert d.step("b1").expr == delta1 * sp.OneMatrix(net.N, 1)
    assert d.step("X").expr == net.inputs["W1"].T * delta1


def test_local_gradient_table_has_the_lecture_entries():
    d = derive(seed_spec())
    table = {(lg.of, lg.wrt): lg for lg in d.local_gradients}
    assert table[("Z1", "W1")].expr == d.network.inputs["X"].T
    assert table[("Z2", "a1")].expr == d.network.inputs["W2"].T
    assert table[("L", "Y_pred")].expr == d.network.symbol("Y_pred") - d.network.inputs["Y_true"]


def _random_values(spec, N, seed):
    """Random float64 inputs for every matrix of the network (targets as distributions for softmax)."""
    rng = np.random.default_rng(seed)
    sizes, batch_first = spec.sizes, spec.layout == "batch-first"
    shapes = {"X": (N, sizes[0]) if batch_first else (sizes[0], N)}
    for l in range(1, len(sizes)):
        shapes[f"W{l}"] = (sizes[l - 1], sizes[l]) if batch_first else (sizes[l], sizes[l - 1])
        shapes[f"b{l}"] = (1, sizes[l]) if batch_first else (sizes[l], 1)
    values = {name: rng.standard_normal(shape) for name, shape in shapes.items()}
    T = rng.random((N, sizes[-1]))
    if LOSSES[spec.loss.kind].targets_are_distributions:
        T = T / T.sum(axis=1, keepdims=True)
    values["Y_true"] = T if batch_first else T.T
    return values


def _sympy_loss(spec, values, symbolic):
    """The loss as a SymPy expression of the entries of ``symbolic`` (other inputs numeric), real activations."""
    batch_first = spec.layout == "batch-first"
    symbols = sp.Matrix(*values[symbolic].shape, lambda i, j: sp.Symbol(f"{symbolic}_{i}_{j}"))

    def value(name):
        return symbols if name == symbolic else sp.Matrix(values[name].tolist()).applyfunc(lambda v: sp.Float(v, 30))

    A = value("X")
    for l, layer in enumerate(spec.layers, start=1):
        W, b = value(f"W{l}"), value(f"b{l}")
        Z = A * W + sp.ones(A.rows, 1) * b if batch_first else W * A + b * sp.ones(1, A.cols)
        z = sp.Symbol("z")
        A = Z.applyfunc(sp.Lambda(z, activation_rule(layer.activation).forward(z, layer.params)))
    T = value("Y_true")
    Y, T = (A, T) if batch_first else (A.T, T.T)
    return LOSSES[spec.loss.kind].value(Y.tolist(), T.tolist(), sp), symbols


def _sympy_oracle(spec, N, seed=0):
    """Direct gradients of the loss by sympy.diff with the real activation functions, at a random point."""
    values = _random_values(spec, N, seed)
    grads = {}
    for name in [k for k in values if k != "Y_true"]:
        loss, symbols = _sympy_loss(spec, values, name)
        point = {symbols[i, j]: sp.Float(values[name][i, j], 30) for i in range(symbols.rows)
                 for j in range(symbols.cols)}
        grads[name] = np.array([[float(sp.diff(loss, symbols[i, j]).xreplace(point).evalf(30))
                                 for j in range(symbols.cols)] for i in range(symbols.rows)])
    return values, grads


@pytest.mark.parametrize("path", ["tests/specs/seed.toml", "tests/specs/sigmoid_mse_column.toml",
                                  "tests/specs/softmax_ce_2_classes.toml"])
def test_composed_gradients_match_direct_sympy_differentiation(path):
    spec = load_spec(path)
    d = derive(spec)
    values, direct = _sympy_oracle(spec, N=3)
    net = d.network
    evaluator = Evaluator(Float64Backend(), dict(values), net.sizes(3, spec.sizes))
    evaluator.forward(net)
    for name, expected in direct.items():
        got = evaluator(d.gradients[name])
        np.testing.assert_allclose(got, expected, rtol=1e-9, atol=1e-12, err_msg=name)


def test_seed_derivation_verifies():
    report = derive(seed_spec()).verify()
    assert report.ok
    names = [c.name for c in report.checks]
    for quantity in ("W1", "b1", "W2", "b2", "W3", "b3", "X", "Z1", "a1", "Y_pred"):
        assert f"dL/d{quantity}" in names
    assert report.witness["N"] >= 2 and len(set(report.witness.values())) == len(report.witness)


def test_a_wrong_formula_is_caught_with_the_entry_named():
    d = derive(seed_spec())
    net = d.network
    # The classic slip: the pre-activation Z1 instead of the layer input X in dW2's place -- same shape.
    wrong = [dataclasses.replace(s, expr=net.symbol("Z1").T * gradient_symbol(net, "Z2")) if s.name == "W2" else s
             for s in d.backward]
    report = dataclasses.replace(d, backward=tuple(wrong), _reports={}).verify()
    assert not report.ok
    failed = {c.name: c for c in report.checks if not c.ok}
    # Both the composed formula and layer 2's local step use the wrong expression; nothing else fails.
    assert set(failed) == {"dL/dW2", "local: layer 2"}
    assert "entry (" in failed["dL/dW2"].detail


def test_a_misplaced_transpose_is_caught_as_a_shape_error():
    d = derive(seed_spec())
    net = d.network
    wrong = [dataclasses.replace(s, expr=gradient_symbol(net, "Z1").T * net.inputs["X"]) if s.name == "W1" else s
             for s in d.backward]
    report = dataclasses.replace(d, backward=tuple(wrong), _reports={}).verify()
    failed = [c for c in report.checks if not c.ok]
    assert [(c.name, c.method) for c in failed] == [("dL/dW1", "shape")]


def test_printers_use_the_lecture_notation():
    d = derive(seed_spec())
    assert latex(d.step("W1").expr) == r"X^{\top} \delta^{[1]}"
    assert latex(d.step("Z1").expr) == r"\frac{\partial L}{\partial a^{[1]}} \odot \operatorname{ReLU}'\left(Z^{[1]}\right)"
    assert numpy_code(d.step("b1").expr) == "dZ1.sum(axis=0, keepdims=True)"


def test_render_markdown_states_the_conventions():
    text = derive(seed_spec()).render("markdown")
    assert "batch-first" in text and "ReLU'(0) = 1" in text and "half_sse" in text
    assert r"X^{\top} \delta^{[1]}" in text


def test_generated_module_runs_its_demo_and_gradient_check(tmp_path):
    path = tmp_path / "backprop.py"
    path.write_text(derive(seed_spec()).render("numpy"))
    result = subprocess.run([sys.executable, str(path)], check=False, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "gradient check" in result.stdout


def test_generated_module_matches_direct_sympy_gradients(tmp_path):
    import importlib.util

    spec = seed_spec()
    path = tmp_path / "seed_backprop.py"
    path.write_text(derive(spec).render("numpy"))
    module_spec = importlib.util.spec_from_file_location("seed_backprop", path)
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    values, direct = _sympy_oracle(spec, N=4, seed=3)
    params = {k: v for k, v in values.items() if k[0] in "Wb"}
    _, cache = module.forward(params, values["X"])
    grads = module.backward(params, cache, values["Y_true"])
    for name in [*params, "X"]:
        np.testing.assert_allclose(grads[name], direct[name], rtol=1e-9, atol=1e-12, err_msg=name)
    assert module.gradient_check() < 1e-6
