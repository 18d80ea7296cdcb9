"""The generated PyTorch and JAX modules (``--format torch``, ``--format jax``), imported in-process and run.

Oracles: the framework's own gradient checker on the derived backward (``torch.autograd.gradcheck``,
``jax.test_util.check_grads``: finite differences in float64), and the framework's automatic differentiation of
the same forward code (autograd, ``jax.grad``), which the derived gradients must match to 1e-10. A representative
subset of the corpus runs by default (both layouts, batch and layer norm, dropout, softmax and log-softmax layers,
the fused losses, skip connections, PReLU, a custom activation, an RNN, a causal transformer block, an embedding);
``SYMBACKPROP_FULL_FRAMEWORKS=1`` runs every corpus spec, the sequence and image specs included. Each test is shown
able to fail: a wrong backward line put into a generated module is caught.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_generated import load_module

from symbackprop import derive
from symbackprop.errors import FormatError
from symbackprop.formats import FORMATS, FRAMEWORK_FORMATS
from symbackprop.frameworks import snippet
from symbackprop.output import parse_formats

TESTS = Path(__file__).parent
ALL_SPECS = [path for folder in ("specs", "specs_sequence", "specs_conv")
             for path in sorted(TESTS.joinpath(folder).glob("*.toml"))]
REPRESENTATIVE = [
    "batchnorm_after_dense",             # batch norm (compact dX), batch-first
    "batchnorm_after_dense_column",      # batch norm, column layout
    "dropout_column",                    # dropout masks as inputs
    "lecture_layernorm_dropout_gelu",    # layer norm, dropout, GELU (erf)
    "softmax_layer_cross_entropy",       # a softmax layer
    "log_softmax_nll_column",            # log-softmax + NLL, column layout
    "loss_cs231n_softmax_l2",            # fused softmax + cross-entropy, L2 penalty
    "lecture_sigmoid_bce_column",        # fused sigmoid + binary cross-entropy
    "bce_logits_binary",                 # BCE on logits
    "skip_one_layer",                    # a skip connection (gradients that add up)
    "prelu_column",                      # PReLU's trainable slope
    "formula_mish",                      # a custom activation
    "rnn_regression",                    # a sequence: an RNN unrolled over four steps
    "transformer_block",                 # causal two-head attention over a batch of sequences, layer norm
    "makemore_mlp",                      # token ids: an embedding's gather and scatter-add (JAX: a float0 cotangent)
]
# JAX compiles each module for seconds: by default the kinds whose JAX code differs most from PyTorch's.
JAX_REPRESENTATIVE = ["batchnorm_after_dense_column", "lecture_layernorm_dropout_gelu", "loss_cs231n_softmax_l2",
                      "skip_one_layer", "rnn_regression", "transformer_block", "makemore_mlp"]
FULL = os.environ.get("SYMBACKPROP_FULL_FRAMEWORKS") == "1"
SPECS = ALL_SPECS if FULL else [path for path in ALL_SPECS if path.stem in REPRESENTATIVE]
JAX_SPECS = ALL_SPECS if FULL else [path for path in ALL_SPECS if path.stem in JAX_REPRESENTATIVE]


def generated(path: Path, fmt: str, tmp_path: Path, edit=None):
    """The module ``--format fmt`` writes for the spec at ``path``, imported; ``edit`` changes its source first."""
    source = derive(str(path)).render(fmt)
    if edit is not None:
        source = edit(source)
    return load_module(source, tmp_path, f"{fmt}_{path.stem}")


def test_representative_subset_is_in_the_corpus():
    assert {path.stem for path in ALL_SPECS} >= set(REPRESENTATIVE)


# -- PyTorch --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", SPECS, ids=lambda p: p.stem)
def test_torch_module_passes_gradcheck_and_matches_autograd(path, tmp_path):
    pytest.importorskip("torch")
    module = generated(path, "torch", tmp_path)
    passed, difference = module.gradient_check()
    assert passed, "torch.autograd.gradcheck failed on the derived backward"
    assert difference < 1e-10, f"derived gradients differ from autograd's by {difference:.2e}"


def _wrong_weight_gradient(source: str) -> str:
    """The first weight gradient's line with one mistake: its upstream factor scaled by 1.001 (a wrong loss scale)."""
    edited, count = re.subn(r"^(    dW\d+ = )(.*?)(  #)", r"\g<1>1.001 * (\g<2>)\g<3>", source, count=1, flags=re.MULTILINE)
    assert count == 1
    return edited


