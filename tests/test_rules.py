"""Every rule-table entry against an independent oracle: sympy.diff of its own forward rule, and NumPy forms
against the SymPy forms at sample points (including |z| ~ 1000 for stability)."""

import math

import numpy as np
import pytest
import sympy as sp

from symbackprop.evaluate import Float64Backend, _numpy_function
from symbackprop.rules import ACTIVATIONS, LOSSES
from symbackprop.verify import check_activation_rule

PARAMS = [(name, rule.parameters()) for name, rule in ACTIVATIONS.items()]
PARAMS += [("leaky_relu", {"alpha": 0.2}), ("elu", {"alpha": 0.5}),
           ("relu", {"relu_grad_at_zero": 0}), ("relu", {"relu_grad_at_zero": 0.5})]


@pytest.mark.parametrize("name, params", PARAMS)
def test_derivative_rule_is_the_derivative_of_the_forward_rule(name, params):
    assert check_activation_rule(name, params).ok


def test_a_wrong_derivative_rule_is_caught(monkeypatch):
    rule = ACTIVATIONS["tanh"]
    wrong = rule.__class__(**{**rule.__dict__, "derivative": lambda z, p: 1 - sp.tanh(z)})
    monkeypatch.setitem(ACTIVATIONS, "tanh", wrong)
    assert not check_activation_rule("tanh", {}).ok


@pytest.mark.parametrize("name, params", PARAMS)
@pytest.mark.parametrize("order", [0, 1])
def test_numpy_forms_match_the_sympy_forms(name, params, order):
    rule = ACTIVATIONS[name]
    z = sp.Symbol("z", real=True)
    symbolic = (rule.forward if order == 0 else rule.derivative)(z, params)
    points = np.array([-3.1, -1.2, -0.3, 0.4, 1.7, 2.9])
    numeric = _numpy_function(name, order, tuple(sorted(params.items())))(points)
    expected = [float(symbolic.subs(z, sp.Float(p)).evalf(30)) for p in points]
    np.testing.assert_allclose(numeric, expected, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("at_zero", [0, 0.5, 1])
def test_relu_derivative_at_zero_follows_the_setting(at_zero):
    value = _numpy_function("relu", 1, (("relu_grad_at_zero", at_zero),))(np.zeros(3))
    assert np.all(value == at_zero)
    z = sp.Symbol("z")
    assert ACTIVATIONS["relu"].derivative(z, {"relu_grad_at_zero": at_zero}).subs(z, 0) == sp.nsimplify(at_zero)


@pytest.mark.parametrize("name, params", PARAMS)
@pytest.mark.parametrize("order", [0, 1])
def test_numpy_forms_are_stable_far_from_zero(name, params, order):
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        values = _numpy_function(name, order, tuple(sorted(params.items())))(np.array([-1000.0, 1000.0]))
    assert np.all(np.isfinite(values))


@pytest.mark.parametrize("kind", sorted(LOSSES))
def test_numpy_loss_matches_the_symbolic_definition(kind):
    rule = LOSSES[kind]
    rng = np.random.default_rng(1)
    Y = rng.standard_normal((3, 4))
    T = rng.random((3, 4))
    if rule.targets_are_distributions:
        T = T / T.sum(axis=1, keepdims=True)
    symbolic = rule.value(sp.Matrix(Y).tolist(), sp.Matrix(T).tolist(), sp)
    numeric = Float64Backend().loss(rule, Y, T)
    assert math.isclose(numeric, float(sp.N(symbolic, 30)), rel_tol=1e-12)
