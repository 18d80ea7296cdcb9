"""The lecture documents fit the page: decks and articles compiled with pdflatex, their logs read for overfull
boxes and for the scale factors that the fitting macros applied (they log every shrink).

A representative subset runs by default; ``SYMBACKPROP_FULL_LECTURE=1`` compiles the whole corpus in both
languages (a few minutes).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from symbackprop.derivation import derive
from symbackprop.lecture import LectureOptions
from symbackprop.mathsize import measure
from symbackprop.rendering import render

SPECS = Path(__file__).parent / "specs"
CORPUS = sorted(path.stem for path in SPECS.glob("*.toml"))
FULL = os.environ.get("SYMBACKPROP_FULL_LECTURE") == "1"
needs_tex = pytest.mark.skipif(not (shutil.which("pdflatex") and shutil.which("pdftotext")),
                               reason="pdflatex/pdftotext not installed")

MAX_OVERFULL_PT = 1.0
MIN_SCALE = 600  # per mille: nothing on a page shrunk below 60 %
_FIT = re.compile(r"symbackprop-fit: (width|height) (\d+) \(page (\d+)\)")
_OVERFULL = re.compile(r"Overfull \\([hv])box \(([\d.]+)pt too (?:wide|high)\)[^\n]*")

DECKS = [("seed", "en"), ("seed", "ko"), ("softmax_ce_4_classes_column", "ko"), ("depth6_smooth", "en"),
         ("depth5_mixed_column", "ko"), ("wide_8", "ko"), ("batchnorm_after_dense", "ko"), ("residual_block", "en"),
         ("softmax_layer_cross_entropy", "en")]
ARTICLES = [("seed", "ko"), ("depth5_mixed_column", "en"), ("wide_8", "ko"), ("batchnorm_after_dense", "en"),
            ("loss_cs231n_svm_l2", "ko")]
if FULL:
    DECKS = ARTICLES = [(spec, lang) for spec in CORPUS for lang in ("en", "ko")]


def compile_tex(tex: str, directory: Path, name: str, runs: int = 1) -> tuple[Path, str]:
    """Compile ``tex`` with pdflatex (no shell escape) ``runs`` times; the PDF and the last run's log."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.tex").write_text(tex, encoding="utf-8")
    for _ in range(runs):
        result = subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape",
                                 f"{name}.tex"], cwd=directory, check=False, capture_output=True, text=True,
                                errors="replace", timeout=300)
        assert result.returncode == 0, result.stdout[-3000:]
    return directory / f"{name}.pdf", (directory / f"{name}.log").read_text("utf-8", errors="replace")


def layout_problems(log: str) -> list[str]:
    """Overfull boxes over 1 pt and anything the fitting macros shrank below 60 %, as readable lines."""
    problems = [match.group(0) for match in _OVERFULL.finditer(log) if float(match.group(2)) > MAX_OVERFULL_PT]
    problems += [f"{kind} shrunk to {int(scale) / 10:.1f}% on page {page}" for kind, scale, page in _FIT.findall(log)
                 if int(scale) < MIN_SCALE]
    return problems


def pages(pdf: Path) -> int:
    info = subprocess.run(["pdfinfo", str(pdf)], check=False, capture_output=True, text=True).stdout
    return int(next(line.split()[-1] for line in info.splitlines() if line.startswith("Pages:")))


def pdf_text(pdf: Path) -> str:
    return subprocess.run(["pdftotext", str(pdf), "-"], check=False, capture_output=True, text=True).stdout


@needs_tex
def test_layout_problems_are_found_in_a_log(tmp_path):
    # A formula three times the line's width, and a rule that overflows the line: both must be reported.
    preamble = render(derive(SPECS / "seed.toml"), "latex").split(r"\begin{document}")[0]
    tex = preamble + (r"\begin{document}\sbpfit{" + " + ".join(["x_{1}"] * 120) + r"}"
                      r"\noindent\rule{1.2\linewidth}{1pt}\end{document}")
    _, log = compile_tex(tex, tmp_path, "bad")
    problems = layout_problems(log)
    assert any("shrunk to" in problem for problem in problems)
    assert any(problem.startswith("Overfull \\hbox") for problem in problems)


