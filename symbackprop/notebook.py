"""Derivation -> ``backprop.ipynb``: the Markdown derivation as cells, then code that runs top to bottom.

The Markdown cells are the rendered Markdown document, one cell per section; the code cells define the
generated NumPy module (without its ``__main__`` block), run its gradient check, recompute the worked example
and train the network on data from the worked example's teacher until the loss has fallen by at least half,
with a plot of the loss (matplotlib when installed, printed values otherwise). Cell ids are fixed, so the
file is reproducible.
"""

from __future__ import annotations

import re

import nbformat

from .codegen import module_value
from .lecture import (
    TARGET_RULES,
    TRAIN_LR,
    TRAIN_SAMPLES,
    TRAIN_STEPS,
    LectureOptions,
    has_worked_example,
    target_kind,
    worked_example,
)
from .rendering import catalog, render

_MAIN_BLOCK = '\nif __name__ == "__main__":'
# Fonts with Hangul that matplotlib may find, most common first; without one, Korean plots get English labels.
HANGUL_FONTS = ("NanumGothic", "Noto Sans CJK KR", "Noto Sans KR", "Malgun Gothic", "AppleGothic", "UnDotum",
                "Baekmuk Gulim")


def _sections(markdown: str) -> list[str]:
    """The Markdown document cut before each ``## `` heading."""
    return [part.strip() for part in re.split(r"\n(?=## )", markdown) if part.strip()]


def _masks_argument(network, value: str) -> str:
    """``, masks`` (a variable of the cell) in a call of ``forward`` where the network has dropout masks."""
    return f", {value}" if network.masks else ""


def _example_cells(network, example, t) -> list:
    """The worked example recomputed with the module's functions and checked against the printed values."""
    v4 = nbformat.v4
    masks = _masks_argument(network, "masks")
    inputs = {name: module_value(network, name, value) if name in (network.input_name, "Y_true") else value
              for name, value in example.inputs.items()}
    return [
        v4.new_markdown_cell(f"## {t['notebook_example']}\n\n{t['notebook_example_intro']}"),
        v4.new_code_cell(
            f"example = {({name: value.tolist() for name, value in inputs.items()})!r}\n"
            f"X, Y_true = np.array(example[{network.input_name!r}]), np.array(example['Y_true'])\n"
            f"params = {{name: np.array(example[name]) for name in {list(example.updated)!r}}}\n"
            + (f"masks = {{name: np.array(example[name]) for name in {list(network.masks)!r}}}\n" if masks else "")
            + f"Y_pred, cache = forward(params, X{masks})\n"
            "loss_before = loss(Y_pred, Y_true, params)\n"
            "grads = backward(params, cache, Y_true)\n"
            "for name, value in grads.items():\n"
            "    print(f'dL/d{name} =', np.round(value, 4).tolist())\n"
            f"params_after = sgd_step(params, grads, lr={example.lr!r})\n"
            f"loss_after = loss(forward(params_after, X{masks})[0], Y_true, params_after)\n"
            f"print({t['notebook_loss']!r}, f'{{loss_before:.4f}} -> {{loss_after:.4f}}')\n"
            f"assert np.isclose(loss_before, {example.loss!r})\n"
            f"assert np.isclose(loss_after, {example.loss_after!r})"),
    ]


def _plot_code(lang: str) -> str:
    """Plot ``losses`` with labels in ``lang``; Korean labels only with a font that has Hangul, set on the labels
    alone (Hangul fonts lack the minus sign U+2212 that the log axis's 10^-1 needs)."""
    t, en = catalog(lang), catalog("en")
    labels = f"xlabel, ylabel, font = {t['notebook_step']!r}, {t['notebook_loss']!r}, None\n"
    if lang == "ko":
        labels = (
            "from matplotlib import font_manager\n"
            "installed = {font.name for font in font_manager.fontManager.ttflist}\n"
            f"hangul = next((name for name in {HANGUL_FONTS!r} if name in installed), None)\n"
            "if hangul:\n"
            f"    xlabel, ylabel, font = {t['notebook_step']!r}, {t['notebook_loss']!r}, hangul\n"
            "else:\n"
            f"    print({t['notebook_no_font']!r})\n"
            f"    xlabel, ylabel, font = {en['notebook_step']!r}, {en['notebook_loss']!r}, None\n")
    return (
        "try:\n"
        "    import matplotlib.pyplot as plt\n"
        f"except ImportError:  # {t['code_no_matplotlib']}\n"
        "    plt = None\n"
        "    for step in range(0, len(losses), 50):\n"
        f"        print({t['notebook_step']!r}, step, {t['notebook_loss']!r}, round(losses[step], 4))\n"
        "if plt is not None:\n"
        + "".join(f"    {line}\n" for line in labels.splitlines())
        + "    plt.plot(losses)\n"
        "    plt.xlabel(xlabel, fontfamily=font)\n"
        "    plt.ylabel(ylabel, fontfamily=font)\n"
        "    plt.yscale('log')\n"
        "    plt.show()\n")


