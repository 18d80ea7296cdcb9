"""The pipeline stage by stage, and the public API, against independent oracles.

The oracle here is plain SymPy: an explicit network with the real activation functions, differentiated with
``sympy.diff`` and evaluated at a random point, independent of our rule table's derivatives and of the
verifier.
"""

import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from oracles import symbolic_gradients, targets

from symbackprop import derive, load_spec, seed_spec
from symbackprop.derivation import gradient_symbol
from symbackprop.evaluate import Evaluator, Float64Backend
from symbackprop.expressions import Elementwise
from symbackprop.network import build_network
from symbackprop.printing import latex, numpy_code, text


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
    """Random float64 inputs for every matrix of the network, targets the loss accepts, 0/1 masks."""
    rng = np.random.default_rng(seed)
    net = build_network(spec)
    sizes = net.sizes(N, spec.sizes)
    values = {name: rng.standard_normal(tuple(int(d.xreplace(sizes)) for d in symbol.shape))
              for name, symbol in net.inputs.items()}
    values.update({name: (rng.random(values[name].shape) < 0.5).astype(float) for name in net.masks})
    T = targets(spec, rng, N)
    values["Y_true"] = T if spec.layout == "batch-first" else T.T
    return values


def _sympy_oracle(spec, N, seed=0):
    """Direct gradients of the loss written out independently (tests/oracles.py), at a random point."""
    values = _random_values(spec, N, seed)
    names = [name for name in build_network(spec).inputs if name != "Y_true" and not name.startswith("M")]
    return values, symbolic_gradients(spec, values, names)


@pytest.mark.parametrize("path", ["tests/specs/seed.toml", "tests/specs/sigmoid_mse_column.toml",
                                  "tests/specs/softmax_ce_2_classes.toml",
                                  "tests/specs/batchnorm_after_dense.toml", "tests/specs/skip_two_layers_column.toml",
                                  # inverted dropout's 1/(1-p) scale (p = 0.5 and the column layout's p)
                                  "tests/specs/dropout_hidden.toml", "tests/specs/dropout_column.toml"])
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
    assert "batch-first" in text and r"\operatorname{ReLU}'(0) = 1" in text and "half_sse" in text
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


DENSE = [path for path in sorted(Path(__file__).parent.joinpath("specs").glob("*.toml"))
         if all(layer.kind == "dense" and layer.activation != "prelu" and layer.bias
                for layer in load_spec(path).layers) and not load_spec(path).loss.l2]


@pytest.mark.parametrize("path", DENSE, ids=[path.stem for path in DENSE])
def test_dense_networks_keep_the_documented_formulas(path):
    """The layer registry gives every dense network exactly the formulas of the conventions (the README), built
    here from them: dZ = dA ⊙ f'(Z) (dA for the identity), dW = Aᵀ δ, db = 1ᵀ δ, dA_prev = δ Wᵀ (batch-first);
    dW = δ Aᵀ, db = δ 1, dA_prev = Wᵀ δ (column)."""
    d = derive(path)
    net, spec = d.network, d.spec
    bf = net.batch_first
    for l, layer in enumerate(spec.layers, start=1):
        A, W = net.symbol(net.layer_input(l)), net.inputs[f"W{l}"]
        delta, dA = gradient_symbol(net, f"Z{l}"), gradient_symbol(net, net.activation_name(l))
        f_prime = Elementwise(layer.activation, net.symbol(f"Z{l}"), 1, tuple(layer.params.items()))
        expected = {
            f"Z{l}": dA if layer.activation == "identity" else sp.hadamard_product(dA, f_prime),
            f"W{l}": A.T * delta if bf else delta * A.T,
            f"b{l}": sp.OneMatrix(1, net.N) * delta if bf else delta * sp.OneMatrix(net.N, 1),
            net.layer_input(l): delta * W.T if bf else W.T * delta,
        }
        for name, expr in expected.items():
            assert d.step(name).expr == expr, (name, d.step(name).expr)


def test_the_readme_shows_the_batch_norm_derivation_as_derived():
    readme = (Path(__file__).parent.parent / "README.md").read_text(encoding="utf-8")
    block = readme.split("the derivation reads:\n\n```text\n", 1)[1].split("```", 1)[0]
    d = derive(Path(__file__).parent / "specs" / "batchnorm_after_dense.toml")
    shown = [line.split(" = ", 1) for line in block.splitlines()]
    names = [lhs.strip() for lhs, _ in shown if lhs.strip()]
    for (lhs, rhs), name in zip(shown, names):
        assert rhs.strip() == text(d.step(name[4:]).expr), name
    compact = block.splitlines()[-1].split(" = ", 1)[1].replace("(compact)", "").strip()
    assert compact == text(d.step("a1").alternatives[0].expr)
