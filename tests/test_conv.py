"""Convolution, pooling and flatten (issue 26): the im2col / col2im adjoint proved exactly, every formula of the
image specs (``tests/specs_conv/``) proved by ``verify``, the generated NumPy module's gradients against PyTorch
autograd (``tests/autograd_oracle.py``: ``torch.nn.functional``'s convolution and pooling) and, for ties in a
max-pool window, against a naive loop over the windows; the spec reader's refusals; the lecture formats, whose
printed index forms are evaluated against autograd.
"""

import dataclasses
import inspect
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
import symengine as se
import sympy as sp
from autograd_oracle import gradients as oracle_gradients
from test_generated import load_module

from symbackprop import derive
from symbackprop.errors import SpecError
from symbackprop.evaluate import Evaluator, SymbolicBackend
from symbackprop.expressions import Col2im, Fold, Im2col, Unfold
from symbackprop.images import Window, col2im, im2col
from symbackprop.rendering import render

torch = pytest.importorskip("torch")
F = torch.nn.functional

SPECS = sorted(Path(__file__).parent.joinpath("specs_conv").glob("*.toml"))


def _spec(path) -> dict:
    return tomllib.loads(Path(path).read_text(encoding="utf-8"))


# -- the adjoint, proved ------------------------------------------------------------------------------------

def _symbols(name, shape):
    return np.array([[se.Symbol(f"{name}[{i},{j}]") for j in range(shape[1])] for i in range(shape[0])],
                    dtype=object)


@pytest.mark.parametrize("window", [
    Window(2, 5, 4, (3, 2), (2, 2), (1, 1)),  # stride 2, padding 1, a kernel that is not square
    Window(3, 4, 5, (2, 3), (1, 2), (0, 1)),
    Window(2, 5, 4, (2, 2), (2, 2), (0, 0), per_channel=True),  # pooling's windows, one channel at a time
    Window(1, 1, 7, (1, 3), (1, 2), (0, 1)),  # a signal (height 1)
], ids=["stride2-pad1", "mixed", "per-channel", "signal"])
def test_im2col_and_col2im_are_adjoint_exactly(window):
    """<im2col(X), G> = <X, col2im(G)> as polynomials in the entries of X and G (symengine expands the
    difference to 0), through the derivation's nodes and the evaluator every backend uses."""
    N = 2
    X = _symbols("X", (N, window.size))
    G = _symbols("G", (N * window.rows_per_sample, window.patch))
    import sympy as sp

    Xs, Gs = sp.MatrixSymbol("X", N, window.size), sp.MatrixSymbol("G", *G.shape)
    evaluator = Evaluator(SymbolicBackend(), {"X": X, "G": G}, {})
    unfolded, folded = evaluator(Im2col(Xs, window)), evaluator(Col2im(Gs, window))
    assert unfolded.shape == G.shape and folded.shape == X.shape
    difference = se.expand(se.Add(*(unfolded * G).flat) - se.Add(*(X * folded).flat))
    assert difference == 0
    assert any(s == 0 for s in unfolded.flat) == (window.padding != (0, 0))  # the padding's zeros, if any


def test_fold_and_unfold_are_adjoint_and_inverse():
    import sympy as sp

    Z = _symbols("Z", (2 * 6, 3))
    G = _symbols("G", (2, 3 * 6))
    env = Evaluator(SymbolicBackend(), {"Z": Z, "G": G}, {})
    folded = env(Fold(sp.MatrixSymbol("Z", 12, 3), 6))
    unfolded = env(Unfold(sp.MatrixSymbol("G", 2, 18), 6))
    assert se.expand(se.Add(*(folded * G).flat) - se.Add(*(Z * unfolded).flat)) == 0
    assert (env(Unfold(Fold(sp.MatrixSymbol("Z", 12, 3), 6), 6)) == Z).all()