def _training_cells(derivation, example, t, lang: str, seed: int) -> list:
    """Full-batch gradient descent on data labelled by the teacher, halving the step when a step would raise
    the loss (or make it NaN); asserts that the loss falls by at least half. Dropout masks are drawn once, so
    that successive losses compare; the teacher drops nothing."""
    v4 = nbformat.v4
    network = derivation.network
    masks, kept = _masks_argument(network, "masks"), _masks_argument(network, "unmasked")
    if example is None:
        start = (f"teacher = init_params({seed + 1})\n"
                 f"params = init_params({seed})\n")
    else:
        start = (f"teacher = {({name: value.tolist() for name, value in example.teacher.items()})!r}\n"
                 "teacher = {name: np.array(value) for name, value in teacher.items()}\n"
                 "params = {name: np.array(example[name]) for name in teacher}\n")
    code = (
        start
        + "\n\ndef targets(Y):\n"
        f"    \"\"\"{t['code_targets']}\"\"\"\n"
        "    Y = Y if BATCH_FIRST else Y.T\n"
        f"    T = {TARGET_RULES[target_kind(network)]}\n"
        "    return T if BATCH_FIRST else T.T\n\n\n"
        f"rng = np.random.default_rng({seed + 1})\n"
        + (f"X_train = _data(rng, {TRAIN_SAMPLES})[0]  # {t['code_sequences']}\n"
           if network.roles[network.input_name] == "ids" or network.spec.input.steps else
           f"X_train = rng.uniform(-1, 1, ({TRAIN_SAMPLES}, {network.spec.sizes[0]}))\n"
           "X_train = X_train if BATCH_FIRST else X_train.T\n")
        + (f"masks = draw_masks({TRAIN_SAMPLES}, seed={seed + 1})\n"
           "unmasked = {name: np.ones_like(mask) for name, mask in masks.items()}\n" if masks else "")
        + f"Y_train = targets(forward(teacher, X_train{kept})[0])\n"
        f"lr = {TRAIN_LR!r}\n"
        f"losses = [loss(forward(params, X_train{masks})[0], Y_train, params)]\n"
        f"for step in range({TRAIN_STEPS}):\n"
        f"    Y_pred, cache = forward(params, X_train{masks})\n"
        "    trial = sgd_step(params, backward(params, cache, Y_train), lr=lr)\n"
        f"    with np.errstate(all='ignore'):  # {t['code_overflow']}\n"
        f"        value = loss(forward(trial, X_train{masks})[0], Y_train, trial)\n"
        f"    if not value <= losses[-1]:  # {t['code_undo']}\n"
        "        lr /= 2\n"
        "        value = losses[-1]\n"
        "    else:\n"
        "        params = trial\n"
        "    losses.append(value)\n"
        f"print({t['notebook_fell']!r}, f'{{losses[0]:.4f}}', {t['notebook_to']!r}, f'{{losses[-1]:.4f}}')\n"
        + _plot_code(lang)
        + "assert losses[-1] <= 0.5 * losses[0]")
    intro = t["notebook_training_intro"].format(samples=TRAIN_SAMPLES)
    if network.masks:
        intro += " " + t["notebook_masks"]
    return [v4.new_markdown_cell(f"## {t['notebook_training']}\n\n{intro}"), v4.new_code_cell(code)]


def _cells(derivation, lang: str, report, batch: int, options: LectureOptions) -> list:
    t = catalog(lang)
    v4 = nbformat.v4
    example = worked_example(derivation, seed=options.example_seed) if has_worked_example(derivation) else None
    module = render(derivation, "numpy", lang=lang, report=report).split(_MAIN_BLOCK)[0].rstrip() + "\n"
    markdown = render(derivation, "markdown", lang=lang, report=report, batch=batch, options=options)
    cells = [v4.new_markdown_cell(part) for part in _sections(markdown)]
    cells += [
        v4.new_markdown_cell(f"## {t['notebook_code']}\n\n{t['notebook_code_intro']}"),
        v4.new_code_cell(module),
        v4.new_markdown_cell(f"## {t['notebook_check']}\n\n{t['notebook_check_intro']}"),
        v4.new_code_cell("error = gradient_check()\n"
                         f"print({t['notebook_check_result']!r}, f\"{{error:.2e}}\")\n"
                         "assert error < 1e-6"),
        *(_example_cells(derivation.network, example, t) if example else ()),
        *_training_cells(derivation, example, t, lang, options.example_seed),
    ]
    for number, cell in enumerate(cells):
        cell["id"] = f"cell-{number}"
    return cells


def notebook(derivation, *, lang: str = "en", report=None, batch: int = 64,
             options: LectureOptions | None = None) -> str:
    """The notebook as nbformat v4 JSON text."""
    cells = _cells(derivation, lang, report, batch, options or LectureOptions())
    nb = nbformat.v4.new_notebook(cells=cells, metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    })
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"
