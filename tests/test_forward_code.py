"""A forward pass written as code (``--forward``): derived, proved, and every gradient of the generated backward
against PyTorch autograd on the same forward pass rebuilt in torch (an independent oracle); unsupported code
refused with file:line:col."""

import functools
import re
import shutil
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from test_generated import load_module

from symbackprop import derive
from symbackprop.cli import main
from symbackprop.evaluate import Evaluator, Float64Backend
from symbackprop.forward_code import ForwardCodeError, load_forward
from symbackprop.forward_output import exact_zeros
from symbackprop.lecture import LectureOptions
from symbackprop.verify import random_float_inputs

ATOMIC = Path(__file__).parent / "forward_code" / "atomic.py"


def _torch_gradients(inputs):
    """The atomic forward pass rebuilt in torch (as a student would write it), every value's .grad."""
    torch = pytest.importorskip("torch")
    t = {name: torch.tensor(value, dtype=torch.float64, requires_grad=True) for name, value in inputs.items()}
    X, Y, W1, b1, bngain, bnbias, W2, b2 = (t[k] for k in ("X", "Y", "W1", "b1", "bngain", "bnbias", "W2", "b2"))
    n = X.shape[0]
    values = {}
    values["hprebn"] = hprebn = X @ W1 + b1
    values["bnmeani"] = bnmeani = 1 / n * hprebn.sum(0, keepdim=True)
    values["bndiff"] = bndiff = hprebn - bnmeani
    values["bndiff2"] = bndiff2 = bndiff ** 2
    values["bnvar"] = bnvar = 1 / (n - 1) * bndiff2.sum(0, keepdim=True)
    values["bnvar_inv"] = bnvar_inv = (bnvar + 1e-5) ** -0.5
    values["bnraw"] = bnraw = bndiff * bnvar_inv
    values["hpreact"] = hpreact = bngain * bnraw + bnbias
    values["h"] = h = torch.tanh(hpreact)
    values["logits"] = logits = h @ W2 + b2
    values["logit_maxes"] = logit_maxes = logits.max(1, keepdim=True).values
    values["norm_logits"] = norm_logits = logits - logit_maxes
    values["counts"] = counts = norm_logits.exp()
    values["counts_sum"] = counts_sum = counts.sum(1, keepdim=True)
    values["counts_sum_inv"] = counts_sum_inv = counts_sum ** -1
    values["probs"] = probs = counts * counts_sum_inv
    values["logprobs"] = logprobs = probs.log()
    values["picked"] = picked = (logprobs * Y).sum(1, keepdim=True)
    loss = -picked.mean()
    for value in values.values():
        value.retain_grad()
    loss.backward()
    grads = {f"d{name}": value.grad.numpy() for name, value in {**t, **values}.items()}
    return float(loss.detach()), grads


def test_atomic_forward_pass_is_proved_and_every_gradient_matches_autograd(tmp_path):
    derivation = derive(forward=ATOMIC)
    report = derivation.verify()
    assert report.ok, report.table()
    names = {step.name for step in derivation.backward}
    assert {"X", "Y", "W1", "b1", "bngain", "bnbias", "W2", "b2", "bnvar_inv", "logit_maxes", "picked"} <= names
    module = load_module(derivation.render("numpy"), tmp_path, "generated_forward")
    rng = np.random.default_rng(0)
    inputs = module.random_inputs(3)
    inputs["Y"] = np.eye(27)[rng.integers(0, 27, 32)]  # one-hot targets
    loss, cache = module.forward(inputs)
    grads = module.backward(cache)
    torch_loss, expected = _torch_gradients(inputs)
    assert loss == pytest.approx(torch_loss, rel=1e-12)
    assert set(grads) == set(expected)
    for key, value in expected.items():
        assert grads[key].shape == value.shape, key
        np.testing.assert_allclose(grads[key], value, rtol=1e-7, atol=1e-10, err_msg=key)
    assert module.gradient_check() < 1e-5


