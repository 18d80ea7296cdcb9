"""Render a few slides of the lecture deck to PNG for the README (run by ``make docs``).

Builds the seed network's deck in Korean and English as handouts (one page per frame), compiles each twice
with pdflatex, finds the page of each labelled frame in the ``.aux`` file, and writes
``docs/slide_<frame>_<lang>.png`` at 110 dpi, plus ``docs/deck_overview_<lang>.png`` when Pillow is installed.
The batch-norm network of the corpus gives ``docs/slide_batchnorm_<frame>_en.png``: the slide of its batch-norm layer
where the centred input's gradient sums two paths, and the slide of the compact formula for the layer's input gradient.
The batch norm + softmax cross-entropy network gives ``docs/slide_walk_normalization_2_<k>_{en,ko}.png`` and
``docs/slide_walk_softmax_<k>_{en,ko}.png``: every slide of batch norm's derivation from its steps to the compact
formula, and of the softmax's Jacobian.
The transformer block of ``tests/specs_sequence`` gives ``docs/slide_attention_pattern_1_{en,ko}.png``, attention's
backward equations, and the LSTM classifier ``docs/slide_lstm_pattern_1_en.png``, backpropagation through time.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from symbackprop import derive, seed_spec
from symbackprop.lecture import LectureOptions
from symbackprop.rendering import render

DOCS = Path(__file__).parent
BUILD = DOCS.parent / "build" / "docs"
FRAMES = {"ko": ["backward-2", "chain-rule"], "en": ["backward-2", "algorithm", "network"]}
BATCHNORM = DOCS.parent / "tests" / "specs" / "batchnorm_after_dense.toml"
BATCHNORM_FRAMES = ["backward-2-3", "form-a1-compact"]
# The derivations people study: batch norm from its steps to the compact dX, and the softmax's Jacobian.
LECTURE_BATCHNORM = DOCS.parent / "tests" / "specs" / "lecture_batchnorm_softmax_l2.toml"
WALK_FRAMES = ["walk-normalization-2", "walk-softmax"]
SEQUENCES = DOCS.parent / "tests" / "specs_sequence"


def compile_deck(lang: str, spec=None, name: str = "") -> Path:
    directory = BUILD / (name or lang)
    directory.mkdir(parents=True, exist_ok=True)
    tex = render(derive(spec or seed_spec()), "beamer", lang=lang, options=LectureOptions(handout=True))
    (directory / "slides.tex").write_text(tex, encoding="utf-8")
    for _ in range(2):  # the second run knows the labels' pages
        subprocess.run(["pdflatex", "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", "slides.tex"],
                       cwd=directory, check=True, capture_output=True)
    return directory / "slides.pdf"


def label_pages(pdf: Path) -> dict[str, int]:
    aux = pdf.with_suffix(".aux").read_text("utf-8", errors="replace")
    return {label: int(page) for label, page in re.findall(r"\\newlabel\{([^}<]+)\}\{\{(\d+)\}", aux)}


def overview(pdf: Path, target: Path) -> None:
    """Every page at 30 dpi on one sheet, eight to a row."""
    from PIL import Image

    prefix = BUILD / f"{target.stem}-page"
    for old in BUILD.glob(f"{prefix.name}-*.png"):
        old.unlink()
    subprocess.run(["pdftoppm", "-png", "-r", "30", str(pdf), str(prefix)], check=True)
    images = [Image.open(path) for path in sorted(BUILD.glob(f"{prefix.name}-*.png"))]
    width, height = images[0].size
    columns, rows = 8, -(-len(images) // 8)
    sheet = Image.new("RGB", (columns * (width + 4), rows * (height + 4)), "gray")
    for index, image in enumerate(images):
        sheet.paste(image, ((index % columns) * (width + 4), (index // columns) * (height + 4)))
    sheet.save(target)


def write_slides(pdf: Path, labels: list[str], prefix: str, lang: str) -> None:
    """The page of each labelled frame; a walk's every page, up to the next labelled frame (``_1``, ``_2``, ...)."""
    pages = label_pages(pdf)
    starts = sorted(set(pages.values()))
    for label in labels:
        first = pages[label]
        shown = {"": first}
        if label.startswith("walk-"):
            end = next((page for page in starts if page > first), first + 1)
            shown = {f"_{index}": page for index, page in enumerate(range(first, end), start=1)}
        for suffix, page in shown.items():
            target = DOCS / f"slide_{prefix}{label.replace('-', '_')}{suffix}_{lang}"
            subprocess.run(["pdftoppm", "-png", "-r", "110", "-singlefile", "-f", str(page), "-l", str(page),
                            str(pdf), str(target)], check=True)
            print(f"wrote {target}.png")


def main() -> None:
    write_slides(compile_deck("en", BATCHNORM, "batchnorm"), BATCHNORM_FRAMES, "batchnorm_", "en")
    for lang in ("en", "ko"):
        pdf = compile_deck(lang, LECTURE_BATCHNORM, f"walks_{lang}")
        write_slides(pdf, WALK_FRAMES, "", lang)
    for lang in ("en", "ko"):
        pdf = compile_deck(lang, SEQUENCES / "transformer_block.toml", f"attention_{lang}")
        write_slides(pdf, ["pattern-1"], "attention_", lang)
    write_slides(compile_deck("en", SEQUENCES / "lstm_classifier.toml", "lstm"), ["pattern-1"], "lstm_", "en")
    for lang, labels in FRAMES.items():
        pdf = compile_deck(lang)
        write_slides(pdf, labels, "", lang)
        try:
            overview(pdf, DOCS / f"deck_overview_{lang}.png")
            print(f"wrote {DOCS / f'deck_overview_{lang}.png'}")
        except ImportError:
            print("Pillow is not installed: no overview sheet", file=sys.stderr)


if __name__ == "__main__":
    main()
