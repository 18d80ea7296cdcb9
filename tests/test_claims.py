r"""`symbackprop check`: verdicts on written formulas, in every notation, through the API and the CLI.

Expected verdicts here are worked out by hand from the math (shapes from the layout, values from the chain
rule, the ReLU'(0) and loss conventions), not copied from our output; `test_claims_sources.py` decides the
verdicts of the courses' claims with an independent finite-difference oracle instead.
"""

import json
import re
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from symbackprop import check
from symbackprop.claims import Checker, ClaimError, claims_from_text, latex_claims_from_text, numbered_claims
from symbackprop.claims.explain import formula
from symbackprop.cli import main

CLAIMS = Path(__file__).parent / "claims"
SPECS = Path(__file__).parent / "specs"

# The seed lecture's claims (tests/claims/lecture.txt), in file order: (verdict, reason).
LECTURE = [("correct", ""), ("wrong", "shape"), ("correct", ""), ("wrong", "shape"), ("correct", ""),
           ("correct", ""), ("wrong", "shape"), ("correct", ""), ("wrong", "shape"), ("wrong", "shape"),
           ("correct", ""), ("correct", ""), ("correct", ""), ("wrong", "shape"), ("correct", ""),
           ("wrong", "shape")]
# The slides' own LaTeX (tests/claims/lecture.tex), equations in order.
LECTURE_TEX = [("correct", ""), ("wrong", "shape"), ("correct", ""), ("correct", ""), ("correct", ""),
               ("correct", ""), ("wrong", "shape"), ("correct", ""), ("wrong", "shape"), ("correct", ""),
               ("wrong", "shape"), ("correct", ""), ("wrong", "shape"), ("wrong", "shape")]


def net(*layers, inputs=2, loss="half_sse", layout="batch-first"):
    """A spec dict: ``layers`` as (size, activation) or (size, activation, extra keys)."""
    return {"layout": layout, "input": {"size": inputs}, "loss": {"kind": loss},
            "layers": [{"size": size, "activation": act, **(extra[0] if extra else {})}
                       for size, act, *extra in layers]}


TANH = net((3, "tanh"), (2, "identity"))
SIGMOID = net((3, "sigmoid"), (2, "identity"))


@pytest.fixture(scope="module")
def seed():
    return Checker()


@pytest.fixture(scope="module")
def tanh():
    return Checker(TANH)


def test_lecture_claims_get_the_verdicts_they_deserve(seed):
    claims = claims_from_text((CLAIMS / "lecture.txt").read_text())
    assert len(claims) == len(LECTURE) >= 10
    assert [(v.verdict, v.reason) for v in map(seed.check, claims)] == LECTURE


def test_lecture_latex_as_written_on_the_slides(seed):
    claims = latex_claims_from_text((CLAIMS / "lecture.tex").read_text())
    assert len(claims) == len(LECTURE_TEX)
    assert [(v.verdict, v.reason) for v in (seed.check(c, latex=True) for c in claims)] == LECTURE_TEX


@pytest.mark.parametrize("claim, reason, in_detail", [
    ("dL/dW1 = dL/dZ1 @ X.T", "shape", "n1 and n0 differ"),
    ("dL/db2 = dL/dZ2", "shape", "must be 1 x n2"),
    ("dL/dZ2 = dL/da2 @ relu'(Z2)", "shape", "n2 and N differ"),
    (r"\frac{\partial L}{\partial W^{[2]}} = \delta^{[2]} a^{[1]\top}", "shape", "n2 and n1 differ"),
    ("dL/dW2 = a1.T @ dL/da2", "value", "entry"),                      # da2 where dZ2 belongs
    ("dL/da1 = dL/dZ2 @ W2.T * relu'(Z1)", "value", "entry"),           # an extra factor
    (r"\frac{dL}{dW^{[2]}} = a^{[1]T} \frac{\partial L}{\partial a^{[2]}}", "value", "entry"),
    ("dL/dZ1 = dL/da1 * (Z1 > 0)", "convention", "ReLU'(0) = 0"),
    (r"\frac{\partial L}{\partial Z^{[2]}} = \frac{\partial L}{\partial a^{[2]}} \odot (Z^{[2]} > 0)",
     "convention", "ReLU'(0) = 0"),
    ("dL/dY_pred = 2 * (Y_pred - Y_true)", "convention", "2 times dL/dY_pred: right for the loss without the 1/2"),
    ("dL/dW3 = (1/N) * a2.T @ (Y_pred - Y_true)", "convention", "averaged over the N samples"),
    ("dL/dW1 = 2 * X.T @ dL/dZ1", "value", "already carries the loss's scaling"),
    ("dL/dW1 = -X.T @ dL/dZ1", "value", "negative"),
    ("dL/dW1 = 0 * X.T @ dL/dZ1", "value", "zero"),
    ("dL/dX = dL/dZ1 @ W1.T * 3", "value", "3 times"),
])
def test_wrong_claims_with_their_reason(seed, claim, reason, in_detail):
    verdict = seed.check(claim)
    assert (verdict.verdict, verdict.reason) == ("wrong", reason), verdict.text()
    assert in_detail in verdict.detail
    assert verdict.expected


