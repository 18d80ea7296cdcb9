"""Derivation -> ``backprop.ipynb``: the Markdown derivation as cells, then code that runs top to bottom.

The Markdown cells are the rendered Markdown document, one cell per section; the code cells define the
generated NumPy module (without its ``__main__`` block), run its gradient check, recompute the worked example
and train for a few hundred steps with a plot of the loss. Cell ids are fixed, so the file is reproducible.
"""

from __future__ import annotations

import re

import nbformat

from .lecture import has_worked_example, worked_example
from .render import catalog, render

_MAIN_BLOCK = '\nif __name__ == "__main__":'


def _sections(markdown: str) -> list[str]:
    """The Markdown document cut before each ``## `` heading."""
    return [part.strip() for part in re.split(r"\n(?=## )", markdown) if part.strip()]


def _example_cells(derivation, t) -> list:
    """The worked example recomputed with the module's functions and checked against the printed values."""
    v4 = nbformat.v4
    example = worked_example(derivation)
    network = derivation.network
    return [
        v4.new_markdown_cell(f"## {t['notebook_example']}\n\n{t['notebook_example_intro']}"),
        v4.new_code_cell(
            f"example = {({name: value.tolist() for name, value in example.inputs.items()})!r}\n"
            f"X, Y_true = np.array(example[{network.input_name!r}]), np.array(example['Y_true'])\n"
            f"params = {{name: np.array(example[name]) for name in {list(example.updated)!r}}}\n"
            "Y_pred, cache = forward(params, X)\n"
            "loss_before = loss(Y_pred, Y_true)\n"
            "grads = backward(params, cache, Y_true)\n"
            "for name, value in grads.items():\n"
            "    print(f'dL/d{name} =', np.round(value, 4).tolist())\n"
            f"params_after = sgd_step(params, grads, lr={example.lr!r})\n"
            "loss_after = loss(forward(params_after, X)[0], Y_true)\n"
            f"print({t['notebook_loss']!r}, f'{{loss_before:.4f}} -> {{loss_after:.4f}}')\n"
            f"assert np.isclose(loss_before, {example.loss!r})\n"
            f"assert np.isclose(loss_after, {example.loss_after!r})"),
    ]


def _cells(derivation, lang: str, report, batch: int) -> list:
    t = catalog(lang)
    v4 = nbformat.v4
    module = render(derivation, "numpy", lang=lang, report=report).split(_MAIN_BLOCK)[0].rstrip() + "\n"
    cells = [v4.new_markdown_cell(part) for part in _sections(render(derivation, "markdown", lang=lang,
                                                                      report=report, batch=batch))]
    cells += [
        v4.new_markdown_cell(f"## {t['notebook_code']}\n\n{t['notebook_code_intro']}"),
        v4.new_code_cell(module),
        v4.new_markdown_cell(f"## {t['notebook_check']}\n\n{t['notebook_check_intro']}"),
        v4.new_code_cell("error = gradient_check()\n"
                         f"print({t['notebook_check_result']!r}, f\"{{error:.2e}}\")\n"
                         "assert error < 1e-6"),
        *(_example_cells(derivation, t) if has_worked_example(derivation) else ()),
        v4.new_markdown_cell(f"## {t['notebook_training']}\n\n{t['notebook_training_intro']}"),
        v4.new_code_cell(
            "rng = np.random.default_rng(0)\n"
            "params = init_params(0)\n"
            "X_train, Y_train = _data(rng, 32)\n"
            "losses = []\n"
            "for step in range(300):\n"
            "    Y_pred, cache = forward(params, X_train)\n"
            "    losses.append(loss(Y_pred, Y_train))\n"
            "    params = sgd_step(params, backward(params, cache, Y_train), lr=0.01)\n"
            "try:\n"
            "    import matplotlib.pyplot as plt\n"
            "except ImportError:  # no matplotlib: print the losses instead\n"
            f"    for step in range(0, len(losses), 30):\n"
            f"        print({t['notebook_step']!r}, step, {t['notebook_loss']!r}, round(losses[step], 4))\n"
            "else:\n"
            "    plt.plot(losses)\n"
            "    plt.xlabel('step')\n"  # ASCII: matplotlib's default font has no Hangul
            "    plt.ylabel('L')\n"
            "    plt.show()\n"
            "assert losses[-1] < losses[0]"),
    ]
    for number, cell in enumerate(cells):
        cell["id"] = f"cell-{number}"
    return cells


def notebook(derivation, *, lang: str = "en", report=None, batch: int = 64) -> str:
    """The notebook as nbformat v4 JSON text."""
    nb = nbformat.v4.new_notebook(cells=_cells(derivation, lang, report, batch), metadata={
        "kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    })
    nbformat.validate(nb)
    return nbformat.writes(nb) + "\n"