def _missing_mask(source: str) -> str:
    """ReLU's local gradient left out of delta = dA ⊙ relu'(Z) (mistake 6 of the design notes, the other way)."""
    edited, count = re.subn(r"^(    dZ\d+ = )torch\.mul\((dA?a?\d+), [^#]*?, out=\2\)", r"\g<1>\g<2>", source,
                            count=1, flags=re.MULTILINE)
    assert count == 1
    return edited


@pytest.mark.parametrize("edit", [_wrong_weight_gradient, _missing_mask])
def test_torch_check_catches_a_wrong_backward_line(edit, tmp_path):
    pytest.importorskip("torch")
    module = generated(TESTS / "specs" / "relu_grad_at_zero_half.toml", "torch", tmp_path, edit)
    passed, difference = module.gradient_check()
    assert not passed and difference > 1e-4


def test_torch_check_catches_a_wrong_embedding_gradient(tmp_path):
    """The embedding's scatter-add with one mistake (a wrong scale): gradcheck and autograd both catch it."""
    pytest.importorskip("torch")

    def edit(source):
        edited, count = re.subn(r"^(    dC1 = )(.*?)(  #)", r"\g<1>1.001 * (\g<2>)\g<3>", source, count=1,
                                flags=re.MULTILINE)
        assert count == 1
        return edited

    module = generated(TESTS / "specs_sequence" / "makemore_mlp.toml", "torch", tmp_path, edit)
    passed, difference = module.gradient_check()
    assert not passed and difference > 1e-4


def test_torch_image_helpers_compute_the_numpy_modules_forward_and_backward(tmp_path):
    """The small CNN (conv2d with padding, max pooling, a second conv2d, flatten): the torch module's unfold/fold
    helpers give the NumPy module's predictions and derived gradients (which tests/test_conv.py checks against
    PyTorch's own convolution and pooling)."""
    torch = pytest.importorskip("torch")
    import numpy as np

    path = TESTS / "specs_conv" / "small_cnn.toml"
    derivation = derive(str(path))
    numpy_module = load_module(derivation.render("numpy"), tmp_path, "numpy_small_cnn")
    module = generated(path, "torch", tmp_path)
    X, Y = numpy_module._data(np.random.default_rng(1), 4)
    params = numpy_module.init_params(0)
    Y_pred, cache = numpy_module.forward(params, X)
    expected = numpy_module.backward(params, cache, Y)
    net = module.Network(0)
    X_t = torch.tensor(X, requires_grad=True)
    assert np.allclose(module._forward(dict(net.named_parameters()), X_t, {})[0].detach().numpy(), Y_pred,
                       rtol=1e-12, atol=1e-14)
    net(X_t, torch.tensor(Y)).backward()
    for name, grad in [*((name, p.grad) for name, p in net.named_parameters()), ("X", X_t.grad)]:
        assert np.allclose(grad.numpy(), expected[name], rtol=1e-10, atol=1e-13), name


def test_torch_function_saves_only_what_backward_reads(tmp_path):
    """The Function keeps the cache the derived backward reads (ReLU's mask as booleans, not Z), no more."""
    torch = pytest.importorskip("torch")
    module = generated(TESTS / "specs" / "lecture_deep_relu_6x8.toml", "torch", tmp_path)
    saved = []

    def pack(tensor):
        saved.append(tensor)
        return tensor

    net = module.Network(0)
    X = torch.randn(5, module.SIZES[0], dtype=torch.float64)
    Y = torch.randn(5, module.SIZES[-1], dtype=torch.float64)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
        net(X, Y)
    assert len(saved) == 1 + len(module.BACKWARD_PARAMETERS) + len(module.SAVED)
    assert not any(name.startswith("Z") for name in module.SAVED)
    cached = dict(zip(module.SAVED, saved[-len(module.SAVED):]))
    masks = [name for name in module.SAVED if name.startswith("da")]
    assert masks and all(cached[name].dtype == torch.bool for name in masks)


def _peaks(module, n):
    """The most bytes of tensors live at once during a training step, forward + backward, on a float64 batch of n
    (the profiler's allocation events, as ``make bench`` measures them): the derived Function's, autograd's."""
    import numpy as np
    import torch

    from benchmarks.frameworks import peak_bytes

    X, Y = (torch.tensor(a) for a in module._data(np.random.default_rng(0), n))
    net = module.Network(0)

    def step(loss):
        def run():
            loss(X, Y).backward()
            for p in net.parameters():
                p.grad = None
        return run

    return peak_bytes(step(net)), peak_bytes(step(net.autograd_loss))


@pytest.mark.parametrize("spec, n, release", [("specs/batchnorm_after_dense", 512, True),
                                              ("specs_sequence/transformer_block", 128, False)])