@pytest.mark.parametrize("claim", [
    "dL/dW3 = a2.T @ (Y_pred - Y_true)",
    "dL/db3 = ones(N).T @ (Y_pred - Y_true)",
    "dL/db2 = dL/dZ2.sum(axis=0, keepdims=True)",
    "dL/dZ2 = ((Y_pred - Y_true) @ W3.T) * relu'(Z2)",
    "dL/dW2 = a1.T @ (dL/da2 * (Z2 >= 0))",
    "dL/dZ1 = (dL/dZ2 @ W2.T) * (Z1 >= 0)",
    "da2/dZ2 = (Z2 >= 0)",
    "dZ1 = dA1 * np.heaviside(Z1, 1)",
    "dZ1 = np.where(Z1 >= 0, dA1, 0)",
    "dL/dW1 = X.T @ dL/dZ1 + 0 * W1",
    "dL/dW1 = X.T.T.T @ dL/dZ1",
    "∂L/∂W1 = X.T @ ∂L/∂Z1",
    r"\frac{\partial L}{\partial W^{[3]}} = a^{[2]T}(Y_{pred}-Y_{true})",
    r"\frac{dL}{db^{[1]}} = \mathbf{1}_N^\top \delta^{[1]}",
    r"\frac{\partial Loss}{\partial a^{[1]}} = \delta^{[2]} \cdot W^{T^{[2]}}",
    r"\delta^{[1]} = \delta^{[2]} W^{[2]T} \odot \mathbb{1}_{Z^{[1]} \geq 0}",
])
def test_right_claims(seed, claim):
    verdict = seed.check(claim)
    assert verdict.ok, verdict.text()


def test_conventions_follow_the_spec():
    # A ReLU'(0) = 0 spec (PyTorch's): the lecture's (Z >= 0) is now the convention mismatch.
    spec = SPECS / "relu_grad_at_zero_0.toml"
    assert check("dL/dZ1 = dL/da1 * (Z1 > 0)", spec).ok
    verdict = check("dL/dZ1 = dL/da1 * (Z1 >= 0)", spec)
    assert (verdict.reason, "ReLU'(0) = 1" in verdict.detail) == ("convention", True)
    # A mean-squared-error spec: the lecture's Y_pred - Y_true is right only for a rescaled loss.
    mse = net((3, "tanh"), (2, "identity"), loss="mse")
    verdict = check("dL/dY_pred = Y_pred - Y_true", mse)
    assert verdict.reason == "convention" and "N n_2/2 times" in verdict.detail
    assert check("dL/dY_pred = 2 / (N * n_2) * (Y_pred - Y_true)", mse).ok


def test_a_missing_mean_is_a_convention_whatever_the_loss():
    # Issue 13: softmax_cross_entropy without the 1/N said `value` while half_sse said `convention`.
    spec = net((3, "tanh"), (4, "identity"), loss="softmax_cross_entropy")
    verdict = check("dL/dY_pred = softmax(Y_pred) - Y_true", spec)
    assert (verdict.verdict, verdict.reason) == ("wrong", "convention")
    assert "N times" in verdict.detail and "softmax_cross_entropy" in verdict.detail
    bce = net((3, "tanh"), (4, "identity"), loss="bce_logits")
    verdict = check("dL/dY_pred = (sigmoid(Y_pred) - Y) / m", bce)
    assert (verdict.reason, "n_2 times" in verdict.detail) == ("convention", True)


def test_sigmoid_derivative_written_out_and_column_layout():
    spec = SPECS / "sigmoid_mse_column.toml"
    assert Checker(spec).network.spec.layout == "column"
    assert check("dL/dW1 = dL/dZ1 @ X.T", spec).ok
    assert check("dL/dW1 = X.T @ dL/dZ1", spec).reason == "shape"
    assert check("dL/db1 = sum(dL/dZ1, axis=1)", spec).ok


def test_expected_formula_is_itself_judged_correct(seed):
    for claim in ["dL/dW2 = dL/dZ2 @ a1.T", "dL/dZ1 = dL/da1 * (Z1 > 0)", "dZ1/db1 = 1",
                  r"\frac{dL}{dW^{[1]}} = \frac{dL}{dZ^{[1]}} \frac{dZ^{[1]}}{dW^{[1]}}"]:
        expected = seed.check(claim).expected
        assert ("\\" in expected) == ("\\" in claim)
        assert seed.check(expected).ok, expected


@pytest.mark.parametrize("spec", ["seed.toml", "softmax_ce_4_classes_column.toml", "depth4_mixed.toml",
                                  "custom_input_name.toml", "leaky_relu_alpha_0_2_column.toml",
                                  "elu_alpha_0_5_column.toml", "gelu_mse_column.toml", "softplus_output_mse_column.toml",
                                  "bce_logits_multilabel_silu_column.toml", "relu_grad_at_zero_half.toml",
                                  "width_1_everywhere_column.toml"])
def test_every_formula_of_the_derivation_reads_back_as_correct(spec):
    checker = Checker(SPECS / spec)
    derivation = checker.derivation
    for step in derivation.backward:
        for expr in (step.expr, derivation.gradients[step.name]):
            for as_latex in (False, True):
                text = formula("L", step.name, expr, as_latex, checker.gradient_names)
                assert checker.check(text, as_latex).ok, text
    for lg in derivation.local_gradients:
        assert checker.check(formula(lg.of, lg.wrt, lg.expr, False, checker.gradient_names)).ok