def test_im2col_matches_the_textbook_index_form():
    """X_col[n P + y W' + x, (c kh + i) kw + j] = X_pad[n, c, y s + i, x s + j] (float, a naive loop)."""
    window = Window(2, 5, 6, (3, 2), (2, 1), (1, 0))
    X = np.random.default_rng(0).standard_normal((3, window.size))
    cols = im2col(X, window)
    padded = np.pad(X.reshape(3, 2, 5, 6), ((0, 0), (0, 0), (1, 1), (0, 0)))
    Ho, Wo = window.out
    for n in range(3):
        for y in range(Ho):
            for x in range(Wo):
                patch = padded[n, :, y * 2:y * 2 + 3, x:x + 2].reshape(-1)
                assert np.array_equal(cols[n * Ho * Wo + y * Wo + x], patch)
    # col2im of ones counts the patches that cover each pixel (a naive count over the windows)
    covered = np.zeros((2, 5 + 2, 6))
    for y in range(Ho):
        for x in range(Wo):
            covered[:, y * 2:y * 2 + 3, x:x + 2] += 1
    assert np.array_equal(col2im(np.ones_like(cols), window).reshape(3, 2, 5, 6), np.broadcast_to(
        covered[:, 1:-1, :], (3, 2, 5, 6)))


# -- every formula proved -----------------------------------------------------------------------------------

@pytest.mark.parametrize("path", SPECS, ids=[path.stem for path in SPECS])
def test_every_formula_of_the_image_specs_is_proved(path):
    report = derive(_spec(path)).verify()
    assert report.ok, report.table()
    names = {check.name for check in report.checks}
    assert "dL/dX" in names and any(name.startswith(("dL/dXcol", "dL/dPcol")) for name in names)


def test_a_max_pool_gradient_spread_over_the_window_is_refuted():
    """The classic mistake: the window's gradient sent to every entry instead of to its maximum."""
    import sympy as sp

    derivation = derive(_spec(SPECS[0].parent / "small_cnn.toml"))
    step = derivation.step("Pcol2")
    spread = step.expr.args[0] if isinstance(step.expr.args[0], sp.MatMul) else step.expr.args[1]
    wrong = tuple(dataclasses.replace(s, expr=spread) if s.name == "Pcol2" else s for s in derivation.backward)
    report = dataclasses.replace(derivation, backward=wrong, _reports={}).verify()
    assert not report.ok
    assert {check.name for check in report.checks if not check.ok} >= {"dL/dPcol2"}


# -- the generated module against PyTorch autograd ----------------------------------------------------------

def _module_gradients(spec: dict, tmp_path, name: str, X=None, batch: int = 3):
    module = load_module(derive(spec).render("numpy"), tmp_path, name)
    rng = np.random.default_rng(2)
    params = module.init_params(2)
    data, Y = module._data(rng, batch)
    X = data if X is None else X
    _, cache = module.forward(params, X)
    return module, params, X, Y, module.backward(params, cache, Y)


def _agree(spec: dict, tmp_path, name: str, X=None, batch: int = 3):
    module, params, X, Y, grads = _module_gradients(spec, tmp_path, name, X, batch)
    expected = oracle_gradients(spec, params, X, Y)[2]  # tests/autograd_oracle.py: torch.nn.functional
    assert set(grads) == set(expected)
    for key, value in expected.items():
        assert grads[key].shape == value.shape, key
        np.testing.assert_allclose(grads[key], value, rtol=1e-9, atol=1e-11, err_msg=key)
    return module


def _conv_spec(shape, conv: dict, tail=()) -> dict:
    return {"input": {"shape": list(shape)}, "layers": [conv, *tail, {"kind": "flatten"}],
            "loss": {"kind": "half_sse"}}


@pytest.mark.parametrize("shape, conv", [
    ((1, 5, 5), {"kernel": 3, "channels": 2}),
    ((3, 6, 5), {"kernel": 3, "channels": 2, "stride": 2, "padding": 1}),
    ((2, 4, 5), {"kernel": [2, 3], "channels": 3, "padding": 1, "activation": "tanh"}),
    ((2, 7, 6), {"kernel": 2, "channels": 2, "stride": [2, 1], "padding": [0, 1], "bias": False}),
    ((2, 7, 8), {"kernel": 2, "channels": 3, "stride": [3, 2], "padding": [1, 0]}),
], ids=["stride1-pad0", "stride2-pad1", "rect-kernel-pad1", "mixed-stride-no-bias", "patches-apart"])
def test_conv2d_gradients_match_pytorch(tmp_path, shape, conv):
    conv = {"kind": "conv2d", "activation": "identity", **conv}
    _agree(_conv_spec(shape, conv), tmp_path, "conv2d")


