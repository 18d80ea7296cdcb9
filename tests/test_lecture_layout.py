"""The lecture documents fit the page: decks and articles compiled with pdflatex, their logs read for overfull
boxes and for the scale factors that the fitting macros applied (they log every shrink), and the decks' font
sizes read back from the PDF (nothing a projector would blur).

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

# The image specs (tests/specs_conv) by name beside the corpus: the CNN's deck in both languages.
IMAGE_SPECS = {path.stem: path for path in (Path(__file__).parent / "specs_conv").glob("*.toml")}


def spec_path(name: str) -> Path:
    return IMAGE_SPECS.get(name, SPECS / f"{name}.toml")


DECKS = [("seed", "ko"), ("softmax_ce_4_classes_column", "ko"), ("depth5_mixed_column", "ko"), ("wide_8", "en"),
         ("residual_block", "en"), ("softmax_layer_cross_entropy", "en"), ("lecture_batchnorm_softmax_l2", "ko"),
         ("lecture_deep_relu_6x8", "en"), ("small_cnn", "ko"), ("small_cnn", "en")]
ARTICLES = [("seed", "ko"), ("depth5_mixed_column", "en"), ("wide_8", "ko"), ("batchnorm_after_dense", "en"),
            ("loss_cs231n_svm_l2", "ko"), ("small_cnn", "en")]
if FULL:
    DECKS = ARTICLES = [(spec, lang) for spec in (*CORPUS, *sorted(IMAGE_SPECS)) for lang in ("en", "ko")]


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


@pytest.fixture(scope="module")
def handout(tmp_path_factory):
    """Compiles a spec's handout deck once for every test of this module that reads it: ``(pdf, log)``."""
    compiled = {}

    def deck(spec: str, lang: str) -> tuple[Path, str]:
        if (spec, lang) not in compiled:
            # The handout has the same frames without the overlays, so it is a faster check of the same layout.
            tex = render(derive(spec_path(spec)), "beamer", lang=lang, options=LectureOptions(handout=True))
            compiled[spec, lang] = compile_tex(tex, tmp_path_factory.mktemp(f"{spec}-{lang}"), "slides")
        return compiled[spec, lang]

    return deck


@needs_tex
@pytest.mark.parametrize("spec, lang", DECKS)
def test_deck_fits_the_page(handout, spec, lang):
    pdf, log = handout(spec, lang)
    assert not layout_problems(log)
    if spec == "seed":
        text = pdf_text(pdf)
        assert not [term for term in KEY_TERMS[lang] if term not in text]


# Legible at projection: text at least 8 pt; a sub- or superscript one step smaller on TeX's ladder (6 pt under
# 8 pt text, 7 pt under 10 pt), a script's own script 5 pt. Each limit has 2 % to spare (a shrink by a hair is
# invisible); anything shrunk further falls below it.
TEXT_PT, SCRIPT_PT, SCRIPTSCRIPT_PT = 7.84, 5.88, 4.9


def _spans(page) -> list[dict]:
    """The page's runs of text in one font and size (PyMuPDF's spans), blanks left out."""
    return [span for block in page.get_text("dict")["blocks"] for line in block.get("lines", [])
            for span in line["spans"] if span["text"].strip(" ")]


def _beside(small: dict, big: dict) -> bool:
    """``small`` sits on ``big``'s line right after or before it: a subscript, a superscript, an inline fraction."""
    x0, y0, x1, y1 = small["bbox"]
    bx0, by0, bx1, by1 = big["bbox"]
    if big["font"].startswith("CMEX"):  # a big delimiter reaches below the box the PDF gives its glyph
        by1 += 10
    return by0 < y1 and y0 < by1 and (-1 <= x0 - bx1 <= 6 or -1 <= bx0 - x1 <= 6)


def _stacked(small: dict, other: dict) -> bool:
    """``small`` right above or below ``other`` of its size: a fraction's numerator and denominator."""
    x0, y0, x1, y1 = small["bbox"]
    ox0, oy0, ox1, oy1 = other["bbox"]
    return (abs(small["size"] - other["size"]) < 0.1 and ox0 <= (x0 + x1) / 2 <= ox1
            and (-2 <= y0 - oy1 <= 4 or -2 <= oy0 - y1 <= 4))


