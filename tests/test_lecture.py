"""Lecture material: the catalogs, the worked example (against central finite differences and the generated
module), the memory table, the deck's plan, the notebook (executed), and the lecturer's options."""

from __future__ import annotations

import contextlib
import io
import os
import re
import runpy
import string
import tomllib
from dataclasses import replace
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
import sympy as sp
from click.testing import CliRunner

from symbackprop.cli import main
from symbackprop.derivation import derive
from symbackprop.evaluate import Evaluator, Float64Backend
from symbackprop.expressions import Elementwise
from symbackprop.korean import particles
from symbackprop.lecture import (
    LectureOptions,
    activation_notes,
    example_sentences,
    latex_matrix,
    make_targets,
    memory_table,
    parameter_names,
    worked_example,
)
from symbackprop.output import parse_formats
from symbackprop.printing import latex_name
from symbackprop.rendering import FORMATS, render
from symbackprop.rules import activation_rule
from symbackprop.slides import MAX_STEPS_PER_FRAME, Deck, break_equation, plan

SPECS = Path(__file__).parent / "specs"
TEXT = Path(__file__).parent.parent / "templates" / "text"
CORPUS = sorted(path.stem for path in SPECS.glob("*.toml"))
FULL = os.environ.get("SYMBACKPROP_FULL_LECTURE") == "1"
# Specs that exercise every feature of the lecture output quickly: batch-first and column layouts, every
# loss, kinks, a 1-wide bottleneck, the widest worked example, a deep stack.
SUBSET = ["seed", "softmax_ce_4_classes_column", "bce_logits_multilabel_silu_column", "depth6_piecewise_column",
          "hidden_width_1_bottleneck", "wide_8", "batchnorm_after_dense", "residual_block",
          "softmax_layer_cross_entropy"]


def _catalog(lang: str) -> dict:
    return tomllib.loads((TEXT / f"{lang}.toml").read_text("utf-8"))


def _placeholders(sentence: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(sentence) if name}


def test_catalogs_have_the_same_keys_placeholders_and_math():
    en, ko = _catalog("en"), _catalog("ko")
    assert set(en) == set(ko)
    for key in en:
        assert ko[key].strip(), key
        assert _placeholders(en[key]) == _placeholders(ko[key]), key
        assert en[key].count("$") % 2 == 0 and en[key].count("$") == ko[key].count("$"), key


# -- every sentence from the catalogs: no English sentence in a Korean document ----------------------------

# Names that stay as they are in Korean text (library and function names, number formats, spec values).
PROPER_NAMES = {"symbackprop", "NumPy", "PyTorch", "SymPy", "Jupyter", "matplotlib", "float32", "float64"}


def _prose_of_markdown(text: str) -> str:
    """Markdown without the title (the spec author's own words), code blocks, code spans and math: the
    prose a reader reads."""
    text = re.sub(r"\A# .*\n", "", text)
    text = re.sub(r"```.*?```", " ", text, flags=re.DOTALL)
    text = re.sub(r"\$\$.*?\$\$", " ", text, flags=re.DOTALL)
    text = re.sub(r"\$[^$]*\$", " ", text)
    return re.sub(r"`[^`]*`", " ", text)


def _balanced(text: str, start: int) -> int:
    """The index after the braced group opening at ``start``."""
    depth = 0
    for index in range(start, len(text)):
        depth += {"{": 1, "}": -1}.get(text[index], 0) if text[index - 1] != "\\" else 0
        if depth == 0:
            return index + 1
    return len(text)


def _prose_of_latex(text: str) -> str:
    """LaTeX reduced to its running text: no preamble, pictures, math, formulas, code or commands."""
    text = text.split(r"\begin{document}", 1)[1]
    text = re.sub(r"\\begin\{tikzpicture\}.*?\\end\{tikzpicture\}", " ", text, flags=re.DOTALL)
    for macro in (r"\sbpfit{", r"\texttt{", r"\begin{longtable}{", r"\begin{tabular}{", r"\hyperlink{"):
        while macro in text:
            start = text.index(macro)
            text = text[:start] + " " + text[_balanced(text, start + len(macro) - 1):]
    text = re.sub(r"\\begin\{(align\*|gather\*)\}.*?\\end\{\1\}", " ", text, flags=re.DOTALL)
    text = re.sub(r"\$[^$]*\$", " ", text)
    text = re.sub(r"\\[A-Za-z]+\*?(\[[^\]]*\])?|<[^>]*>|\[label=[^\]]*\]", " ", text)
    return text


def english_sentences(prose: str) -> list[str]:
    """Runs of two or more English words (not proper names) with no Hangul between them."""
    runs = re.findall(r"[A-Za-z][A-Za-z'-]*(?:[ ,;:.()-]+[A-Za-z][A-Za-z'-]*)+", prose)
    return [run for run in runs if len([w for w in re.findall(r"[A-Za-z][A-Za-z'-]*", run)
                                        if w not in PROPER_NAMES and len(w) > 1]) >= 2]


def test_the_english_detector_finds_an_english_sentence():
    assert english_sentences("손실 함수 the loss gradient as written 이다") == ["the loss gradient as written"]
    assert english_sentences(_prose_of_latex(r"\begin{document}$Y_{pred}$ 와 \texttt{batch-first} 와 NumPy")) == []
    assert english_sentences(_prose_of_markdown("`half_sse` 는 $\\frac{1}{2}$ 이다 exactly so")) == ["exactly so"]