@pytest.mark.parametrize("shape, conv, batch, l2", [
    ((2, 12, 12), {"kernel": 3, "channels": 3, "padding": 1, "activation": "relu"}, 3, 0),
    ((3, 24, 22), {"kernel": [3, 2], "channels": 2, "stride": 2, "padding": 1, "bias": False}, 2, 0),
    ((2, 12, 12), {"kernel": 3, "channels": 40, "padding": 1, "activation": "tanh"}, 21, 0),
    ((2, 300), {"kind": "conv1d", "kernel": 3, "channels": 2, "stride": 2, "activation": "sigmoid"}, 2, 0),
    ((2, 12, 12), {"kernel": 3, "channels": 3, "padding": 1, "activation": "relu"}, 3, 0.1),
], ids=["144-positions", "stride2-rect-144-positions", "chunks-of-10-images", "conv1d-149-positions", "l2"])
def test_a_convolution_with_many_positions_reads_the_maps_without_unfolding_them(tmp_path, shape, conv, batch, l2):
    """At 128 output positions or more the backward reads δ's maps as they are (unfold_t_dot, unfold_sums,
    col2im_unfold_dot) instead of copying them into unfold(δ), weight decay's term beside dW's product too; the
    gradients still match PyTorch's, over several chunks of the batch (40 maps of 144 positions: 10 images a
    chunk in float64; 21 images, the last in a chunk of its own) as over one, and in float32 they stay float32
    and agree with float64's."""
    conv = {"kind": "conv2d", "activation": "identity", **conv}
    spec = _conv_spec(shape, conv) | ({"regularization": {"l2": l2}} if l2 else {})
    module = _agree(spec, tmp_path, "unfolded", batch=batch)
    source = inspect.getsource(module)
    assert "col2im_unfold_dot(dZ1, W1, " in source and "unfold_t_dot(dZ1, Xcol1, " in source
    assert ("unfold_sums(dZ1, " in source) == conv.get("bias", True)
    code = [line.split("  #")[0] for line in source.split("def backward")[1].splitlines()]
    assert not [line for line in code if re.search(r"(?<![\w.])(unfold|col2im)\(", line)]
    params = module.init_params(1)
    X, Y = module._data(np.random.default_rng(1), batch)
    exact = module.backward(params, module.forward(params, X)[1], Y)
    params32 = {name: value.astype(np.float32) for name, value in params.items()}
    X32, Y32 = X.astype(np.float32), Y.astype(np.float32)
    for name, value in module.backward(params32, module.forward(params32, X32)[1], Y32).items():
        assert value.dtype == np.float32, name
        np.testing.assert_allclose(value, exact[name], rtol=0, atol=1e-4 * np.abs(exact[name]).max(), err_msg=name)


@pytest.mark.parametrize("length, unfolded", [(127, False), (128, True)])
def test_the_maps_are_read_as_they_are_from_128_positions_on(tmp_path, length, unfolded):
    conv = {"kind": "conv1d", "channels": 2, "kernel": 3, "padding": 1, "activation": "identity"}
    source = inspect.getsource(_agree(_conv_spec((2, length), conv), tmp_path, f"threshold{length}"))
    assert ("col2im_unfold_dot(dZ1, W1, " in source) == unfolded
    assert (f"dZcol1 = unfold(dZ1, {length})" in source) == (not unfolded)


def test_a_network_reads_maps_as_they_are_in_its_large_layer_and_unfolds_them_in_its_small_one(tmp_path):
    """conv (256 positions) -> ReLU -> max pool -> conv (64 positions) -> ReLU -> flatten -> dense: the two
    forms of a convolution's backward in one module, each where its layer's size puts it, against PyTorch."""
    conv = {"kind": "conv2d", "kernel": 3, "padding": 1, "activation": "relu"}
    spec = _conv_spec((3, 16, 16), {**conv, "channels": 4}, [{"kind": "maxpool", "kernel": 2}, {**conv, "channels": 3}])
    spec["layers"].append({"size": 5, "activation": "identity"})
    source = inspect.getsource(_agree(spec, tmp_path, "mixed"))
    assert "col2im_unfold_dot(dZ1, W1, " in source and "dZcol3 = unfold(dZ3, 64)" in source


