"""No claim, however odd, gets a traceback: random strings and random well-formed claim trees, in both
notations, through the Python API and the command line (issue 13)."""

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from symbackprop.claims import Checker, Verdict
from symbackprop.cli import main

VERDICTS = {"correct", "wrong", "undecided", "error"}

NUMPY_TOKENS = [
    "dL/dW1", "dL/dZ1", "dL/dY_pred", "dZ2/da1", "dW2", "delta2", "db1", "dX", "X", "W1", "b1", "Z1", "a1", "A1", "A0",
    "AL", "A9", "Y", "T", "Y_true", "Y_pred", "m", "N", "n_1", "0", "1", "2", "0.5", "1e3", "=", "@", "*", "/", "+",
    "-", "**", ".T", ".dot(", ".sum(", "axis=0", "axis=1", "keepdims=True", ",", "(", ")", "[", "]", "np.", "dot(",
    "sum(", "mean(", "where(", "exp(", "log(", "sigmoid(", "relu'(", "tanh", "'", "ones(", "softmax(", ">", ">=",
    "<", " ", ".astype(float)", "g'(", "np.power(", "np.square(", "np.maximum(", "np.heaviside(", "np.ones((", "#",
]
LATEX_TOKENS = [
    "\\frac{", "}{", "}", "{", "\\partial ", "L", "W^{[1]}", "\\delta^{[2]}", "^T", "^{\\top}", "\\odot ", "\\cdot ",
    "\\sigma'(", "g'(", "\\sum_i ", "\\mathbf{1}_N", "\\nabla_{", "_", "^", "(", ")", "[", "]", "1", "2", "\\hat{y}",
    "\\left(", "\\right)", "e^{", "\\tanh^2(", "\\mathbb{1}_{", "\\geq ", "0", "=", "X", "Z^{(1)}", "a^L", "w^2",
    "\\mathcal{L}", "J", "-", "+", "\\prime", "dW^{[1]}", "dZ^{[1](i)}", " ", "\\boldsymbol{", "\\max(",
]
LEFT = ["dL/dW1 = ", "dL/dZ1 = ", "dL/db2 = ", "dL/dX = ", "dL/dY_pred = ", "dZ2/da1 = ", "dW2 = ", "delta1 = "]
LATEX_LEFT = ["\\frac{\\partial L}{\\partial W^{[1]}} = ", "\\delta^{[2]} = ", "\\nabla_{b^{(1)}} J = ",
              "dW^{[2]} = ", "\\frac{dZ^{[2]}}{da^{[1]}} = "]

# Leaves of the seed network as (NumPy-like, LaTeX).
LEAVES = [("X", "X"), ("W1", "W^{[1]}"), ("b1", "b^{[1]}"), ("Z1", "Z^{[1]}"), ("a1", "a^{[1]}"),
          ("W2", "W^{[2]}"), ("Z2", "Z^{[2]}"), ("Y_pred", "Y_{pred}"), ("Y_true", "Y_{true}"),
          ("dL/dZ1", "\\delta^{[1]}"), ("dL/da1", "\\frac{\\partial L}{\\partial a^{[1]}}"), ("dZ2", "dZ^{[2]}"),
          ("N", "N"), ("m", "m"), ("2", "2"), ("0", "0"), ("0.5", "0.5"), ("ones(N)", "\\mathbf{1}_N")]


LATEX_OPERATORS = {"+": "+", "-": "-", "*": "\\odot", "@": "", "/": "/"}


def _binary(op, left, right):
    return f"({left[0]} {op} {right[0]})", f"\\left({left[1]} {LATEX_OPERATORS[op]} {right[1]}\\right)"


def _extend(children):
    return st.one_of(
        st.builds(_binary, st.sampled_from(list(LATEX_OPERATORS)), children, children),
        children.map(lambda c: (f"-{c[0]}", f"-{c[1]}")),
        children.map(lambda c: (f"({c[0]}).T", f"\\left({c[1]}\\right)^T")),
        children.map(lambda c: (f"({c[0]} * {c[0]})", f"\\left({c[1]} \\odot {c[1]}\\right)")),
        st.tuples(children, st.integers(-2, 3)).map(lambda t: (f"({t[0][0]})**{t[1]}", f"\\left({t[0][1]}\\right)^{{{t[1]}}}")),
        st.tuples(st.sampled_from(["sigmoid", "tanh", "relu", "np.exp", "np.log", "relu'", "sigmoid'", "np.abs", "g'"]),
                  children).map(lambda t: (f"{t[0]}({t[1][0]})", f"\\{'sigma' if 'sig' in t[0] else 'exp'}({t[1][1]})")),
        children.map(lambda c: (f"np.sum({c[0]}, axis=0, keepdims=True)", f"\\sum_i {c[1]}")),
        children.map(lambda c: (f"({c[0]} > 0)", f"\\mathbb{{1}}_{{{c[1]} > 0}}")),
        st.tuples(children, children).map(lambda t: (f"np.where({t[0][0]} >= 0, {t[1][0]}, 0)",
                                                    f"\\max(0, {t[1][1]})")),
        st.tuples(children, children).map(lambda t: (f"np.dot({t[0][0]}, {t[1][0]})", f"{t[0][1]} \\cdot {t[1][1]}")),
    )


TREES = st.recursive(st.sampled_from(LEAVES), _extend, max_leaves=25)


@pytest.fixture(scope="module")
def seed():
    return Checker()


def _judged(verdict):
    assert isinstance(verdict, Verdict) and verdict.verdict in VERDICTS
    assert verdict.text() and verdict.to_dict()["verdict"] == verdict.verdict
    return verdict


FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@FUZZ
@given(st.one_of(
    st.text(max_size=80),
    st.tuples(st.sampled_from(LEFT), st.lists(st.sampled_from(NUMPY_TOKENS), max_size=30)).map(
        lambda t: t[0] + "".join(t[1])),
    st.tuples(st.sampled_from(LATEX_LEFT), st.lists(st.sampled_from(LATEX_TOKENS), max_size=30)).map(
        lambda t: t[0] + "".join(t[1])),
), st.sampled_from([None, True, False]))
def test_random_strings_get_a_verdict_or_a_parse_error(seed, text, latex):
    verdict = _judged(seed.check(text, latex))
    if verdict.verdict == "error":
        assert verdict.detail and (verdict.column is None or 1 <= verdict.column <= len(text) + 1)


@FUZZ
@given(TREES, st.sampled_from(LEFT), st.sampled_from(LATEX_LEFT))
def test_random_claim_trees_get_a_verdict_in_both_notations(seed, tree, left, latex_left):
    _judged(seed.check(left + tree[0]))
    _judged(seed.check(latex_left + tree[1]))


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(0, 400), st.integers(0, 3000), st.sampled_from(["(", "{", "\\left(", "np.exp(", "sigmoid("]))
def test_nesting_and_sign_runs_of_any_length(seed, depth, signs, opener):
    closer = {"(": ")", "{": "}", "\\left(": "\\right)", "np.exp(": ")", "sigmoid(": ")"}[opener]
    text = "dL/dW1 = " + "-" * signs + opener * depth + "X.T @ dL/dZ1" + closer * depth
    verdict = _judged(seed.check(text))
    assert verdict.verdict != "error" or "too deeply nested" in verdict.detail or "longer than" in verdict.detail \
        or opener != "("


@settings(max_examples=25, deadline=None)
@given(st.one_of(TREES.map(lambda t: "dL/dW1 = " + t[0]), TREES.map(lambda t: "\\delta^{[1]} = " + t[1]),
                 st.text(max_size=40)))
def test_the_command_line_never_shows_a_traceback(text):
    result = CliRunner().invoke(main, ["check", "--", text])
    assert result.exit_code in (0, 1, 2), result.output
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output


# -- claims that are right or wrong by construction ------------------------------------------------------------

# The seed network's backward pass as textbooks write it (batch-first, ReLU'(0) = 1, half the sum of squares),
# written here rather than read from the derivation: the reference the checker must agree with.
TEXTBOOK = {
    "dL/dY_pred": "(Y_pred - Y_true)", "dL/dZ3": "dL/dY_pred", "dL/dW3": "(a2.T @ dL/dZ3)",
    "dL/db3": "np.sum(dL/dZ3, axis=0, keepdims=True)", "dL/da2": "(dL/dZ3 @ W3.T)",
    "dL/dZ2": "(dL/da2 * (Z2 >= 0))", "dL/dW2": "(a1.T @ dL/dZ2)", "dL/db2": "np.sum(dL/dZ2, axis=0, keepdims=True)",
    "dL/da1": "(dL/dZ2 @ W2.T)", "dL/dZ1": "(dL/da1 * (Z1 >= 0))", "dL/dW1": "(X.T @ dL/dZ1)",
    "dL/db1": "np.sum(dL/dZ1, axis=0, keepdims=True)", "dL/dX": "(dL/dZ1 @ W1.T)",
}
# Rewrites that keep a value: each wraps a term.
SAME = ["(({}).T).T", "(-(-{}))", "(1 * {})", "({} * 1)", "({} + 0 * {})", "(2 * {} / 2)", "(({} + {}) / 2)",
        "({} - 0)", "(0.5 * {} + 0.5 * {})"]
# Rewrites that change it: a factor or a term too many.
CHANGED = ["(2 * {})", "(-{})", "(0.5 * {})", "({} + {})", "(3 * {} / 2)"]


@st.composite
def _rewritten(draw, templates, text):
    """``text`` with one to three of its parenthesized terms (or the whole) wrapped in rewrites; a function's
    argument list is not a term."""
    for _ in range(draw(st.integers(1, 3))):
        starts = [i for i, char in enumerate(text) if char == "(" and not (i and (text[i - 1].isalnum()
                                                                                   or text[i - 1] in "_."))]
        if starts and draw(st.booleans()):
            start = draw(st.sampled_from(starts))
            depth = 0
            for end in range(start, len(text)):
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                if depth == 0:
                    break
            term = text[start:end + 1]
            text = text[:start] + draw(st.sampled_from(templates)).replace("{}", term) + text[end + 1:]
        else:
            text = draw(st.sampled_from(templates)).replace("{}", text)
    return text


@st.composite
def _claims(draw):
    """(claim, expected verdict): a textbook formula rewritten so it keeps its value, or changed once after."""
    left = draw(st.sampled_from(sorted(TEXTBOOK)))
    right = draw(_rewritten(SAME, TEXTBOOK[left]))
    if draw(st.booleans()):
        return f"{left} = {right}", "correct"
    return f"{left} = {draw(st.sampled_from(CHANGED)).replace('{}', right)}", "wrong"


def test_claims_right_or_wrong_by_construction_get_that_verdict(seed):
    """At least 60 % of the draws are decided (neither an error nor undecided), and every decided one gets the
    verdict it was built to have."""
    decided = []

    @settings(max_examples=25, deadline=None)
    @given(_claims())
    def draw(case):
        claim, expected = case
        verdict = _judged(seed.check(claim))
        decided.append(verdict.verdict in ("correct", "wrong"))
        if decided[-1]:
            assert verdict.verdict == expected, (claim, verdict.detail)

    draw()
    assert sum(decided) >= 0.6 * len(decided), f"{sum(decided)} of {len(decided)} claims decided"