# Words each language's seed deck must show (its PDF text, as a reader sees it).
KEY_TERMS = {
    "en": ["Forward pass", "Backward pass", "Loss function", "Chain rule", "Worked example", "Memory",
           "Forward and backward, side by side"],
    "ko": ["순전파", "역전파", "손실 함수", "경사하강법", "연쇄 법칙", "은닉층", "계산 예제", "메모리", "오차 신호"],
}


@needs_tex
@pytest.mark.parametrize("spec, lang", DECKS)
def test_deck_fits_the_page(tmp_path, spec, lang):
    # The handout has the same frames without the overlays, so it is a faster check of the same layout.
    tex = render(derive(SPECS / f"{spec}.toml"), "beamer", lang=lang, options=LectureOptions(handout=True))
    pdf, log = compile_tex(tex, tmp_path, "slides")
    assert not layout_problems(log)
    if spec == "seed":
        text = pdf_text(pdf)
        assert not [term for term in KEY_TERMS[lang] if term not in text]


@needs_tex
@pytest.mark.parametrize("spec, lang", ARTICLES)
def test_article_fits_the_page(tmp_path, spec, lang):
    _, log = compile_tex(render(derive(SPECS / f"{spec}.toml"), "latex", lang=lang), tmp_path, "article", runs=2)
    assert not layout_problems(log)


@needs_tex
def test_handout_has_one_page_per_frame(tmp_path):
    derivation = derive(SPECS / "seed.toml")
    handout = render(derivation, "beamer", options=LectureOptions(handout=True))
    full, _ = compile_tex(render(derivation, "beamer"), tmp_path / "full", "slides")
    short, _ = compile_tex(handout, tmp_path / "handout", "slides")
    assert pages(short) == handout.count(r"\begin{frame}") < pages(full)


def test_slides_grow_with_depth():
    # A handout has one page per frame (checked above), so counting frames counts its pages.
    counts = [render(derive(SPECS / f"{spec}.toml"), "beamer", lang="ko").count(r"\begin{frame}")
              for spec in ("linear_regression_depth1", "seed", "depth4_mixed", "depth5_mixed_column")]
    assert counts == sorted(counts) and len(set(counts)) == len(counts), counts


@needs_tex
def test_size_estimates_agree_with_tex(tmp_path):
    """The planner's estimates against TeX's own boxes, for every formula of two decks."""
    formulas = set()
    for spec in ("seed", "softmax_ce_4_classes_column"):
        for line in render(derive(SPECS / f"{spec}.toml"), "beamer").splitlines():
            formula = line[len(r"\sbpfit{"):-1]
            if line.startswith(r"\sbpfit{") and line.endswith("}") and formula.count("{") == formula.count("}"):
                formulas.add(formula)
    formulas = sorted(formulas)
    body = "\n".join(rf"\sbox0{{$\displaystyle {f}$}}\typeout{{SIZE {i} \the\wd0 \the\ht0 \the\dp0}}"
                     for i, f in enumerate(formulas))
    _, log = compile_tex(r"\documentclass{article}\usepackage{amsmath,amssymb}\begin{document}"
                         + body + r"\end{document}", tmp_path, "sizes")
    sizes = {int(i): (float(w), float(h) + float(d))
             for i, w, h, d in re.findall(r"SIZE (\d+) ([\d.]+)pt([\d.]+)pt([\d.]+)pt", log)}
    assert len(sizes) == len(formulas) > 20
    for index, (width, height) in sizes.items():
        box = measure(formulas[index])
        assert 0.8 <= box.w / width <= 1.25, formulas[index]
        assert 0.75 <= box.total / height <= 1.4, formulas[index]