def test_conv1d_gradients_match_pytorch(tmp_path):
    conv = {"kind": "conv1d", "channels": 3, "kernel": 3, "stride": 2, "padding": 1, "activation": "sigmoid"}
    _agree(_conv_spec((2, 9), conv), tmp_path, "conv1d")


@pytest.mark.parametrize("pool, shape", [("maxpool", (2, 6, 4)), ("avgpool", (2, 6, 4)), ("maxpool", (3, 8)),
                                         ("avgpool", (3, 8))])
def test_pooling_gradients_match_pytorch(tmp_path, pool, shape):
    conv = {"kind": "conv2d" if len(shape) == 3 else "conv1d", "channels": 2, "kernel": 1,
            "activation": "identity"}
    layer = {"kind": pool, "kernel": 2} if len(shape) == 2 else {"kind": pool, "kernel": [2, 2], "stride": [2, 1]}
    _agree(_conv_spec(shape, conv, [layer]), tmp_path, pool)


def test_a_max_pool_tie_goes_to_the_first_maximum_in_row_major_order(tmp_path):
    """A naive loop over the windows as the oracle: each window's gradient goes to its first maximum."""
    spec = {"input": {"shape": [1, 4, 4]}, "layers": [{"kind": "maxpool", "kernel": 2}, {"kind": "flatten"}],
            "loss": {"kind": "half_sse"}}
    X = np.random.default_rng(5).standard_normal((2, 1, 4, 4))
    X[0, 0, :2, :2] = 0.5  # four equal entries: the top left one
    X[0, 0, 0, 3] = X[0, 0, 1, 2] = 2.0  # a tie on the anti-diagonal: the top right one comes first
    X[1, 0, 2:, 2:] = [[-1.0, 3.0], [3.0, 3.0]]  # three equal maxima: the top right one
    module, params, X, Y, grads = _module_gradients(spec, tmp_path, "ties", X=X, batch=2)
    Y_pred = module.forward(params, X)[0]
    G = (Y_pred - Y).reshape(2, 1, 2, 2)  # dL/dY_pred of 1/2 sum of squares
    expected = np.zeros_like(X)
    for n in range(2):
        for y in range(2):
            for x in range(2):
                window = X[n, 0, 2 * y:2 * y + 2, 2 * x:2 * x + 2]
                i, j = next((i, j) for i in range(2) for j in range(2) if window[i, j] == window.max())
                expected[n, 0, 2 * y + i, 2 * x + j] += G[n, 0, y, x]
    assert np.array_equal(grads["X"], expected)
    assert grads["X"][0, 0, 0, 0] != 0 and grads["X"][0, 0, 0, 3] != 0 and grads["X"][1, 0, 2, 3] != 0
    assert module.gradient_check() < 1e-6  # away from ties the module's own check holds


@pytest.mark.parametrize("taps, order", [(4, "F"), (16, "C"), (25, "F")])
def test_the_first_max_mask_marks_what_argmax_picks_ties_and_nans_included(tmp_path, taps, order):
    """The module's mask of a window's first maximum, computed column by column, against NumPy's argmax: the
    first of equal maxima, and the first NaN where a window holds one (the NaN is then its maximum); its row
    maximum against NumPy's. Columns whole in memory (F order, as im2col lays a pooling window's patches) or
    not."""
    spec = {"input": {"shape": [1, 4, 4]}, "layers": [{"kind": "maxpool", "kernel": 2}, {"kind": "flatten"}],
            "loss": {"kind": "half_sse"}}
    module = load_module(derive(spec).render("numpy"), tmp_path, f"mask{taps}")
    x = np.random.default_rng(taps).standard_normal((60, taps))
    x[1::4, -1] = x[1::4, 0] = 9.0  # a tie for the maximum: the first one
    x[::3, 2] = np.nan
    x[::6, 1] = np.nan  # two NaNs: the first one
    x = np.asarray(x, order=order)
    assert np.array_equal(module.first_max_mask(x), np.eye(taps)[x.argmax(axis=1)])
    assert np.array_equal(module.row_max(x), x.max(axis=1, keepdims=True), equal_nan=True)
    finite = np.nan_to_num(x, nan=-1.0)  # no NaN at all: the mask skips its NaN test
    assert np.array_equal(module.first_max_mask(finite), np.eye(taps)[finite.argmax(axis=1)])