def test_torch_step_peaks_below_autograd(spec, n, release, tmp_path):
    """The derived step holds fewer bytes of tensors at its peak than autograd on the same forward code (the
    attention block: two sequences of 128 positions, whose T x T values dominate). ``release``: without ctx
    letting go of the saved tensors in backward, each del there frees nothing and the peak rises."""
    pytest.importorskip("torch")
    path = TESTS / f"{spec}.toml"
    derived, autograd = _peaks(generated(path, "torch", tmp_path), n)
    assert derived < autograd
    if release:
        held = generated(path, "torch", tmp_path, lambda source: source.replace('getattr(ctx, "maybe_clear_saved_tensors", lambda: None)()', "pass"))
        assert _peaks(held, n)[0] > derived


def test_torch_function_trains_and_scales_with_the_upstream_gradient(tmp_path):
    torch = pytest.importorskip("torch")
    module = generated(TESTS / "specs" / "loss_cs231n_softmax_l2.toml", "torch", tmp_path)
    net = module.Network(0)
    X = torch.randn(6, module.SIZES[0], dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 0, 1, 2]) % module.SIZES[-1]
    (3 * net(X, labels)).backward()
    derived = [p.grad.clone() for p in net.parameters()]
    net.zero_grad()
    (3 * net.autograd_loss(X, labels)).backward()
    for d, p in zip(derived, net.parameters()):
        assert torch.allclose(d, p.grad, rtol=1e-10, atol=1e-14)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.5)
    before = net(X, labels).item()
    for _ in range(20):
        optimizer.zero_grad()
        net(X, labels).backward()
        optimizer.step()
    assert net(X, labels).item() < before


# -- JAX ------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("path", JAX_SPECS, ids=lambda p: p.stem)
def test_jax_module_passes_check_grads_and_matches_jax_grad(path, tmp_path):
    pytest.importorskip("jax")
    module = generated(path, "jax", tmp_path)
    passed, difference = module.gradient_check()
    assert passed, "jax.test_util.check_grads failed on the derived backward"
    assert difference < 1e-10, f"derived gradients differ from jax.grad's by {difference:.2e}"


def test_jax_check_catches_a_wrong_backward_line(tmp_path):
    pytest.importorskip("jax")
    module = generated(TESTS / "specs" / "relu_grad_at_zero_half.toml", "jax", tmp_path, _wrong_weight_gradient)
    passed, difference = module.gradient_check()
    assert not passed and difference > 1e-4


# -- specs beyond the corpus: a batch of sequences of token ids with dropout, constants past int32 ----------------

# Token ids into attention, with dropout before and after it: the ids stay integers through the data and the check
# (a gather needs them), and each dropout mask has a row per position of every sequence of the batch (B T rows).
ATTENTION_IDS_DROPOUT = """
[input]
vocab = 6
[[layers]]
kind = "embedding"
size = 4
[[layers]]
kind = "dropout"
p = 0.25
[[layers]]
kind = "attention"
heads = 2
[[layers]]
kind = "dropout"
p = 0.5
[[layers]]
size = 3
activation = "prelu"
[[layers]]
kind = "log_softmax"
[loss]
kind = "nll"
"""

# Whole numbers past int32 and int64 (4e19, 8e19 in dL/dY_pred, an L2 penalty of 3e9 and 6e9 in dL/dW): as integer
# literals JAX (int32 unless float64 is on) and PyTorch (int64) overflow on them.
LARGE_CONSTANTS = """
[input]
size = 2
[[layers]]
size = 3
activation = "tanh"
[[layers]]
size = 2
activation = "identity"
[loss]
kind = "squared_error"
reduction = "sum"
scale = 4e19
[regularization]
l2 = 6e9
"""


