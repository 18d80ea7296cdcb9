"""``check`` on networks with normalization, dropout, softmax layers, PReLU and L2: the derivation's own formulas
read back as correct, the new names and functions, their errors, and the exact semantics against the verifier's
rules (issues 11 and 12)."""

import os
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from symbackprop.claims import Checker
from symbackprop.claims.explain import formula
from symbackprop.claims.semantics import ExactField, TreeEvaluator
from symbackprop.cli import main
from symbackprop.evaluate import EXACT_DERIVATIVES, PRIME, Mod
from symbackprop.rules import activation_rule

SPECS = Path(__file__).parent / "specs"


READ_BACK = ("batchnorm_after_dense", "batchnorm_after_dense_column", "linear_batchnorm_relu", "layernorm_column",
             "dropout_column", "prelu_hidden", "prelu_column", "skip_one_layer", "loss_ng_bce_l2_column",
             "loss_cs231n_svm_l2", "loss_nielsen_quadratic_l2", "softmax_layer_cross_entropy", "log_softmax_nll",
             "mixed_norms_dropout")


# Each spec in one notation by default, NumPy and LaTeX in turn; SYMBACKPROP_FULL_LECTURE=1 reads every spec in both.
@pytest.mark.parametrize("spec, latex", [
    (spec, latex) for index, spec in enumerate(READ_BACK)
    for latex in ((False, True) if os.environ.get("SYMBACKPROP_FULL_LECTURE") == "1" else (bool(index % 2),))])
def test_the_derivations_formulas_read_back_as_correct(spec, latex):
    """Each backward step as the derivation writes it (with its upstream gradients), its shorter forms (batch
    norm's compact dX) and every local gradient: what ``expected`` shows must itself be correct."""
    checker = Checker(SPECS / f"{spec}.toml")
    for step in checker.derivation.backward:
        for expr in (step.expr, *(alt.expr for alt in step.alternatives if not alt.assumes)):
            text = formula("L", step.name, expr, latex, checker.gradient_names)
            assert checker.check(text, latex).ok, checker.check(text, latex).text()
    for lg in checker.derivation.local_gradients:
        if lg.of == "L" and len(checker.derivation.step(lg.wrt).terms) > 1:
            continue  # the L2 penalty's part of dL/dW: written as dL/dW it claims the whole gradient
        text = formula(lg.of, lg.wrt, lg.expr, latex, checker.gradient_names)
        assert checker.check(text, latex).ok, checker.check(text, latex).text()


@pytest.mark.parametrize("spec, claim", [
    ("batchnorm_after_dense", "dL/dxhat2 = dL/da2 * gamma"),                    # one norm layer: names without it
    ("batchnorm_after_dense", "dx_hat2 = da2 * gamma2"),                        # CS231n's staged names
    ("batchnorm_after_dense", "dxmu = dx_hat / np.sqrt(sample_var + eps) + 2 * xmu * dvar / N"),
    ("batchnorm_after_dense", "divar2 = np.sum(dxhat2 * xc2, axis=0)"),
    ("batchnorm_after_dense", "dL/dvar2 = -0.5 * drstd2 * rstd2 ** 3"),
    ("batchnorm_after_dense", "dL/dvar2 = -0.5 * drstd2 / np.sqrt(var2 + eps) ** 3"),
    ("batchnorm_after_dense", "dL/dvar2 = -0.5 * drstd2 * np.power(var2 + epsilon, -1.5)"),
    ("batchnorm_after_dense", (r"\frac{\partial L}{\partial \sigma^2} = -\frac{1}{2} \frac{\partial L}{\partial r} "
                              r"\odot (\sigma^2 + \epsilon)^{-3/2}")),
    ("batchnorm_after_dense", (r"\frac{\partial L}{\partial \mu_B} = -\mathbf{1}_N^\top \frac{\partial L}"
                              r"{\partial X_c^{[2]}}")),
    ("batchnorm_after_dense", (r"\frac{\partial L}{\partial \hat{x}} = \frac{\partial L}{\partial a^{[2]}} \circ "
                              r"\operatorname{row\_repeat}(\gamma, N)")),
    ("batchnorm_after_dense", "dL/da1 = (np.diagflat(np.ones(N)) - np.ones((N, N)) / N) @ dL/dxc2"),
    ("layernorm_column", (r"\frac{\partial L}{\partial \beta^{[2]}} = \operatorname{rowsum}"
                         r"\left(\frac{\partial L}{\partial a^{[2]}}\right)")),
    ("dropout_column", "dA1 = dA2 * D2 / keep_prob2"),
    ("dropout_column", (r"\frac{\partial L}{\partial a^{[3]}} = \frac{\partial L}{\partial a^{[4]}} \odot M^{[4]} "
                       r"\oslash (1 - p_4)")),
    ("prelu_hidden", "dalpha1 = np.sum(dA1 * np.minimum(0, Z1), axis=0, keepdims=True)"),
    ("prelu_hidden", (r"\frac{\partial L}{\partial \alpha^{[1]}} = \mathbf{1}_N^\top (\frac{\partial L}"
                     r"{\partial a^{[1]}} \odot \min(0, Z^{[1]}))")),
    ("loss_cs231n_softmax_l2", r"\frac{\partial L}{\partial W^{[2]}} = a^{[1]\top} \delta^{[2]} + \lambda W^{[2]}"),
    ("loss_cs231n_softmax_l2", "dW2 = A1.T @ dZ2 + l2 * W2"),
    ("log_softmax_nll", "dL/da2 = dL/dY_pred - softmax(a2) * np.sum(dL/dY_pred, axis=1, keepdims=True)"),
])
def test_names_and_notations_of_the_new_layers(spec, claim):
    verdict = Checker(SPECS / f"{spec}.toml").check(claim)
    assert verdict.ok, verdict.text()


