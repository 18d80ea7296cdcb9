"""Every rule-table entry against an independent oracle: sympy.diff of its own forward rule, and NumPy forms
against the SymPy forms at sample points (including |z| ~ 1000 for stability)."""

import math
import types

import numpy as np
import pytest
import sympy as sp
from oracles import _loss

from symbackprop.evaluate import _numpy_function
from symbackprop.rules import (
    ACTIVATIONS,
    FUNCTIONS,
    LOSS_KINDS,
    LossSettings,
    activation_rule,
    numpy_loss_code,
)
from symbackprop.verify import check_activation_rule

PARAMS = [(name, rule.parameters()) for name, rule in {**ACTIVATIONS, **FUNCTIONS}.items() if name not in ("rsqrt", "sqrt")]  # defined for z > 0
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
    rule = activation_rule(name)
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


@pytest.mark.parametrize("kind", LOSS_KINDS)
@pytest.mark.parametrize("reduction", [None, "sum", "batch_mean"])
def test_numpy_loss_matches_the_loss_written_out(kind, reduction):
    """The stable NumPy form of every loss against the definition written entry by entry (tests/oracles.py)."""
    settings = LossSettings(kind) if reduction is None or kind in ("half_sse", "mse") else \
        LossSettings(kind, reduction=reduction, scale=0.5)
    rng = np.random.default_rng(1)
    probabilities = kind in ("bce", "cross_entropy")
    Y = rng.random((3, 4)) * 0.8 + 0.1 if probabilities else rng.standard_normal((3, 4))
    if kind == "nll":
        Y = Y - np.log(np.exp(Y).sum(axis=1, keepdims=True))
    T = np.eye(4)[[0, 3, 1]] if kind == "hinge" else rng.random((3, 4))
    numeric = float(eval(numpy_loss_code(settings), {"np": np, "Y_pred": Y, "Y_true": T}))
    written = float(_loss(types.SimpleNamespace(loss=settings), Y.tolist(), T.tolist(), []))
    assert math.isclose(numeric, written, rel_tol=1e-12)


@pytest.mark.parametrize("kind", LOSS_KINDS)
def test_numpy_loss_is_finite_for_large_scores(kind):
    settings = LossSettings(kind)
    Y = np.array([[-1000.0, 1000.0], [1000.0, -1000.0]])
    if kind in ("bce", "cross_entropy"):
        Y = np.array([[1e-300, 1 - 1e-16], [0.5, 0.5]])
    T = np.array([[0.0, 1.0], [1.0, 0.0]])
    with np.errstate(over="raise", invalid="raise"):
        value = float(eval(numpy_loss_code(settings), {"np": np, "Y_pred": Y, "Y_true": T}))
    assert math.isfinite(value)


def test_every_function_and_its_derivative_typesets(tmp_path):
    """Each rule's f(Z) and f'(Z) as the documents print them, compiled by pdflatex (\\sqrt' once was not)."""
    import shutil
    import subprocess

    from symbackprop.expressions import Elementwise
    from symbackprop.printing import latex

    if not shutil.which("pdflatex"):
        pytest.skip("pdflatex not installed")
    Z = sp.MatrixSymbol("Z1", 2, 2)
    formulas = [latex(Elementwise(name, Z, order)) for name in (*ACTIVATIONS, *FUNCTIONS) for order in (0, 1)]
    body = "\n".join(rf"\[ {formula} \]" for formula in formulas)
    (tmp_path / "f.tex").write_text(r"\documentclass{article}\usepackage{amsmath,amssymb}\begin{document}"
                                    + body + r"\end{document}", encoding="utf-8")
    result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "f.tex"], check=False,
                            cwd=tmp_path, capture_output=True, text=True, errors="replace", timeout=120)
    assert result.returncode == 0, result.stdout[-2000:]
