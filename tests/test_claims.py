"""`symbackprop check`: verdicts on written formulas, in both syntaxes, through the API and the CLI.

Each expected verdict below is worked out by hand from the math (shapes from the layout, values from the
chain rule), not copied from our output; correct gradient claims are also checked against central finite
differences of an independent NumPy forward pass.
"""

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from symbackprop import check
from symbackprop.claims import Checker, ClaimError, claims_from_text, latex_claims_from_text
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


@pytest.fixture(scope="module")
def seed():
    return Checker()


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
    ("dL/dY_pred = 2 * (Y_pred - Y_true)", "convention", "without 1/2"),
    ("dL/dW3 = (1/N) * a2.T @ (Y_pred - Y_true)", "convention", "mean over the batch"),
])
def test_wrong_claims_with_their_reason(seed, claim, reason, in_detail):
    verdict = seed.check(claim)
    assert (verdict.verdict, verdict.reason) == ("wrong", reason)
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
    r"\frac{\partial L}{\partial W^{[3]}} = a^{[2]T}(Y_{pred}-Y_{true})",
    r"\frac{dL}{db^{[1]}} = \mathbf{1}_N^\top \delta^{[1]}",
    r"\frac{\partial Loss}{\partial a^{[1]}} = \delta^{[2]} \cdot W^{T^{[2]}}",
])
def test_right_claims(seed, claim):
    assert seed.check(claim).ok


def test_conventions_follow_the_spec():
    # A ReLU'(0) = 0 spec (PyTorch's): the lecture's (Z >= 0) is now the convention mismatch.
    spec = SPECS / "relu_grad_at_zero_0.toml"
    assert check("dL/dZ1 = dL/da1 * (Z1 > 0)", spec).ok
    verdict = check("dL/dZ1 = dL/da1 * (Z1 >= 0)", spec)
    assert (verdict.reason, "ReLU'(0) = 1" in verdict.detail) == ("convention", True)
    # A mean-squared-error spec: the lecture's Y_pred - Y_true is right only for 1/2 sum.
    mse = {"input": {"size": 2}, "loss": {"kind": "mse"},
           "layers": [{"size": 3, "activation": "tanh"}, {"size": 2, "activation": "identity"}]}
    verdict = check("dL/dY_pred = Y_pred - Y_true", mse)
    assert (verdict.reason, "1/2 sum" in verdict.detail) == ("convention", True)
    assert check("dL/dY_pred = 2 / (N * n_2) * (Y_pred - Y_true)", mse).ok


def test_sigmoid_derivative_written_out_and_column_layout():
    spec = SPECS / "sigmoid_mse_column.toml"
    net = Checker(spec).network
    assert net.spec.layout == "column"
    assert check("dL/dW1 = dL/dZ1 @ X.T", spec).ok
    assert check("dL/dW1 = X.T @ dL/dZ1", spec).reason == "shape"
    assert check("dL/db1 = sum(dL/dZ1, axis=1)", spec).ok


def test_expected_formula_is_itself_judged_correct(seed):
    for claim in ["dL/dW2 = dL/dZ2 @ a1.T", "dL/dZ1 = dL/da1 * (Z1 > 0)", "dZ1/db1 = 1",
                  r"\frac{dL}{dW^{[1]}} = \frac{dL}{dZ^{[1]}} \frac{dZ^{[1]}}{dW^{[1]}}"]:
        expected = seed.check(claim).expected
        assert ("\\" in expected) == ("\\" in claim)
        assert seed.check(expected).ok, expected


def _seed_loss(params, X, T):
    """The seed network written out in NumPy, independent of the package's evaluator."""
    a = X
    for l in (1, 2, 3):
        Z = a @ params[f"W{l}"] + params[f"b{l}"]
        a = np.maximum(Z, 0) if l < 3 else Z
    return 0.5 * np.sum((a - T) ** 2)


LECTURE_CLAIMS = claims_from_text((CLAIMS / "lecture.txt").read_text())


@pytest.mark.parametrize("claim", [c for c, (v, _) in zip(LECTURE_CLAIMS, LECTURE)
                                   if v == "correct" and c[4] in "WbX"])