@pytest.mark.parametrize("kernel", [1, [1, 2]], ids=["one-entry", "one-row"])
def test_a_max_pool_window_of_one_entry_or_one_row_is_proved_and_matches_pytorch(tmp_path, kernel):
    """A window of one entry is its own maximum (the proof's opaque row maximum must not name it apart)."""
    spec = _conv_spec((2, 2, 4), {"kind": "conv2d", "channels": 2, "kernel": 1, "activation": "tanh"},
                      [{"kind": "maxpool", "kernel": kernel}])
    assert derive(spec).verify().ok
    _agree(spec, tmp_path, "one_entry")


@pytest.mark.parametrize("kernel, shape", [((5, 4), (2, 10, 8)), ((4, 4), (3, 8, 8))], ids=["20-taps", "16-taps"])
def test_a_max_pool_over_large_windows_matches_pytorch(tmp_path, kernel, shape):
    """Windows of 16 and 20 entries, one window overlapping the next (col2im adds their gradients), compared a
    column at a time as the smaller ones are."""
    spec = _conv_spec(shape, {"kind": "conv2d", "channels": 2, "kernel": 1, "activation": "identity"},
                      [{"kind": "maxpool", "kernel": list(kernel), "stride": 1}])
    _agree(spec, tmp_path, "large_windows")


def test_the_small_cnn_matches_pytorch_and_passes_its_own_gradient_check(tmp_path):
    """conv -> relu -> maxpool -> conv -> relu -> flatten -> dense -> softmax cross-entropy."""
    spec = _spec(SPECS[0].parent / "small_cnn.toml")
    module = _agree(spec, tmp_path, "small_cnn")
    params = module.init_params(0)
    assert params["W1"].shape == (2, 1, 3, 3) and params["W3"].shape == (2, 2, 2, 2)
    assert params["b1"].shape == (2,) and params["b3"].shape == (2,)  # (F,), as PyTorch's
    assert module.gradient_check() < 1e-6


@pytest.mark.parametrize("path", SPECS, ids=[path.stem for path in SPECS])
def test_each_image_spec_matches_pytorch(tmp_path, path):
    _agree(_spec(path), tmp_path, path.stem)


@pytest.mark.parametrize("shape", [(1, 5, 5), (2, 12, 12)], ids=["25-positions", "144-positions"])
def test_the_module_has_no_python_loop_over_positions(shape):
    spec = _conv_spec(shape, {"kind": "conv2d", "channels": 2, "kernel": 3, "padding": 1, "activation": "relu"},
                      [{"kind": "maxpool", "kernel": 2}])
    source = derive(spec).render("numpy")
    names = re.findall(r"^def (im2col|col2im\w*|fold|unfold\w*|first_max_mask|row_max)\(", source, re.MULTILINE)
    assert "im2col" in names and ("col2im_unfold_dot" in names) == (shape == (2, 12, 12)), names
    for name in names:
        start = source.index(f"\ndef {name}(")
        helper = source[start:source.index("\ndef ", start + 1)]
        loops = [line.strip() for line in helper.splitlines() if line.strip().startswith("for ")]
        # chunks of the batch (so the patches or maps stay in cache) and kernel offsets, or a pooling window's
        # entries, only
        assert loops in ([], ["for start in range(0, len(x), chunk):", "for i in range(kh):", "for j in range(kw):"],
                         ["for j in range(x.shape[1]):"], ["for j in range(1, x.shape[1]):"]), name