def _spec_file(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("fmt", ["torch", "jax"])
def test_attention_over_token_ids_with_dropout_runs_as_a_script(fmt, tmp_path):
    """The module run as a script: training steps on a batch of sequences (masks drawn for its B T rows; in JAX
    under jit), then the framework's gradient check and the comparison with autograd / jax.grad, exit status 0."""
    pytest.importorskip(fmt)
    source = derive(str(_spec_file(tmp_path, "attention_ids_dropout", ATTENTION_IDS_DROPOUT))).render(fmt)
    script = tmp_path / f"backprop_{fmt}.py"
    script.write_text(source, encoding="utf-8")
    result = subprocess.run([sys.executable, str(script)], check=False, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.search(r"\(float64\): passed; largest relative difference from \S+: \S+$", result.stdout.strip())


def test_torch_module_with_constants_past_int64_matches_autograd(tmp_path):
    pytest.importorskip("torch")
    module = generated(_spec_file(tmp_path, "large_constants", LARGE_CONSTANTS), "torch", tmp_path)
    passed, difference = module.gradient_check()
    assert passed and difference < 1e-10


def test_jax_module_with_constants_past_int32_runs_under_jit_and_matches_jax_grad(tmp_path):
    """In a fresh process: a jitted step in float32 (Python ints are int32 there), compared with jax.grad's
    gradients, then the float64 check."""
    pytest.importorskip("jax")
    path = _spec_file(tmp_path, "large_constants", LARGE_CONSTANTS)
    (tmp_path / "backprop_jax.py").write_text(derive(str(path)).render("jax"), encoding="utf-8")
    code = ("import jax, jax.numpy as jnp, numpy as np, backprop_jax as m\n"
            "assert not jax.config.jax_enable_x64\n"
            "params = m.init_params(0)\n"
            "X, Y = (jnp.asarray(a, dtype=jnp.float32) for a in m._data(np.random.default_rng(0), 8))\n"
            "value, grads = jax.jit(jax.value_and_grad(m.network_loss))(params, X, Y, {})\n"
            "reference = jax.grad(m.autodiff_loss)(params, X, Y, {})\n"
            "assert value.dtype == jnp.float32 and np.isfinite(float(value))\n"
            "print(max(float(jnp.linalg.norm(grads[n] - reference[n]) / jnp.linalg.norm(reference[n])) "
            "for n in m.PARAMETERS))\n"
            "print(*m.gradient_check())\n")
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    float32_difference, passed, difference = result.stdout.split()
    assert float(float32_difference) < 1e-5
    assert passed == "True" and float(difference) < 1e-10


# -- the formats ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec, helpers", [
    ("specs_sequence/transformer_block", ["def causal_softmax(", "def _seq(", "def _flat("]),
    ("specs_sequence/gru_language_model", ["def scatter_rows(", "def _unstack("]),
    ("specs_conv/small_cnn", ["def im2col(", "def col2im(", "def first_max_mask(", "IMAGE_SHAPE = (1, 6, 6)"]),
])
def test_sequence_embedding_and_image_kinds_are_written(spec, helpers):
    """Attention, token ids with outputs at every step, and images: each format writes the helpers the NumPy
    module's lines call (their gradients are checked by the framework tests, all of them in the full sweep)."""
    derivation = derive(str(TESTS / f"{spec}.toml"))
    for fmt in FRAMEWORK_FORMATS:
        source = derivation.render(fmt)
        assert all(helper in source for helper in helpers), fmt
        compile(source, f"{fmt}_{spec}.py", "exec")


def test_a_rule_snippet_with_a_numpy_name_the_module_lacks_is_refused():
    assert snippet("np.where(z > 0, 1.0, 0.5).astype(z.dtype)", "torch", "x") == \
        "tnp.where(z > 0, 1.0, 0.5).to(z.dtype)"
    assert snippet("0.5 * (1 + erf(z))", "jax", "x") == "0.5 * (1 + jax.scipy.special.erf(z))"
    # whole numbers past int32 as float literals (an ELU alpha of 1e19); other numbers as they are
    assert snippet("np.where(z > 0, z, 10000000000000000000 * np.expm1(np.minimum(z, 0)))", "torch", "x") == \
        "tnp.where(z > 0, z, 1e+19 * tnp.expm1(tnp.minimum(z, 0)))"
    assert snippet("3000000000 * z + 2147483647 - 1e-05 * z ** 2 + 2.5e+20", "jax", "x") == \
        "3000000000.0 * z + 2147483647 - 1e-05 * z ** 2 + 2.5e+20"
    with pytest.raises(FormatError, match=r"^--format jax: the activation helper foo uses NumPy's np\.arctan"):
        snippet("np.arctan(z)", "jax", "the activation helper foo")


def test_all_leaves_the_framework_formats_out():
    assert set(FRAMEWORK_FORMATS) <= set(FORMATS)
    assert parse_formats("all") == [fmt for fmt in FORMATS if fmt not in FRAMEWORK_FORMATS]
    assert parse_formats("py,torch,jax") == ["numpy", "torch", "jax"]


def test_generating_imports_neither_framework():
    code = ("import sys; from symbackprop import derive; d = derive('tests/specs/dropout_hidden.toml'); "
            "d.render('torch'); d.render('jax'); print(sorted({'torch', 'jax'} & set(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=TESTS.parent,
                            check=True)
    assert result.stdout.strip() == "[]"