@pytest.mark.parametrize("spec", CORPUS if FULL else SUBSET)
def test_korean_documents_hold_no_english_sentence(spec):
    derivation = derive(SPECS / f"{spec}.toml")
    report = derivation.verify()
    found, texts = {}, {}
    for fmt, prose in (("markdown", _prose_of_markdown), ("latex", _prose_of_latex), ("beamer", _prose_of_latex)):
        texts[fmt] = render(derivation, fmt, lang="ko", report=report)
        found[fmt] = english_sentences(prose(texts[fmt]))
    notebook = render(derivation, "ipynb", lang="ko", report=report)
    import nbformat

    cells = nbformat.reads(notebook, as_version=4).cells
    found["ipynb"] = english_sentences(_prose_of_markdown("\n".join(c.source for c in cells
                                                                     if c.cell_type == "markdown")))
    assert not any(found.values()), found
    for fmt, text in texts.items():
        assert not korean_slips(text), (fmt, korean_slips(text))


def korean_slips(text: str) -> list[str]:
    """Korean that reads wrong: a numeral ordinal ("1번째"), a particle that does not fit the number before it
    (0 영, 3 삼, 6 육 end in a consonant: "0으로"; the others take "로"), a loss stated in fragments joined by
    semicolons, a particle left in both forms after a number."""
    return re.findall(r"\d번째|[036]\$?로(?!그)|[1245789]\$?으로|\d\$?\((?:으|은|이|을|과)\)|[가-힣]; [가-힣]", text)


def test_korean_particles_follow_the_sound_before_them():
    assert particles("시드 0(으)로, 1(으)로, 2(으)로, 10(으)로, $f'(0) = 3$(으)로, 값(은)는 4(이)가 손실(을)를") == (
        "시드 0으로, 1로, 2로, 10으로, $f'(0) = 3$으로, 값은 4가 손실을")
    assert korean_slips("시드 0로, 층 1번째 층, $\\alpha = 0.1$으로, 합산; 평균") == ["0로", "1번째", "1$으로", "산; 평"]
    # A shorter form's frame title says one thing once: its own words are not repeated in the form's name.
    for lang in ("en", "ko"):
        t = _catalog(lang)
        title = set(re.findall(r"\w+", t["form_frame_title"].format(form="")))
        for key in [key for key in t if key.startswith("form_") and f"{key}_intro" in t]:
            assert not title & set(re.findall(r"\w+", t[key])), (lang, key)


def test_math_is_written_as_math_in_the_article_and_markdown():
    derivation = derive(SPECS / "seed.toml")
    for fmt in ("markdown", "latex"):
        for lang in ("en", "ko"):
            text = render(derivation, fmt, lang=lang)
            assert not re.search(r"Z\^\[|delta\^\[|n_\(|\bdL/dZ|relu_grad_at_zero\s*=", text), (fmt, lang)
            assert r"\delta^{[l]} = \frac{\partial L}{\partial Z^{[l]}}" in text


# -- the worked example -----------------------------------------------------------------------------------

def _loss_function(network, example):
    sizes = network.sizes(example.batch, network.spec.sizes)

    def loss(inputs):
        evaluator = Evaluator(Float64Backend(), dict(inputs), sizes)
        evaluator.forward(network)
        return evaluator.loss(network)

    return loss


@pytest.mark.parametrize("spec", ["seed", "depth5_mixed_column", "softmax_ce_4_classes_column",
                                  "bce_logits_binary", "wide_8"])
def test_worked_example_gradients_match_central_differences(spec):
    derivation = derive(SPECS / f"{spec}.toml")
    network = derivation.network
    example = worked_example(derivation)
    loss = _loss_function(network, example)
    assert np.isclose(loss(example.inputs), example.loss)
    eps = 1e-6
    for name in [*example.updated, network.input_name]:
        numeric = np.zeros_like(example.inputs[name])
        for index in np.ndindex(numeric.shape):
            up, down = ({k: v.copy() for k, v in example.inputs.items()} for _ in range(2))
            up[name][index] += eps
            down[name][index] -= eps
            numeric[index] = (loss(up) - loss(down)) / (2 * eps)
        np.testing.assert_allclose(example.gradients[f"d{name}"], numeric, atol=1e-6, err_msg=name)
    # One gradient-descent step, recomputed here, lowers the loss by the amount reported.
    stepped = {**example.inputs, **{n: example.inputs[n] - example.lr * example.gradients[f"d{n}"]
                                    for n in example.updated}}
    assert np.isclose(loss(stepped), example.loss_after) and example.loss_after < example.loss


def _generated_module(derivation, directory: Path) -> dict:
    path = directory / "backprop.py"
    path.write_text(render(derivation, "numpy"), encoding="utf-8")
    return runpy.run_path(str(path))