# -- notations -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("claim", [
    "dL/dW2 = a1.T @ dL/dZ2", "dW2 = np.dot(A1.T, dZ2)", "dW2 = A1.T.dot(dZ2)", "dW2 = np.matmul(a1.T, delta2)",
    "dL/dW2 = np.transpose(A1) @ dZ2", "dJ/dW2 = a1.transpose() @ dL/dZ2", "dW2 = A1.T @ dZ2 * 1.0",
    r"\frac{\partial \mathcal{L}}{\partial \mathbf{W}^{(2)}} = \mathbf{a}^{(1)\top} \boldsymbol{\delta}^{(2)}",
    r"\nabla_{W_2} J = A_1^T \delta_2", r"\frac{\partial E}{\partial W^{[2]}} = A^{[1]T} dZ^{[2]}",
    r"dW^{[2]} = A^{[1]T} dZ^{[2]}", r"\frac{\partial C}{\partial w^2} = (a^1)^T \delta^2",
    r"\nabla_{W^{[2]}} L = h^{[1]\top} \cdot \frac{\partial L}{\partial z^{[2]}}",
])
def test_the_same_claim_in_every_notation(tanh, claim):
    verdict = tanh.check(claim)
    assert verdict.ok, verdict.text()


@pytest.mark.parametrize("claim", [
    # tanh' written as 1 - a^2 (issue 13's traceback: an elementwise square), in both syntaxes
    "dL/dZ1 = dL/da1 * (1 - a1 * a1)", "dZ1 = dA1 * (1 - A1**2)", "dZ1 = np.multiply(dA1, 1 - np.power(A1, 2))",
    "dZ1 = dA1 * (1 - np.square(A1))", "dZ1 = dA1 * (1 - np.tanh(Z1) ** 2)", "dZ1 = dA1 * tanh'(Z1)",
    "dZ1 = dA1 * (1 - ((np.exp(Z1) - np.exp(-Z1)) / (np.exp(Z1) + np.exp(-Z1))) ** 2)", "dZ1 = dA1 * g'(Z1)",
    r"\delta^{[1]} = \frac{\partial L}{\partial a^{[1]}} \odot (1 - a^{[1]} \odot a^{[1]})",
    r"\delta^{[1]} = \frac{\partial L}{\partial a^{[1]}} \odot (1 - \tanh^2(Z^{[1]}))",
    r"\delta^{[1]} = \frac{\partial L}{\partial A^{[1]}} * g^{[1]\prime}(Z^{[1]})",
])
def test_tanh_derivative_in_its_usual_forms(tanh, claim):
    verdict = tanh.check(claim)
    assert verdict.ok, verdict.text()


@pytest.mark.parametrize("claim", [
    "dZ1 = dA1 * A1 * (1 - A1)", "dZ1 = dA1 * sigmoid(Z1) * (1 - sigmoid(Z1))", "dZ1 = dA1 * sigmoid_prime(Z1)",
    "dZ1 = dA1 * (1 / (1 + np.exp(-Z1))) * (1 - 1 / (1 + np.exp(-Z1)))",
    "dZ1 = dA1 * np.exp(-Z1) / (1 + np.exp(-Z1)) ** 2", "dZ1 = dA1 * sigmoid(Z1) * sigmoid(-Z1)",
    r"\delta^{[1]} = \frac{\partial L}{\partial a^{[1]}} \odot \sigma(Z^{[1]}) \odot (1 - \sigma(Z^{[1]}))",
    r"\delta^{[1]} = \frac{\partial L}{\partial a^{[1]}} \odot \frac{e^{-Z^{[1]}}}{(1 + e^{-Z^{[1]}})^2}",
])
def test_sigmoid_derivative_in_its_usual_forms(claim):
    verdict = check(claim, SIGMOID)
    assert verdict.ok, verdict.text()


@pytest.mark.parametrize("claim, ok", [
    ("dZ1 = dA1 * A1 * A1", False), ("dZ1 = dA1 * (1 - A1)", False), ("dZ1 = dA1 * sigmoid(Z1) ** 2", False),
    ("dZ1 = dA1 * (1 - sigmoid(Z1)) * (1 - sigmoid(Z1))", False),
])
def test_near_misses_of_the_sigmoid_derivative_are_wrong(claim, ok):
    verdict = check(claim, SIGMOID)
    assert (verdict.verdict, verdict.reason) == ("wrong", "value"), verdict.text()


def test_relu_derivative_in_its_usual_forms(seed):
    for claim in ["dZ1 = dA1 * (Z1 > 0)", "dZ1 = dA1 * np.where(Z1 > 0, 1, 0)", "dZ1 = dA1 * (Z1 > 0).astype(float)",
                  "dZ1 = dA1 * (A1 > 0)", "dZ1 = dA1 * np.heaviside(Z1, 0)", "dZ1 = dA1 * np.sign(A1)"]:
        # ReLU'(0) = 0 in all of them; the seed takes 1
        verdict = seed.check(claim)
        assert (verdict.reason, "ReLU'(0) = 0" in verdict.detail) == ("convention", True), verdict.text()
    for claim in ["dZ1 = dA1 * (Z1 >= 0)", "dZ1 = dA1 * np.where(Z1 >= 0, 1, 0)", "dZ1 = dA1 * (0 <= Z1)",
                  "dZ1 = dA1 * (1 - (Z1 < 0))", "dZ1 = np.maximum(dA1 * (Z1 >= 0), dA1 * (Z1 >= 0))"]:
        assert seed.check(claim).ok, claim


