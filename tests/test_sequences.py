"""Embeddings, attention and recurrent layers: the generated module's gradients against an independent forward
pass (``tests/sequence_oracle.py``) differentiated by central differences; exact verification of the
derivation; the spec reader's refusals; and random stacks that mix the new kinds with the old ones.
"""

import functools
import os
import subprocess
import sys
import tomllib
from itertools import pairwise
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from sequence_oracle import central_differences, loss
from test_generated import load_module
from test_lecture import _run_code_cells
from test_lecture_layout import compile_tex, layout_problems, needs_tex, pdf_text

from symbackprop import derive
from symbackprop.claims import Checker
from symbackprop.errors import SpecError
from symbackprop.lecture import LectureOptions
from symbackprop.rendering import render
from symbackprop.spec import load_spec

SPECS = sorted(Path(__file__).parent.joinpath("specs_sequence").glob("*.toml"))


def _spec(path) -> dict:
    return tomllib.loads(path.read_text(encoding="utf-8"))


def _named(name: str) -> dict:
    """The corpus spec ``tests/specs_sequence/<name>.toml`` as a mapping."""
    return _spec(SPECS[0].parent / f"{name}.toml")


def _oracle_mapping(spec: dict) -> dict:
    """The spec with the defaults the oracle needs written out (head size, heads)."""
    spec = {**spec, "layers": [dict(layer) for layer in spec["layers"]]}
    width = spec["input"].get("size")
    for layer in spec["layers"]:
        if layer.get("kind") == "attention":
            layer.setdefault("heads", 1)
            layer.setdefault("head_size", layer.get("size", width) // layer["heads"])
        width = layer.get("size", width)
    return spec


def _gradients_agree(spec: dict, tmp_path, name: str, batch: int = 3):
    module = load_module(derive(spec).render("numpy"), tmp_path, name)
    rng = np.random.default_rng(1)
    params = module.init_params(1)
    X, Y = module._data(rng, batch)
    grads = module.backward(params, module.forward(params, X)[1], Y)
    oracle = _oracle_mapping(spec)
    objective = lambda: loss(oracle, params, X, Y)
    arrays = dict(params)
    if np.issubdtype(X.dtype, np.floating):
        arrays["X"] = X
    assert set(grads) == set(arrays)
    # Central differences round off by about 1e-16 |L| / eps per entry: a gradient that is exactly zero (a key
    # bias, which shifts every score of a row alike) is judged against that floor, every other on its own scale.
    floor = 1e-8 * max(abs(objective()), 1.0)
    for key, array in arrays.items():
        expected = central_differences(objective, array)
        assert grads[key].shape == array.shape, key
        error = np.linalg.norm(grads[key] - expected)
        assert error <= 1e-6 * np.linalg.norm(expected) + floor * np.sqrt(array.size), (key, error)


@pytest.mark.parametrize("path", SPECS, ids=[path.stem for path in SPECS])
def test_generated_gradients_match_an_independent_forward_pass(tmp_path, path):
    _gradients_agree(_spec(path), tmp_path, path.stem)


@pytest.mark.parametrize("path", SPECS, ids=[path.stem for path in SPECS])
def test_every_formula_is_proved_exactly(path):
    report = derive(_spec(path)).verify()
    assert report.ok, report.table()


def test_shared_weights_sum_over_steps_and_attention_backward_has_its_textbook_form():
    rnn = derive(_named("rnn_regression"))
    assert len(rnn.step("Wh1").terms) == 3  # h_0 = 0 reads no Wh
    # every step's input share is one product U = X Wx + 1 b, whose gradient stacks the steps' gradients
    assert len(rnn.step("Wx1").terms) == 1 and len(rnn.step("U1").expr.args) == 4
    block = derive(_named("transformer_block"))
    text = {step.name: str(step.expr) for step in block.backward}
    assert text["V1_1"] == "P1_1.T*dO1_1" and text["P1_1"] == "dO1_1*V1_1.T"


@pytest.mark.parametrize("name, shape", [("gru_language_model", (3, 3)), ("makemore_mlp", (3,)),
                                         ("lstm_classifier", (3,))])
def test_class_ids_and_one_hot_targets_give_the_same_gradients(tmp_path, name, shape):
    spec = _named(name)
    module = load_module(derive(spec).render("numpy"), tmp_path, f"ids_{name}")
    params = module.init_params(0)
    rng = np.random.default_rng(0)
    X = module._data(rng, 3)[0]
    classes = module.SIZES[-1]
    ids = rng.integers(0, classes, shape)
    Y = np.eye(classes)[ids]
    one_hot = module.backward(params, module.forward(params, X)[1], Y)
    by_id = module.backward(params, module.forward(params, X)[1], ids)
    assert all(np.array_equal(one_hot[key], by_id[key]) for key in one_hot)
    assert module.loss(module.forward(params, X)[0], ids) == module.loss(module.forward(params, X)[0], Y)


@pytest.mark.parametrize("mapping, message", [
    ({"input": {"size": 3}, "layers": [{"kind": "rnn", "size": 2}], "loss": {"kind": "half_sse"}},
     "give [input] steps"),
    ({"input": {"size": 3, "steps": 1}, "layers": [{"kind": "rnn", "size": 2}], "loss": {"kind": "half_sse"}},
     "at least 2"),
    ({"input": {"size": 3, "steps": 2}, "layers": [{"size": 2, "activation": "relu"}], "loss": {"kind": "half_sse"}},
     "needs a recurrent layer"),
    ({"input": {"vocab": 4}, "layers": [{"size": 2, "activation": "relu"}], "loss": {"kind": "half_sse"}},
     "must go through an embedding"),
    ({"input": {"size": 4}, "layers": [{"kind": "embedding", "size": 2}], "loss": {"kind": "half_sse"}},
     "an embedding reads token ids"),
    ({"input": {"size": 4}, "layers": [{"kind": "attention", "heads": 3}], "loss": {"kind": "half_sse"}},
     "not a multiple of heads"),
    ({"input": {"size": 4}, "layers": [{"kind": "attention"}, {"kind": "batchnorm"}], "loss": {"kind": "half_sse"}},
     "mixes the positions"),
    ({"input": {"size": 3, "steps": 2}, "layers": [{"kind": "lstm", "size": 2}, {"kind": "gru", "size": 2}],
      "loss": {"kind": "half_sse"}}, 'return = \\"all\\"'),
    ({"input": {"size": 3, "steps": 2}, "layers": [{"kind": "lstm", "size": 2, "return": "some"}],
      "loss": {"kind": "half_sse"}}, "unknown return"),
    ({"layout": "column", "input": {"size": 3}, "layers": [{"kind": "attention"}], "loss": {"kind": "half_sse"}},
     "batch-first only"),
    ({"input": {"vocab": 4, "size": 2}, "layers": [{"kind": "embedding", "size": 2}], "loss": {"kind": "half_sse"}},
     "no 'size'"),
    ({"input": {"size": 2, "steps": 3}, "layers": [{"kind": "rnn", "size": 2}, {"kind": "add", "from": "X"}],
      "loss": {"kind": "half_sse"}}, "'X' has a row per sample and step but this layer's input has one row per sample"),
    ({"input": {"size": 2, "steps": 3},
      "layers": [{"kind": "rnn", "size": 2, "return": "all"}, {"kind": "gru", "size": 2}, {"kind": "add", "from": "a1"}],
      "loss": {"kind": "half_sse"}}, "'a1' has a row per sample and step"),
    ({"input": {"vocab": 3}, "layers": [{"kind": "embedding", "size": 3}, {"kind": "add", "from": "X"}],
      "loss": {"kind": "half_sse"}}, "'X' holds token ids, which cannot be added"),
    ({"input": {"shape": [1, 3, 3]}, "layers": [{"kind": "flatten"}, {"kind": "attention"}],
      "loss": {"kind": "half_sse"}}, "an image input's rows are images"),
])
def test_misplaced_sequence_layers_are_spec_errors(mapping, message):
    with pytest.raises(SpecError) as error:
        load_spec(mapping)
    assert message.replace("\\", "") in str(error.value)


@st.composite
def sequence_stacks(draw):
    """A recurrent, attention or embedding front end, then dense, norm, activation or skip layers."""
    front = draw(st.sampled_from(["rnn", "lstm", "gru", "attention", "embedding"]))
    if front in ("rnn", "lstm", "gru"):
        spec_input = {"size": draw(st.integers(1, 3)), "steps": draw(st.integers(2, 3))}
        every = draw(st.booleans())
        layers = [{"kind": front, "size": draw(st.integers(1, 3)), "return": "all" if every else "last"}]
        width = layers[0]["size"]
    elif front == "attention":
        heads = draw(st.integers(1, 2))
        spec_input = {"size": 2 * heads}
        layers = [{"kind": "attention", "heads": heads, "causal": draw(st.booleans()), "bias": draw(st.booleans())}]
        width = 2 * heads
    else:
        context = draw(st.integers(1, 2))
        spec_input = {"vocab": draw(st.integers(2, 4)), "context": context}
        layers = [{"kind": "embedding", "size": draw(st.integers(1, 2))}]
        width = layers[0]["size"] * context
    for _ in range(draw(st.integers(0, 2))):
        choice = draw(st.sampled_from(["dense", "layernorm", "activation", "add"]))
        if choice == "dense":
            width = draw(st.integers(1, 3))
            layers.append({"size": width, "activation": draw(st.sampled_from(["tanh", "sigmoid", "identity"]))})
        elif choice == "add":
            layers.append({"kind": "add", "from": f"a{len(layers)}"})
        elif choice == "layernorm" and width > 1:
            layers.append({"kind": "layernorm"})
        elif choice == "activation":
            layers.append({"kind": "activation", "activation": "tanh"})
    layers.append({"size": 2, "activation": "identity"})
    return {"input": spec_input, "layers": layers, "loss": {"kind": "half_sse"}}


@settings(max_examples=15, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=sequence_stacks())
def test_random_stacks_with_the_new_kinds_are_proved_and_match_the_oracle(tmp_path, spec):
    report = derive(spec).verify()
    assert report.ok, report.table()
    _gradients_agree(spec, tmp_path, "stack", batch=2)


FOUR = ["makemore_mlp", "transformer_block", "lstm_classifier", "gru_language_model"]  # the four


# Compiling costs seconds a document: by default the two longest decks, one in each language;
# SYMBACKPROP_FULL_LECTURE=1 compiles all four in both.
COMPILED = ([(name, lang) for name in FOUR for lang in ("en", "ko")] if os.environ.get("SYMBACKPROP_FULL_LECTURE") == "1"
            else [("transformer_block", "ko"), ("lstm_classifier", "en")])


@needs_tex
@pytest.mark.parametrize("name, lang", COMPILED)
def test_deck_and_article_compile_and_fit_the_page(tmp_path, name, lang):
    derivation = derive(_named(name))
    deck = render(derivation, "beamer", lang=lang, options=LectureOptions(handout=True))
    pdf, log = compile_tex(deck, tmp_path, "deck", runs=2)
    assert not layout_problems(log)
    text = pdf_text(pdf)
    titles = {"attention": ("Attention: the backward pass", "어텐션의 역전파"),
              "bptt": ("Backpropagation through time", "시간 역전파"), "embedding": ("Embedding: a scatter-add", "임베딩: scatter-add")}
    kinds = {"makemore_mlp": ["embedding"], "transformer_block": ["attention"], "lstm_classifier": ["bptt"],
             "gru_language_model": ["embedding", "bptt"]}[name]
    for kind in kinds:  # the slide of each general form is there, in the deck's language
        assert any(title in text for title in titles[kind]), kind
    _, log = compile_tex(render(derivation, "latex", lang=lang), tmp_path, "article")
    assert not layout_problems(log)


@pytest.mark.parametrize("name", FOUR)
def test_notebook_trains_to_a_falling_loss(tmp_path, name):
    namespace, _ = _run_code_cells(render(derive(_named(name)), "ipynb"),
                                   tmp_path)
    losses = namespace["losses"]
    assert losses[-1] <= 0.5 * losses[0] and all(b <= a for a, b in pairwise(losses))


@pytest.mark.parametrize("name", ["transformer_block", "attention_bias"])
def test_a_batch_of_sequences_is_the_sum_of_its_sequences(tmp_path, name):
    spec = _named(name)
    module = load_module(derive(spec).render("numpy"), tmp_path, f"batched_{name}")
    params = module.init_params(0)
    rng = np.random.default_rng(2)
    width, out = spec["input"]["size"], derive(spec).network.spec.sizes[-1]
    X, Y = rng.standard_normal((3, 5, width)), rng.standard_normal((3, 5, out))
    batch = module.backward(params, module.forward(params, X)[1], Y)
    each = [module.backward(params, module.forward(params, X[b])[1], Y[b]) for b in range(3)]
    for key, value in batch.items():
        expected = np.stack([g[key] for g in each]) if key == "X" else sum(g[key] for g in each)
        np.testing.assert_allclose(value, expected, rtol=1e-12, atol=1e-12)
    total = sum(module.loss(module.forward(params, X[b])[0], Y[b]) for b in range(3))
    assert module.loss(module.forward(params, X)[0], Y) == pytest.approx(total, rel=1e-12)


@pytest.mark.parametrize("ids", [False, True], ids=["vectors", "token-ids"])
def test_dropout_in_an_attention_network_draws_a_mask_row_per_position_of_each_sequence(tmp_path, ids):
    """forward() without masks on a batch of sequences (B, T, ...): a mask row for each of the B T positions (a
    mask for B rows did not broadcast), in the parameters' dtype (token ids are integers); with those masks the
    batch is the sum of its sequences."""
    first = [{"kind": "embedding", "size": 4}] if ids else []
    spec = {"input": {"vocab": 5} if ids else {"size": 3},
            "layers": [*first, {"kind": "attention", "heads": 2 if ids else 1}, {"kind": "dropout", "p": 0.25},
                       {"size": 2, "activation": "identity"}], "loss": {"kind": "half_sse"}}
    module = load_module(derive(spec).render("numpy"), tmp_path, f"dropout_batch_{ids}")
    params = module.init_params(0, dtype=np.float32)
    rng = np.random.default_rng(3)
    X = rng.integers(0, 5, (3, 6, 1)) if ids else rng.standard_normal((3, 6, 3)).astype(np.float32)
    Y_pred, cache = module.forward(params, X)
    masks = {name: value for name, value in cache.items() if name.startswith("M")}
    assert Y_pred.shape == (3, 6, 2) and Y_pred.dtype == np.float32
    assert masks and all(mask.shape[0] == 18 and mask.dtype == np.float32 for mask in masks.values())
    rows = {name: value.reshape(3, 6, -1) for name, value in masks.items()}
    for b in range(3):
        alone = module.forward(params, X[b], {name: value[b] for name, value in rows.items()})[0]
        np.testing.assert_allclose(Y_pred[b], alone, rtol=1e-6)


# Textbook claims for the new kinds, right and wrong, in NumPy and LaTeX notation: (spec, claim, correct).
CLAIMS = [
    ("attention_bias", "dV1 = P1.T @ dO1", True),
    ("attention_bias", "dP1 = dO1 @ V1.T", True),
    ("attention_bias", "dS1 = P1 * (dP1 - rowsum(dP1 * P1))", True),
    ("attention_bias", "dS1 = P1 * dP1", False),  # the softmax Jacobian taken as diagonal
    ("attention_bias", "dQ1 = dS1 @ K1 / np.sqrt(2)", True),
    ("attention_bias", "dK1 = dS1.T @ Q1 / np.sqrt(2)", True),
    ("attention_bias", "dK1 = dS1 @ Q1 / np.sqrt(2)", False),
    ("attention_bias", "dQ1 = dS1 @ K1", False),  # the scale forgotten
    ("attention_bias", "dWq1 = X.T @ dQ1", True),
    ("transformer_block", r"\frac{\partial L}{\partial V^{[1]}_{2}} = P^{[1]\top}_{2} \frac{\partial L}{\partial O^{[1]}_{2}}",
     True),
    ("transformer_block", "dS1_2 = P1_2 * (dP1_2 - rows_sum(dP1_2 * P1_2))", True),
    ("rnn_regression", "dWh1 = h1_1.T @ dZ1_2 + h1_2.T @ dZ1_3 + h1_3.T @ dZ1_4", True),
    ("rnn_regression", "dWh1 = h1_3.T @ dZ1_4", False),  # only the last step's share
    ("rnn_regression", "dZ1_4 = dh1_4 * (1 - h1_4**2)", True),
    ("rnn_regression", r"\frac{\partial L}{\partial h^{[1]}_{3}} = \delta^{[1]}_{4} W_h^{[1]\top}", True),
    ("rnn_regression", r"\frac{\partial L}{\partial h^{[1]}_{3}} = \delta^{[1]}_{4} W_h^{[1]}", False),
    ("rnn_regression", (r"\frac{\partial L}{\partial W_h^{[1]}} = h^{[1]\top}_{1} \delta^{[1]}_{2} + "
                       r"h^{[1]\top}_{2} \delta^{[1]}_{3} + h^{[1]\top}_{3} \delta^{[1]}_{4}"), True),
    ("lstm_classifier", "dc1_2 = dh1_2 * o1_2 * (1 - np.tanh(c1_2)**2) + dc1_3 * f1_3", True),
    ("lstm_classifier", "dc1_2 = dh1_2 * o1_2 * (1 - np.tanh(c1_2)**2)", False),  # the path through c_3 dropped
]


@pytest.mark.parametrize("name, claim, correct", CLAIMS, ids=[claim[:50] for _, claim, _ in CLAIMS])
def test_check_judges_the_textbook_formulas_of_the_new_kinds(name, claim, correct):
    verdict = _checker(name).check(claim)
    assert verdict.verdict == ("correct" if correct else "wrong"), verdict.text()


@functools.cache
def _checker(name: str) -> Checker:
    """One checker per corpus spec for the whole module (each derives once)."""
    return Checker(_named(name))


def _at(latex: str, t: int) -> str:
    """A general-t formula written at step ``t``."""
    return latex.replace("_{t+1}", f"_{{{t + 1}}}").replace("_{t-1}", f"_{{{t - 1}}}").replace("_{t}", f"_{{{t}}}")


UNREAD = ("x_{t", "[:", ",t", "langle", r"\big|")  # notations the claim parser does not read


@pytest.mark.parametrize("name", ["rnn_regression", "lstm_classifier", "gru_language_model"])
def test_every_general_step_formula_is_judged_correct_by_check_at_each_step_it_names(name):
    """A BPTT line 'for t = a..b' is a claim about every such t: each instance must pass ``check``'s exact judge
    (lines whose notation the claim parser does not read, the input's rows x_t, gate blocks and concatenations, are
    skipped)."""
    from symbackprop.patterns import patterns

    checker = _checker(name)
    checked = 0
    for pattern in patterns(checker.derivation):
        for equation in pattern.equations:
            if equation.first is None or any(mark in equation.lhs + equation.rhs for mark in UNREAD):
                continue
            for t in range(equation.first, equation.last + 1):
                claim = f"{_at(equation.lhs, t)} = {_at(equation.rhs, t)}"
                verdict = checker.check(claim, latex=True)
                assert verdict.verdict == "correct", verdict.text()
                checked += 1
    assert checked >= 4


def test_general_forms_name_only_the_steps_where_they_hold():
    from symbackprop.patterns import patterns

    (rnn,) = patterns(derive(_named("rnn_regression")))
    ranges = {eq.lhs: (eq.first, eq.last) for eq in rnn.equations}
    assert ranges[r"\frac{\partial L}{\partial h^{[1]}_{t}}"] == (1, 3)  # at t = T the upstream is the next layer's
    sums = {eq.lhs: eq.rhs for eq in rnn.equations if eq.first is None}
    assert sums[r"\frac{\partial L}{\partial W_{h}^{[1]}}"].startswith(r"\sum_{t=2}^{4}")  # h_0 = 0 reads no W_h
    (lstm,) = patterns(derive(_named("lstm_classifier")))
    ranges = {eq.lhs: (eq.first, eq.last) for eq in lstm.equations}
    assert ranges[r"\frac{\partial L}{\partial A^{[1]}_{t}}"] == (2, 3)  # at t = 1 the forget gate meets c_0 = 0


# A student's backward pass for the new kinds: the generated module itself is right; each mistake a course
# sees is flagged on the gradients it touches (the generated line replaced by the mistaken one).
GRADES = [
    ("lstm_classifier", None, set()),
    ("lstm_classifier", ("dWh1 = ", "    dWh1 = h1_2.T @ dA1_3  # only the last step's share\n"), {"Wh1"}),
    ("makemore_mlp", None, set()),
    ("makemore_mlp", ("dC1 = ", "    dC1 = scatter_rows(X[:, 0], da1[:, :2], 6)  # the first id's share only\n"),
     {"C1"}),
    ("gru_language_model", None, set()),
    ("transformer_block", ("dS1_1 = ", "    dS1_1 = dP1_1 * P1_1  # the softmax Jacobian as diagonal\n"),
     {"Wq1", "Wk1", "X"}),
]


@pytest.mark.parametrize("name, mistake, wrong", GRADES, ids=[f"{g[0]}-{bool(g[1])}" for g in GRADES])
def test_grade_flags_exactly_the_gradients_a_mistake_touches(tmp_path, name, mistake, wrong):
    from symbackprop.grading import Grader

    spec = _named(name)
    source = derive(spec).render("numpy")
    if mistake is not None:
        start, line = mistake
        lines = source.splitlines(keepends=True)
        index = next(i for i, text in enumerate(lines) if text.lstrip().startswith(start))
        lines[index] = line
        source = "".join(lines)
    path = tmp_path / "student.py"
    path.write_text(source, encoding="utf-8")
    grade = Grader(spec).grade(path)
    assert {g.name for g in grade.gradients if not g.ok} == wrong, grade


def test_a_head_width_whose_square_root_the_field_lacks_is_said_not_raised():
    """1/sqrt(67) has no exact value modulo the prime: verify falls back to witness sizes with a note, and
    check answers undecided, each naming the root."""
    spec = {"input": {"size": 67}, "layers": [{"kind": "attention"}, {"size": 1, "activation": "identity"}],
            "loss": {"kind": "half_sse"}}
    report = derive(spec).verify(batch=2)
    assert report.ok and report.sizes == "witness" and "sqrt(67)" in report.note
    verdict = Checker(spec).check("dQ1 = dS1 @ K1 / np.sqrt(67)")
    assert verdict.verdict == "undecided" and "sqrt(67)" in verdict.detail


@pytest.mark.parametrize("kind, first", [("rnn", {"size": 2}), ("lstm", {"size": 2}),
                                         ("gru", {"vocab": 4, "embedding": 2})], ids=["rnn", "lstm", "gru-ids"])
def test_a_skip_connection_past_every_step_of_a_recurrent_layer_matches_the_oracle(tmp_path, kind, first):
    """A recurrent layer's steps, then a skip connection that adds its input back: the gradient of the steps'
    output is read by each step's backward line as a block (a view of the array) and again whole by the skip's,
    so no step may scale its block in place."""
    layers = [{"kind": kind, "size": 2, "return": "all"}, {"kind": "add", "from": "X"}]
    if "vocab" in first:
        layers = [{"kind": "embedding", "size": first["embedding"]}, *layers]
        layers[2] = {"kind": "add", "from": "a1"}
    spec = {"input": {**{k: v for k, v in first.items() if k != "embedding"}, "steps": 3},
            "layers": [*layers, {"size": 3, "activation": "identity"}],
            "loss": {"kind": "half_sse"}}
    _gradients_agree(spec, tmp_path, f"skip_{kind}")


@pytest.mark.parametrize("kind", ["dropout", "batchnorm", "layernorm"])
def test_layers_after_every_step_of_a_recurrent_layer_prove_and_run(tmp_path, kind):
    """Dropout and normalization over the T N rows of a sequence (batch norm's statistics over all of them):
    proved exactly, and the module runs its own gradient check (masks drawn for T N rows)."""
    spec = {"input": {"size": 3, "steps": 3},
            "layers": [{"kind": "gru", "size": 4, "return": "all"}, {"kind": kind},
                       {"size": 2, "activation": "identity"}], "loss": {"kind": "half_sse"}}
    derivation = derive(spec)
    assert derivation.verify().ok
    module = tmp_path / "backprop.py"
    module.write_text(derivation.render("numpy"), encoding="utf-8")
    done = subprocess.run([sys.executable, str(module)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
