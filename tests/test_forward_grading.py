"""Grading a backward pass against the student's own forward pass (``grade FILE.py`` with no spec) and claims
about a forward pass written as code (``check --forward``).

The fixtures in tests/grade/forward/ are written by hand, each with one known mistake at a known line; the
correct one is checked against PyTorch autograd on the atomic forward pass rebuilt in torch (an oracle apart
from the package), so its full marks mean something."""

import re
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_forward_code import _makemore_autograd, _torch_gradients

from symbackprop import derive
from symbackprop.cli import main
from symbackprop.grading.forward import BackwardError, ForwardGrader

FIXTURES = Path(__file__).parent / "grade" / "forward"
CORRECT = FIXTURES / "correct.py"
MAKEMORE = FIXTURES / "makemore.py"


@pytest.fixture(scope="module")
def grader():
    return ForwardGrader(CORRECT)


def _line(path: Path, start: str) -> int:
    """The number of the line of ``path`` that starts (after its indentation) with ``start``."""
    return next(i for i, line in enumerate(path.read_text().splitlines(), 1) if line.strip().startswith(start))


def _variant(tmp_path, name, old, new) -> Path:
    """correct.py with the text ``old`` replaced by ``new``."""
    text = CORRECT.read_text()
    assert old in text
    path = tmp_path / f"{name}.py"
    path.write_text(text.replace(old, new))
    return path


def test_a_correct_backward_gets_full_marks_and_matches_autograd(grader):
    result = grader.grade(CORRECT)
    assert result.ok, result.text()
    assert result.score == "26/26"
    # the fixture itself, run here on the grader's first instance, against autograd on the same inputs
    namespace = {}
    exec(CORRECT.read_text(), namespace)  # noqa: S102 - our own fixture
    cache = grader.instances[0].cache
    inputs = {name: cache[name] for name in ("X", "Y", "W1", "b1", "bngain", "bnbias", "W2", "b2")}
    _, expected = _torch_gradients(inputs)
    returned = namespace["backward"]({k: v.copy() for k, v in cache.items()})
    assert set(returned) <= set(expected)
    for key, value in returned.items():
        np.testing.assert_allclose(value, expected[key], rtol=1e-7, atol=1e-12, err_msg=key)


def test_the_stabilizing_max_has_gradient_zero_so_leaving_its_path_out_is_right(grader, tmp_path):
    old = ('    dlogit_maxes = -dnorm_logits.sum(1, keepdims=True)\n    dlogits = dnorm_logits.copy()\n'
           '    dlogits[np.arange(n), c["logits"].argmax(1)] += dlogit_maxes[:, 0]\n')
    new = '    dlogit_maxes = np.zeros((n, 1))\n    dlogits = dnorm_logits.copy()\n'
    result = grader.grade(_variant(tmp_path, "no_max_path", old, new))
    assert result.ok, result.text()
    assert result.verdict("dlogit_maxes").ok and result.verdict("dlogits").ok


# bessel.py is a file of its own (README's example); the wrong axis is correct.py with one line changed.
@pytest.mark.parametrize(("name", "edit", "wrong", "line_start", "words", "downstream"), [
    ("bessel", None, "dbndiff2", "dbndiff2 =", "1/N where 1/(N - 1) belongs: Bessel's correction is dropped",
     ["dbndiff", "dhprebn", "dX", "dW1"]),
    ("wrong_axis", ('dbngain = (c["bnraw"] * dhpreact).sum(0,', 'dbngain = (c["bnraw"] * dhpreact).sum(1,'),
     "dbngain", "dbngain =", "the sum is over axis=1 where axis=0 belongs", []),
])
def test_a_mistake_is_named_at_the_line_of_the_backward_that_makes_it(grader, tmp_path, name, edit, wrong,
                                                                      line_start, words, downstream):
    path = FIXTURES / f"{name}.py" if edit is None else _variant(tmp_path, name, *edit)
    result = grader.grade(path)
    assert {g.name for g in result.gradients if not g.ok} == {wrong, *downstream}, result.text()
    mistake = result.verdict(wrong).mistake
    assert f"(your code, line {_line(path, line_start)})" in mistake and words in mistake, mistake
    for other in downstream:
        assert result.verdict(other).mistake == f"wrong because {wrong} is wrong (see {wrong})"


def test_a_nonzero_gradient_for_the_stabilizing_max_is_wrong(grader, tmp_path):
    path = _variant(tmp_path, "nonzero_max", "dlogit_maxes = -dnorm_logits.sum(", "dlogit_maxes = -dcounts.sum(")
    result = grader.grade(path)
    assert not result.verdict("dlogit_maxes").ok and not result.verdict("dlogits").ok
    mistake = result.verdict("dlogit_maxes").mistake
    assert f"line {_line(path, 'dlogit_maxes =')}" in mistake and "dcounts instead of dnorm_logits" in mistake