def test_names_the_spec_does_not_have_are_parse_errors_listing_the_names():
    two_layers = Checker(TANH)
    verdict = two_layers.check("dW1 = np.dot(X.T, A3)")
    assert verdict.verdict == "error" and "unknown name 'A3'" in verdict.detail
    assert all(name in verdict.detail for name in ("X", "W1", "b1", "Z1", "a1", "W2", "Y_pred", "Y_true", "n_2"))
    assert two_layers.check("dW3 = X").verdict == "error"
    assert "which" not in two_layers.check(r"\frac{\partial L}{\partial W} = X").detail
    assert two_layers.check(r"\frac{\partial L}{\partial W} = X").verdict == "error"
    assert two_layers.check("dL/dY_true = Y").verdict == "error"  # the targets have no gradient
    # A2 is the last layer's output here, so it is the prediction.
    assert two_layers.parse("dL/dA2 = A2 - Y").wrt == "Y_pred"


# -- whose network ------------------------------------------------------------------------------------------

def test_a_claim_right_only_because_a_width_is_one_says_so():
    one_output = net((3, "tanh"), (1, "identity"), loss="bce_logits", layout="column")
    verdict = check("dL/dZ2 = (sigmoid(Z2) - Y_true) / N", one_output)
    assert verdict.ok and "only because n_2 = 1" in verdict.note
    verdict = check("db2 = np.sum(dZ2, axis=1)", one_output)  # 1-D: fits a column only when it has one entry
    assert verdict.ok and "only because n_2 = 1" in verdict.note and "keepdims" in verdict.note
    assert check("db2 = np.sum(dZ2, axis=1, keepdims=True)", one_output).note == ""


def test_a_transpose_that_happens_to_fit_is_named():
    square = net((3, "tanh"), (3, "tanh"), (2, "identity"))
    for claim in ["dL/dW2 = (a1.T @ dL/dZ2).T", "dL/dW2 = dL/dZ2.T @ a1"]:
        verdict = check(claim, square)
        assert (verdict.verdict, verdict.reason) == ("wrong", "shape"), verdict.text()
        assert "only because n_1 = n_2" in verdict.detail and "transpose of dL/dW2" in verdict.detail
    assert check("dL/dW2 = (a1.T @ dL/dZ2)", square).ok


def test_widths_too_large_for_exact_evaluation_keep_their_pattern(tmp_path):
    wide = net((784, "relu"), (784, "relu"), (10, "identity"), inputs=784, loss="softmax_cross_entropy")
    checker = Checker(wide)
    assert "n_0 = 2 (not 784)" in checker.substitution and checker.widths == (2, 2, 2, 10)
    assert checker.check("dW1 = X.T @ dZ1").ok
    assert checker.check("dL/dY_pred = (softmax(Y_pred) - Y) / N").ok
    assert checker.check("dW2 = dZ2.T @ A1").reason == "shape"
    # a width written as a number keeps its value, so the claim is judged on this network's sizes
    mse = Checker(net((100, "relu"), (20, "identity"), inputs=784, loss="mse"))
    assert mse.check("dL/dY_pred = 2/(N*20) * (Y_pred - Y)").ok
    assert mse.check("dL/dY_pred = 2/(N*21) * (Y_pred - Y)").verdict == "wrong"
    result = CliRunner().invoke(main, ["check", "--spec", _toml(wide, tmp_path / "wide.toml"), "dW1 = X.T @ dZ1"])
    assert result.exit_code == 0 and "not 784" in result.stderr


def _toml(spec, path):
    """``spec`` written as a TOML file at ``path`` (for the command line)."""
    lines = [f'layout = "{spec["layout"]}"', "[input]", f'size = {spec["input"]["size"]}']
    for layer in spec["layers"]:
        lines += ["[[layers]]", *(f"{k} = {json.dumps(v)}" for k, v in layer.items())]
    lines += ["[loss]", f'kind = "{spec["loss"]["kind"]}"']
    path.write_text("\n".join(lines) + "\n")
    return str(path)


# -- exact verdicts (issue 15) -------------------------------------------------------------------------------

def test_verdicts_are_exact_on_deep_networks():
    deep_sigmoid = net(*[(3, "sigmoid")] * 60, inputs=3)
    checker = Checker(deep_sigmoid)
    verdict = checker.check("dL/dW1 = 0 * X.T @ dL/dZ1")  # float64 underflows here; exact arithmetic does not
    assert verdict.verdict == "wrong"
    assert checker.check("dL/dW1 = X.T @ dL/dZ1").ok
    start = time.perf_counter()
    identity = Checker(net(*[(3, "identity")] * 200, inputs=3))
    assert identity.check("dL/dW1 = X.T @ dL/dZ1").ok  # float64 overflows to nan here
    assert identity.check("dL/dW1 = X.T @ dL/da1").ok
    assert identity.check("dL/dW1 = 2 * X.T @ dL/dZ1").verdict == "wrong"
    assert time.perf_counter() - start < 30


def test_an_identity_the_exact_semantics_lack_is_undecided_not_wrong(tanh, tmp_path):
    claim = "dZ1 = dA1 * (1 - ((1 - np.exp(-2 * Z1)) / (1 + np.exp(-2 * Z1))) ** 2)"  # tanh via exp(-2z)
    verdict = tanh.check(claim)
    assert verdict.verdict == "undecided" and "float64 agrees at random points" in verdict.detail
    assert tanh.check("dZ1 = dA1 * (1 - ((1 - np.exp(-2 * Z1)) / (1 + np.exp(-2 * Z1))))").verdict == "wrong"
    result = CliRunner().invoke(main, ["check", "--spec", _toml(TANH, tmp_path / "tanh.toml"), claim])
    assert result.exit_code == 2 and "UNDECIDED" in result.output