def test_log_sum_exp_softmax_relu_and_sqrt(tmp_path):
    path = tmp_path / "lse.py"
    path.write_text(textwrap.dedent('''
        import numpy as np
        SHAPES = {"X": ("N", "d"), "T": ("N", "k"), "W": ("d", "k"), "b": (1, "k")}

        def forward(X, T, params):
            W, b = params
            z = np.maximum(X @ W + b, 0)
            s = np.sqrt(z * z + 1)
            lse = np.log(np.exp(s).sum(axis=1, keepdims=True))
            logp = s - lse
            loss = -(logp * T).sum() / X.shape[0]
            return loss
    '''))
    derivation = derive(forward=path)
    assert derivation.verify().ok
    module = load_module(derivation.render("numpy"), tmp_path, "generated_forward")
    torch = pytest.importorskip("torch")
    inputs = module.random_inputs(1)
    loss, cache = module.forward(inputs)
    grads = module.backward(cache)
    t = {k: torch.tensor(v, requires_grad=True) for k, v in inputs.items()}
    z = torch.relu(t["X"] @ t["W"] + t["b"])
    z.retain_grad()
    s = torch.sqrt(z * z + 1)
    logp = s - torch.logsumexp(s, dim=1, keepdim=True)
    expected = -(logp * t["T"]).sum() / inputs["X"].shape[0]
    expected.backward()
    assert loss == pytest.approx(float(expected))
    for name in ("X", "T", "W", "b"):
        np.testing.assert_allclose(grads[f"d{name}"], t[name].grad.numpy(), rtol=1e-7, atol=1e-12, err_msg=name)
    np.testing.assert_allclose(grads["dz"], z.grad.numpy(), rtol=1e-7, atol=1e-12)


def _refusal(tmp_path, text, name="bad.py"):
    """The one-line error ``load_forward`` gives for the file ``text``, and the file's path."""
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ForwardCodeError) as error:
        load_forward(path)
    return str(error.value), path


@pytest.mark.parametrize(("body", "where", "words"), [
    ("    for i in range(3):\n        a = X @ W\n", "4:5", "a loop (for)"),
    ("    if True:\n        a = X @ W\n", "4:5", "an if statement"),
    ("    a = np.cosh(X @ W)\n", "4:9", "unknown call np.cosh()"),
    ("    a = X @ W\n    a += 1\n", "5:5", "in-place mutation"),
    ("    a = X @ V\n", "4:13", "undefined name 'V'"),
    ("    a = X @ X\n", "4:9", "cannot multiply"),
    ("    a = X[0] @ W\n", "4:9", "indexing: supported are"),
])
def test_unsupported_code_is_refused_with_its_place(tmp_path, body, where, words):
    message, path = _refusal(tmp_path, 'SHAPES = {"X": ("N", "d"), "W": ("d", "k")}\n\ndef forward(X, W):\n' + body
                             + "    loss = a.sum()\n    return loss\n")
    assert message.startswith(f"{path}:{where}: ")
    assert words in message


def test_a_missing_shape_is_named(tmp_path):
    path = tmp_path / "noshape.py"
    path.write_text('SHAPES = {"X": ("N", "d")}\n\ndef forward(X, W):\n    a = X @ W\n    loss = a.sum()\n'
                    "    return loss\n")
    with pytest.raises(ForwardCodeError, match=r"noshape.py:4:13: cannot infer the shape of input 'W': add it to SHAPES"):
        load_forward(path)


def test_cli_writes_md_tex_and_py_and_refuses_framework_modules(tmp_path):
    runner = CliRunner()
    result = runner.invoke(main, ["derive", "--forward", str(ATOMIC), "--out", str(tmp_path / "out"), "-q",
                                  "--sizes", "N=8,d=3"])
    assert result.exit_code == 0, result.output
    written = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert written == ["backprop.md", "backprop.py", "backprop.tex"]
    module_text = (tmp_path / "out" / "backprop.py").read_text()
    assert "'N': 8" in module_text and "'dbnvar_inv': dbnvar_inv" in module_text
    assert "dL/dbnvar_inv" not in module_text
    assert "### Line 19: `bnvar_inv = (bnvar + 1e-5) ** -0.5`" in (tmp_path / "out" / "backprop.md").read_text()
    refused = runner.invoke(main, ["derive", "--forward", str(ATOMIC), "--out", str(tmp_path / "o2"),
                                   "--format", "torch"])
    assert refused.exit_code == 2
    assert refused.stderr.strip() == ("symbackprop: error: --format torch: a forward pass written as code (--forward) "
                                      "is printed as md, tex, beamer, py or ipynb")
    bad = tmp_path / "bad.py"
    bad.write_text("def forward(X):\n    while True:\n        pass\n    return X\n")
    failed = runner.invoke(main, ["derive", "--forward", str(bad), "--out", str(tmp_path / "o3")])
    assert failed.exit_code == 2
    assert failed.stderr.strip() == f"symbackprop: error: {bad}:2:5: a loop (while) is not supported: the forward " \
                                    "pass must be straight-line assignments"


