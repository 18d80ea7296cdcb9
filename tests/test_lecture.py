"""Lecture material: Beamer decks (compiled with pdflatex), the notebook (executed), the worked example
(against central finite differences), the memory table and the translation catalogs."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from symbackprop.cli import main
from symbackprop.derivation import derive
from symbackprop.evaluate import Evaluator, Float64Backend
from symbackprop.lecture import memory_table, worked_example
from symbackprop.output import parse_formats
from symbackprop.render import FORMATS, render

SPECS = Path(__file__).parent / "specs"
TEXT = Path(__file__).parent.parent / "templates" / "text"
needs_tex = pytest.mark.skipif(not (shutil.which("pdflatex") and shutil.which("pdftotext")),
                               reason="pdflatex/pdftotext not installed")


def _compile(tex: str, directory: Path, name: str = "slides") -> Path:
    source = directory / f"{name}.tex"
    source.write_text(tex, encoding="utf-8")
    result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", source.name],
                            cwd=directory, check=False, capture_output=True, text=True, errors="replace", timeout=300)
    assert result.returncode == 0, result.stdout[-3000:]
    return directory / f"{name}.pdf"


def _pages(pdf: Path) -> int:
    info = subprocess.run(["pdfinfo", str(pdf)], check=False, capture_output=True, text=True).stdout
    return int(next(line.split()[-1] for line in info.splitlines() if line.startswith("Pages:")))


def _text(pdf: Path) -> str:
    return subprocess.run(["pdftotext", str(pdf), "-"], check=False, capture_output=True, text=True).stdout


def test_catalogs_have_the_same_keys():
    en = tomllib.loads((TEXT / "en.toml").read_text("utf-8"))
    ko = tomllib.loads((TEXT / "ko.toml").read_text("utf-8"))
    assert set(en) == set(ko)
    assert all(ko[key].strip() for key in ko)


@pytest.mark.parametrize("spec", ["seed", "depth5_mixed_column", "softmax_ce_4_classes_column",
                                  "bce_logits_binary", "wide_8"])
def test_worked_example_gradients_match_central_differences(spec):
    derivation = derive(SPECS / f"{spec}.toml")
    network = derivation.network
    example = worked_example(derivation)
    sizes = network.sizes(example.batch, network.spec.sizes)

    def loss(inputs):
        evaluator = Evaluator(Float64Backend(), dict(inputs), sizes)
        evaluator.forward(network)
        return evaluator.loss(network)

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


def test_memory_table_of_the_lecture_network():
    # The lecture's network (2 -> 3 -> 2 -> 1, ReLU, ReLU, identity) keeps X (2), Z1 and a1 (3 + 3),
    # Z2 and a2 (2 + 2) and Y_pred (1); the identity's Z3 is never read.
    rows = memory_table(derive(SPECS / "seed.toml"), batch=64)
    assert [row.kept for row in rows] == [("X",), ("Z1", "a1"), ("Z2", "a2"), ("Y_pred",)]
    assert [row.floats_per_sample for row in rows] == [2, 6, 4, 1]
    assert sum(row.bytes32 for row in rows) == 13 * 4 * 64
    assert sum(row.bytes64 for row in rows) == 13 * 8 * 64


def test_format_lists_and_all():
    assert parse_formats("all") == list(FORMATS)
    assert parse_formats("md,beamer,ipynb,md") == ["markdown", "beamer", "ipynb"]


def test_lecture_output_is_deterministic():
    derivation = derive(SPECS / "seed.toml")
    for fmt in ("beamer", "ipynb", "markdown"):
        assert render(derivation, fmt, lang="ko") == render(derive(SPECS / "seed.toml"), fmt, lang="ko")
    assert "\\today" not in render(derivation, "beamer") and "\\date{}" in render(derivation, "beamer")


def test_cli_writes_slides_and_notebook_with_batch(tmp_path):
    result = CliRunner().invoke(main, ["derive", "--format", "beamer,ipynb,md", "--lang", "ko",
                                       "--batch", "10", "--out", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert {p.name for p in tmp_path.iterdir()} == {"backprop_slides.tex", "backprop.ipynb", "backprop.md"}
    markdown = (tmp_path / "backprop.md").read_text("utf-8")
    assert "```mermaid" in markdown and "| 합계 | | 13 | 520 | 1,040 |" in markdown


@needs_tex
@pytest.mark.parametrize("lang, terms", [
    ("en", ["Forward pass", "Backward pass", "Loss function", "Chain rule", "Worked example", "Memory"]),
    ("ko", ["순전파", "역전파", "손실 함수", "경사하강법", "연쇄 법칙", "은닉층", "계산 예제", "메모리"]),
])
def test_beamer_deck_compiles_with_the_key_terms(tmp_path, lang, terms):
    pdf = _compile(render(derive(SPECS / "seed.toml"), "beamer", lang=lang), tmp_path)
    text = _text(pdf)
    missing = [term for term in terms if term not in text]
    assert not missing


@needs_tex
def test_slides_grow_with_depth_and_compile_in_column_layout(tmp_path):
    pages = []
    for spec in ("linear_regression_depth1", "seed", "depth4_mixed", "depth5_mixed_column"):
        directory = tmp_path / spec
        directory.mkdir()
        pages.append(_pages(_compile(render(derive(SPECS / f"{spec}.toml"), "beamer", lang="ko"), directory)))
    assert pages == sorted(pages) and len(set(pages)) == len(pages), pages


@needs_tex
def test_latex_article_with_diagram_compiles(tmp_path):
    tex = render(derive(SPECS / "depth5_mixed_column.toml"), "latex", lang="ko")
    pdf = _compile(tex, tmp_path, "article")
    assert "메모리" in _text(pdf)


def test_notebook_runs_top_to_bottom_in_a_fresh_kernel(tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    text = render(derive(SPECS / "softmax_ce_4_classes_column.toml"), "ipynb")
    notebook = nbformat.reads(text, as_version=4)
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = "".join(output.get("text", "") for cell in notebook.cells if cell.cell_type == "code"
                      for output in cell.outputs)
    assert "largest relative error" in outputs and "dL/dW1" in outputs