# -- parse errors, hostile input (issue 15) ------------------------------------------------------------------

@pytest.mark.parametrize("claim, message", [
    ("dL/dW1 = " + "(" * 200 + "X.T @ dL/dZ1" + ")" * 200, "too deeply nested"),
    (r"\frac{\partial L}{\partial W^{[1]}} = " + "{" * 300 + r"X^\top \delta^{[1]}" + "}" * 300, "too deeply nested"),
    ("dL/dW1 = X.T @ dL/dZ1 / 0", "division by zero"),
    ("dL/dW1 = X.T @ dL/dZ1 / (N - N)", "division by zero"),
    (r"\frac{\partial L}{\partial W^{[1]}} = \frac{X^\top \delta^{[1]}}{0}", "division by zero"),
    (r"\frac{\partial L}{\partial W^{[1]}} = \frac{1}{m - m} X^\top \delta^{[1]}", "division by zero"),
    ("dL/db1 = ones(-1).T @ dL/dZ1", "positive whole number"),
    ("dL/db1 = ones(1.5).T @ dL/dZ1", "positive whole number"),
    ("dL/db1 = np.ones((N, 0)).T @ dL/dZ1", "positive whole number"),
    ("dL/dY_pred = softmax(Y_pred, axis=x)", "axis=0, axis=1"),
    ("dL/dW1 = X.T @ dL/dZ1 ** 0.25", "whole or half powers"),
    ("dL/dW1 = np.power(X, N)", "whole or half powers"),
    ("dL/dW1 = X[0]", "indexing"),
    ("dL/dW1 = X.T @@ dL/dZ1", "expected a name"),
    ("dL/dW1 = X.T @ dL/dZ1 = 2", "end of the claim"),
    ("dL/dZ1 = dL/da1 * sum(Z1, axis=0, axis=1)", "once each"),
    ("dL/dW1 = X.T @ erf(dL/dZ1)", "unknown function"),
])
def test_hostile_claims_are_parse_errors_with_a_column(seed, claim, message):
    verdict = seed.check(claim)
    assert verdict.verdict == "error" and message in verdict.detail, verdict.text()
    assert verdict.column is not None and 1 <= verdict.column <= len(claim)
    with pytest.raises(ClaimError):
        seed.parse(claim)


def test_a_run_of_unary_signs_is_read_without_recursion(seed):
    assert seed.check("dL/dW1 = " + "-" * 2000 + "X.T @ dL/dZ1").ok
    assert seed.check("dL/dW1 = " + "-" * 2001 + "X.T @ dL/dZ1").reason == "value"
    assert seed.check("dL/dW1 = " + "- " * 1500 + "X.T @ dL/dZ1").ok


def test_division_by_zero_inside_the_values_is_a_verdict(seed):
    verdict = seed.check("dL/dW1 = X.T @ (dL/dZ1 / (Z1 - Z1))")
    assert (verdict.verdict, verdict.reason) == ("wrong", "value") and "division by zero" in verdict.detail
    assert seed.check("dL/dW1 = X.T @ np.log(0 * dL/dZ1)").verdict == "wrong"


def test_parse_errors_name_the_column_and_what_was_expected(seed):
    with pytest.raises(ClaimError, match=r"column 18: expected a name.*found '@'"):
        seed.parse("dL/dW1 = dL/dZ1 @@ X.T")
    with pytest.raises(ClaimError, match="expected '\\)'"):
        seed.parse("dL/dW1 = X.T @ (dL/dZ1")
    with pytest.raises(ClaimError, match="unknown name 'Q7'"):
        seed.parse("dL/dW1 = X.T @ Q7")
    with pytest.raises(ClaimError, match="column 1: unknown name 'W9'"):
        seed.parse("dL/dW9 = X")
    with pytest.raises(ClaimError, match="column"):
        seed.parse(r"\frac{\partial L}{\partial W^{[1]}} = X^{\top \delta^{[1]}")


# -- the command line --------------------------------------------------------------------------------------

def test_cli_exit_codes_and_text():
    runner = CliRunner()
    ok = runner.invoke(main, ["check", "dL/dW1 = X.T @ dL/dZ1"])
    assert ok.exit_code == 0 and "1 of 1 claims correct" in ok.output
    wrong = runner.invoke(main, ["check", "--file", str(CLAIMS / "lecture.txt")])
    assert wrong.exit_code == 1 and "9 of 16 claims correct (7 wrong)" in wrong.output
    assert "expected: dL/dW1 = X.T @ dL/dZ1" in wrong.output
    bad = runner.invoke(main, ["check", "dL/dW1 = X.T @"])
    assert bad.exit_code == 2 and "expected a name" in bad.output and "argument 1, column 15" in bad.output
    both = runner.invoke(main, ["check", "dL/dW1 = X.T @", "dL/db1 = dL/dZ1"])
    assert both.exit_code == 1 and "0 of 2 claims correct (1 wrong, 1 could not be parsed)" in both.output
    assert runner.invoke(main, ["check"]).exit_code == 2