def test_col2im_over_several_chunks_of_the_batch_matches_pytorch(tmp_path):
    """Batches large enough that col2im adds the patches back in several chunks, the last one shorter: 21.6 kB
    of a conv's patches per image (24 images a chunk, 64 images), 2.6 kB of a pool's per channel (202 channel
    images a chunk, 256 of them). In float32 every array stays float32."""
    conv = {"kind": "conv2d", "channels": 4, "kernel": 3, "stride": 2, "padding": 1, "activation": "tanh"}
    spec = _conv_spec((3, 20, 20), conv, [{"kind": "avgpool", "kernel": 2, "stride": 1}])
    module = _agree(spec, tmp_path, "chunks", batch=64)
    params = module.init_params(0, dtype=np.float32)
    X, Y = module._data(np.random.default_rng(0), 64, dtype=np.float32)
    cache = module.forward(params, X)[1]
    arrays = {**cache, **module.backward(params, cache, Y)}
    assert {name: a.dtype for name, a in arrays.items() if a.dtype != np.float32} == {}


# -- the spec reader ----------------------------------------------------------------------------------------

def _mapping(layers, shape=(1, 5, 5), **extra):
    return {"input": {"shape": list(shape)}, "layers": layers, "loss": {"kind": "half_sse"}, **extra}


CONV = {"kind": "conv2d", "channels": 2, "kernel": 3, "activation": "relu"}


@pytest.mark.parametrize("mapping, key, message", [
    (_mapping([{**CONV, "kernel": 6}, {"kind": "flatten"}]), "layers[0].kernel",
     "kernel 6 is larger than the input along its height (5)"),
    (_mapping([{**CONV, "kernel": 8, "padding": 1}, {"kind": "flatten"}]), "layers[0].kernel",
     "larger than the padded input along its height (5 + 2 x 1 = 7)"),
    (_mapping([CONV, {"size": 2, "activation": "relu"}]), "layers[1].kind",
     "a dense layer reads a vector, but its input is an image of shape [2, 3, 3]; add a layer of kind \"flatten\""),
    (_mapping([CONV]), "layers[0].kind", "the network ends on an image of shape [2, 3, 3]"),
    ({"input": {"size": 4}, "layers": [CONV], "loss": {"kind": "half_sse"}}, "layers[0].kind",
     "give [input] shape = [C, H, W]"),
    (_mapping([{**CONV, "kind": "conv1d"}, {"kind": "flatten"}]), "layers[0].kind", "use conv2d"),
    (_mapping([{**CONV, "size": 3}, {"kind": "flatten"}]), "layers[0].size", "remove 'size'"),
    (_mapping([{**CONV, "channels": 0}, {"kind": "flatten"}]), "layers[0].channels", "positive integer"),
    (_mapping([{**CONV, "stride": [1, 0]}, {"kind": "flatten"}]), "layers[0].stride[1]", "positive integer"),
    (_mapping([{"kind": "flatten"}, {"kind": "maxpool", "kernel": 2}]), "layers[1].kind",
     "an earlier flatten layer made it a vector"),
    (_mapping([{"kind": "flatten"}], layout="column"), "layout", "batch-first only"),
    (_mapping([{**CONV, "activation": "prelu"}, {"kind": "flatten"}]), "layers[0].activation",
     "one slope per entry"),
    ({"input": {"shape": [1, 5, 5], "size": 25}, "layers": [{"kind": "flatten"}], "loss": {"kind": "half_sse"}},
     "input.size", "takes no 'size'"),
    ({"input": {"shape": [5]}, "layers": [{"kind": "flatten"}], "loss": {"kind": "half_sse"}}, "input.shape",
     "[C, H, W]"),
])
def test_misplaced_or_impossible_image_layers_are_spec_errors(mapping, key, message):
    with pytest.raises(SpecError) as error:
        derive(mapping)
    assert error.value.key == key and message in error.value.message, error.value


def test_an_image_spec_survives_the_round_trip_through_its_mapping():
    from symbackprop.spec import load_spec, spec_to_dict

    for path in SPECS:
        spec = load_spec(path)
        assert load_spec(spec_to_dict(spec)) == spec