def test_an_identity_of_exp_the_exact_check_does_not_model_is_undecided_not_wrong():
    """exp(log_softmax(z)) = softmax(z) holds, but not in the exact field: float64 agrees, so no verdict."""
    verdict = Checker(SPECS / "log_softmax_nll.toml").check(
        "dL/da2 = dL/dY_pred - np.exp(log_softmax(a2)) * rowsum(dL/dY_pred)")
    assert verdict.verdict == "undecided" and "float64 agrees" in verdict.detail, verdict.text()


@pytest.mark.parametrize("spec, claim, message", [
    ("seed", "dL/dZ1 = dL/da1 * eps", "normalization layer's epsilon (eps): this spec has none"),
    ("dropout_column", "dA1 = dA2 * M2 / (1 - p)", "the layers differ (layer 2: 0.2, layer 4: 0.25); write p<layer>"),
    ("seed", "dW1 = X.T @ dZ1 + lambd * W1", "this spec has no L2 regularization"),
    ("seed", r"\frac{\partial L}{\partial W^{[1]}} = X^\top \delta^{[1]} + \lambda W^{[1]}", "no L2 regularization"),
    ("seed", r"\frac{\partial L}{\partial Z^{[1]}} = \frac{\partial L}{\partial a^{[1]}} \odot \sigma^2",
     "variance of a batch or layer norm layer"),
    ("mixed_norms_dropout", "dL/da1 = dL/dxhat2 * xhat", "unknown name 'xhat'"),
    ("batchnorm_after_dense", "dL/da1 = dL/dxhat2 * rstd2 ** 0.25", "whole or half powers"),
    ("batchnorm_after_dense", r"\frac{\partial L}{\partial a^{[1]}} = \sqrt[3]{\sigma^2}", "only square roots"),
    ("batchnorm_after_dense", "dL/da1 = dL/dxhat2 @ np.eye(-1)", "positive whole number"),
    ("batchnorm_after_dense", "dL/dbeta2 = row_repeat(dL/da2, m + 0.5)", "repeat count takes a size"),
])
def test_errors_say_what_the_spec_has(spec, claim, message):
    verdict = Checker(SPECS / f"{spec}.toml").check(claim)
    assert verdict.verdict == "error" and message in verdict.detail, verdict.text()
    assert verdict.column is not None


@pytest.mark.parametrize("claim, message", [
    ("dL/dgamma2 = np.diag(dL/da2)", ("np.diag(dL/da2) takes a square matrix (its diagonal), and dL/da2 is N x n1; "
     "for the diagonal matrix of a vector write np.diagflat(v)")),
    ("dL/dgamma2 = diag(dL/dgamma2)", "diag(dL/dgamma2) takes a square matrix"),
    ("dL/da1 = Diag(dL/da2) @ dL/da2", "Diag(dL/da2) makes a diagonal matrix of a vector"),
])
def test_diag_where_the_shapes_give_it_no_meaning(claim, message):
    verdict = Checker(SPECS / "batchnorm_after_dense.toml").check(claim)
    assert (verdict.verdict, verdict.reason) == ("wrong", "shape") and message in verdict.detail, verdict.text()