def test_one_bad_line_does_not_cancel_the_others(tmp_path):
    path = tmp_path / "claims.txt"
    path.write_text("# my notes\ndL/dW1 = X.T @ dL/dZ1\n\n   dL/dW2 = a1.T @@ dL/dZ2   # typo\n"
                    "dL/db1 = dL/dZ1\ndW2 = np.dot(A1.T, dZ2\ndX = dZ1 @ W1.T\n")
    result = CliRunner().invoke(main, ["check", "--file", str(path)])
    assert result.exit_code == 1
    assert "claims.txt, line 4, column 19: expected a name" in result.output
    assert "claims.txt, line 6, column" in result.output
    assert "2 of 5 claims correct (1 wrong, 2 could not be parsed)" in result.output
    assert [s.line for s in numbered_claims(path.read_text())] == [2, 4, 5, 6, 7]
    only_errors = tmp_path / "errors.txt"
    only_errors.write_text("dL/dW1 = X.T @ dL/dZ1\ndW1 = (\n")
    assert CliRunner().invoke(main, ["check", "--file", str(only_errors)]).exit_code == 2


def test_a_file_mixing_notations_is_read_line_by_line():
    result = CliRunner().invoke(main, ["check", "--file", str(CLAIMS / "mixed.txt")])
    claims = claims_from_text((CLAIMS / "mixed.txt").read_text())
    assert result.exit_code == 1 and f"of {len(claims)} claims correct" in result.output
    assert "ERROR" not in result.output and "\\frac" in result.output and "np.dot" in result.output
    # The README shows this run; it must stay what the command prints.
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    shown = re.split(r"\$ symbackprop check --file tests/claims/mixed\.txt[^\n]*\n", readme, maxsplit=1)[1]
    shown = shown.split("\n$ ", 1)[0]
    assert shown == result.output.rstrip("\n")


def test_claims_files_are_read_with_a_size_limit_and_as_utf8(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["check", "--file", "/dev/zero"])
    assert result.exit_code == 2 and "/dev/zero: is a character device, not a regular file" in result.stderr
    big = tmp_path / "big.txt"
    big.write_text("dL/dW1 = X.T @ dL/dZ1\n" * 60_000)
    result = runner.invoke(main, ["check", "--file", str(big)])
    assert result.exit_code == 2 and f"{big}: larger than 1 MiB, the limit for input files" in result.stderr
    assert result.output.count("\n") == 1  # one line, and no claim judged
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"dL/dW1 = X.T @ dL/dZ1\n\xff\xfe oops\n")
    result = runner.invoke(main, ["check", "--file", str(binary)])
    assert result.exit_code == 2 and "not UTF-8" in result.stderr and "line 2" in result.stderr
    latin = tmp_path / "latin.tex"
    latin.write_bytes("$$\\frac{dL}{dX} = 1$$ % caf\u00e9".encode("latin-1"))
    assert runner.invoke(main, ["check", "--latex", str(latin)]).exit_code == 2
    assert runner.invoke(main, ["check", "--file", str(tmp_path / "missing.txt")]).exit_code == 2


def test_cli_json_and_latex_file():
    result = CliRunner().invoke(main, ["check", "--json", "--latex", str(CLAIMS / "lecture.tex"),
                                       "dL/db1 = dL/dZ1"])
    assert result.exit_code == 1
    verdicts = json.loads(result.output)
    assert len(verdicts) == len(LECTURE_TEX) + 1
    assert all(set(v) >= {"claim", "verdict", "reason", "expected", "detail"} for v in verdicts)
    first = verdicts[0]
    assert (first["claim"], first["verdict"], first["reason"], first["expected"], first["source"]) == (
        "dL/db1 = dL/dZ1", "wrong", "shape", "dL/db1 = dL/dZ1.sum(axis=0, keepdims=True)", "argument 1")
    assert all(v["source"].endswith("lecture.tex") and v["line"] >= 2 for v in verdicts[1:])


def test_latex_file_formats():
    text = "% comment\n\\[ \\frac{dL}{dX} = \\delta^{[1]} W^{[1]T} \\]\n$$a = b$$ and $\\frac{dL}{dW} = 1$"
    assert latex_claims_from_text(text) == [r"\frac{dL}{dX} = \delta^{[1]} W^{[1]T}", "a = b",
                                            r"\frac{dL}{dW} = 1"]
    assert latex_claims_from_text("\\frac{dL}{dX} = 1\n\n\\frac{dL}{dW} = 2\n") == [r"\frac{dL}{dX} = 1",
                                                                                 r"\frac{dL}{dW} = 2"]


def test_latex_documents_are_read_as_latex_reads_them():
    # An escaped dollar starts no math, a comment is no claim (not even one inside a formula), and the
    # display environments (equation, align with its rows) hold claims like $...$ does.
    from symbackprop.claims import numbered_latex_claims

    text = ("Each costs \\$5, and a \\textbf{bold $x = 1$} aside.\n"
            "% $\\frac{\\partial L}{\\partial W^{[1]}} = 0$\n"
            "\\begin{equation}\n\\frac{\\partial L}{\\partial W^{[2]}} = a^{[1]\\top} \\delta^{[2]} % a note\n"
            "\\end{equation}\n"
            "\\begin{align*}\n\\frac{\\partial L}{\\partial b^{[2]}} &= \\mathbf{1}_N^\\top \\delta^{[2]} \\\\\n"
            "\\frac{\\partial L}{\\partial b^{[1]}} &= \\mathbf{1}_N^\\top \\delta^{[1]}\n\\end{align*}\n")
    found = [(source.text, source.line) for source in numbered_latex_claims(text)]
    assert found == [("x = 1", 1), (r"\frac{\partial L}{\partial W^{[2]}} = a^{[1]\top} \delta^{[2]}", 3),
                     (r"\frac{\partial L}{\partial b^{[2]}} = \mathbf{1}_N^\top \delta^{[2]}", 6),
                     (r"\frac{\partial L}{\partial b^{[1]}} = \mathbf{1}_N^\top \delta^{[1]}", 6)]