# -- the makemore-style pass: an embedding lookup, flattening, batch norm, a stabilized softmax, a picked mean ----

MAKEMORE = {spelling: Path(__file__).parent / "forward_code" / f"makemore_{spelling}.py"
            for spelling in ("numpy", "torch")}


@functools.cache
def _makemore(spelling):
    """The derivation of one spelling of the makemore-style pass, verified once for the tests that read it."""
    derivation = derive(forward=MAKEMORE[spelling])
    derivation.verify()
    return derivation


def _makemore_autograd(inputs):
    """The makemore-style forward pass written here in torch (float64), every value's .grad by autograd."""
    torch = pytest.importorskip("torch")
    t = {name: torch.tensor(value, dtype=torch.float64, requires_grad=True) for name, value in inputs.items()
         if name not in ("Xb", "Yb")}
    Xb, Yb = torch.tensor(inputs["Xb"]), torch.tensor(inputs["Yb"])
    C, W1, b1, bngain, bnbias, W2, b2 = (t[k] for k in ("C", "W1", "b1", "bngain", "bnbias", "W2", "b2"))
    n = Xb.shape[0]
    v = {}
    v["emb"] = C[Xb]
    v["embcat"] = v["emb"].reshape(n, -1)
    v["hprebn"] = v["embcat"] @ W1 + b1
    v["bnmeani"] = v["hprebn"].mean(0, keepdim=True)
    v["bndiff"] = v["hprebn"] - v["bnmeani"]
    v["bndiff2"] = v["bndiff"] ** 2
    v["bnvar"] = v["bndiff2"].sum(0, keepdim=True) / (n - 1)
    v["bnvar_inv"] = (v["bnvar"] + 1e-5) ** -0.5
    v["bnraw"] = v["bndiff"] * v["bnvar_inv"]
    v["hpreact"] = bngain * v["bnraw"] + bnbias
    v["h"] = torch.tanh(v["hpreact"])
    v["logits"] = v["h"] @ W2 + b2
    v["logit_maxes"] = v["logits"].max(1, keepdim=True).values
    v["norm_logits"] = v["logits"] - v["logit_maxes"]
    v["counts"] = v["norm_logits"].exp()
    v["counts_sum"] = v["counts"].sum(1, keepdim=True)
    v["counts_sum_inv"] = 1 / v["counts_sum"]
    v["probs"] = v["counts"] * v["counts_sum_inv"]
    v["logprobs"] = v["probs"].log()
    v["picked"] = v["logprobs"][torch.arange(n), Yb]
    loss = -v["picked"].mean()
    for value in v.values():
        value.retain_grad()
    loss.backward()
    return float(loss.detach()), {f"d{name}": value.grad.numpy() for name, value in {**t, **v}.items()}


@pytest.mark.parametrize("spelling", sorted(MAKEMORE))
def test_makemore_style_pass_is_proved_and_every_gradient_matches_autograd(tmp_path, spelling):
    derivation = _makemore(spelling)
    report = derivation.verify()
    assert report.ok, report.table()
    assert {"dL/dC", "dL/demb", "dL/dlogit_maxes"} <= {check.name for check in report.checks}
    module = load_module(derivation.render("numpy"), tmp_path, f"makemore_{spelling}")
    inputs = module.random_inputs(5)
    assert inputs["Xb"].shape == (32, 3) and inputs["Yb"].shape == (32,) and inputs["Xb"].dtype.kind == "i"
    inputs["Xb"][:4] = [[0, 1, 0], [0, 0, 0], [1, 1, 1], [0, 2, 0]]  # repeated ids: the scatter must add them up
    loss, cache = module.forward(inputs)
    assert cache["emb"].shape == (32, 3, 10)
    grads = module.backward(cache)
    expected_loss, expected = _makemore_autograd(inputs)
    assert loss == pytest.approx(expected_loss, rel=1e-12)
    names = {name for name in expected if name[1:] in {*cache, "loss"}}
    assert set(grads) == names - {"dXb", "dYb"}
    assert ("dpicked" in grads) == (spelling == "numpy")  # the torch file picks inside the mean's line
    for key in sorted(grads):
        assert grads[key].shape == expected[key].shape, key
        np.testing.assert_allclose(grads[key], expected[key], rtol=1e-10, atol=1e-10, err_msg=key)
    assert module.gradient_check() < 1e-5