def _operator_rows(spans: list[dict]) -> list[tuple[float, float, float, float]]:
    """Boxes of the big operators and brace pieces (the CMEX font) on one line, merged: a limit or a brace's
    label sits below or above one."""
    rows = []
    for span in sorted((s for s in spans if s["font"].startswith("CMEX")), key=lambda s: s["bbox"][0]):
        x0, y0, x1, y1 = span["bbox"]
        row = next((r for r in rows if abs(r[1] - y0) < 1 and abs(r[3] - y1) < 1 and x0 - r[2] < 80), None)
        if row:
            row[2] = max(row[2], x1)
        else:
            rows.append([x0, y0, x1, y1])
    return [tuple(row) for row in rows]


def _under(small: dict, row: tuple[float, float, float, float]) -> bool:
    x0, y0, x1, y1 = small["bbox"]
    rx0, ry0, rx1, ry1 = row
    return rx0 - 20 <= x1 and x0 <= rx1 + 20 and (-5 <= y0 - ry1 <= 14 or -5 <= ry0 - y1 <= 14)


def _delimiter(span: dict) -> bool:
    """A bracket, bar or big operator glyph: TeX sets them at 10 pt even around a script's own scripts."""
    return span["font"].startswith(("CMEX", "CMSY"))


def small_print(pdf: Path) -> list[str]:
    """Text set below the limits, as ``page N: 6.2 pt 'word'`` lines. Text under 8 pt passes only as a script:
    beside, under or over 8 pt text (then at least 6 pt), or beside or stacked on such a script or beside a
    delimiter (at least 5 pt)."""
    import pymupdf

    problems = []
    with pymupdf.open(pdf) as document:
        for number, page in enumerate(document, 1):
            spans = _spans(page)
            text = [span for span in spans if span["size"] >= TEXT_PT]
            operators = _operator_rows(text)
            scripts, rest = [], [span for span in spans if span["size"] < TEXT_PT]
            found = True
            while found:  # a script makes its own scripts legible in turn
                found = [span for span in rest if span["size"] >= SCRIPT_PT and (
                    any(_beside(span, big) for big in text) or any(_under(span, row) for row in operators))
                    or span["size"] >= SCRIPTSCRIPT_PT and any(
                        big["size"] >= span["size"] and (_beside(span, big) or _stacked(span, big))
                        for big in scripts + [big for big in text if _delimiter(big)])]
                scripts += found
                rest = [span for span in rest if span not in found]
            problems += [f"page {number}: {span['size']:.1f} pt {span['text']!r}" for span in rest]
    return problems


@needs_tex
@pytest.mark.parametrize("spec, lang", DECKS)
def test_deck_is_legible(handout, spec, lang):
    pytest.importorskip("pymupdf")
    pdf, _ = handout(spec, lang)
    assert not small_print(pdf)


@needs_tex
def test_small_print_is_found(tmp_path):
    # Scripts, limits, a brace's label and an inline fraction pass; a tiny line, a 7 pt line and a formula
    # shrunk to 70 % do not.
    pytest.importorskip("pymupdf")
    preamble = render(derive(SPECS / "seed.toml"), "beamer", options=LectureOptions(handout=True)).split(
        r"\begin{document}")[0]
    legible = (r"Text and $x_{i}^{2} + \frac{1}{2}$ \[ \sum_{i,j} W_{ij}^{[l]}"
               r" + \underbrace{a^{[3]\top}}_{\partial Z/\partial W} \Bigl(X^{\top} \frac{\partial L}{\partial Y}\Bigr)_{kj} \]")
    small = [r"{\tiny tinyline}", r"{\scriptsize smallline}", r"\scalebox{0.7}{$y = shrunk_{j}$}"]
    pdf, _ = compile_tex(preamble + r"\begin{document}\begin{frame}" + legible + r"\par ".join(["", *small])
                         + r"\end{frame}\end{document}", tmp_path, "small")
    words = {problem.split(" pt ")[1].strip("' ") for problem in small_print(pdf)}
    assert {"tinyline", "smallline", "shrunk", "j"} <= words, words
    assert words <= {"tinyline", "smallline", "y", "=", "shrunk", "j"}, words


@needs_tex
@pytest.mark.parametrize("spec, lang", ARTICLES)
def test_article_fits_the_page(tmp_path, spec, lang):
    _, log = compile_tex(render(derive(spec_path(spec)), "latex", lang=lang), tmp_path, "article", runs=2)
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