# -- the lecture formats ------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", SPECS, ids=[path.stem for path in SPECS])
def test_the_lecture_formats_write_every_image_spec(path):
    """Markdown, the article, the deck and the notebook; each conv or pool layer's index form in each."""
    nbformat = pytest.importorskip("nbformat")
    derivation = derive(_spec(path))
    report = derivation.verify()
    pooled = [layer["kind"] for layer in _spec(path)["layers"] if layer.get("kind") in ("maxpool", "avgpool")]
    for fmt in ("markdown", "latex", "beamer"):
        text = render(derivation, fmt, report=report)
        assert text.count("in index form") >= 1 + len(pooled), fmt
        assert "Xcol" not in text and "[col" not in text, fmt  # the im2col names print as X_{col}^{[l]}
    nbformat.validate(nbformat.reads(render(derivation, "ipynb", report=report), as_version=4))


def test_the_cli_derives_and_verifies_an_image_spec(tmp_path):
    from click.testing import CliRunner

    from symbackprop.cli import main

    path = str(SPECS[0].parent / "small_cnn.toml")
    runner = CliRunner()
    result = runner.invoke(main, ["derive", "--spec", path, "--out", str(tmp_path / "out"), "-q"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["backprop.md", "backprop.py", "backprop.tex"]
    result = runner.invoke(main, ["verify", "--spec", path])
    assert result.exit_code == 0 and "all formulas verified" in result.output


def test_entrywise_kinds_act_on_images_and_normalization_follows_a_flatten(tmp_path):
    """An activation, dropout and a skip connection on an image, batch norm after the flatten: proved, and the
    module passes its own gradient check."""
    spec = {"input": {"shape": [2, 5, 5]}, "layers": [
        {"kind": "conv2d", "channels": 2, "kernel": 3, "padding": 1, "activation": "identity"},
        {"kind": "activation", "activation": "leaky_relu"}, {"kind": "dropout", "p": 0.25},
        {"kind": "add", "from": "a1"}, {"kind": "avgpool", "kernel": 2, "stride": 1}, {"kind": "flatten"},
        {"kind": "batchnorm"}, {"size": 2, "activation": "identity"}], "loss": {"kind": "half_sse"}}
    derivation = derive(spec)
    report = derivation.verify()
    assert report.ok, report.table()
    module = load_module(derivation.render("numpy"), tmp_path, "entrywise")
    assert module.PARAMETER_COUNT == derivation.spec.parameter_count
    assert module.gradient_check() < 1e-6


# -- the index forms the lecture prints (symbackprop/index_forms.py) against PyTorch ---------------------------

_INDEX_CASES = [
    ((2, 5, 6), {"kind": "conv2d", "channels": 3, "kernel": [3, 2], "stride": [2, 1], "padding": [1, 0]}),
    ((2, 5, 5), {"kind": "conv2d", "channels": 2, "kernel": 2, "bias": False}),
    ((2, 9), {"kind": "conv1d", "channels": 2, "kernel": 3, "stride": 2, "padding": 1}),
    ((2, 6, 4), {"kind": "maxpool", "kernel": [2, 2], "stride": [2, 1]}),
    ((2, 5, 5), {"kind": "avgpool", "kernel": 3, "stride": 2}),
    ((3, 8), {"kind": "maxpool", "kernel": 3, "stride": 2}),
]


def _first_max_indicator(X_pad, kernel, stride, out) -> np.ndarray:
    """M[n, c, y, x, i, j] = 1 at each window's first maximum in row-major order, by a loop over windows."""
    N, C = X_pad.shape[:2]
    M = np.zeros((N, C, *out, *kernel))
    for n, c, *pos in np.ndindex(N, C, *out):
        corner = tuple(p * s for p, s in zip(pos, stride))
        window = X_pad[(n, c, *(slice(a, a + k) for a, k in zip(corner, kernel)))]
        M[(n, c, *pos, *np.unravel_index(np.argmax(window), kernel))] = 1
    return M


@pytest.mark.parametrize("shape, layer", _INDEX_CASES, ids=lambda case: str(case))
def test_the_printed_index_forms_match_pytorch(shape, layer):
    """Every sum the lecture prints for a conv or pool layer, evaluated by loops as printed, against autograd
    of torch.nn.functional on the padded input (dX_pad) and on the input (dX)."""
    from symbackprop.index_forms import evaluate, image_forms

    layer = {"activation": "identity", **layer} if layer["kind"].startswith("conv") else layer
    derivation = derive(_conv_spec(shape, layer))
    forms = image_forms(derivation.network, 1)
    two_d = len(shape) == 3
    k = layer["kernel"]
    kernel = tuple(k if isinstance(k, list) else [k] * (2 if two_d else 1))
    stride = layer.get("stride", 1 if layer["kind"].startswith("conv") else kernel)
    stride = tuple(stride if isinstance(stride, list) else [stride] * len(kernel))
    padding = layer.get("padding", 0)
    padding = tuple(padding if isinstance(padding, list) else [padding] * len(kernel))
    rng = np.random.default_rng(7)
    N, C, spatial = 2, shape[0], shape[1:]
    X = rng.standard_normal((N, C, *spatial))
    X_pad = np.pad(X, [(0, 0), (0, 0), *((p, p) for p in padding)])
    xp, x = torch.tensor(X_pad, requires_grad=True), torch.tensor(X, requires_grad=True)
    arrays = {"X": X, "Xpad": X_pad}
    if layer["kind"].startswith("conv"):
        conv = F.conv2d if two_d else F.conv1d
        F_ = layer["channels"]
        W, b = rng.standard_normal((F_, C, *kernel)), rng.standard_normal(F_)
        w, bias = torch.tensor(W, requires_grad=True), torch.tensor(b, requires_grad=True)
        out = conv(xp, w, bias if layer.get("bias", True) else None, stride=stride)
        unpadded = conv(x, w.detach(), None, stride=stride, padding=padding)
        arrays.update(W=W, b=b)
        ranges = {"f": F_}
    else:
        pool = {("maxpool", True): F.max_pool2d, ("maxpool", False): F.max_pool1d,
                ("avgpool", True): F.avg_pool2d, ("avgpool", False): F.avg_pool1d}[layer["kind"], two_d]
        out, unpadded = pool(xp, kernel, stride), pool(x, kernel, stride)
        ranges = {}
    delta = rng.standard_normal(tuple(out.shape))
    (out * torch.tensor(delta)).sum().backward()
    (unpadded * torch.tensor(delta)).sum().backward()
    out_spatial = tuple(out.shape[2:])
    arrays["delta"] = delta
    if layer["kind"] == "maxpool":
        arrays["M"] = _first_max_indicator(X_pad, kernel, stride, out_spatial)
    letters = ("y", "x") if two_d else ("x",)
    ranges.update(n=N, c=C, **dict(zip(letters, out_spatial)), **dict(zip(("i", "j") if two_d else ("j",), kernel)),
                  **dict(zip(("u", "v") if two_d else ("v",), spatial)))
    expected = {"Z": out, "A": out, "dW": w.grad if layer["kind"].startswith("conv") else None,
                "db": bias.grad if layer["kind"].startswith("conv") else None, "dXpad": xp.grad, "dX": x.grad}
    names = {form.target for form in forms}
    assert {"dXpad"} <= names and ("dX" in names) == any(padding)
    for form in forms:
        value = expected[form.target].detach().numpy()
        if form.target == "dX":
            arrays["dXpad"] = xp.grad.numpy()
        np.testing.assert_allclose(evaluate(form, arrays, ranges, value.shape), value, rtol=1e-12, atol=1e-12,
                                   err_msg=form.target)
    markdown = derivation.render("markdown")
    for form in forms:
        lhs, rhs = form.latex()
        assert f"{lhs} = {rhs}" in markdown


def test_every_image_node_rebuilds_from_its_args():
    """SymPy's contract ``expr.func(*expr.args) == expr``, which xreplace and subs rely on."""
    derivation = derive(_spec(SPECS[0].parent / "small_cnn.toml"))
    nodes = {node for step in (*derivation.network.steps, *derivation.backward)
             for node in sp.preorder_traversal(step.expr) if type(node).__module__ == "symbackprop.expressions"}
    assert {type(node).__name__ for node in nodes} >= {"Im2col", "Col2im", "Fold", "Unfold", "RowMax", "MaxMask"}
    for node in nodes:
        assert node.func(*node.args) == node, node