def test_the_stabilizing_max_is_proved_to_add_nothing():
    derivation = _makemore("numpy")
    zeros = exact_zeros(derivation)
    # b1 too: batch norm subtracts each column's mean, so a bias added before it cannot change the loss
    assert zeros.gradients == {"logit_maxes", "b1"}
    assert ("logits", "logit_maxes") in zeros.shares and ("logits", "norm_logits") not in zeros.shares
    markdown = derivation.render("markdown")
    assert "**Exactly 0** in every entry: the paths from `logit_maxes` to the loss cancel" in markdown
    assert ("The share from line 28 is exactly 0 (proved the same way), so the path through it adds nothing:\n\n"
            r"$$\mathrm{d}\mathit{logits} = \mathrm{d}\mathit{norm\_logits}$$") in markdown


def _max_paths_autograd(logits, Yb):
    """dloss/dlogit_maxes of the makemore-style softmax along each of its two paths, in torch from the logits:
    through probs with counts_sum held constant, and through counts_sum with the counts that probs reads held
    constant."""
    torch = pytest.importorskip("torch")
    grads = {}
    for path in ("probs", "counts_sum"):
        logits_t = torch.tensor(logits, dtype=torch.float64)
        maxes = logits_t.max(1, keepdim=True).values.requires_grad_()
        counts = (logits_t - maxes).exp()
        counts_sum = (counts.detach() if path == "probs" else counts).sum(1, keepdim=True)
        probs = (counts if path == "probs" else counts.detach()) * counts_sum ** -1
        loss = -probs.log()[torch.arange(len(Yb)), torch.tensor(Yb)].mean()
        loss.backward()
        grads[path] = maxes.grad.numpy()
    return grads


def test_the_stabilizing_max_is_shown_as_two_paths_that_cancel_each_against_autograd():
    derivation = _makemore("numpy")
    paths = exact_zeros(derivation).paths
    assert set(paths) == {"logit_maxes", "b1"}  # b1: through bndiff and through the batch mean
    found = paths["logit_maxes"]
    assert found.split == "counts" and [reader for reader, _ in found.terms] == ["probs", "counts_sum"]
    net = derivation.network
    sizes = net.sizes(witness=False)
    values = random_float_inputs(net, sizes, np.random.default_rng(0))
    evaluator = Evaluator(Float64Backend(), dict(values), sizes)
    evaluator.forward(net)
    evaluator.backward(derivation)
    expected = _max_paths_autograd(evaluator.env["logits"], values["Yb"].argmax(axis=1))
    for reader, expr in found.terms:
        value = evaluator(expr)
        np.testing.assert_allclose(value, expected[reader], rtol=1e-9, atol=1e-12, err_msg=reader)
        assert np.abs(value).max() > 1e-3  # each path alone changes the loss
    np.testing.assert_allclose(sum(expected.values()), 0, atol=1e-12)
    markdown = derivation.render("markdown")
    assert ("The paths cancel: the gradient of `counts` (line 30) is the sum of the shares of line 33 (`probs`) "
            "and line 31 (`counts_sum`)") in markdown
    assert (r"$$\mathrm{d}\mathit{logit\_maxes}\big|_{\mathit{probs}} + \mathrm{d}\mathit{logit\_maxes}\big|"
            r"_{\mathit{counts\_sum}} = \mathrm{d}\mathit{logit\_maxes} = 0$$") in markdown


def test_a_max_that_does_not_cancel_is_not_called_zero(tmp_path):
    # Without the normalization the max's path changes the loss: its gradient must not be judged 0.
    path = tmp_path / "shifted.py"
    path.write_text('SHAPES = {"X": ("N", "k"), "T": ("N", "k")}\n\ndef forward(X, T):\n'
                    "    m = X.max(axis=1, keepdims=True)\n    z = X - m\n    e = np.exp(z)\n"
                    "    loss = (e * T).sum()\n    return loss\n")
    derivation = derive(forward=path)
    assert derivation.verify().ok
    assert exact_zeros(derivation).gradients == set()
    assert "Exactly 0" not in derivation.render("markdown")


