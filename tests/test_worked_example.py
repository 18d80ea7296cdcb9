"""The numbers the documents print in their worked example, recomputed by the independent oracle.

The Markdown document, the LaTeX article, the Beamer deck and the notebook print the example's inputs and
parameters, the gradients, the parameters after one gradient-descent step and the loss before and after it.
Each is read back from the rendered text and compared with ``tests/autograd_oracle.py`` (the forward pass
written from the spec as written, differentiated by PyTorch), not with the package's own numbers: a document
that showed the parameters before the step as those after it, or swapped the two losses, fails here. The
notebook's code cell restates the example as Python literals and asserts the two losses at full precision;
those are checked against the oracle too.
"""

import ast
import functools
import json
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest

from symbackprop import derive

pytest.importorskip("torch")
from autograd_oracle import gradients  # after the skip: it imports torch

SPECS = Path(__file__).parent / "specs"
_MATRIX = r"\\begin\{bmatrix\}(.*?)\\end\{bmatrix\}"
_PARAMETER = r"(W|b|\\gamma|\\beta|\\alpha)\^\{\[(\d+)\]\}"
# Dense layers (both layouts), batch norm with softmax and L2, a trained PReLU slope.
NAMES = ["seed", "tanh_output_mse", "sigmoid_mse_column", "lecture_batchnorm_softmax_l2", "prelu_hidden"]


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
             "lr": float(re.search(r"learning rate \$\\(?:alpha|eta) = ([\d.]+)\$", text).group(1))}
    for role, pattern in (("value", rf"(?<![\w\\]){_PARAMETER} = {_MATRIX}"),
                          ("gradient", rf"\\frac\{{\\partial L\}}\{{\\partial {_PARAMETER}\}} = {_MATRIX}"),
                          ("after", rf"{_PARAMETER} \\leftarrow {_MATRIX}")):
        for base, layer, body in re.findall(pattern, text):
            found.setdefault(role, {}).setdefault(f"{base.lstrip(chr(92))}{layer}", _matrix(body))
    before, after = re.search(r"Loss before the step: (\d+\.\d+); after the step: (\d+\.\d+)", text).groups()
    found["loss"] = (float(before), float(after))
    return found


@functools.cache
def _document(name: str, fmt: str) -> str:
    """``tests/specs/<name>.toml`` rendered in ``fmt`` (each spec derived once)."""
    return _derivation(name).render(fmt)


@functools.cache
def _derivation(name: str):
    return derive(SPECS / f"{name}.toml")


def _notebook(name: str) -> tuple[str, str]:
    """The notebook's Markdown cells, joined, and its code cell that restates the worked example."""
    cells = json.loads(_document(name, "ipynb"))["cells"]
    markdown = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "markdown")
    code = next(src for c in cells if c["cell_type"] == "code" and (src := "".join(c["source"])).startswith("example = "))
    return markdown, code


def _oracle(mapping: dict, params: dict, X, Y):
    """(loss, gradients) of the spec as written, by the autograd oracle."""
    value, _, grads = gradients(mapping, params, X, Y)
    return value, grads


@pytest.mark.parametrize("spec_name", NAMES)
@pytest.mark.parametrize("fmt, decimals", [("markdown", 4), ("latex", 4), ("beamer", 3), ("ipynb", 4)])
def test_the_worked_example_prints_what_the_oracle_computes(spec_name, fmt, decimals):
    path = SPECS / f"{spec_name}.toml"
    mapping = tomllib.loads(path.read_text(encoding="utf-8"))
    shown = _read(_notebook(spec_name)[0] if fmt == "ipynb" else _document(spec_name, fmt))
    tolerance = 0.6 * 10.0 ** -decimals  # half a unit of the last printed digit, and a little more
    params = shown["value"]
    before_loss, grads = _oracle(mapping, params, shown["X"], shown["Y_true"])
    after = {name: value - shown["lr"] * grads[name] for name, value in params.items()}
    assert set(shown["after"]) == set(params) == set(grads) - {"X"}
    for name in params:
        if name in shown.get("gradient", {}):  # the deck shows the gradients of the last layers only
            np.testing.assert_allclose(shown["gradient"][name], grads[name], rtol=0, atol=tolerance,
                                       err_msg=f"d{name}")
        np.testing.assert_allclose(shown["after"][name], after[name], rtol=0, atol=tolerance,
                                   err_msg=f"{name} after the step")
    after_loss = _oracle(mapping, after, shown["X"], shown["Y_true"])[0]
    assert shown["loss"] == pytest.approx((before_loss, after_loss), abs=0.6e-4), "loss before / after the step"
    assert after_loss < before_loss


@pytest.mark.parametrize("spec_name", NAMES)
def test_the_notebooks_example_cell_states_the_printed_example_and_the_oracles_losses(spec_name):
    """The cell's literals are the numbers the notebook prints above it, and the losses it asserts (full
    precision) are the oracle's, before and after a step with the printed learning rate."""
    path = SPECS / f"{spec_name}.toml"
    markdown, code = _notebook(spec_name)
    shown = _read(markdown)
    example = ast.literal_eval(code.split("\n", 1)[0].removeprefix("example = "))
    arrays = {name: np.array(value) for name, value in example.items()}
    for name, value in {"X": shown["X"], "Y_true": shown["Y_true"], **shown["value"]}.items():
        np.testing.assert_allclose(arrays[name], value, rtol=0, atol=0.6e-4, err_msg=name)
    assert f"sgd_step(params, grads, lr={shown['lr']})" in code
    asserted = [float(v) for v in re.findall(r"assert np\.isclose\(loss_(?:before|after), ([-\d.e]+)\)", code)]
    params = {name: arrays[name] for name in shown["value"]}
    before, grads = _oracle(mapping := tomllib.loads(path.read_text(encoding="utf-8")), params, arrays["X"],
                            arrays["Y_true"])
    after = _oracle(mapping, {n: v - shown["lr"] * grads[n] for n, v in params.items()}, arrays["X"],
                    arrays["Y_true"])[0]
    np.testing.assert_allclose(asserted, [before, after], rtol=1e-12, err_msg="loss before / after")