def test_the_max_path_forgotten_where_the_loss_reads_the_max(tmp_path):
    path = FIXTURES / "max_path.py"
    result = ForwardGrader(path).grade(path)
    assert {g.name for g in result.gradients if not g.ok} == {"dscores", "dW", "db", "dX"}, result.text()
    mistake = result.verdict("dscores").mistake
    assert f"(your code, line {_line(path, 'dscores =')})" in mistake
    assert "(the path through the max, to each row's first maximum) is left out" in mistake


@pytest.mark.parametrize(("body", "words"), [
    ("    return {'dX': 1 / 0}\n", ("your backward raised ZeroDivisionError at line 2 (return {'dX': 1 / 0}): "
                                    "division by zero")),
    ("    return [cache['X']]\n", "your backward returned a list, not a dict"),
    ("    return {'dbnvar_in': cache['bnvar'], 'dW1': cache['W1']}\n",
     "your backward returned keys that name no gradient of forward(): 'dbnvar_in' (did you mean 'dbnvar_inv'?)"),
])
def test_a_backward_that_gives_nothing_to_grade_is_one_line(grader, tmp_path, body, words):
    path = tmp_path / "student.py"
    path.write_text("def backward(cache):\n" + body)
    with pytest.raises(BackwardError) as error:
        grader.grade(path)
    message = str(error.value)
    assert message.startswith(f"{path}: {words}") and "\n" not in message


def test_a_makemore_style_backward_with_integer_ids_gets_full_marks_and_matches_autograd():
    grader = ForwardGrader(MAKEMORE)
    result = grader.grade(MAKEMORE)
    assert result.ok, result.text()
    assert result.score == "27/27"
    cache = grader.instances[0].cache  # what the student's backward received: ids as integers, the file's shapes
    assert cache["Xb"].dtype.kind == "i" and cache["Xb"].shape == (32, 3) and cache["Yb"].shape == (32,)
    assert cache["emb"].shape == (32, 3, 10) and cache["picked"].shape == (32,)
    assert len(np.unique(cache["Xb"])) < cache["Xb"].size  # repeated ids: the scatter must add them up
    namespace = {}
    exec(MAKEMORE.read_text(), namespace)  # noqa: S102 - our own fixture
    returned = namespace["backward"]({k: v.copy() for k, v in cache.items()})
    _, expected = _makemore_autograd({name: cache[name] for name in
                                      ("C", "W1", "b1", "bngain", "bnbias", "W2", "b2", "Xb", "Yb")})
    for key, value in returned.items():
        assert value.shape == expected[key].shape, key
        np.testing.assert_allclose(value, expected[key], rtol=1e-7, atol=1e-10, err_msg=key)


@pytest.mark.parametrize(("old", "new", "line_start", "words"), [
    (None, None, "dC[Xb] = demb", ("your code assigns the rows of dC that Xb names (dC[Xb] = ...) where they must "
                                    "be added up (np.add.at(dC, Xb, ...)): an id that occurs more than once in Xb "
                                    "keeps only the gradient of its last occurrence")),
    ("    dC[Xb] = demb\n", "    for j in range(2):\n        dC[Xb[:, j]] += demb[:, j]\n", "dC[Xb[:, j]] +=",
     "one position of Xb at a time with a buffered dC[Xb[:, j]] += ..."),
])
def test_a_scatter_add_replaced_by_assignment_is_named_at_its_line(tmp_path, old, new, line_start, words):
    path = FIXTURES / "scatter_assign.py"
    if old is not None:
        text = path.read_text()
        assert old in text
        path = tmp_path / "per_position.py"
        path.write_text(text.replace(old, new))
    result = ForwardGrader(path).grade(path)
    assert {g.name for g in result.gradients if not g.ok} == {"dC"}, result.text()
    mistake = result.verdict("dC").mistake
    # dC's lines: the np.zeros_like and the line that writes the rows, last
    assert f" and {_line(path, line_start)})" in mistake and words in mistake, mistake


def test_cli_grades_a_file_against_its_own_forward_pass_and_refuses_one_without_backward(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["grade", str(FIXTURES / "max_path.py")])
    assert result.exit_code == 1, result.output
    assert "max_path.py: backward(cache) against the gradients of forward()" in result.stdout
    assert re.search(r"WRONG    dscores\n.*\n  mistake: dscores = .* \(your code, line \d+\)", result.stdout)
    assert "3/7 gradients correct" in result.stdout
    lone = tmp_path / "lone.py"
    lone.write_text(textwrap.dedent('''
        SHAPES = {"X": ("N", "d"), "W": ("d", "k")}

        def forward(X, W):
            loss = (X @ W).sum()
            return loss
    '''))
    refused = runner.invoke(main, ["grade", str(lone)])
    assert refused.exit_code == 1
    assert refused.stderr == (f"symbackprop: error: {lone}: the file defines a forward pass but no backward "
                              "function: define backward(cache) (or gradients(cache)) returning a dict of d<name> "
                              "gradients, or name it with --function\n")