def test_correct_lecture_claims_match_finite_differences(seed, claim):
    name = claim.split("=")[0].strip()[4:]
    inputs = seed.inputs
    params = {k: v for k, v in inputs.items() if k[0] in "Wb"}
    value = seed.value(seed.parse(claim).expr, seed.env(seed.derivation, False))
    rng = np.random.default_rng(1)
    direction = rng.standard_normal(value.shape)
    h = 1e-6

    def loss_at(t):
        moved = dict(params, X=inputs["X"])
        moved[name] = moved[name] + t * direction
        return _seed_loss({k: v for k, v in moved.items() if k != "X"}, moved["X"], inputs["Y_true"])

    numeric = (loss_at(h) - loss_at(-h)) / (2 * h)
    assert np.sum(value * direction) == pytest.approx(numeric, rel=1e-6)


def test_parse_errors_name_the_column_and_what_was_expected(seed):
    with pytest.raises(ClaimError, match=r"column 18: expected a name.*found '@'"):
        seed.check("dL/dW1 = dL/dZ1 @@ X.T")
    with pytest.raises(ClaimError, match="expected '\\)'"):
        seed.check("dL/dW1 = X.T @ (dL/dZ1")
    with pytest.raises(ClaimError, match="a name of the network"):
        seed.check("dL/dW1 = X.T @ Q7")
    with pytest.raises(ClaimError, match="column 1: expected a name of the network"):
        seed.check("dL/dW9 = X")
    with pytest.raises(ClaimError, match="column"):
        seed.check(r"\frac{\partial L}{\partial W^{[1]}} = X^{\top \delta^{[1]}")


def test_cli_exit_codes_and_text():
    runner = CliRunner()
    ok = runner.invoke(main, ["check", "dL/dW1 = X.T @ dL/dZ1"])
    assert ok.exit_code == 0 and "1 of 1 claims correct" in ok.output
    wrong = runner.invoke(main, ["check", "--file", str(CLAIMS / "lecture.txt")])
    assert wrong.exit_code == 1 and "9 of 16 claims correct" in wrong.output
    assert "expected: dL/dW1 = X.T @ dL/dZ1" in wrong.output
    bad = runner.invoke(main, ["check", "dL/dW1 = X.T @"])
    assert bad.exit_code == 2 and "expected a name" in bad.output
    assert runner.invoke(main, ["check"]).exit_code == 2


def test_cli_json_and_latex_file():
    result = CliRunner().invoke(main, ["check", "--json", "--latex", str(CLAIMS / "lecture.tex"),
                                       "dL/db1 = dL/dZ1"])
    assert result.exit_code == 1
    verdicts = json.loads(result.output)
    assert len(verdicts) == len(LECTURE_TEX) + 1
    assert all(set(v) >= {"claim", "verdict", "reason", "expected"} for v in verdicts)
    assert verdicts[0] == {"claim": "dL/db1 = dL/dZ1", "verdict": "wrong", "reason": "shape",
                           "expected": "dL/db1 = dL/dZ1.sum(axis=0, keepdims=True)",
                           "detail": verdicts[0]["detail"]}


def test_latex_file_formats():
    text = "% comment\n\\[ \\frac{dL}{dX} = \\delta^{[1]} W^{[1]T} \\]\n$$a = b$$ and $\\frac{dL}{dW} = 1$"
    assert latex_claims_from_text(text) == [r"\frac{dL}{dX} = \delta^{[1]} W^{[1]T}", "a = b",
                                            r"\frac{dL}{dW} = 1"]
    assert latex_claims_from_text("\\frac{dL}{dX} = 1\n\n\\frac{dL}{dW} = 2\n") == [r"\frac{dL}{dX} = 1",
                                                                                 r"\frac{dL}{dW} = 2"]


@pytest.mark.parametrize("spec", ["seed.toml", "softmax_ce_4_classes_column.toml", "depth4_mixed.toml",
                                  "custom_input_name.toml"])
def test_every_formula_of_the_derivation_reads_back_as_correct(spec):
    checker = Checker(SPECS / spec)
    derivation = checker.derivation
    for step in derivation.backward:
        for expr in (step.expr, derivation.gradients[step.name]):
            for as_latex in (False, True):
                text = checker._format("L", step.name, expr, as_latex)
                assert checker.check(text, as_latex).ok, text
    for lg in derivation.local_gradients:
        assert checker.check(checker._format(lg.of, lg.wrt, lg.expr, False)).ok