def test_the_skip_connections_other_use_left_out_is_named():
    checker = Checker(SPECS / "skip_one_layer.toml")
    step = next(s for s in checker.derivation.backward if len(s.terms) > 1 and s.terms[0].local.side != "loss")
    term = step.terms[0]
    text = formula("L", step.name, term.expr, False, checker.gradient_names)
    verdict = checker.check(text)
    assert verdict.verdict == "wrong" and "leaves out the gradient that reaches" in verdict.detail, verdict.text()


# -- the exact semantics agree with the verifier's rules -------------------------------------------------------

def test_exact_derivatives_agree_with_the_verifiers_rules():
    """sigmoid, tanh and rsqrt: the claims' f'(z) is the verifier's rule applied to f(z), at many points."""
    field = ExactField(3)
    for name, rule in EXACT_DERIVATIVES.items():
        for _ in range(50):
            z = field.random()
            assert field.function_at(name, 1, {}, z) == rule(field.function_at(name, 0, {}, z), z)


def test_the_inverse_square_root_is_exact_on_residues():
    field = ExactField(4)
    residues = 0
    for _ in range(200):
        x = field.random()
        r = field.function_at("rsqrt", 0, {}, x)
        if field.residue(x):
            residues += 1
            assert r * r * x == Mod(1) and field.sqrt_of(x) * field.sqrt_of(x) == x
        assert field.sqrt_of(x) * r == Mod(1)
    assert 60 < residues < 140
    assert pow(PRIME, 1, 4) == 3  # the square root is a single power only for such primes


def test_every_drawn_point_of_a_normalizing_network_is_algebraic():
    """Points redrawn for a claim that may lean on r^2 (var + eps) = 1 have every var + eps a square."""
    checker = Checker(SPECS / "mixed_norms_dropout.toml")
    claim = checker.parse("dL/da1 = dL/dxc2 + np.mean(dL/dmu2, axis=0)")
    first = checker._spec_instances(claim)
    assert not all(instance.algebraic for instance in first)  # so a difference there may be an artefact
    checker._redrawn.add(claim.text)
    redrawn = checker._spec_instances(claim)
    assert all(instance.algebraic for instance in redrawn)
    assert checker.check(claim.text).verdict == "wrong"


def test_prelu_negative_part_matches_its_rule():
    """negpart(z) = min(0, z) and its slope (1 below 0, 1 - ReLU'(0) at 0) as the rule table defines them."""
    field = ExactField(5)
    rule = activation_rule("negpart")
    params = rule.parameters()
    for _ in range(40):
        z = field.random()
        negative = field.sign_of(z) < 0
        assert field.function_at("negpart", 0, params, z) == (z if negative else Mod(0))
        assert field.function_at("negpart", 1, params, z) == Mod(int(negative))
    assert field.function_at("negpart", 1, params, Mod(0)) == Mod(1)
    floats = np.array([-2.0, -0.5, 0.5, 3.0])
    assert np.allclose(eval(rule.numpy(0, params, "z"), {"np": np, "z": floats}), np.minimum(floats, 0))


def test_a_claim_tree_evaluates_minimum_and_diag_as_numpy_does():
    """np.minimum against 0 follows each entry's sign (the only comparison the exact field orders); np.diag of
    np.diagflat gives the vector back."""
    checker = Checker(SPECS / "batchnorm_after_dense.toml")
    field = ExactField(6)
    gamma = np.array([[Mod(v) for v in (1, -1, 5, -7)]], dtype=object)
    for value in gamma.flat:
        field.set_sign(value, 1 if value.v < PRIME // 2 else -1)
    for text in ("dL/dgamma2 = np.diag(np.diagflat(np.minimum(gamma2, 0)))",
                 "dL/dgamma2 = np.diag(np.diagflat(np.minimum(0, gamma2)))"):
        value = TreeEvaluator(field, {"gamma2": gamma}, {}, {})(checker.parse(text).tree)
        assert [v.v for v in value] == [Mod(v).v for v in (0, -1, 0, -7)]


def test_check_a_file_of_batch_norm_claims():
    result = CliRunner().invoke(main, ["check", "--spec", str(SPECS / "batchnorm_after_dense.toml"), "--file",
                                       str(Path(__file__).parent / "claims" / "batchnorm.txt")])
    assert result.exit_code == 1, result.output
    assert result.output.count("correct   ") == 6 and result.output.count("WRONG") == 2
    assert "treats mu2 (the mean) and var2 (the variance) as constants" in result.output
    assert "N in place of n_1" in result.output