@pytest.mark.parametrize("spec", CORPUS)
def test_worked_example_has_live_units_and_a_teachers_targets(spec, tmp_path):
    z_ = sp.Symbol("z", real=True)
    derivation = derive(SPECS / f"{spec}.toml")
    network = derivation.network
    example = worked_example(derivation)
    # Every unit behind a kink is active for some sample, every sample for some unit, and no
    # pre-activation lies within 0.05 of a kink.
    for step in network.steps:
        nodes = step.expr.atoms(Elementwise)
        if step.kind != "activation" or not any(activation_rule(node.activation).kinks for node in nodes):
            continue
        slope = 0
        for node in nodes:  # the step's slope f'(Z) from each function's own sympy derivative (PReLU has two)
            rule = activation_rule(node.activation)
            z = example.forward[node.arg.name]
            assert min((abs(z - kink).min() for kink in rule.kinks), default=1) > 0.05, step.name
            derivative = rule.derivative(z_, node.params)
            part = np.array([[float(derivative.subs(z_, v)) for v in row] for row in z])
            slope = slope + (part if node.activation != "negpart" else part * example.inputs[f"alpha{step.layer}"])
        assert (slope != 0).any(axis=0).all() and (slope != 0).any(axis=1).all(), step.name
    # No scale of a normalized value is 0 (that unit's gradient would stop there).
    for name in network.parameters:
        if network.initializers[name][0] == "scale":
            assert (np.abs(example.inputs[name]) >= 0.5).all(), (name, example.inputs[name])
    # The targets are the teacher's outputs through the loss's target rule, computed here by the
    # generated NumPy module (not by the evaluator that made them).
    module = _generated_module(derivation, tmp_path)
    teacher = {name: np.asarray(value) for name, value in example.teacher.items()}
    unmasked = {name: np.ones_like(example.inputs[name]) for name in network.masks}  # the teacher drops nothing
    prediction, _ = module["forward"](teacher, example.inputs[network.input_name], *([unmasked] if unmasked else []))
    np.testing.assert_allclose(make_targets(network, prediction), example.inputs["Y_true"], atol=1e-12)
    assert set(teacher) == set(parameter_names(network)) and any(
        not np.array_equal(teacher[name], example.inputs[name]) for name in teacher)
    # Labels: a probability is labelled at 0.5, a logit at 0, and both labels occur in every output; one-hot
    # targets hold more than one class.
    rows = example.inputs["Y_true"] if network.batch_first else example.inputs["Y_true"].T
    loss = network.spec.loss.kind
    if loss in ("bce", "bce_logits"):
        threshold = 0.5 if loss == "bce" else 0.0
        np.testing.assert_array_equal(example.inputs["Y_true"], (prediction > threshold).astype(float))
        assert ((rows == 0).any(axis=0) & (rows == 1).any(axis=0)).all(), rows
    elif set(np.unique(rows)) <= {0.0, 1.0} and (rows.sum(axis=-1) == 1).all():
        assert len(set(rows.argmax(axis=-1))) > 1, rows
    # Batch norm over two samples normalizes every value to +-1: its batch has at least 4.
    for layer, spec_layer in enumerate(network.spec.layers, start=1):
        if spec_layer.kind == "batchnorm":
            assert example.batch >= 4 and not np.allclose(np.abs(example.forward[f"xhat{layer}"]), 1, atol=1e-3)


def test_the_data_paragraph_says_which_units_are_active_as_measured():
    derivation = derive(SPECS / "lecture_deep_relu_6x8.toml")
    network, t = derivation.network, _catalog("en")
    example = worked_example(derivation)
    text = " ".join(example_sentences(network, example, t, 4))
    assert "Every unit of $a^{[1]}$, $a^{[2]}$, $a^{[3]}$, $a^{[4]}$, $a^{[5]}$ is active" in text
    assert "No pre-activation lies within 0.05 of a kink" in text
    # Units 3 and 5 of a2 made negative for the whole batch: the paragraph names exactly them, and no longer
    # claims that every unit is active; a pre-activation at 0.01 drops the kink claim.
    forward = {**example.forward, "Z2": example.forward["Z2"].copy()}
    forward["Z2"][:, [2, 4]] = -1.0
    forward["Z2"][0, 0] = 0.01
    text = " ".join(example_sentences(network, replace(example, forward=forward), t, 4))
    assert "Every unit" not in text and "No pre-activation" not in text
    assert re.search(r"no gradient back[^:]*: \$a\^\{\[2\]\}\$: 3, 5\.", text), text


def _printed(text: str, lhs: str) -> np.ndarray:
    """The first matrix printed as ``lhs = ...`` in a document, its entries read back (scientific ones too)."""
    body = re.search(r"(?<![\w\\])" + re.escape(lhs) + r" = \\begin\{bmatrix\}(.*?)\\end\{bmatrix\}", text).group(1)
    return np.array([[float(re.sub(r"\s*\\times 10\^\{(-?\d+)\}", r"e\1", cell)) for cell in row.split("&")]
                     for row in body.split(r"\\")])


def test_small_values_print_in_scientific_notation_and_masks_are_shown():
    values = np.array([[0.0, 3.5e-5, -2.4e-4, 0.00096, 0.0012, -0.5]])
    printed = _printed(f"A = {latex_matrix(values, 3)}", "A")
    np.testing.assert_allclose(printed, [[0, 3.5e-5, -2.4e-4, 9.6e-4, 0.001, -0.5]], rtol=0.05)
    # In the batch-norm example every printed value (forward values and gradients) is 0 exactly where it is 0.
    derivation = derive(SPECS / "lecture_batchnorm_softmax_l2.toml")
    example, text = worked_example(derivation), render(derivation, "markdown")
    shown = {latex_name(name): value for name, value in example.forward.items()}
    shown.update({latex_name(name): value for name, value in example.gradients.items() if name[1:] in example.updated})
    for lhs, value in shown.items():
        printed = _printed(text, lhs)
        assert ((printed == 0) == (np.atleast_2d(value) == 0)).all(), lhs
    # The dropout masks are printed with the data.
    derivation = derive(SPECS / "lecture_layernorm_dropout_gelu.toml")
    example, text = worked_example(derivation), render(derivation, "markdown")
    np.testing.assert_array_equal(_printed(text, "M^{[3]}"), example.inputs["M3"])
    assert "The dropout masks $M^{[3]}$ are part of the data" in text


