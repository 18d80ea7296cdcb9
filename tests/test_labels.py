"""Every label the lecture prints is a claim, and the claims checker (``symbackprop check``) judges it.

The statements come from the same render context the documents print (brace labels under the backward
formulas, the panel's and the article's local gradients, the chain-rule example); a penalty's share, which
the checker has no name for, is compared with SymPy's derivative of the penalty itself. The MLP corpus is
swept with ``SYMBACKPROP_FULL_LECTURE=1`` (about 40 s); by default a subset covering every kind of label. The small
CNN of ``tests/specs_conv`` always runs: its labels go through col2im, unfold and the max-pool mask.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import sympy as sp

from symbackprop import Checker, derive
from symbackprop.lecture import chain_example
from symbackprop.rendering import context, render
from symbackprop.statements import Statement

SPECS = Path(__file__).parent / "specs"
FULL = os.environ.get("SYMBACKPROP_FULL_LECTURE") == "1"
SUBSET = ["seed", "lecture_batchnorm_softmax_l2", "lecture_layernorm_dropout_gelu", "residual_block",
          "lecture_swish_beta", "loss_ng_bce_l2_column", "skip_two_layers_column", "prelu_hidden",
          "softmax_layer_cross_entropy", "formula_squareplus_column"]
CORPUS = sorted(path.stem for path in SPECS.glob("*.toml")) if FULL else SUBSET
CORPUS = [*CORPUS, "small_cnn"]  # an image network (tests/specs_conv)


def spec_path(name: str) -> Path:
    conv = Path(__file__).parent / "specs_conv" / f"{name}.toml"
    return conv if conv.exists() else SPECS / f"{name}.toml"


def statements(derivation) -> list[Statement]:
    """Every statement the lecture prints for this derivation, once each."""
    ctx = context(derivation)
    found = [row["statement"] for row in ctx["local"]]
    found += [statement for row in ctx["backward"] for statement in row["statements"]]
    example = chain_example(derivation)
    found += example["statements"] if example else []
    return list({(s.kind, s.of, s.wrt, str(s.expr)): s for s in found}.values())


def penalty_oracle(derivation, statement: Statement) -> bool:
    """Whether the statement's expression is the derivative of its weight's share of the L2 penalty, taken
    by SymPy entry by entry at the spec's sizes (N = 3) from the spec's own numbers."""
    network, settings = derivation.network, derivation.network.spec.loss
    sizes = network.sizes(3, network.spec.sizes)
    symbol = network.inputs[statement.wrt]
    rows, cols = (int(sp.sympify(d).xreplace(sizes)) for d in symbol.shape)
    W = sp.Matrix(rows, cols, lambda i, j: sp.Symbol(f"w_{i}_{j}"))
    coefficient = sp.Rational(str(settings.l2)) / (2 * (3 if settings.l2_scale == "batch_mean" else 1))
    penalty = coefficient * sum(w ** 2 for w in W)
    expected = W.applyfunc(lambda w: sp.diff(penalty, w))
    stated = sp.Matrix(statement.expr.xreplace({symbol: sp.ImmutableMatrix(W), **sizes}).doit())
    return (stated - expected).is_zero_matrix


@pytest.mark.parametrize("spec", CORPUS)
def test_every_printed_label_is_a_true_claim(spec):
    derivation = derive(spec_path(spec))
    checker = Checker(spec_path(spec))
    gradients = {step.symbol for step in derivation.backward}
    found = statements(derivation)
    assert {s.kind for s in found} >= {"local", "upstream"} if spec != "seed" else found
    for statement in found:
        if statement.kind == "penalty":
            assert penalty_oracle(derivation, statement), statement
            continue
        if statement.kind == "local":
            # A local gradient that is a factor is made of forward values: a gradient of L in it means the
            # brace sits over an upstream gradient.
            assert not (statement.expr.atoms(sp.MatrixSymbol) & gradients), statement.claim
        verdict = checker.check(statement.claim)
        assert verdict.verdict == "correct", (statement.claim, verdict.reason, verdict.detail)


def test_the_labels_this_test_exists_for_are_refused():
    # The labels a lecturer found: the L2 term braced as dL/dW, and an upstream gradient braced as the local
    # Jacobian of a skip path or a batch-norm path.
    derivation = derive(SPECS / "lecture_batchnorm_softmax_l2.toml")
    checker = Checker(SPECS / "lecture_batchnorm_softmax_l2.toml")
    penalty = next(s for s in statements(derivation) if s.kind == "penalty")
    verdict = checker.check(Statement("local", "L", penalty.wrt, penalty.expr).claim)
    assert verdict.verdict == "wrong"
    upstream = next(step.symbol for step in derivation.backward if step.name == "xc2")
    mislabelled = Statement("local", "xc2", "a1", upstream)
    assert mislabelled.expr.atoms(sp.MatrixSymbol) & {step.symbol for step in derivation.backward}
    assert not penalty_oracle(derivation, Statement("penalty", "L", penalty.wrt, 2 * penalty.expr))


_BRACE_LABEL = re.compile(r"\\underbrace\{")


def _labels(tex: str) -> list[str]:
    """The labels of every ``\\underbrace{...}_{label}`` in ``tex``."""
    labels = []
    for match in _BRACE_LABEL.finditer(tex):
        index, depth = match.end() - 1, 0
        for index in range(match.end() - 1, len(tex)):
            depth += {"{": 1, "}": -1}.get(tex[index], 0)
            if depth == 0:
                break
        start, depth = index + 2, 0
        for end in range(start, len(tex)):
            depth += {"{": 1, "}": -1}.get(tex[end], 0)
            if depth == 0:
                break
        labels.append(tex[start + 1:end])
    return labels


@pytest.mark.parametrize("spec, lang", [("lecture_batchnorm_softmax_l2", "ko"), ("residual_block", "en")])
def test_every_brace_in_the_documents_is_a_statement(spec, lang):
    derivation = derive(SPECS / f"{spec}.toml")
    labelled = {s.label for s in statements(derivation)}
    example = chain_example(derivation)
    # The chain-rule example braces the symbols with their values: its labels are the statements' values.
    values = {re.sub(r"\s", "", text) for text in re.findall(r"\}_\{([^{}]*(?:\{[^{}]*\}[^{}]*)*)\}",
                                                               example["braced"])} if example else set()
    for fmt in ("beamer", "latex", "markdown"):
        labels = _labels(render(derivation, fmt, lang=lang))
        assert labels
        for label in labels:
            assert label in labelled or re.sub(r"\s", "", label) in values, (fmt, label)
