"""The NumPy module's fused code (issue 30): what it writes in place never reaches the caller's arrays or a
returned cache, and float32 steps stay float32 with integer class targets. Numbers are checked against the
module's own float64 run with one-hot targets, an independent path through the same formulas, and against
PyTorch autograd by tests/test_oracle.py. The arrays of matrix products are reused across steps, never while
the caller holds them."""

import gc
import os
import threading
import weakref
from pathlib import Path

import numpy as np
import pytest

from symbackprop import derive
from tests.test_generated import load_module

SPECS = Path(__file__).parent / "specs"


@pytest.mark.parametrize("name", ["linear_batchnorm_relu", "layernorm_column", "residual_block"])
def test_forward_and_backward_leave_their_inputs_alone(name, tmp_path):
    module = load_module(derive(SPECS / f"{name}.toml").render("numpy"), tmp_path)
    rng = np.random.default_rng(0)
    params = module.init_params(0)
    X, Y = module._data(rng, 6)
    saved = {key: value.copy() for key, value in (*params.items(), ("X", X), ("Y", Y))}
    cache = module.forward(params, X)[1]
    kept = {key: np.array(value, copy=True) for key, value in cache.items()}
    first = module.backward(params, cache, Y)
    second = module.backward(params, cache, Y)  # backward reads the cache without changing it
    for key, value in (*params.items(), ("X", X), ("Y", Y)):
        np.testing.assert_array_equal(value, saved[key], err_msg=key)
    for key, value in cache.items():
        np.testing.assert_array_equal(value, kept[key], err_msg=key)
    for key in first:
        np.testing.assert_array_equal(first[key], second[key], err_msg=key)


def test_integer_class_targets_keep_float32(tmp_path):
    module = load_module(derive(SPECS / "lecture_batchnorm_softmax_l2.toml").render("numpy"), tmp_path)
    rng = np.random.default_rng(1)
    params = module.init_params(0)
    X = rng.standard_normal((7, module.SIZES[0]))
    ids = rng.integers(0, module.SIZES[-1], 7)
    one_hot = np.eye(module.SIZES[-1])[ids]
    expected = module.backward(params, module.forward(params, X)[1], one_hot)
    params32 = {key: value.astype(np.float32) for key, value in params.items()}
    Y_pred, cache = module.forward(params32, X.astype(np.float32))
    grads = module.backward(params32, cache, ids)
    assert {key: value.dtype for key, value in grads.items() if value.dtype != np.float32} == {}
    assert abs(module.loss(Y_pred, ids, params32) - module.loss(Y_pred, one_hot, params32)) < 1e-6
    for key, value in grads.items():
        assert np.linalg.norm(value - expected[key]) <= 1e-4 * np.linalg.norm(expected[key]) + 1e-6, key


@pytest.mark.parametrize("name, sums", [("linear_batchnorm_relu", 0), ("layernorm_column", 2)])
def test_the_compact_normalization_gradient_is_written_into_the_upstream_array(name, sums):
    """Batch and layer norm's dX: the upstream gradient's array scaled in place, the other terms subtracted in
    place (layer norm's row sums taken first, before that array changes): no fresh array per term."""
    source = derive(SPECS / f"{name}.toml").render("numpy")
    backward = source[source.index("def backward("):source.index("def sgd_step(")]
    assert backward.count(" -= ") == 2, backward
    assert len([line for line in backward.splitlines() if "_sum" in line.split("=")[0]]) == sums, backward


def _step(module, params, X, Y):
    return module.backward(params, module.forward(params, X)[1], Y)


def test_a_product_reuses_its_array_once_nothing_holds_it(tmp_path):
    """The arrays of a step's matrix products come back in the next step once the caller has let go of them,
    so no step maps fresh memory; ``release_buffers`` lets them go."""
    module = load_module(derive(SPECS / "linear_batchnorm_relu.toml").render("numpy"), tmp_path)
    params = module.init_params(0)
    X, Y = module._data(np.random.default_rng(0), 6)
    first = weakref.ref(_step(module, params, X, Y)["W1"])
    assert first() is not None  # kept for the next step, though the caller dropped it
    assert _step(module, params, X, Y)["W1"] is first()
    module.release_buffers()
    gc.collect()
    assert first() is None


def test_arrays_the_caller_holds_are_never_reused(tmp_path):
    """Whatever the caller still holds (a gradient, a cache, a prediction, or only a view of one) keeps its
    values through later steps on other inputs, in this thread and in others at once."""
    module = load_module(derive(SPECS / "linear_batchnorm_relu.toml").render("numpy"), tmp_path)
    rng = np.random.default_rng(0)
    params = module.init_params(0)
    batches = [module._data(rng, 6) for _ in range(4)]
    grads = _step(module, params, *batches[0])
    Y_pred, cache = module.forward(params, batches[1][0])
    view = _step(module, params, *batches[2])["W1"].T[:2]  # only a view of the returned array is left
    held = {"grads": {key: value.copy() for key, value in grads.items()}, "Y_pred": Y_pred.copy(),
            "cache": {key: value.copy() for key, value in cache.items()}, "view": view.copy()}
    expected = [_step(module, params, X, Y) for X, Y in batches]
    results = [None] * 8

    def run(index):
        results[index] = _step(module, params, *batches[index % 4])

    for index in range(3):
        run(index)
    threads = [threading.Thread(target=run, args=(index,)) for index in range(3, 8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for key, value in grads.items():
        np.testing.assert_array_equal(value, held["grads"][key], err_msg=key)
    for key, value in cache.items():
        np.testing.assert_array_equal(value, held["cache"][key], err_msg=key)
    np.testing.assert_array_equal(Y_pred, held["Y_pred"])
    np.testing.assert_array_equal(view, held["view"])
    for index, result in enumerate(results):
        for key, value in result.items():
            np.testing.assert_allclose(value, expected[index % 4][key], rtol=1e-12, atol=1e-15, err_msg=key)


def test_the_timing_helper_says_when_the_machine_is_loaded(tmp_path, monkeypatch):
    module = load_module(derive().render("numpy"), tmp_path)
    params = module.init_params(0)
    X, Y = module._data(np.random.default_rng(0), 4)
    seconds, note = module.time_step(params, X, Y, repeats=3)
    assert seconds > 0 and note.startswith("load ")
    monkeypatch.setattr(module.os, "getloadavg", lambda: (3.0 * (os.cpu_count() or 1), 0.0, 0.0))
    assert "the machine is loaded" in module.time_step(params, X, Y, repeats=1)[1]
    monkeypatch.delattr(module.os, "getloadavg")
    assert module.time_step(params, X, Y, repeats=1)[1] == "load unknown"