# -- the Python API ----------------------------------------------------------------------------------------

def test_python_api_takes_one_claim_or_a_list_and_presets_by_name():
    assert check("dL/dW1 = X.T @ dL/dZ1").verdict == "correct"
    assert check("dL/dW1 = X.T @ dL/dZ1", spec="seed").ok
    verdicts = check(["dL/dW1 = X.T @ dL/dZ1", "dL/dW1 = X.T @", "dL/db1 = dL/dZ1"], spec="seed")
    assert [v.verdict for v in verdicts] == ["correct", "error", "wrong"]
    assert verdicts[1].column == 15 and verdicts[1].to_dict()["column"] == 15


def test_a_local_gradient_that_does_not_exist(seed):
    verdict = seed.check("dZ2/db1 = 1")
    assert (verdict.verdict, verdict.reason) == ("wrong", "value") and "does not depend directly" in verdict.detail
    assert verdict.expected == "dZ1/db1 = ones(N).T"


# -- a verdict holds for every size -------------------------------------------------------------------------------

def test_a_term_that_vanishes_only_at_some_batch_sizes_does_not_make_a_claim_correct():
    """(N - a) (N - b) X^T dZ1 vanishes at two batch sizes; a judge that always used the same two would call the
    claim correct for the pair it uses. The truth, dW1 = X^T dZ1, is independent of N."""
    checker = Checker()
    verdicts = [checker.check(f"dL/dW1 = X.T @ dL/dZ1 + (N - {a}) * (N - {b}) * X.T @ dL/dZ1").verdict
                for a in range(3, 12) for b in range(a + 1, 13)]
    assert verdicts == ["wrong"] * len(verdicts)
    assert checker.check("dL/dW1 = X.T @ dL/dZ1 + (N - N) * X.T @ dL/dZ1").verdict == "correct"


def test_the_only_because_note_names_the_size_that_makes_the_difference():
    checker = Checker()  # widths 2, 3, 2, 1
    assert checker.check("dL/dW1 = X.T @ dL/dZ1 * n_2 / 2").note.endswith("only because n_2 = 2")
    assert checker.check("dL/dW1 = X.T @ dL/dZ1 * n_0 / n_2").note.endswith("only because n_0 = n_2")
    assert "only because n_3 = 1" in checker.check("dL/db3 = np.sum(Y_pred - Y_true)").note


def test_a_claim_right_only_for_targets_that_sum_to_one_says_so_in_its_note_and_json():
    spec = str(SPECS / "softmax_ce_4_classes_column.toml")  # softmax cross-entropy: targets need not sum to 1
    result = CliRunner().invoke(main, ["check", "--json", "--spec", spec,
                                       "dY_pred = (softmax(Y_pred, axis=0) - Y_true) / N",
                                       ("dY_pred = (softmax(Y_pred, axis=0) * np.sum(Y_true, axis=0, keepdims=True)"
                                       " - Y_true) / N")])
    short, general = json.loads(result.output)
    assert short["verdict"] == general["verdict"] == "correct"
    assert short["assumes"] == "targets_sum_to_one" and "targets sum to 1" in short["note"]
    assert "assumes" not in general and "note" not in general
    text = CliRunner().invoke(main, ["check", "--spec", spec, "dY_pred = (softmax(Y_pred, axis=0) - Y_true) / N"])
    assert "note: correct when each sample's targets sum to 1" in text.output


@pytest.mark.parametrize("claim, verdict, words", [
    # Nielsen and Ng count back from the last layer: L is 3 in the seed network.
    (r"\delta^{[L-1]} = \delta^{[L]} W^{[L]T} \odot g'(Z^{[L-1]})", "correct", ""),
    (r"dW^{[3]} = a^{[L-1]T} \delta^{[3]}", "correct", ""),
    (r"dW^{[3]} = a^{L-1 T} \delta^{L}", "correct", ""),
    (r"dW^{[2]} = a^{[L-1]T} \delta^{[2]}", "wrong", ""),  # a2 is not a1: read as written, so wrong
    (r"dW^{[1]} = X^{T} \delta^{[L-5]}", "error", "layer L-5 does not exist"),
    (r"dW^{3} = (a^{l})^T \delta^{3}", "error", "a general layer index ^{l}"),
    (r"dW^{[3]} = a^{[2]T} \delta^{[l+1]}", "error", "a general layer index ^{l+1}"),
    (r"dW^{[3]} = a^{[3-1]T} \delta^{[3]}", "error", "a layer superscript is a number, L or L-1"),
])
def test_a_layer_written_as_an_expression_is_read_faithfully_or_refused(claim, verdict, words):
    result = Checker().check(claim)
    assert result.verdict == verdict, result.text()
    assert words in result.detail


