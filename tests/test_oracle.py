"""Every corpus spec's generated NumPy module against an independent forward pass differentiated by autograd.

The oracle (``tests/autograd_oracle.py``) reads the TOML as written and computes the loss with PyTorch, sharing
no code with symbackprop: a definition bug in one layer kind, activation or loss (an epsilon moved, a slope or a
reduction changed) changes its prediction, loss or gradients, while ``verify`` and the module's own gradient
check, which both differentiate our definition, still pass. By default one spec of each layer kind, activation,
loss and reduction, in both layouts; every spec of ``tests/specs*/`` with ``SYMBACKPROP_FULL_LECTURE=1``.
"""

import inspect
import os
import tomllib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_generated import load_module
from test_spec import valid_specs

from symbackprop import derive

pytest.importorskip("torch")
from autograd_oracle import gradients  # after the skip: it imports torch

HERE = Path(__file__).parent
CORPUS = sorted(HERE.glob("specs*/*.toml"))
REPRESENTATIVE = (  # every layer kind, activation, L2 scale and layout; every loss with each reduction but hinge's sum
    "specs/depth5_mixed_column", "specs/depth6_smooth", "specs/depth6_piecewise_column", "specs/mixed_column",
    "specs/prelu_hidden", "specs/dropout_column", "specs/linear_batchnorm_relu_column", "specs/skip_from_input",
    "specs/formula_swish_beta", "specs/loss_cs231n_svm_l2", "specs/loss_bce_sum", "specs/loss_ng_bce_l2_column",
    "specs/loss_bce_mean_multilabel", "specs/loss_bce_logits_sum_l2", "specs/loss_bce_logits_batch_mean_column",
    "specs/softmax_layer_column", "specs/log_softmax_nll_column", "specs/loss_softmax_ce_sum_l2",
    "specs/loss_squared_error_mean_l2_column", "specs/loss_squared_error_sum", "specs/loss_nielsen_quadratic_l2",
    "specs_conv/small_cnn", "specs_conv/conv1d_signal", "specs_conv/strided_conv",
    "specs_sequence/transformer_block", "specs_sequence/attention_bias", "specs_sequence/gru_language_model",
    "specs_sequence/lstm_classifier", "specs_sequence/makemore_mlp", "specs_sequence/rnn_regression",
)
SPECS = CORPUS if os.environ.get("SYMBACKPROP_FULL_LECTURE") == "1" else [
    path for path in CORPUS if f"{path.parent.name}/{path.stem}" in REPRESENTATIVE]


def _close(actual, expected, scale, what):
    """Within 1e-9 of the array's own size, or 1e-12 of ``scale`` where the array is (nearly) zero."""
    error = np.linalg.norm(np.asarray(actual, dtype=float) - expected)
    assert error <= 1e-9 * np.linalg.norm(expected) + 1e-12 * scale, (what, error, np.linalg.norm(expected))


def _agrees(spec: dict, directory: Path, name: str, seed: int = 3, derivation=None) -> None:
    """The generated module's prediction, loss and gradients on a random batch equal the oracle's."""
    module = load_module((derivation or derive(spec)).render("numpy"), directory, name)
    params = module.init_params(seed)
    X, Y = module._data(np.random.default_rng(seed + 8), 3)
    masks = module.draw_masks(3, seed=5) if hasattr(module, "draw_masks") else {}
    Y_pred, cache = module.forward(params, X, masks) if masks else module.forward(params, X)
    grads = module.backward(params, cache, Y)
    takes_params = len(inspect.signature(module.loss).parameters) == 3
    value = module.loss(Y_pred, Y, params) if takes_params else module.loss(Y_pred, Y)
    expected_loss, expected_pred, expected = gradients(spec, params, X, Y, masks)
    assert set(grads) == set(expected)
    _close(Y_pred, expected_pred, 1, "Y_pred")
    _close(value, expected_loss, 1, "loss")
    # a gradient that is exactly 0 is judged against rounding at the largest gradient's scale (at least 1)
    largest = max(1.0, *(np.linalg.norm(g) for g in expected.values()))
    for key, gradient in expected.items():
        assert grads[key].shape == gradient.shape, key
        _close(grads[key], gradient, largest, f"d{key}")


@pytest.mark.parametrize("path", SPECS, ids=[f"{p.parent.name}/{p.stem}" for p in SPECS])
def test_generated_module_matches_the_autograd_oracle(path, tmp_path):
    _agrees(tomllib.loads(path.read_text(encoding="utf-8")), tmp_path, path.stem)


def test_l2_covers_every_weight_matrix(tmp_path):
    """A conv kernel and a dense weight, both in the penalty (no corpus spec has L2 beside a convolution)."""
    spec = {"input": {"shape": [1, 5, 5]}, "loss": {"kind": "half_sse"}, "regularization": {"l2": 0.1},
            "layers": [{"kind": "conv2d", "channels": 2, "kernel": 3, "activation": "relu"}, {"kind": "flatten"},
                       {"size": 3, "activation": "identity"}]}
    _agrees(spec, tmp_path, "conv_l2")


# Random specs of every family (tests/test_spec.py's strategy): a handful by default, many in the full sweep.
RANDOM_EXAMPLES = 100 if os.environ.get("SYMBACKPROP_FULL_LECTURE") == "1" else 4


@settings(max_examples=RANDOM_EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(spec=valid_specs(), seed=st.integers(0, 2**16))
def test_random_specs_verify_and_their_modules_match_the_autograd_oracle(spec, seed, tmp_path_factory):
    derivation = derive(spec)
    assert derivation.verify().ok, derivation.verify().table()
    _agrees(spec, tmp_path_factory.mktemp("random"), "random", seed, derivation)