def test_worked_example_seed_is_deterministic_and_changes_the_data():
    derivation = derive(SPECS / "seed.toml")
    first, again, other = (worked_example(derivation, seed=s) for s in (0, 0, 7))
    assert all(np.array_equal(first.inputs[k], again.inputs[k]) for k in first.inputs)
    assert not np.array_equal(first.inputs["X"], other.inputs["X"])
    tex = render(derivation, "beamer", options=LectureOptions(example_seed=7))
    assert latex_matrix(other.inputs["X"], 3, 6, 6) in tex and latex_matrix(first.inputs["X"], 3, 6, 6) not in tex


def test_memory_table_of_the_lecture_network():
    # The lecture's network (2 -> 3 -> 2 -> 1, ReLU, ReLU, identity) keeps X (2), Z1 and a1 (3 + 3),
    # Z2 and a2 (2 + 2) and Y_pred (1); the identity's Z3 is never read.
    rows = memory_table(derive(SPECS / "seed.toml"), batch=64)
    assert [row.kept for row in rows] == [("X",), ("Z1", "a1"), ("Z2", "a2"), ("Y_pred",)]
    assert [row.floats_per_sample for row in rows] == [2, 6, 4, 1]
    assert sum(row.bytes32 for row in rows) == 13 * 4 * 64
    assert sum(row.bytes64 for row in rows) == 13 * 8 * 64


def test_activation_notes_state_cases_and_kink_conventions():
    notes = {n["name"]: n for n in activation_notes(derive(SPECS / "depth6_piecewise_column.toml").network)}
    (relu,) = activation_notes(derive(SPECS / "relu_grad_at_zero_half.toml").network)
    assert relu["derivative"] == r"\begin{cases} 1 & z > 0 \\ \frac{1}{2} & z = 0 \\ 0 & z < 0 \end{cases}"
    assert relu["kinks"] == [{"at": "0", "left": "0", "right": "1", "value": r"\frac{1}{2}"}]
    leaky = notes[r"\operatorname{LeakyReLU}"]
    assert leaky["params"] and leaky["kinks"][0]["left"] != leaky["kinks"][0]["right"]
    # ELU with alpha = 1 has no kink in its slope: both one-sided slopes at 0 are 1.
    elu = activation_notes(derive(SPECS / "elu_default_alpha.toml").network)
    assert [n["kinks"] for n in elu if "ELU" in n["name"]] == [[]]


def _sections(markdown: str) -> dict[str, str]:
    """A Markdown document's ``## `` sections by heading."""
    return {part.split("\n", 1)[0]: part for part in re.split(r"\n## ", markdown)[1:]}


def test_activations_print_parameters_as_symbols_and_gelu_by_the_normal_distribution():
    """Swish-beta reads z sigma(beta z), beta = 1.702 stated once in each section that states it (never 851/500
    substituted); GELU reads z Phi(z) with Phi and phi defined, erf only in Phi's definition; the sigmoid's
    own definition stays elementary."""
    swish = derive(SPECS / "lecture_swish_beta.toml")
    report = swish.verify()
    markdown = render(swish, "markdown", report=report)
    deck = render(swish, "beamer", report=report)
    assert "851" not in markdown and "851" not in deck
    sections = _sections(markdown)
    note = sections["Activation functions"]
    assert r"(z) = z \sigma\left(\beta z\right)" in note and r"\beta = 1.702" in note
    stating = [text for text in sections.values() if "1.702" in text]
    assert len(stating) == 2 and all(text.count("1.702") == 1 for text in stating)
    frames = deck.split(r"\begin{frame}")
    assert [frame.count("1.702") for frame in frames if r"\beta = 1.702" in frame] == [1, 1]
    (gelu,) = [note for note in activation_notes(derive(SPECS / "gelu_mse_column.toml").network)
               if "GELU" in note["name"]]
    assert gelu["forward"] == r"z \Phi\left(z\right)"
    assert gelu["derivative"] == r"\Phi\left(z\right) + z \varphi\left(z\right)"
    assert [name for name, _ in gelu["functions"]] == ["normal_cdf", "normal_pdf"]
    assert "erf" in gelu["functions"][0][1] and "erf" not in gelu["forward"] + gelu["derivative"]
    for lang in ("en", "ko"):
        text = _sections(render(derive(SPECS / "lecture_layernorm_dropout_gelu.toml"), "markdown", lang=lang))
        (note,) = [body for body in text.values() if r"\operatorname{GELU}(z)" in body]
        assert r"\Phi\left(u\right) = " in note and note.count("erf") == 1
    (sigmoid,) = activation_notes(derive(SPECS / "sigmoid_mse_column.toml").network)[:1]
    assert sigmoid["forward"] == r"\frac{1}{1 + e^{- z}}" and sigmoid["functions"] == []