def test_a_latex_homework_with_its_forward_pass_is_judged_line_by_line():
    """The loss and the forward equations are claims too: judged against the forward pass, not parse errors."""
    result = CliRunner().invoke(main, ["check", "--json", "--latex", str(CLAIMS / "homework.tex")])
    verdicts = {v["claim"].split(" =")[0]: v["verdict"] for v in json.loads(result.output)}
    assert verdicts == {"L": "correct", "Z^{[1]}": "correct", "a^{[1]}": "correct", "Z^{[2]}": "correct",
                        "Y_{pred}": "wrong",  # the output's bias b^{[3]} is left out
                        r"\delta^{[3]}": "correct", "dW3": "correct", "db1": "correct", r"\delta^{[L-1]}": "correct"}


@pytest.mark.parametrize("claim, verdict", [
    ("Z1 = X @ W1 + b1", "correct"),
    ("a1 = np.maximum(0, Z1)", "correct"),
    ("A1 = np.maximum(Z1, 0)", "correct"),
    ("Z2 = W2 @ a1 + b2", "wrong"),
    ("Y_pred = a2 @ W3", "wrong"),
    ("L = 0.5 * np.sum((Y_pred - Y_true)**2)", "correct"),
    ("L = np.mean((Y_pred - Y_true)**2)", "wrong"),
    ("J = 0.5 * np.sum((Y_hat - Y)**2)", "correct"),
])
def test_a_forward_definition_is_judged_against_the_forward_pass(claim, verdict):
    assert Checker().check(claim).verdict == verdict


@pytest.mark.parametrize("claim, verdict, reason", [
    ("da1 = da2 * M2 * M2 * 2", "correct", ""),                 # a 0/1 mask times itself is the mask
    ("dA1 = dA2 * D2 * D2 / keep_prob", "correct", ""),          # Ng's notation for the same
    ("dZ1 = da1 * (a2 > 0)", "wrong", "convention"),            # ReLU's mask read off the dropout's output: right
    ("dZ1 = da2 * M2 * 2 * (a2 > 0)", "wrong", "convention"),   # but for ReLU'(0), 0 here where the spec takes 1
    ("da1 = da2 * M2 * M2", "wrong", "value"),
])
def test_dropout_masks_are_0_1_matrices(claim, verdict, reason):
    result = Checker(SPECS / "dropout_hidden.toml").check(claim)
    assert (result.verdict, result.reason) == (verdict, reason), result.text()


def test_an_exact_cancellation_is_decided():
    """CS231n's SVM gradient without margins[y] = 0: the correct class's margin is exactly 1 > 0, and its +1 in
    the indicator cancels the +1 it adds to the row's count. Class labels are one-hot at the judging points."""
    margins = "(Y_pred - np.sum(Y_pred * Y, axis=1, keepdims=True) + 1 > 0)"
    claim = f"dL/dY_pred = ({margins} - Y * np.sum({margins}, axis=1, keepdims=True)) / N"
    assert Checker(SPECS / "loss_cs231n_svm_l2.toml").check(claim).verdict == "correct"


@pytest.mark.parametrize("claim", ["dL/dgamma2 = row_repeat(np.diag(xhat2.T @ da2), 1)",  # nerva, a 1-D diag
                                   "dL/dgamma2 = np.diag(xhat2.T @ da2)", "dL/dbeta2 = np.sum(da2, axis=0)"])
def test_numpy_1d_results_are_read_as_numpy_reads_them(claim):
    assert Checker(SPECS / "batchnorm_after_dense.toml").check(claim).verdict == "correct"


@pytest.mark.parametrize("right, verdict", [
    # annotations and spacing that are no part of the math: read as if absent
    (r"X^T \delta^{[1]} \label{eq:dw1}", "correct"), (r"X^T \delta^{[1]} \tag{3}", "correct"),
    (r"X^T \delta^{[1]} \nonumber", "correct"), (r"X^T \delta^{[1]} % by the chain rule", "correct"),
    (r"\displaystyle X^T \, \delta^{[1]}", "correct"), (r"\big( X^T \big) \delta^{[1]}", "correct"),
    (r"\mathbf{X}^\intercal \boldsymbol{\delta}^{[1]}", "correct"),
    # decorations and operators that would change the meaning: refused, never dropped
    (r"\tilde{X}^T \delta^{[1]}", "error"), (r"\bar{X}^T \delta^{[1]}", "error"),
    (r"\hat{X}^T \delta^{[1]}", "error"), (r"X^T \otimes \delta^{[1]}", "error"),
    (r"\underbrace{X^T}_{a} \delta^{[1]}", "error"), (r"X^T \delta^{[1]}_{ij}", "error"),
    (r"X^T \delta^{[1]}!", "error"),
])
def test_every_latex_construct_is_read_faithfully_or_refused(right, verdict):
    assert Checker().check(r"\frac{\partial L}{\partial W^{[1]}} = " + right).verdict == verdict


@pytest.mark.parametrize("claim, verdict", [
    ("dW1 = X.T @ dZ1  # the first layer", "correct"), ("dW1 = X.T @ dZ1;", "correct"),
    ("dW1 = X.T @ dZ1; db1 = 0", "error"), ("dW1 = np.einsum('ni,nj->ij', X, dZ1)", "error"),
    ("dW1 = X.T @ dZ1.reshape(-1, 3)", "error"), ("dW1 = X.T @ dZ1[0]", "error"),
    ("dW1 = X.T @ dZ1 if True else 0", "error"), ("dW1 = np.dot(X.T, dZ1, out=None)", "error"),
])
def test_every_numpy_construct_is_read_faithfully_or_refused(claim, verdict):
    assert Checker().check(claim).verdict == verdict
