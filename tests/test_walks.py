"""The derivations people study (``walks.py``): every line of the way from batch or layer norm's steps to its
compact formula is judged by the claims checker, and so is every brace in it; the softmax pages' per-sample
identities are derived again here by SymPy."""

from __future__ import annotations

from pathlib import Path

import pytest
import sympy as sp

from symbackprop import Checker, derive
from symbackprop.rendering import catalog, render
from symbackprop.walks import LOG_SOFTMAX_LINES, SOFTMAX_LINES, normalization_walks, softmax_walks

SPECS = Path(__file__).parent / "specs"
NORMALIZED = ["batchnorm_after_dense", "batchnorm_after_dense_column", "layernorm_column",
              "lecture_batchnorm_softmax_l2", "mixed_norms_dropout"]


@pytest.mark.parametrize("spec", NORMALIZED)
def test_every_line_and_brace_of_the_normalization_walk_is_true(spec):
    derivation = derive(SPECS / f"{spec}.toml")
    checker = Checker(SPECS / f"{spec}.toml")
    walks = normalization_walks(derivation, catalog("en"))
    assert walks and all(len(walk["lines"]) == 6 for walk in walks)
    for walk in walks:
        for line in walk["lines"]:
            verdict = checker.check(line["claim"])
            assert verdict.verdict == "correct", (line["claim"], verdict.detail)
            for statement in line["statements"]:
                verdict = checker.check(statement.claim)
                assert verdict.verdict == "correct", (statement.claim, verdict.detail)
        # The three paths of the last step each carry their own label, and the line before them is the
        # compact formula of the derivation.
        assert len(walk["lines"][-2]["statements"]) == 3
        assert len({s.label for s in walk["lines"][-2]["statements"]}) == 3


def test_a_walk_line_missing_a_path_is_judged_wrong():
    derivation = derive(SPECS / "lecture_batchnorm_softmax_l2.toml")
    checker = Checker(SPECS / "lecture_batchnorm_softmax_l2.toml")
    three = next(line for line in derivation.network.compacts[0].walk if line.note == "walk_three")
    from symbackprop.printing import latex

    for dropped in range(3):
        kept = [latex(expr) for index, (expr, _) in enumerate(three.parts) if index != dropped]
        claim = rf"\frac{{\partial L}}{{\partial a^{{[1]}}}} = {' + '.join(kept)}"
        assert checker.check(claim).verdict == "wrong", claim


def _softmax(z):
    total = sum(sp.exp(v) for v in z)
    return [sp.exp(v) / total for v in z]


def test_the_softmax_pages_state_identities_sympy_derives():
    n = 3
    z, y, g = sp.symbols("z:3"), sp.symbols("y:3"), sp.symbols("g:3")
    s = _softmax(z)
    # Jacobian: ds_i/dz_j = s_i (delta_ij - s_j)
    for i in range(n):
        for j in range(n):
            assert sp.simplify(sp.diff(s[i], z[j]) - s[i] * (sp.KroneckerDelta(i, j) - s[j])) == 0
    # Vector-Jacobian product: sum_i g_i ds_i/dz_j = s_j (g_j - sum_i g_i s_i)
    for j in range(n):
        vjp = sum(g[i] * sp.diff(s[i], z[j]) for i in range(n))
        assert sp.simplify(vjp - s[j] * (g[j] - sum(g[i] * s[i] for i in range(n)))) == 0
    # Cross-entropy on top: dL/dz_j = s_j sum(y) - y_j, which is s_j - y_j where the targets sum to 1.
    ce = -sum(y[i] * sp.log(s[i]) for i in range(n))
    for j in range(n):
        assert sp.simplify(sp.diff(ce, z[j]) - (s[j] * sum(y) - y[j])) == 0
    # Log-softmax: dl_i/dz_j = delta_ij - s_j, its product g_j - s_j sum(g), and NLL on top.
    ell = [sp.log(v) for v in s]
    for i in range(n):
        for j in range(n):
            assert sp.simplify(sp.diff(ell[i], z[j]) - (sp.KroneckerDelta(i, j) - s[j])) == 0
    nll = -sum(y[i] * ell[i] for i in range(n))
    for j in range(n):
        vjp = sum(g[i] * sp.diff(ell[i], z[j]) for i in range(n))
        assert sp.simplify(vjp - (g[j] - s[j] * sum(g))) == 0
        assert sp.simplify(sp.diff(nll, z[j]) - (s[j] * sum(y) - y[j])) == 0
    # The pages print these forms.
    printed = " ".join(math for _, math in SOFTMAX_LINES + LOG_SOFTMAX_LINES)
    for piece in (r"s_i \left(\delta_{ij} - s_j\right)", r"\operatorname{diag}(s) - s s^{\top}",
                  r"s_j \Bigl(g_j - \sum_i g_i s_i\Bigr)", r"s_j \sum_i y_i - y_j = s_j - y_j",
                  r"\delta_{ij} - s_j", r"g_j - s_j \sum_i g_i"):
        assert piece in printed, piece


@pytest.mark.parametrize("spec, pages", [("lecture_batchnorm_softmax_l2", ["softmax_title"]),
                                         ("log_softmax_nll", ["log_softmax_title"]),
                                         ("softmax_layer_cross_entropy", ["softmax_title"]), ("seed", [])])
def test_the_softmax_pages_appear_where_a_softmax_meets_the_loss(spec, pages):
    network = derive(SPECS / f"{spec}.toml").network
    t = catalog("en")
    assert [walk["title"] for walk in softmax_walks(network, t)] == [t[page] for page in pages]


@pytest.mark.parametrize("lang", ["en", "ko"])
def test_the_deck_carries_the_walks(lang):
    t = catalog(lang)
    deck = render(derive(SPECS / "lecture_batchnorm_softmax_l2.toml"), "beamer", lang=lang)
    kind = t["kind_name_batchnorm"]
    assert t["walk_title"].format(kind=kind[:1].upper() + kind[1:]) in deck
    assert t["softmax_title"] in deck and t["softmax_jacobian"].split("$")[0] in deck