def test_the_local_gradient_arrows_are_defined_where_they_first_appear():
    derivation = derive(SPECS / "layernorm_after_dense.toml")
    report = derivation.verify()
    for lang in ("en", "ko"):
        arrows = _catalog(lang)["local_arrows"]
        assert r"$\to$" in arrows and r"$\mapsto$" in arrows
        deck = render(derivation, "beamer", lang=lang, report=report)
        first = deck.index(particles(arrows) if lang == "ko" else arrows)
        assert first < deck.index(r"\to ") and first < deck.index(r"\mapsto ") and deck.count(arrows) == 1
        markdown = render(derivation, "markdown", lang=lang, report=report)
        assert arrows in markdown and markdown.index(arrows) < markdown.index(r"\mapsto ")


def test_matrices_are_elided_past_a_readable_size():
    tex = latex_matrix(np.arange(64.0).reshape(8, 8), 3, 6, 6)
    rows = tex.removeprefix(r"\begin{bmatrix}").removesuffix(r"\end{bmatrix}").split(r" \\ ")
    assert len(rows) == 6 and rows[4].split(" & ")[4] == r"\ddots"
    assert rows[0].split(" & ") == ["0", "1", "2", "3", r"\cdots", "7"] and rows[-1].startswith("56 ")


def test_long_equations_break_at_top_level_relations_and_sums():
    lines = break_equation(["L", r"a + b + \left(c + d\right) + " + " + ".join(["x"] * 40)], 150)
    assert len(lines) > 2 and lines[0].startswith("L &= ") and all(line.startswith("&") for line in lines[1:])
    assert r"\left(c + d\right)" in "".join(lines)
    assert break_equation(["y", "x"], 150) == ["y = x"]


# -- the deck's plan --------------------------------------------------------------------------------------

def _deck(spec: str, lang: str = "en") -> dict:
    from symbackprop.lecture import lecture_context
    from symbackprop.rendering import context

    derivation = derive(SPECS / f"{spec}.toml")
    report = derivation.verify()
    ctx = context(derivation, lang=lang, report=report)
    ctx.update(lecture_context(derivation, t=ctx["t"], lang=lang, report=report, batch=64,
                               options=LectureOptions()))
    return plan(ctx, derivation, ctx["t"])


@pytest.mark.parametrize("spec", ["seed", "depth6_smooth", "softmax_ce_4_classes_column"])
def test_every_backward_frame_has_its_panel_and_the_chain_rule_links_to_one(spec):
    from symbackprop.rendering import catalog
    from symbackprop.walks import normalization_walks, softmax_walks

    deck = _deck(spec)
    derivation = derive(SPECS / f"{spec}.toml")
    # Every step on a frame with its panel; the frames without one show a step's shorter forms, or a
    # derivation people study (walks.py) on frames of its own.
    t = catalog("en")
    walks = tuple(walk["title"] for walk in [*normalization_walks(derivation, t), *softmax_walks(derivation.network, t)])
    steps = [frame for frame in deck["backward"] if frame["panel"]]
    # (a panel taller than the frame continues beside the same steps: those count once)
    shown = list(dict.fromkeys((frame["title"].removesuffix(f" {t['continued']}"), block["math"])
                               for frame in steps for block in frame["blocks"]))
    assert len(shown) == len(derivation.backward)
    others = [frame for frame in deck["backward"] if not frame["panel"] and not frame["title"].startswith(walks)]
    assert len(others) == sum(len(step.alternatives) for step in derivation.backward)
    for frame in steps:
        assert 1 <= len(frame["blocks"]) <= MAX_STEPS_PER_FRAME
        assert any(block["kind"] == "math" for block in frame["panel"])
    labels = {frame["label"] for frame in deck["backward"]}
    assert deck["chain"][0]["link"]["target"] in labels


def test_chain_rule_factors_follow_the_matrix_formula_order():
    for spec, first in (("seed", r"\underbrace{\frac{\partial Z^{[3]}}{\partial W^{[3]}}}_{a^{[2]\top}}"),
                        ("softmax_ce_4_classes_column", r"\underbrace{\frac{\partial L}{\partial Z^{[2]}}}")):
        braced = next(b["math"] for b in _deck(spec)["chain"][0]["blocks"] if r"\underbrace" in b["math"])
        assert braced.split(" = ")[1].startswith(first), braced


def test_worked_example_shows_one_layers_parameters_per_frame():
    deck = _deck("depth5_mixed_column")
    titles = [frame["title"] for frame in deck["example"]]
    for layer in range(1, 6):
        frames = [frame for frame in deck["example"] if f"Parameters of layer {layer}" in frame["title"]]
        assert len(frames) == 1 and f"W^{{[{layer}]}}" in frames[0]["blocks"][0]["math"], titles


# -- options ----------------------------------------------------------------------------------------------

def test_format_lists_and_all():
    assert parse_formats("all") == [fmt for fmt in FORMATS if fmt not in ("torch", "jax")]  # frameworks: by name
    assert parse_formats("md,beamer,ipynb,md") == ["markdown", "beamer", "ipynb"]


def test_lecture_output_is_deterministic():
    derivation = derive(SPECS / "seed.toml")
    for fmt in ("beamer", "ipynb", "markdown", "latex"):
        assert render(derivation, fmt, lang="ko") == render(derive(SPECS / "seed.toml"), fmt, lang="ko")
    assert "\\today" not in render(derivation, "beamer") and "\\date{}" in render(derivation, "beamer")


