"""check and grade on a convolution and pooling network (issue 26).

The student file tests/grade/conv/correct.py is a hand-written NumPy solution for tests/grade/conv/cnn.toml
(loops over positions, as CS231n's naive layers; it does not import symbackprop): it must grade full marks, and
each classic mistake, made by changing one of its lines, must be named on the gradients it spoils. The claims
are the im2col form of the conv backward and claims through im2col, col2im, fold, unfold and the max-pool mask,
right and wrong, judged by the exact checker. A representative part runs by default (about 5 s);
``SYMBACKPROP_FULL_LECTURE=1`` runs every mistake and claim.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from symbackprop.claims import Checker
from symbackprop.grading import Grader

HERE = Path(__file__).parent / "grade" / "conv"
SPEC = HERE / "cnn.toml"
STUDENT = (HERE / "correct.py").read_text(encoding="utf-8")
FULL = os.environ.get("SYMBACKPROP_FULL_LECTURE") == "1"


def full_only(*values):
    """Parameters run only with SYMBACKPROP_FULL_LECTURE=1."""
    return pytest.param(*values, marks=pytest.mark.skipif(not FULL, reason="SYMBACKPROP_FULL_LECTURE=1 runs it"))


# (line of correct.py, the line with the mistake, the gradients it spoils, words of the mistake's name)
MISTAKES = {
    "kernel flipped in dX": (
        "dx_pad[n, :, rows, cols] += W[f] * dout[n, f, y, x]",
        "dx_pad[n, :, rows, cols] += W[f, :, ::-1, ::-1] * dout[n, f, y, x]",
        {"X"}, "the kernel is flipped"),
    "kernel flipped in dW": (
        "dW[f] += x_pad[n, :, rows, cols] * dout[n, f, y, x]",
        "dW[f, :, ::-1, ::-1] += x_pad[n, :, rows, cols] * dout[n, f, y, x]",
        {"W1"}, "the kernel's gradient is flipped"),
    "stride ignored": (
        "rows, cols = slice(y * STRIDE, y * STRIDE + kh), slice(x * STRIDE, x * STRIDE + kw)",
        "rows, cols = slice(y, y + kh), slice(x, x + kw)",
        {"W1", "X"}, "the stride (2, 2) is left out of the backward pass"),
    "padding not cropped": (
        "return dW, db, dx_pad[:, :, PAD:-PAD, PAD:-PAD]", "return dW, db, dx_pad",
        {"X"}, "the padding is not cropped from the gradient: it is 9 x 9"),
    "max-pool gradient copied over the window": (
        "mask.flat[np.argmax(window)] = 1", "mask[:] = 1",
        {"W1", "b1", "X"}, "copied to every entry of its window"),
    "max-pool gradient spread over the window": (
        "mask.flat[np.argmax(window)] = 1", "mask[:] = 1 / window.size",
        {"W1", "b1", "X"}, "spread equally over its window"),
    "every tied maximum": (
        "mask.flat[np.argmax(window)] = 1", "mask = (window == window.max()).astype(float)",
        {"b1", "X"}, "every tied maximum of a pooling window gets the gradient"),
}


DEFAULT_MISTAKES = ("kernel flipped in dX", "stride ignored", "padding not cropped", "every tied maximum")


@pytest.fixture(scope="module")
def grader():
    return Grader(SPEC)


@pytest.mark.parametrize("function", ["backward", full_only("gradients")])
def test_a_hand_written_numpy_cnn_grades_full_marks(grader, function):
    grade = grader.grade(HERE / "correct.py", function)
    assert [(g.name, g.verdict, g.reason) for g in grade.gradients if g.verdict != "correct"] == []
    assert [g.name for g in grade.gradients] == ["W4", "b4", "W1", "b1", "X"]


@pytest.mark.parametrize("mistake", [mistake if mistake in DEFAULT_MISTAKES else full_only(mistake) for mistake in MISTAKES])
def test_each_classic_mistake_is_named(grader, tmp_path, mistake):
    line, wrong_line, spoiled, words = MISTAKES[mistake]
    assert STUDENT.count(line) == 1
    path = tmp_path / "student.py"
    path.write_text(STUDENT.replace(line, wrong_line), encoding="utf-8")
    grade = grader.grade(path)
    wrong = {g.name: g for g in grade.gradients if g.verdict == "wrong"}
    assert set(wrong) == spoiled
    assert all(g.mistake for g in wrong.values()), [g.reason for g in wrong.values()]
    assert any(words in g.mistake for g in wrong.values()), [g.mistake for g in wrong.values()]


def test_the_student_sees_pytorch_shapes_and_a_tie_in_a_pooling_window(grader):
    """X (N, C, H, W), W1 (F, C, kh, kw), the cache's images (N, F, H', W'), from the spec's numbers; one instance
    has a max-pool window of the first sample whose maximum is tied."""
    for instance in grader.instances:
        N = len(instance.input)
        assert instance.input.shape == (N, 2, 7, 7)
        assert instance.params["W1"].shape == (3, 2, 3, 3)
        assert instance.cache["X"].shape == (N, 2, 7, 7)
        assert instance.cache["a1"].shape == (N, 3, 4, 4) and instance.cache["a2"].shape == (N, 3, 2, 2)
    windows = [instance.cache["a1"][0].reshape(3, 2, 2, 2, 2).transpose(0, 1, 3, 2, 4).reshape(12, 4)
               for instance in grader.instances]
    assert any(np.any((w == w.max(axis=1, keepdims=True)).sum(axis=1) > 1) for w in windows)


@pytest.fixture(scope="module")
def checker():
    return Checker(SPEC)


@pytest.mark.parametrize("claim", [
    "dW1 = dZcol1.T @ Xcol1",
    full_only(r"\frac{\partial L}{\partial X_{col}^{[1]}} = \delta_{col}^{[1]} W^{[1]}"),
    # through the image operators, whose windows (the layer's 3 x 3 kernel, stride 2, padding 1; the pool's 2 x 2)
    # the checker takes from the derivation; the labels the lecture prints are such claims too (test_labels.py)
    "dX = col2im(dZcol1 @ W1)",
    "dPcol2 = first_max_mask(Pcol2) * (unfold(da2) @ np.ones((1, 4)))",
    "a2 = fold(rowmax(Pcol2))",
    r"\frac{\partial L}{\partial X} = \operatorname{col2im}\left(\delta_{col}^{[1]} W^{[1]}\right)",
    (r"\frac{\partial L}{\partial P_{col}^{[2]}} = \mathbb{1}_{\operatorname{argmax}}\left(P_{col}^{[2]}\right) \odot "
     r"\left(\operatorname{unfold}\left(\frac{\partial L}{\partial a^{[2]}}\right) \mathbf{1}_{4}^{\top}\right)"),
    full_only("dZcol1 = unfold(dZ1)"),
    full_only(r"\delta_{col}^{[1]} = \operatorname{unfold}\left(\delta^{[1]}\right)"),
    full_only("dW1 = dZcol1.T @ im2col(X)"),
])
def test_the_im2col_form_and_claims_through_the_image_operators_are_judged_correct(checker, claim):
    verdict = checker.check(claim)
    assert verdict.verdict == "correct", verdict.text()


@pytest.mark.parametrize("claim, reason, words", [
    ("dW1 = Xcol1.T @ dZcol1", "shape", "the claim has shape 18 x 3; dL/dW1 must be 3 x 18"),
    ("dXcol1 = dZcol1 @ W1.T", "shape", "the inner sizes 3 and 18 differ"),
    ("dW1 = dZ1.T @ X", "shape", "dL/dW1 must be 3 x 18"),
    full_only("db1 = dZcol1.sum(axis=0) / N", "value", "no factor 1/N belongs here"),
    # col2im of the pooling layer's window applied to the convolution's gradient
    ("da1 = col2im(dXcol1)", "shape", "the claim has shape N x 98; dL/da1 must be N x 48"),
    # unfold where fold belongs, and the shapes an operator would take named
    ("dZcol1 = fold(dZ1)", "shape", "fold(dZ1): dZ1 is N x 48, and fold takes 16*N x 3 (layer 1) or 12*N x 1 (layer 2)"),
    (r"\delta_{col}^{[1]} = \operatorname{fold}\left(\delta^{[1]}\right)", "shape", "and fold takes 16*N x 3"),
    ("dX = col2im(dZcol1)", "shape", "col2im takes 16*N x 18 (layer 1) or 12*N x 4 (layer 2)"),
    # the max-pool gradient spread over the window, and without its mask: the shapes fit, the values do not
    ("dPcol2 = unfold(da2) @ np.ones((1, 4)) / 4", "value", "the values differ"),
    ((r"\frac{\partial L}{\partial P_{col}^{[2]}} = \operatorname{unfold}\left(\frac{\partial L}{\partial a^{[2]}}\right) "
      r"\mathbf{1}_{4}^{\top}"), "value", "the values differ"),
])
def test_a_wrong_im2col_or_image_operator_claim_is_refused(checker, claim, reason, words):
    verdict = checker.check(claim)
    assert (verdict.verdict, verdict.reason) == ("wrong", reason) and words in verdict.detail, verdict.text()
    assert verdict.expected


@pytest.mark.parametrize("claim", [
    "dW1[f, c, i, j] = sum(dZ1[n, f, y, x] * X[n, c, y + i, x + j])",
    r"\frac{\partial L}{\partial W^{[1]}_{f,c,i,j}} = \sum_{n,y,x} \delta^{[1]}_{n,f,y,x} X_{n,c,y+i,x+j}",
])
def test_index_forms_are_refused_with_the_im2col_form(checker, claim):
    verdict = checker.check(claim)
    assert verdict.verdict == "error" and "dW1 = dZcol1.T @ Xcol1" in verdict.detail, verdict.text()
    assert "dX = col2im(dXcol1)" in verdict.detail, verdict.text()


def test_an_operator_whose_window_the_claim_cannot_say_is_refused():
    # Both convolutions read N x 36 images (1 x 6 x 6), with 3 x 3 and 2 x 2 kernels: im2col of the input itself is
    # the first layer's, im2col of anything else of that shape could be either.
    conv = {"kind": "conv2d", "channels": 1, "activation": "relu"}
    checker = Checker({"input": {"shape": [1, 6, 6]}, "loss": {"kind": "half_sse"},
                       "layers": [{**conv, "kernel": 3, "padding": 1}, {**conv, "kernel": 2}, {"kind": "flatten"},
                                  {"size": 2, "activation": "identity"}]})
    assert checker.check("Xcol1 = im2col(X)").verdict == "correct"
    verdict = checker.check("Xcol1 = im2col(X + 0)")
    assert (verdict.verdict, verdict.reason) == ("wrong", "shape"), verdict.text()
    assert "ambiguous: layers 1 and 2 each apply im2col to a N x 36 matrix" in verdict.detail, verdict.text()