def test_check_forward_accepts_a_right_claim_and_refuses_a_wrong_one():
    runner = CliRunner()
    result = runner.invoke(main, ["check", "--forward", str(CORRECT), "dlogprobs = Y * dpicked",
                                  "dbnvar = -0.5 * (bnvar + 1e-5)**-1.5 * dbnvar_inv", "dlogprobs = -Y",
                                  "dh = dlogits @ W2"])
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "correct   dlogprobs = Y * dpicked"
    assert lines[1] == "correct   dbnvar = -0.5 * (bnvar + 1e-5)**-1.5 * dbnvar_inv"
    assert lines[2:4] == ["WRONG     dlogprobs = -Y",
                          "  value: the claim is N times dL/dlogprobs; the loss is loss exactly as forward() computes it"]
    assert "  shape: dlogits (N x k) @ W2 (h x k): the inner sizes k and h differ" in lines
    assert lines[-1] == "2 of 4 claims correct (2 wrong)"


EXP_FORMS = {
    "sigmoid": ("P = 1 / (1 + np.exp(-Z))\n    loss = ((P - Y) ** 2).sum()", "dZ = dP * P * (1 - P)", "dZ = dP * P"),
    "exp-of-a-multiple": ("E = np.exp(2 * Z)\n    loss = (E * Y).sum()", "dZ = 2 * dE * E", "dZ = dE * E"),
    "stable-softmax": (("mx = Z.max(axis=1, keepdims=True)\n    e = np.exp(Z - mx)\n"
                        "    P = e / e.sum(axis=1, keepdims=True)\n    loss = -(np.log(P) * Y).sum() / X.shape[0]"),
                       "dP = -1 / N * (Y / P)", "dP = -Y / P"),
}


@pytest.mark.parametrize("name", list(EXP_FORMS))
def test_exp_of_an_expression_is_proved_and_claims_about_it_are_judged(tmp_path, name):
    """np.exp of a sum, a negation or a multiple, as students write a sigmoid or a stable softmax: the exact proof
    treats exp as a function of its argument on both sides (direct differentiation merged e^a e^b into e^(a+b)
    and read exp(Z - m) apart from itself: a correct pass was judged wrong), and a wrong claim is still wrong."""
    body, right, wrong = EXP_FORMS[name]
    path = tmp_path / f"{name}.py"
    path.write_text('import numpy as np\n\nSHAPES = {"X": ("N", "d"), "Y": ("N", "k"), "W": ("d", "k")}\n\n\n'
                    f"def forward(X, Y, W):\n    Z = X @ W\n    {body}\n    return loss\n", encoding="utf-8")
    report = derive(forward=path).verify()
    assert report.ok, [check.name for check in report.checks if not check.ok]
    result = CliRunner().invoke(main, ["check", "--forward", str(path), right, wrong])
    assert result.stdout.splitlines()[:2] == [f"correct   {right}", f"WRONG     {wrong}"], result.output


def test_check_forward_judges_a_claim_that_defines_the_loss():
    """The loss of correct.py is -mean(picked) = -(1/N) 1ᵀ (logprobs ⊙ Y) 1, worked out from its last lines."""
    runner = CliRunner()
    result = runner.invoke(main, ["check", "--forward", str(CORRECT), "loss = -picked.mean()",
                                  "L = -(logprobs * Y).sum() / N", "loss = picked.mean()", "loss = -picked.sum()",
                                  "loss = 1"])
    assert result.exit_code == 1, result.output
    lines = result.stdout.splitlines()
    assert lines[:2] == ["correct   loss = -picked.mean()", "correct   L = -(logprobs * Y).sum() / N"]
    assert lines[2:4] == ["WRONG     loss = picked.mean()", "  value: the claim is the negative of L (a sign error)"]
    assert lines[5:7] == ["WRONG     loss = -picked.sum()", "  value: the claim is N times L"]
    assert lines[8] == "WRONG     loss = 1"
    assert lines[9].startswith("  value: the shapes fit but the values differ at a random point")
    assert lines[-1] == "2 of 5 claims correct (3 wrong)"
    makemore = runner.invoke(main, ["check", "--forward", str(MAKEMORE), "loss = 1"])
    assert makemore.exit_code == 1 and makemore.stdout.startswith("WRONG     loss = 1\n"), makemore.output


def test_grade_refuses_a_forward_pass_whose_names_are_taken_by_gradients(tmp_path):
    path = tmp_path / "shadow.py"
    path.write_text(textwrap.dedent('''
        SHAPES = {"X": ("N", "d"), "dX": ("d", 1)}

        def forward(X, dX):
            Z = X @ dX
            loss = Z.sum()
            return loss

        def backward(cache):
            return {"dZ": cache["Z"] * 0 + 1}
    '''))
    result = CliRunner().invoke(main, ["grade", str(path)])
    assert result.exit_code == 2, result.output
    assert result.stderr == (f"symbackprop: error: {path}:4:16: the name 'dX' is taken by the gradient of 'X' (every "
                             "input, parameter and line x has its gradient named dx); rename it\n")
