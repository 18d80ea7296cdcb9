"""The numbers the documents print in their worked example, recomputed by the independent oracle.

The Markdown document, the LaTeX article and the Beamer deck print the example's inputs and parameters, the
gradients, the parameters after one gradient-descent step and the loss before and after it. Each is read back
from the rendered text and compared with ``tests/oracles.py`` (the loss written out from the definitions,
differentiated entry by entry), not with the package's own numbers: a document that showed the parameters
before the step as those after it, or swapped the two losses, fails here.
"""

import re
from pathlib import Path

import numpy as np
import pytest
from oracles import loss, symbolic_gradients

from symbackprop import derive, load_spec

SPECS = Path(__file__).parent / "specs"
_MATRIX = r"\\begin\{bmatrix\}(.*?)\\end\{bmatrix\}"
_PARAMETER = r"(W|b)\^\{\[(\d+)\]\}"


def _entry(text: str) -> float:
    """A printed entry: a decimal, or scientific notation ``-3.5 \\times 10^{-5}``."""
    return float(re.sub(r"\s*\\times 10\^\{(-?\d+)\}", r"e\1", text))


def _matrix(body: str) -> np.ndarray:
    return np.array([[_entry(entry) for entry in row.split("&")] for row in body.split(r"\\")])


def _read(text: str) -> dict:
    """What the worked example prints: inputs, parameters, their gradients and values after the step, the
    learning rate and the two losses."""
    found = {"X": _matrix(re.search(r"(?<!\w)X = " + _MATRIX, text).group(1)),
             "Y_true": _matrix(re.search(r"Y_\{true\} = " + _MATRIX, text).group(1)),
             "lr": float(re.search(r"learning rate \$\\alpha = ([\d.]+)\$", text).group(1))}
    for role, pattern in (("value", rf"(?<!\w){_PARAMETER} = {_MATRIX}"),
                          ("gradient", rf"\\frac\{{\\partial L\}}\{{\\partial {_PARAMETER}\}} = {_MATRIX}"),
                          ("after", rf"{_PARAMETER} \\leftarrow {_MATRIX}")):
        for base, layer, body in re.findall(pattern, text):
            found.setdefault(role, {}).setdefault(f"{base}{layer}", _matrix(body))
    before, after = re.search(r"Loss before the step: (\d+\.\d+); after the step: (\d+\.\d+)", text).groups()
    found["loss"] = (float(before), float(after))
    return found


@pytest.mark.parametrize("spec_name", ["seed", "tanh_output_mse", "sigmoid_mse_column"])
@pytest.mark.parametrize("fmt, decimals", [("markdown", 4), ("latex", 4), ("beamer", 3)])
def test_the_worked_example_prints_what_the_oracle_computes(spec_name, fmt, decimals):
    spec = load_spec(spec_name if spec_name == "seed" else SPECS / f"{spec_name}.toml")
    shown = _read(derive(spec).render(fmt))
    tolerance = 0.6 * 10.0 ** -decimals  # half a unit of the last printed digit, and a little more
    params = shown["value"]
    values = {"X": shown["X"], "Y_true": shown["Y_true"], **params}
    gradients = symbolic_gradients(spec, values, list(params))
    after = {name: value - shown["lr"] * gradients[name] for name, value in params.items()}
    for name in params:
        if name in shown.get("gradient", {}):  # the deck shows the gradients of the last layers only
            np.testing.assert_allclose(shown["gradient"][name], gradients[name], rtol=0, atol=tolerance,
                                       err_msg=f"d{name}")
        np.testing.assert_allclose(shown["after"][name], after[name], rtol=0, atol=tolerance,
                                   err_msg=f"{name} after the step")
    before_loss, after_loss = (float(loss(spec, {"X": shown["X"], "Y_true": shown["Y_true"], **p}))
                               for p in (params, after))
    assert shown["loss"] == pytest.approx((before_loss, after_loss), abs=0.6e-4), "loss before / after the step"
    assert after_loss < before_loss