def test_one_hot_concatenation_and_a_row_gather_in_torch_spelling(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "cat.py"
    path.write_text(textwrap.dedent('''
        import torch
        import torch.nn.functional as F
        SHAPES = {"Yb": ("N", "ids < V"), "C": ("V", "e"), "W": ("2*e", "V")}
        SIZES = {"N": 6, "V": 5, "e": 3}

        def forward(Yb, C, W):
            rows = C[Yb]
            both = torch.cat([rows, torch.tanh(rows)], 1)
            logits = both @ W
            target = F.one_hot(Yb, 5).float()
            loss = ((logits - target) ** 2).mean()
            return loss
    '''))
    derivation = derive(forward=path)
    assert derivation.verify().ok
    module = load_module(derivation.render("numpy"), tmp_path, "cat_module")
    inputs = module.random_inputs(2)
    grads = module.backward(module.forward(inputs)[1])
    C, W = (torch.tensor(inputs[k], requires_grad=True) for k in ("C", "W"))
    Yb = torch.tensor(inputs["Yb"])
    rows = C[Yb]
    rows.retain_grad()
    loss = ((torch.cat([rows, torch.tanh(rows)], 1) @ W - torch.nn.functional.one_hot(Yb, 5)) ** 2).mean()
    loss.backward()
    for name, value in (("dC", C), ("dW", W), ("drows", rows)):
        np.testing.assert_allclose(grads[name], value.grad.numpy(), rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize(("body", "where", "words"), [
    ("    e = C[Xb]\n    a = e @ W\n", "5:9", "e is 3-D (N, 2, d): flatten each row with .view(n, -1)"),
    ("    a = Xb + 1\n", "4:9", "Xb holds integer ids: index with it"),
    ("    e = C[Xb].reshape(len(Xb), -1) @ W2\n    p = e[range(3), y]\n", "5:9", "must count the N rows of e"),
    ("    e = C[Xb].reshape(len(Xb), -1) @ W2\n    p = e[range(len(y)), y]\n    a = p * e\n", "6:9",
     "a 1-D array meets only numbers and arrays of its own shape"),
    ("    a = F.one_hot(y, 7)\n", "4:22", "the ids are below V (5 in SIZES)"),
    ("    a = C[Xb].view(3, -1)\n", "4:9", "only flattening each row is supported"),
])
def test_unsupported_indexing_is_refused_with_its_place(tmp_path, body, where, words):
    path = tmp_path / "bad.py"
    path.write_text('SHAPES = {"Xb": ("N", 2, "ids < V"), "y": ("N", "ids < V"), "C": ("V", "d"), "W": ("d", "k"),'
                    ' "W2": ("2*d", "V")}\nSIZES = {"V": 5}\ndef forward(Xb, y, C, W, W2):\n' + body
                    + "    loss = a.sum()\n    return loss\n")
    with pytest.raises(ForwardCodeError) as error:
        load_forward(path)
    assert str(error.value).startswith(f"{path}:{where}: "), str(error.value)
    assert words in str(error.value)


def test_the_article_compiles_without_overfull_boxes_and_outputs_are_deterministic(tmp_path):
    from test_lecture_layout import compile_tex, layout_problems

    if not shutil.which("pdflatex"):
        pytest.skip("pdflatex is not installed (TeX Live)")
    derivation = _makemore("torch")
    tex = derivation.render("latex")
    _, log = compile_tex(tex, tmp_path, "makemore")
    assert layout_problems(log) == []
    again = derive(forward=MAKEMORE["torch"])
    assert again.render("latex") == tex
    assert again.render("numpy") == derivation.render("numpy")


def test_derive_forward_in_korean_compiles_and_holds_no_english_sentence(tmp_path):
    from test_lecture import _prose_of_latex, _prose_of_markdown, english_sentences, korean_slips
    from test_lecture_layout import compile_tex, layout_problems

    result = CliRunner().invoke(main, ["derive", "--forward", str(MAKEMORE["numpy"]), "--lang", "ko", "--format",
                                       "md,tex", "--out", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 0, result.output
    markdown, tex = ((tmp_path / "out" / f"backprop.{suffix}").read_text() for suffix in ("md", "tex"))
    assert "## 그래프를 거꾸로 따라가기" in markdown and "경로들이 상쇄된다: `counts`(30행)의 기울기는" in markdown
    assert english_sentences(_prose_of_markdown(markdown)) == [] and english_sentences(_prose_of_latex(tex)) == []
    assert korean_slips(markdown) == [] and korean_slips(tex) == []
    if not shutil.which("pdflatex"):
        pytest.skip("pdflatex is not installed (TeX Live)")
    _, log = compile_tex(tex, tmp_path, "makemore_ko")
    assert layout_problems(log) == []


# A gradient a LaTeX document states: the left side of an equation, or of a share a line sends back (\\ni).
_STATED = re.compile(r"\\mathrm\{d\}\\mathit\{((?:[^{}\\]|\\_)+)\} &?(?:=|\\ni)")


def _stated(tex: str) -> set[str]:
    return {name.replace(r"\_", "_") for name in _STATED.findall(tex)}


def test_the_deck_fits_is_legible_and_states_every_gradient_the_article_states(tmp_path):
    from test_lecture import _prose_of_latex, english_sentences, korean_slips
    from test_lecture_layout import compile_tex, layout_problems, small_print

    if not shutil.which("pdflatex"):
        pytest.skip("pdflatex is not installed (TeX Live)")
    pytest.importorskip("pymupdf")
    derivation = _makemore("numpy")
    stated = _stated(derivation.render("latex"))
    assert stated == {step.name for step in derivation.backward}
    result = CliRunner().invoke(main, ["derive", "--forward", str(MAKEMORE["numpy"]), "--lang", "ko", "--format",
                                       "beamer", "--handout", "--name", "makemore", "--out", str(tmp_path), "-q"])
    assert result.exit_code == 0, result.output
    decks = {"ko": (tmp_path / "makemore_slides.tex").read_text(),
             "en": derivation.render("beamer", options=LectureOptions(handout=True))}
    assert english_sentences(_prose_of_latex(decks["ko"])) == [] and korean_slips(decks["ko"]) == []
    for lang, deck in decks.items():
        assert deck.startswith(r"\documentclass[10pt,handout]{beamer}"), lang
        assert _stated(deck) == stated, lang
        # the stabilizing max: its two paths and their sum, 0
        assert deck.count(r"\mathrm{d}\mathit{logit\_maxes}\big|_") == 4, lang
        pdf, log = compile_tex(deck, tmp_path / lang, "slides")
        assert layout_problems(log) == [], lang
        assert small_print(pdf) == [], lang
    # deterministic: the CLI's deck came from a derivation of its own
    assert derivation.render("beamer", lang="ko", options=LectureOptions(handout=True)) == decks["ko"]


def test_the_notebook_holds_the_derivation_and_a_module_that_runs(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    notebook = nbformat.reads(_makemore("numpy").render("ipynb"), as_version=4)
    nbformat.validate(notebook)
    markdown = [cell.source for cell in notebook.cells if cell.cell_type == "markdown"]
    assert markdown[0].startswith("# Backward pass of `forward()`")
    assert any(text.startswith("## The graph walked backwards") for text in markdown)
    code = "\n".join(cell.source for cell in notebook.cells if cell.cell_type == "code")
    assert load_module(code, tmp_path, "notebook_cells").gradient_check() < 1e-5


# -- numbers the exact check cannot hold, names taken by gradients, sizes past the limits ---------------------------

XW = 'SHAPES = {"X": ("N", "d"), "W": ("d", 1)}\n\ndef forward(X, W):\n'


@pytest.mark.parametrize(("body", "where", "words"), [
    ("    a = X @ W / 0\n", "4:9", "division by zero: X @ W / 0"),
    ("    a = X @ W * (1 / 0.0)\n", "4:18", "division by zero: 1 / 0.0"),
    ("    n = X.shape[0]\n    a = X @ W / (n - n)\n", "5:9", "division by zero: X @ W / (n - n) (n - n is 0)"),
    ("    c = 0 ** -1\n    a = X @ W * c\n", "4:9", "0 ** (-1) is not a finite number"),
    ("    a = X @ W * (-2) ** 0.5\n", "4:17", "(-2) ** 0.5 is not a real number"),
    ("    a = X @ W * 1e400\n", "4:17", "this constant is larger than a float can hold"),
    ("    a = X @ W * (1e300 * 1e300)\n", "4:18", "1e+300 * 1e+300 is too large for a float"),
    ("    a = X @ W / 2305843009188428111\n", "4:17", "multiple of the exact check's prime 2^61 - 25265841"),
    ("    a = X @ W * 2 ** 100000000000\n", "4:17", "2 ** 100000000000 is out of a float's range"),
])
def test_a_number_the_exact_check_cannot_hold_is_refused_with_its_place(tmp_path, body, where, words):
    message, path = _refusal(tmp_path, XW + body + "    loss = a.sum()\n    return loss\n")
    assert message.startswith(f"{path}:{where}: "), message
    assert words in message, message


def test_division_by_zero_is_one_line_in_derive_check_and_grade(tmp_path):
    forward = XW + "    Z = X @ W\n    Q = Z / 0\n    loss = Q.sum()\n    return loss\n"
    path = tmp_path / "divzero.py"
    path.write_text(forward + '\n\ndef backward(cache):\n    return {"dQ": cache["Q"]}\n')
    runner = CliRunner()
    for args in (["derive", "--forward", str(path), "--out", str(tmp_path / "out")],
                 ["check", "--forward", str(path), "dZ = 1"], ["grade", str(path)]):
        result = runner.invoke(main, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.stderr == f"symbackprop: error: {path}:5:9: division by zero: Z / 0\n", args
    assert not (tmp_path / "out").exists()


def test_a_divisor_that_vanishes_at_a_witness_size_takes_another_and_is_proved(tmp_path):
    """1 / (n - 3) is 1 / 0 at the first witness size, 3: the exact check takes another size for N, proves the
    derivation there, and the gradients match the ones worked out by hand (the loss is 1ᵀ X W / (N - 3))."""
    path = tmp_path / "shifted.py"
    path.write_text('SHAPES = {"X": ("N", "d"), "W": ("d", 2)}\nSIZES = {"N": 7, "d": 5}\n\n'
                    "def forward(X, W):\n    n = X.shape[0]\n    Z = X @ W / (n - 3)\n    loss = Z.sum()\n"
                    "    return loss\n")
    net = load_forward(path)
    witness = net.sizes()
    assert sorted(witness.values()) == sorted(set(witness.values())) and witness[net.N] != 3
    derivation = derive(forward=path)
    assert derivation.verify().ok
    module = load_module(derivation.render("numpy"), tmp_path, "generated_shifted")
    inputs = module.random_inputs(2)
    X, W = inputs["X"], inputs["W"]
    loss, cache = module.forward(inputs)
    grads = module.backward(cache)
    assert loss == pytest.approx((X @ W).sum() / 4)
    np.testing.assert_allclose(grads["dW"], X.T @ np.ones((7, 2)) / 4, rtol=1e-12)
    np.testing.assert_allclose(grads["dX"], np.ones((7, 2)) @ W.T / 4, rtol=1e-12)


@pytest.mark.parametrize(("shapes", "arguments", "body", "where", "words"), [
    ('"X": ("N", "d"), "dX": ("d", 1)', "X, dX", "    Z = X @ dX\n", "3:16", "'dX' is taken by the gradient of 'X'"),
    ('"X": ("N", "d"), "W": ("d", 1)', "X, W", "    Z = X @ W\n    dZ = np.tanh(Z)\n", "5:5",
     "'dZ' is taken by the gradient of 'Z'"),
    ('"X": ("N", "d"), "W": ("d", 1), "dZ": (1, 1)', "X, W, dZ", "    Z = X @ W * dZ\n", "3:19",
     "'dZ' is taken by the gradient of 'Z'"),
    ('"X": ("N", "d"), "W": ("d", 1), "dW": ("d", 1)', "X, params", "    dW, W = params\n    Z = X @ (W + dW)\n",
     "4:5", "'dW' is taken by the gradient of 'W'"),
    ('"X": ("N", "d"), "W": ("d", 1)', "X, W", "    d = X @ W\n    dd = np.tanh(d)\n    Z = dd * 2\n", "5:5",
     "'dd' is taken by the gradient of 'd'"),
])
def test_a_name_taken_by_a_gradient_is_refused_where_it_is_defined(tmp_path, shapes, arguments, body, where, words):
    message, path = _refusal(tmp_path, f"import numpy as np\nSHAPES = {{{shapes}}}\ndef forward({arguments}):\n"
                             + body + "    loss = Z.sum()\n    return loss\n")
    assert message.startswith(f"{path}:{where}: "), message
    assert words in message and "rename it" in message, message


def test_the_loss_may_not_take_a_gradient_name_and_names_with_no_gradient_stay_free(tmp_path):
    message, path = _refusal(tmp_path, XW + "    Z = X @ W\n    dZ = Z.sum()\n    return dZ\n")
    assert message.startswith(f"{path}:5:5: the name 'dZ' is taken by the gradient of 'Z'"), message
    # the loss and integer ids have no gradient, so dloss and dXb name nothing else: both are accepted, and the
    # gradients are the ones worked out by hand (loss = 1ᵀ tanh(C[Xb] W), so dW = C[Xb]ᵀ (1 - tanh(C[Xb] W)²))
    free = tmp_path / "free.py"
    free.write_text('import numpy as np\nSHAPES = {"Xb": ("N", "ids < V"), "dXb": ("V", "e"), "W": ("e", 1)}\n'
                    'SIZES = {"N": 6, "V": 5, "e": 3}\n\ndef forward(Xb, dXb, W):\n    emb = dXb[Xb]\n'
                    "    dloss = np.tanh(emb @ W)\n    loss = dloss.sum()\n    return loss\n")
    derivation = derive(forward=free)
    assert derivation.verify().ok
    module = load_module(derivation.render("numpy"), tmp_path, "generated_free")
    inputs = module.random_inputs(4)
    grads = module.backward(module.forward(inputs)[1])
    emb = inputs["dXb"][inputs["Xb"]]
    slope = 1 - np.tanh(emb @ inputs["W"]) ** 2
    np.testing.assert_allclose(grads["dW"], emb.T @ slope, rtol=1e-12)
    np.testing.assert_allclose(grads["ddloss"], np.ones((6, 1)))
    expected = np.zeros((5, 3))
    np.add.at(expected, inputs["Xb"], slope @ inputs["W"].T)
    np.testing.assert_allclose(grads["ddXb"], expected, rtol=1e-12)


def test_a_line_the_loss_does_not_read_is_refused(tmp_path):
    message, path = _refusal(tmp_path, XW + "    Z = X @ W\n    U = X * 2\n    V = U + 1\n    loss = Z.sum()\n"
                             "    return loss\n")
    assert message == f"{path}:6:5: 'V' is computed but the loss 'loss' does not depend on it; remove the line or " \
                      "use its value"


@pytest.mark.parametrize(("shapes", "sizes", "where", "words"), [
    ('"X": ("N", 100000000000000000000000000), "W": (100000000000000000000000000, 1)', "", "1:22",
     "a dimension is about 10^26: at most 1e+12 is supported"),
    ('"X": ("N", "d"), "W": ("d", 1)', "SIZES = {'N': 4, 'd': 10000000000000}", "2:23",
     "size 'd' is 10000000000000: at most 1e+12 is supported"),
    ('"X": ("N", "' + "9" * 5000 + '*d"), "W": ("d", 1)', "", "1:22", "the factor of d is about 10^4999"),
    ('"X": ("N", 5000), "W": (5000, 1)', "", "1:16",
     "X is (N, 5000): 15000 entries at the exact check's sizes (N=3), and the exact proof evaluates at most 4096"),
    ('"X": ("N", 100), "W": (100, 100)', "", "1:33", "W is (100, 100): 10000 entries"),
])
def test_sizes_past_the_limits_are_refused_at_their_place(tmp_path, shapes, sizes, where, words):
    message, path = _refusal(tmp_path, f"SHAPES = {{{shapes}}}\n{sizes}\ndef forward(X, W):\n    Z = X @ W\n"
                             "    loss = Z.sum()\n    return loss\n")
    assert message.startswith(f"{path}:{where}: "), message
    assert words in message, message


def test_a_value_past_the_exact_checks_limit_is_refused_at_its_line_and_sizes_flag_is_bounded(tmp_path):
    message, path = _refusal(tmp_path, 'SHAPES = {"X": ("N", 80)}\n\ndef forward(X):\n    G = X.T @ X\n'
                             "    loss = G.sum()\n    return loss\n")
    assert message.startswith(f"{path}:4:5: G is (80, 80): 6400 entries"), message
    ids, path = _refusal(tmp_path, 'SHAPES = {"Xb": ("N", 100000, "ids < V"), "C": ("V", "e")}\n\n'
                         "def forward(Xb, C):\n    e = C[Xb].view(len(Xb), -1)\n    loss = e.sum()\n"
                         "    return loss\n", "ids.py")
    assert ids.startswith(f"{path}:1:17: Xb is (N, 100000*V)"), ids
    with pytest.raises(ForwardCodeError, match=r"^--sizes: N is larger than 1e\+12, the most supported$"):
        load_forward(ATOMIC, sizes="N=1000000000001")
    with pytest.raises(ForwardCodeError, match=r"^--sizes: 'N=²' is not NAME=POSITIVE_INTEGER$"):
        load_forward(ATOMIC, sizes="N=²")
    near = load_forward(ATOMIC, sizes="N=1000000000000")  # the limit itself is a size
    assert near.dims[near.N][0] == 10**12