def test_cli_writes_slides_and_notebook_with_batch(tmp_path):
    result = CliRunner().invoke(main, ["derive", "--format", "beamer,ipynb,md", "--lang", "ko",
                                       "--batch", "10", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in tmp_path.iterdir()} == {"backprop_slides.tex", "backprop.ipynb", "backprop.md"}
    markdown = (tmp_path / "backprop.md").read_text("utf-8")
    assert "```mermaid" in markdown and "| 합계 | | 13 | 520 | 1,040 |" in markdown


def test_title_page_from_the_spec_and_the_command_line(tmp_path):
    spec = tmp_path / "net.toml"
    spec.write_text('author = "Ada & Kim"\ninstitute = "Seoul_Univ"\ndate = "2025-03-04"\n'
                    + (SPECS / "seed.toml").read_text("utf-8"), "utf-8")
    out = tmp_path / "out"
    result = CliRunner().invoke(main, ["derive", "--spec", str(spec), "--format", "beamer,tex,md", "--out", str(out),
                                       "--institute", "KAIST 100%", "--handout", "--example-seed", "3"])
    assert result.exit_code == 0, result.output
    slides = (out / "backprop_slides.tex").read_text("utf-8")
    assert r"\author{Ada \& Kim}" in slides and r"\institute{KAIST 100\%}" in slides
    assert r"\date{2025-03-04}" in slides and r"\documentclass[10pt,handout]{beamer}" in slides
    assert r"\author{Ada \& Kim\\ KAIST 100\%}" in (out / "backprop.tex").read_text("utf-8")
    assert "Ada \\& Kim · KAIST 100% · 2025\\-03\\-04" in (out / "backprop.md").read_text("utf-8")
    seeded = worked_example(derive(spec), seed=3)
    assert latex_matrix(seeded.inputs["X"], 3, 6, 6) in slides


def test_title_page_text_is_checked_like_the_title(tmp_path):
    result = CliRunner().invoke(main, ["derive", "--out", str(tmp_path), "--author", "a\nb"])
    assert result.exit_code == 2 and "--author" in result.output and not list(tmp_path.iterdir())
    spec = tmp_path / "net.toml"
    spec.write_text("date = 2025-03-04\n" + (SPECS / "seed.toml").read_text("utf-8"), "utf-8")
    result = CliRunner().invoke(main, ["derive", "--spec", str(spec), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "date: must be a string" in result.output


# -- the notebook -----------------------------------------------------------------------------------------

def _run_code_cells(notebook_text: str, directory: Path) -> tuple[dict, str]:
    """Run a notebook's code cells, in order, as one script in this process (matplotlib drawing
    off-screen); its namespace and what it printed."""
    import nbformat

    if _has_module("matplotlib"):
        import matplotlib

        matplotlib.use("Agg")  # this process only; a kernel started later keeps its inline backend
    script = directory / "notebook.py"
    script.write_text("\n\n".join(cell.source for cell in nbformat.reads(notebook_text, as_version=4).cells
                                   if cell.cell_type == "code"), encoding="utf-8")
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        namespace = runpy.run_path(str(script))
    return namespace, out.getvalue()


@pytest.mark.parametrize("spec", CORPUS if FULL else [*SUBSET, "mixed_norms_dropout", "loss_ng_bce_l2", "loss_bce_sum"])
def test_notebook_training_halves_the_loss(spec, tmp_path):
    namespace, _ = _run_code_cells(render(derive(SPECS / f"{spec}.toml"), "ipynb"), tmp_path)
    losses = namespace["losses"]
    assert losses[-1] <= 0.5 * losses[0] and all(b <= a for a, b in pairwise(losses))


def test_notebook_runs_top_to_bottom_in_a_fresh_kernel(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    text = render(derive(SPECS / "softmax_ce_4_classes_column.toml"), "ipynb", lang="ko")
    notebook = nbformat.reads(text, as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    printed = "".join(output.get("text", "") for output in outputs)
    assert "최대 상대 오차" in printed and "dL/dW1" in printed and "손실 변화:" in printed
    if "matplotlib" in text and _has_module("matplotlib"):
        assert any("image/png" in output.get("data", {}) for output in outputs)
        from matplotlib import font_manager

        from symbackprop.notebook import HANGUL_FONTS

        hangul = set(HANGUL_FONTS) & {font.name for font in font_manager.fontManager.ttflist}
        assert ("한글 글꼴이 설치되어 있지 않아" in printed) == (not hangul)
        assert "does not have a glyph" not in printed and "missing from font" not in printed  # the log axis's minus
    # Every code cell, the generated module's included, comments in Korean.
    assert not english_comments(notebook)


def english_comments(notebook, title: str = "") -> list[str]:
    """The comment and docstring lines of a notebook's code cells that hold an English sentence, once code
    (a word with brackets, dots, underscores or =, ``name = value``, or in backticks) and the spec's ``title``
    are taken out."""
    source = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code").replace(title, "")
    lines = [line for found in re.findall(r"#[ \t]*([^\n]*)|\"\"\"(.*?)\"\"\"", source, flags=re.DOTALL)
             for text in found for line in text.splitlines()]
    assert lines
    prose = [re.sub(r"`[^`]*`|\w+ = \S+|\S*[()\[\]._=*/'\"]\S*", " ", line) for line in lines]
    return [line for line, words in zip(lines, prose) if english_sentences(words)]


@pytest.mark.parametrize("spec", ["lecture_swish_beta", "dropout_column", "batchnorm_after_dense"])
def test_korean_notebook_code_comments_are_korean(spec):
    """Every comment and docstring line of the Korean notebook's code cells is Korean: the generated module's
    (masks, a custom activation, a shorter form) and the notebook's own; the English notebook's are English."""
    import nbformat

    derivation = derive(SPECS / f"{spec}.toml")
    report = derivation.verify()
    title = derivation.network.spec.title
    korean = nbformat.reads(render(derivation, "ipynb", lang="ko", report=report), as_version=4)
    assert english_comments(korean, title) == []
    english = nbformat.reads(render(derivation, "ipynb", report=report), as_version=4)
    assert len(english_comments(english, title)) > 20


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


# -- the layer kinds and losses, taught in every output ----------------------------------------------------

# Specs that bring each shorter form, kind sentence, sum of chain-rule terms and loss statement.
TEACHING = ["batchnorm_after_dense", "layernorm_column", "loss_ng_bce_l2", "log_softmax_nll",
            "softmax_layer_cross_entropy", "loss_cs231n_softmax_l2", "residual_block", "prelu_hidden",
            "dropout_hidden"]


def _flat(math: str) -> str:
    """Display math as one line: alignment, line breaks and the brackets opened across lines undone."""
    for old, new in ((r"\begin{aligned}", ""), (r"\end{aligned}", ""), (r"\\", ""), (r"\quad", ""), ("&", ""),
                     (r"\Bigl(", r"\left("), (r"\Bigr)", r"\right)"), (r"\Bigl[", r"\left["),
                     (r"\Bigr]", r"\right]")):
        math = math.replace(old, new)
    return re.sub(r"\s+", "", math)


def _outputs(derivation, lang: str, report) -> dict:
    """Each lecture format's text as a reader meets it: Markdown and LaTeX sources, the deck's planned frames
    (sentences and flattened math), the notebook's Markdown cells."""
    import nbformat

    from symbackprop.lecture import lecture_context
    from symbackprop.rendering import context

    ctx = context(derivation, lang=lang, report=report)
    ctx.update(lecture_context(derivation, t=ctx["t"], lang=lang, report=report, batch=64, options=LectureOptions()))
    deck = plan(ctx, derivation, ctx["t"])
    frames = [frame for section in deck.values() for frame in section]
    deck_text = "\n".join([frame["title"] for frame in frames]
                          + [block["text"] or _flat(block["math"]) for frame in frames
                             for block in [*frame["blocks"], *(frame["panel"] or [])]])
    cells = nbformat.reads(render(derivation, "ipynb", lang=lang, report=report), as_version=4).cells
    return {"markdown": render(derivation, "markdown", lang=lang, report=report),
            "latex": render(derivation, "latex", lang=lang, report=report), "beamer": deck_text,
            "ipynb": "\n".join(cell.source for cell in cells if cell.cell_type == "markdown")}


@pytest.mark.parametrize("lang", ["en", "ko"])
@pytest.mark.parametrize("spec", TEACHING)
def test_shorter_forms_kinds_and_the_loss_appear_in_every_output(spec, lang):
    derivation = derive(SPECS / f"{spec}.toml")
    report = derivation.verify()
    t = _catalog(lang)
    network = derivation.network
    outputs = _outputs(derivation, lang, report)
    # The sentences each output must hold: every kind beyond the dense layer and PReLU introduced, the loss
    # with its reduction, scale and penalty; each shorter form named, introduced, with its assumption and the
    # verifier's proof (its report row proved).
    expected = [t[f"kind_{kind}"] for kind in {layer.kind for layer in network.spec.layers} - {"dense"}]
    expected += [t["trainable_prelu"] for layer in network.spec.layers if layer.activation == "prelu"][:1]
    expected.append(t[f"loss_{loss_rule_name(network)}"])
    if network.spec.loss.l2:
        expected.append(t["loss_l2"].split("{coefficient}")[0])
    for step in derivation.backward:
        for alt in step.alternatives:
            row = next(check for check in report.checks
                       if check.name == f"dL/d{step.name} ({alt.label.replace('_', ' ')})")
            assert row.ok, row
            expected += [t[f"form_{alt.label}_intro"], t["form_proved"].split("{method}")[0]]
            if alt.assumes:
                expected.append(t[f"form_assumes_{alt.assumes}"])
    assert any(step.alternatives for step in derivation.backward) or spec in ("residual_block", "prelu_hidden",
                                                                             "dropout_hidden")
    for fmt, text in outputs.items():
        missing = [sentence for sentence in expected if sentence not in text]
        assert not missing, (fmt, missing)
    # Each shorter form's formula, in math, in every output (the deck's broken over lines, flattened here).
    from symbackprop.printing import latex, latex_name

    for step in derivation.backward:
        for alt in step.alternatives:
            formula = f"{latex_name(step.symbol.name)} = {latex(alt.expr)}"
            for fmt, text in outputs.items():
                assert _flat(formula) in _flat(text), (fmt, step.name, alt.label)


def loss_rule_name(network) -> str:
    from symbackprop.rules import loss_rule

    return loss_rule(network.spec.loss).name


@pytest.mark.parametrize("spec", ["residual_block", "skip_two_layers_column", "loss_ng_bce_l2", "batchnorm_after_dense"])
def test_sums_show_every_chain_rule_term_and_the_panel_every_local_gradient(spec):
    from symbackprop.lecture import lecture_context
    from symbackprop.mathsize import split_top_level
    from symbackprop.rendering import context
    from symbackprop.slides import _unbraced

    derivation = derive(SPECS / f"{spec}.toml")
    report = derivation.verify()
    ctx = context(derivation, report=report)
    ctx.update(lecture_context(derivation, t=ctx["t"], lang="en", report=report, batch=64, options=LectureOptions()))
    deck = Deck(ctx, derivation, ctx["t"])
    sums = [(step, row) for step, row in zip(derivation.backward, ctx["backward"], strict=True) if len(step.terms) > 1]
    assert sums

    def bare(term: str) -> str:  # a braced factor needs no brackets of its own
        return re.sub(r"\\left\(|\\right\)", "", _unbraced(term.lstrip("+ ")))

    for step, row in sums:
        # One braced term per consumer, and without their braces the terms are the formula's terms.
        terms = split_top_level(row["chain"], ("+",))
        assert len(terms) == len(step.terms) and all(r"\underbrace" in term for term in terms), row["chain"]
        assert sorted(map(bare, terms)) == sorted(map(bare, split_top_level(row["rhs"], ("+",)))), row["chain"]
        # The deck's panel beside the step shows the local gradient of each path.
        panel = "".join(_flat(block.math) for block in deck._panel([row])[0] if block.kind == "math")
        for of, wrt in row["locals"]:
            local = next(local for local in ctx["local"] if (local["of"], local["wrt"]) == (of, wrt))
            if of != "L":
                assert _flat(local["lhs"]) in panel, (step.name, of, wrt)


@pytest.mark.parametrize("spec, rate", [("prelu_hidden", r"\eta"), ("batchnorm_after_dense", r"\alpha"),
                                        ("mixed_norms_dropout", r"\alpha")])
def test_gradient_descent_updates_every_parameter(spec, rate):
    derivation = derive(SPECS / f"{spec}.toml")
    names = parameter_names(derivation.network)
    assert any(not name.startswith(("W", "b")) for name in names)
    from symbackprop.printing import latex_name

    for fmt in ("markdown", "latex", "beamer"):
        text = re.sub(r"\s+", " ", render(derivation, fmt))
        for name in names:
            param = latex_name(name)
            assert f"{param} &\\leftarrow {param} - {rate}" in text or f"{param} \\leftarrow {param} - {rate}" in text, \
                (fmt, name)


def test_local_gradients_without_a_factor_show_the_map_from_the_upstream_gradient():
    markdown = render(derive(SPECS / "batchnorm_after_dense.toml"), "markdown")
    rows = [line for line in markdown.splitlines() if line.startswith(r"| $a^{[2]}$ | $\gamma^{[2]}$ |")]
    assert rows == [(r"| $a^{[2]}$ | $\gamma^{[2]}$ | $\frac{\partial L}{\partial a^{[2]}} \mapsto \mathbf{1}_{N}^{\top} "
                    r"\left(\frac{\partial L}{\partial a^{[2]}} \odot \hat{X}^{[2]}\right)$ | no single factor: the map "
                    r"from the upstream gradient to this input's share is shown |")]


def test_the_network_picture_draws_skip_connections_and_per_unit_layers():
    """skip_one_layer: a1 (column 1) is added to the output of layer 2 (column 2) in layer 3 (column 3). The add
    layer joins unit i to unit i (three edges, not nine), and a dashed arc runs from column 1 to column 3."""
    slides = derive(SPECS / "skip_one_layer.toml").render("beamer", lang="en")
    edges = re.findall(r"\\draw\[->, gray!70\] \(n(\d)-(\d)\) -- \(n(\d)-(\d)\)", slides)
    into_add = [(a, b) for x, a, y, b in edges if (x, y) == ("2", "3")]
    into_dense = [(a, b) for x, a, y, b in edges if (x, y) == ("1", "2")]
    assert sorted(into_add) == [("0", "0"), ("1", "1"), ("2", "2")] and len(into_dense) == 9
    arcs = re.findall(r"\\draw\[->, dashed[^\]]*\] \(n(\d)-\d\.south\) \.\. controls .* \(n(\d)-\d\.south\);", slides)
    assert arcs == [("1", "3")]
    assert r"\draw[->, dashed" not in derive(SPECS / "batchnorm_after_dense.toml").render("beamer", lang="en")


@pytest.mark.parametrize("spec, formulas", [
    ("seed", {"W1": r"X^{\top} \delta^{[1]}", "W2": r"a^{[1]\top} \delta^{[2]}", "a1": r"\delta^{[2]} W^{[2]\top}"}),
    ("tests/specs/sigmoid_mse_column.toml",
     {"W1": r"\delta^{[1]} X^{\top}", "W2": r"\delta^{[2]} a^{[1]\top}", "a1": r"W^{[2]\top} \delta^{[2]}"}),
])
def test_the_dense_gradients_print_with_their_transposes(spec, formulas):
    """The LaTeX of the dense layers' gradients, written out by hand in the lecture's notation (batch-first
    dW = A^T delta, column dW = delta A^T): a printer that drops a transpose mark fails here."""
    from symbackprop.printing import latex
    from symbackprop.spec import load_spec

    derivation = derive(load_spec(spec))
    printed = {step.name: latex(step.expr) for step in derivation.backward if step.name in formulas}
    assert printed == formulas
    document = derivation.render("markdown")
    assert all(formula in document for formula in formulas.values())
