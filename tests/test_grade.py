"""`symbackprop grade`: students' backward passes graded gradient by gradient, with the mistake named.

Every file in tests/grade/ is written by hand as a student would write it (plain NumPy, their own names),
with the mistakes listed in the tables below. The expected verdicts (which gradients are wrong, which mistake,
reported at which gradient) are worked out from the planted mistake and the chain rule, not copied from the
grader's output: a mistake in a hidden step (dY_pred, dZ2) makes every gradient computed from it wrong and is
reported at the first of them in backward order. The expected gradients themselves are checked against
central finite differences of the generated module's loss.
"""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import symbackprop
from symbackprop.cli import main
from symbackprop.grading import GradeError, Grader
from symbackprop.grading.runner import _run

STUDENTS = Path(__file__).parent / "grade"
SPECS = Path(__file__).parent / "specs"
# Directory of student files -> the spec they were written for (None: the seed network).
NETWORKS = {
    "seed": None, "failures": None,                   # batch-first, relu, relu, identity, half_sse
    "bce": "bce_logits_binary",                       # batch-first, relu, identity, bce_logits
    "softmax": "softmax_ce_4_classes_column",         # column, tanh, identity, softmax cross-entropy
    "sigmoid": "sigmoid_mse_column",                  # column, sigmoid, identity, mse
    "tanh": "tanh_output_mse",                        # batch-first, tanh, tanh, mse
    "leaky": "leaky_relu_alpha_0_2_column",           # column, leaky_relu (alpha 0.2), identity, half_sse
    "conv0": "relu_grad_at_zero_0",                   # batch-first, relu with ReLU'(0) = 0
    "wide": "wide_8",                                 # batch-first, every width 8, mse
    "depth4": "depth4_mixed",                         # batch-first, relu, tanh, sigmoid, identity, mse
    "batchnorm": "batchnorm_after_dense",             # batch-first, relu, batch norm, identity, half_sse
    "dropout": "dropout_hidden",                      # batch-first, relu, dropout p = 0.5, identity, half_sse
    "softmax_layer": "softmax_layer_cross_entropy",   # batch-first, tanh, identity, softmax layer, cross-entropy
    "log_softmax": "log_softmax_nll",                 # batch-first, relu, identity, log-softmax layer, nll
    "softmax_column": "softmax_layer_column",         # column, identity, softmax layer, cross-entropy
}
TIME_LIMIT = 1.0
_GRADERS = {}


def grader(directory: str) -> Grader:
    """One grader per spec for the whole module (derivation and instances are built once)."""
    spec = NETWORKS[directory]
    if spec not in _GRADERS:
        _GRADERS[spec] = Grader(None if spec is None else SPECS / f"{spec}.toml", time_limit=TIME_LIMIT)
    return _GRADERS[spec]


def graded(name: str):
    directory = name.split("/")[0]
    function = "gradients" if name.endswith("gradients") else "backward"
    return grader(directory).grade(STUDENTS / f"{name}.py", function)


ALL = object()  # every gradient of the network

# file -> (the gradients that are wrong, {gradient: what its mistake must say}). A wrong gradient without an
# entry must say it is wrong because of an upstream step.
BUGGY = {
    # seed: W3 b3 W2 b2 W1 b1 X
    "seed/z_for_a": ({"W2"}, {"W2": ["dW2 = Z1.T @ dZ2 (your code)", "a1.T @ dZ2 was expected",
                                     "the pre-activation Z1 instead of the activation a1"]}),
    "seed/bias_not_summed": ({"b1"}, {"b1": ["db1 = dZ1 (your code)", "sum over the samples is left out"]}),
    "seed/bias_wrong_axis": ({"b2"}, {"b2": ["db2 = dZ2.sum(axis=1, keepdims=True) (your code)",
                                            "axis=1 where axis=0 belongs"]}),
    "seed/extra_half": (ALL, {"W3": ["dY_pred = (1/2) * (Y_pred - Y_true) (your code)", "an extra factor 1/2"]}),
    "seed/sign_flipped": (ALL, {"W3": ["dY_pred = -(Y_pred - Y_true) (your code)", "the sign is flipped"]}),
    "seed/mean_over_batch": (ALL, {"W3": ["dY_pred = (1/N) * (Y_pred - Y_true)", "an extra factor 1/N"]}),
    "seed/forgot_relu_derivative": ({"W2", "b2", "W1", "b1", "X"},
                                    {"W2": ["dZ2 = da2 (your code)", "the factor relu'(Z2) is left out"]}),
    "seed/transposed_weight_gradient": ({"W3"}, {"W3": ["dW3 = (a2.T @ dZ3).T", "the result is transposed"]}),
    "seed/two_mistakes": ({"b3", "W2"}, {"b3": ["db3 = dZ3 (your code)", "sum over the samples is left out"],
                                         "W2": ["dW2 = Z1.T @ dZ2", "the pre-activation Z1"]}),
    "seed/input_gradient_wrong_weight": ({"X"}, {"X": ["dX = dZ1 @ W2 (your code)", "the transpose of W1 is missing",
                                                       "you used W2 instead of W1"]}),
    "failures/gradients": ({"W3"}, {"W3": ["dW3 = Z2.T @ dZ3", "the pre-activation Z2 instead of the activation a2"]}),
    # bce_logits: W2 b2 W1 b1 X
    "bce/forgot_sigmoid": (ALL, {"W2": ["sigmoid(Y_pred) is left out"]}),
    "bce/no_mean": (ALL, {"W2": ["dY_pred = sigmoid(Y_pred) - Y_true (your code)", "the factor 1/N is missing"]}),
    "bce/bias_averaged": ({"b2"}, {"b2": ["db2 = dZ2.mean(axis=0, keepdims=True)", "an extra factor 1/N"]}),
    # softmax cross-entropy, column layout
    "softmax/no_softmax": (ALL, {"W2": ["dY_pred = (1/N) * (Y_pred - Y_true) (your code)",
                                        "softmax(Y_pred, axis=0) is left out"]}),
    "softmax/transposed_weight_gradient": ({"W2"}, {"W2": ["dW2 = (dZ2 @ a1.T).T", "the result is transposed"]}),
    "softmax/tanh_derivative_at_activation": ({"W1", "b1", "X"}, {"W1": [
        "dZ1 = da1 * tanh'(a1) (your code)", "tanh' at the activation a1 instead of at the pre-activation Z1"]}),
    "softmax/softmax_over_samples": (ALL, {"W2": ["softmax(Y_pred, axis=1)", "axis=1 where axis=0 belongs"]}),
    "softmax/bias_summed_over_units": ({"b1"}, {"b1": ["db1 = dZ1.sum(axis=0, keepdims=True) (your code)",
                                                      "axis=0 where axis=1 belongs"]}),
    # mse, column layout
    "sigmoid/forgot_two": (ALL, {"W2": ["the factor 2 is missing"]}),
    "sigmoid/mean_over_samples_only": (ALL, {"W2": ["the factor 1/n_2 is missing"]}),
    "sigmoid/sigmoid_of_activation": ({"W1", "b1", "X"}, {"W1": [
        "dZ1 = da1 * sigmoid'(a1)", "sigmoid' at the activation a1 instead of at the pre-activation Z1"]}),
    "sigmoid/two_mistakes": (ALL, {"W2": ["the factor 2 is missing"],
                                   "b1": ["db1 = dZ1 (your code)", "sum over the samples is left out",
                                          "also wrong because dY_pred is wrong (see W2)"]}),
    # tanh output, mse
    "tanh/forgot_output_derivative": (ALL, {"W2": ["dZ2 = dY_pred (your code)", "the factor tanh'(Z2) is left out"]}),
    "tanh/activation_for_derivative": ({"W1", "b1", "X"}, {"W1": [
        "dZ1 = da1 * tanh(Z1) (your code)", "the activation tanh(Z1) where its derivative tanh'(Z1) belongs"]}),
    "tanh/no_two": (ALL, {"W2": ["the factor 2 is missing"]}),
    # leaky relu, column layout
    "leaky/plain_relu_mask": ({"W1", "b1", "X"}, {"W1": ["dZ1 = da1 * (Z1 >= 0) (your code)",
                                                       ("the derivative of relu where the forward pass applies "
                                                       "leaky_relu")]}),
    "leaky/transposed_first_layer": ({"W1"}, {"W1": ["dW1 = (dZ1 @ X.T).T", "the result is transposed"]}),
    "leaky/bias_not_summed": ({"b2"}, {"b2": ["db2 = dZ2 (your code)", "sum over the samples is left out"]}),
    # ReLU'(0) = 0 in this spec
    "conv0/mask_with_equality": ({"W1", "b1", "X"}, {"W1": [
        "dZ1 = da1 * (Z1 >= 0) (your code)", "ReLU'(0) is taken as 1, where this spec takes 0"]}),
    # square weights: W2 for W2.T fits at the spec's widths
    "wide/weight_not_transposed": ({"W1", "b1", "X"}, {"W1": ["da1 = dZ2 @ W2 (your code)",
                                                              "the transpose of W2 is missing"]}),
    # the layer kinds' named mistakes (symbackprop/mistakes.py), the same check names in formulas
    "batchnorm/variance_treated_as_constant": ({"W1", "b1", "X"}, {"W1": [
        "treats var2 (the variance) as a constant"]}),
    "batchnorm/statistics_treated_as_constants": ({"W1", "b1", "X"}, {"W1": [
        "treats mu2 (the mean) and var2 (the variance) as constants"]}),
    "batchnorm/unbiased_variance": ({"W1", "b1", "X"}, {"W1": ["1/(N - 1) in its variance term (the unbiased variance)"]}),
    "dropout/no_scaling": ({"W1", "b1", "X"}, {"W1": ["leaves out the dropout scaling 1/(1 - p) = 2 of layer 2"]}),
    "dropout/scaled_twice": ({"W1", "b1", "X"}, {"W1": ["divides by 1 - p = 1/2 (layer 2) once more"]}),
    "dropout/mask_forgotten": ({"W1", "b1", "X"}, {"W1": ["leaves out the dropout mask M2"]}),
    "softmax_layer/diagonal_jacobian": (ALL, {"W2": ["softmax's derivative entry by entry"]}),
    "log_softmax/diagonal_jacobian": (ALL, {"W2": ["log-softmax's derivative entry by entry"]}),
    "softmax_column/diagonal_jacobian": (ALL, {"W1": ["softmax's derivative entry by entry"]}),
    "tanh/sigmoid_derivative": ({"W1", "b1", "X"}, {"W1": [("the derivative of sigmoid where the forward pass "
                                                          "applies tanh")]}),
    "tanh/relu_derivative": ({"W1", "b1", "X"}, {"W1": [("the derivative of relu where the forward pass applies "
                                                       "tanh")]}),
    "sigmoid/tanh_derivative": ({"W1", "b1", "X"}, {"W1": [("the derivative of tanh where the forward pass applies "
                                                          "sigmoid")]}),
    # two mistakes in a deeper network
    "depth4/two_mistakes": (ALL, {"W4": ["the factor 2 is missing"],
                                  "W2": ["dW2 = a2.T @ dZ2", "the activation a2 instead of the activation a1"]}),
}


@pytest.mark.parametrize("name", sorted(BUGGY))
def test_buggy_student_gets_the_mistake_named_at_the_right_gradient(name):
    wrong, mistakes = BUGGY[name]
    result = graded(name)
    names = [g.name for g in result.gradients]
    wrong = set(names) if wrong is ALL else wrong
    assert {g.name for g in result.gradients if not g.ok} == wrong, result.text()
    assert result.score == f"{len(names) - len(wrong)}/{len(names)}"
    for gradient in result.gradients:
        if gradient.name in mistakes:
            for words in mistakes[gradient.name]:
                assert words in gradient.mistake, result.text()
        elif not gradient.ok:
            assert gradient.mistake.startswith("wrong because "), result.text()
            assert any(f"(see {source})" in gradient.mistake for source in mistakes), result.text()
        assert gradient.expected.startswith("d")


def test_at_least_25_buggy_files_over_six_specs_in_both_layouts():
    assert len(BUGGY) >= 25
    specs = {NETWORKS[name.split("/")[0]] for name in BUGGY}
    assert len(specs) >= 6
    layouts = {grader(name.split("/")[0]).derivation.spec.layout for name in BUGGY}
    assert layouts == {"batch-first", "column"}


def test_relu_masks_from_the_activation_take_the_other_convention_in_both_layers():
    """``(a > 0)`` is ReLU'(Z) with ReLU'(0) = 0; the spec takes 1. Only the instance with ReLU inputs exactly
    0 tells them apart, so which gradients it changes depends on that instance; the two mistakes do not."""
    result = graded("seed/relu_mask_from_output")
    mistakes = [g.mistake for g in result.gradients if g.mistake and "your code" in g.mistake]
    assert len(mistakes) == 2
    assert any("dZ2 = da2 * (Z2 > 0) (your code)" in m for m in mistakes)
    assert any("dZ1 = da1 * (Z1 > 0) (your code)" in m for m in mistakes)
    assert all("ReLU'(0) is taken as 0, where this spec takes 1" in m for m in mistakes)
    assert result.verdict("W3").ok and result.verdict("b3").ok
    assert "ReLU inputs exactly 0" in result.verdict("b1").reason


def test_a_mistake_outside_the_catalogue_is_reported_without_a_name():
    result = graded("leaky/wrong_slope")  # the slope for negative inputs 0.1 where the spec has 0.2
    assert {g.name for g in result.gradients if not g.ok} == {"W1", "b1", "X"}
    assert all(g.mistake is None for g in result.gradients)
    assert "entry" in result.verdict("W1").reason and "is expected" in result.verdict("W1").reason


def test_correct_hand_written_student_grades_all_correct():
    result = graded("seed/correct_by_hand")
    assert result.ok and result.score == "7/7"
    assert result.notes == ()


GENERATED = ["seed", "bce_logits_binary", "softmax_ce_4_classes_column", "sigmoid_mse_column", "tanh_output_mse",
             "leaky_relu_alpha_0_2_column", "relu_grad_at_zero_0", "depth4_mixed", "custom_input_name",
             "depth6_piecewise_column", "batchnorm_after_dense", "skip_one_layer", "loss_ng_bce_l2",
             "softmax_layer_column", "dropout_hidden", "prelu_hidden"]


@pytest.mark.parametrize("spec", GENERATED)
def test_the_generated_module_itself_grades_all_correct(spec, tmp_path):
    key = next((k for k, v in NETWORKS.items() if v == spec), None)
    grading = grader(key) if key else Grader(SPECS / f"{spec}.toml", time_limit=TIME_LIMIT)
    module = tmp_path / "backprop.py"
    module.write_text(grading.derivation.render("numpy"), encoding="utf-8")
    result = grading.grade(module)
    assert result.ok, result.text()


@pytest.mark.parametrize("key", ["seed", "softmax", "depth4", "conv0"])
def test_expected_gradients_match_finite_differences_of_the_generated_loss(key):
    """The oracle for the grader's expectations: central differences of the generated module's own forward
    pass and loss, at the spec's widths and at the other widths."""
    grading = grader(key)
    module, eps = grading.reference, 1e-6
    for instance in (grading.instances[0], grading.instances[-1]):
        params = {k: v.copy() for k, v in instance.params.items()}
        X, Y = instance.input.copy(), instance.targets
        for name, array in [*params.items(), ("X", X)]:
            numeric = np.zeros_like(array)
            for index in np.ndindex(array.shape):
                saved = array[index]
                array[index] = saved + eps
                up = module.loss(module.forward(params, X)[0], Y)
                array[index] = saved - eps
                down = module.loss(module.forward(params, X)[0], Y)
                array[index] = saved
                numeric[index] = (up - down) / (2 * eps)
            expected = instance.env[grading.passes.symbols[name]]
            assert np.allclose(numeric, expected, rtol=1e-5, atol=1e-8), name


def test_the_kink_instance_puts_relu_inputs_at_exactly_zero():
    grading = grader("seed")
    kinked = [i for i in grading.instances if "exactly 0" in i.label]
    assert len(kinked) == 1
    env, cache = kinked[0].env, kinked[0].cache
    for layer in (1, 2):
        first_sample = env[f"Z{layer}"][0]
        assert np.all(first_sample[::2] == 0.0)
        # the generated forward pass saw the same zeros: its mask takes ReLU'(0) = 1 there
        assert np.all(cache[f"da{layer}_dZ{layer}"][0, ::2])


def test_instances_use_batch_sizes_and_widths_that_differ():
    grading = grader("seed")
    widths = grading.derivation.spec.sizes
    at_spec = [i for i in grading.instances if i.spec_widths]
    others = [i for i in grading.instances if not i.spec_widths]
    batches = {i.input.shape[0] for i in at_spec}
    assert len(batches) >= 2 and not batches & set(widths)
    assert others and all(len(set(i.sizes.values())) == len(i.sizes) for i in others)


# -- files that crash, hang, return the wrong things ------------------------------------------------------

@pytest.mark.parametrize("name, wrong, words", [
    ("failures/crash", ALL, ['raised ValueError at line 7 (dW2 = d2 @ cache["a1"].T', "matmul"]),
    ("failures/not_a_dict", ALL, ["your backward returned a tuple, not a dict"]),
    ("failures/syntax_error", ALL, ["loading the file raised SyntaxError at line 4"]),
    ("failures/misnamed_function", ALL, ["defines no function backward (functions it defines: back_prop, helper)"]),
    ("failures/exits", ALL, ["your backward ended its process with exit status 3"]),
    ("failures/wrong_keys", {"W3", "b3", "W2", "b2", "W1", "b1"}, ["the returned dict has no key", "(it has 'd"]),
    ("failures/nan", {"b1"}, ["it contains nan at entry (0, 0)"]),
    ("failures/list_values", {"W3"}, ["the returned W3 is a list, not a NumPy array"]),
    ("failures/float32", ALL, ["the array is float32, the grader expects float64 precision"]),
])
def test_broken_files_are_reported_per_gradient_without_a_traceback(name, wrong, words):
    result = graded(name)
    names = {g.name for g in result.gradients}
    assert {g.name for g in result.gradients if not g.ok} == (names if wrong is ALL else wrong)
    for gradient in result.gradients:
        if not gradient.ok:
            assert all(w in gradient.reason for w in words), gradient.reason
            assert "Traceback" not in gradient.reason


@pytest.mark.parametrize("name, words", [
    ("failures/hang", "your backward ran longer than the time limit of 1 s"),
    ("failures/hang_at_import", "loading the file took longer than 1 s"),
])
def test_code_that_runs_too_long_is_stopped_at_the_time_limit(name, words):
    start = time.monotonic()
    result = graded(name)
    assert time.monotonic() - start < 15
    assert not any(g.ok for g in result.gradients)
    assert all(words in g.reason for g in result.gradients)


def test_the_whole_run_is_killed_at_its_deadline(tmp_path):
    """Code that survives the per-call limit (it catches everything) is stopped by the grader itself."""
    start = time.monotonic()
    returncode, _ = _run([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path, deadline=0.5)
    assert returncode is None and time.monotonic() - start < 10


def test_right_values_with_a_dropped_axis_are_a_shape_mistake():
    result = graded("failures/squeezed_bias")
    b1 = result.verdict("b1")
    assert not b1.ok and "shape (3,) where (1, 3) is expected" in b1.reason
    assert "the values are right" in b1.mistake
    assert sum(g.ok for g in result.gradients) == 6


def test_code_written_for_the_spec_sizes_is_graded_at_those_sizes():
    result = graded("failures/hardcoded_sizes")
    assert result.ok
    assert any("at other widths" in note and "cannot reshape" in note for note in result.notes)


def test_ignored_keys_are_noted():
    result = graded("failures/wrong_keys")
    assert result.verdict("X").ok
    assert any("keys ignored in the returned dict: dW3, db3" in note for note in result.notes)


def test_grading_is_deterministic():
    first, second = graded("seed/z_for_a"), graded("seed/z_for_a")
    assert first.to_dict() == second.to_dict()


# -- the public interface -----------------------------------------------------------------------------------

def test_python_api_grades_a_file():
    result = symbackprop.grade(STUDENTS / "seed" / "z_for_a.py")
    assert result.score == "6/7" and not result.verdict("W2").ok


def test_python_api_refuses_a_missing_file_and_a_bad_time_limit(tmp_path):
    with pytest.raises(GradeError, match="file not found"):
        grader("seed").grade(tmp_path / "absent.py")
    for seconds in (0, float("inf"), float("nan"), 1e10):
        with pytest.raises(GradeError, match="above 0 and at most 3600"):
            Grader(time_limit=seconds)
    result = CliRunner().invoke(main, ["grade", "--time-limit", "inf", str(tmp_path / "absent.py")])
    assert result.exit_code == 2 and "Traceback" not in result.output


def test_cli_text_output_and_exit_codes():
    runner = CliRunner()
    good = runner.invoke(main, ["grade", str(STUDENTS / "seed" / "correct_by_hand.py")])
    assert good.exit_code == 0 and "7/7 gradients correct" in good.output
    bad = runner.invoke(main, ["grade", str(STUDENTS / "bce" / "bias_averaged.py"), "--spec",
                               str(SPECS / "bce_logits_binary.toml")])
    assert bad.exit_code == 1
    assert "WRONG    b2" in bad.output and "an extra factor 1/N" in bad.output
    assert "4/5 gradients correct" in bad.output


def test_cli_json_output():
    result = CliRunner().invoke(main, ["grade", str(STUDENTS / "seed" / "z_for_a.py"), "--json"])
    assert result.exit_code == 1
    data = json.loads(result.output)
    assert data["score"] == "6/7"
    entries = {entry["name"]: entry for entry in data["gradients"]}
    assert set(entries["W2"]) >= {"name", "verdict", "reason", "mistake", "expected"}
    assert entries["W2"]["verdict"] == "wrong" and "Z1.T @ dZ2" in entries["W2"]["mistake"]
    assert entries["W1"] == {"name": "W1", "verdict": "correct", "reason": "", "mistake": None,
                             "expected": "dW1 = X.T @ dZ1"}


def test_cli_function_option_grades_a_forward_and_backward_function():
    result = CliRunner().invoke(main, ["grade", str(STUDENTS / "failures" / "gradients.py"),
                                       "--function", "gradients", "--time-limit", "2"])
    assert result.exit_code == 1 and "gradients(params, X, Y_true)" in result.output


@pytest.mark.parametrize("arguments, message", [
    (["grade", "no/such/file.py"], "no/such/file.py: file not found"),
    (["grade", str(STUDENTS / "seed" / "z_for_a.py"), "--spec", "no-such-spec.toml"], "file not found"),
    (["grade", str(STUDENTS / "seed" / "z_for_a.py"), "--time-limit", "0"], "0"),
])
def test_cli_usage_errors_exit_2_with_one_line(arguments, message):
    result = CliRunner().invoke(main, arguments)
    assert result.exit_code == 2 and message in result.output
    assert "Traceback" not in result.output


def test_the_installed_command_reports_a_crashing_file_without_a_traceback():
    """The student's file runs in another process: its exception is a verdict, the grader's stderr is empty."""
    command = Path(sys.executable).with_name("symbackprop")
    done = subprocess.run([str(command), "grade", str(STUDENTS / "failures" / "crash.py")],
                          capture_output=True, text=True, check=False)
    assert done.returncode == 1 and "raised ValueError" in done.stdout and done.stderr == ""


def test_the_search_finds_planted_mistakes_anywhere_in_the_catalogue():
    """Students made of the catalogue itself: the backward pass with one or two mutations put in (sampled
    over every step) must be explained completely, by mutations that reproduce it."""
    from symbackprop.grading.diagnosis import Search, same

    grading = grader("seed")
    passes, mutations, rng = grading.passes, grading.catalogue.all(), np.random.default_rng(0)
    planted = [(mutations[i],) for i in rng.choice(len(mutations), 12, replace=False)]
    planted += [(mutations[i], mutations[j]) for i, j in rng.choice(len(mutations), (6, 2))
                if mutations[i].step != mutations[j].step]
    explained = 0
    for mistakes in planted:
        values = [passes.values(mistakes, i) for i in range(len(grading.instances))]
        if any(v is None for v in values):
            continue  # the factors do not fit: such code raises instead
        observed = {i: {name: values[i].get(name, instance.env[passes.symbols[name]]) for name in grading.order}
                    for i, instance in enumerate(grading.instances)}
        wrong = {name for name in grading.order if any(
            not same(observed[i][name], instance.env[passes.symbols[name]])
            for i, instance in enumerate(grading.instances))}
        if wrong:
            found = Search(grading.catalogue, passes, observed, wrong, set(grading.order) - wrong).run()
            assert found is not None and found.explained == wrong, [m.what for m in mistakes]
            explained += 1
    assert explained >= 8


# -- verdicts on each gradient's own scale --------------------------------------------------------------------

_PLANTED = '''

_backward = backward


def backward(params, cache, Y_true):  # the generated backward, with mistakes planted after it
    grads = _backward(params, cache, Y_true)
    {mistakes}
    return grads
'''


@pytest.mark.parametrize("activation, depth, mistakes, wrong", [
    ("sigmoid", 20, 'grads["W1"] = 0 * grads["W1"]; grads["b1"] = -grads["b1"]', {"W1", "b1"}),
    # 200 layers with SYMBACKPROP_FULL_LECTURE=1; 80 already put W2's gradient orders of magnitude below W80's
    ("tanh", 200 if os.environ.get("SYMBACKPROP_FULL_LECTURE") == "1" else 80, 'grads["W2"] = -grads["W2"]', {"W2"}),
])
def test_a_small_early_gradient_that_is_wrong_is_wrong_however_large_the_others(
        tmp_path, activation, depth, mistakes, wrong):
    """In a deep net the first layers' gradients are orders of magnitude below the last ones'; a tolerance taken
    from the largest gradient would pass anything there."""
    spec = {"input": {"size": 3}, "layers": [{"size": 3, "activation": activation}] * (depth - 1)
            + [{"size": 1, "activation": "identity"}], "loss": {"kind": "half_sse"}}
    source = symbackprop.derive(spec).render("numpy")
    right, planted = tmp_path / "right.py", tmp_path / "planted.py"
    right.write_text(source)
    planted.write_text(source + _PLANTED.format(mistakes=mistakes))
    grading = Grader(spec, time_limit=10)
    assert grading.grade(right).ok
    result = grading.grade(planted)
    assert {g.name for g in result.gradients if not g.ok} == wrong, result.text()


def test_a_training_step_without_the_input_gradient_grades_all_correct():
    result = graded("seed/no_input_gradients")
    assert result.ok, result.text()
    assert [g.name for g in result.gradients] == ["W3", "b3", "W2", "b2", "W1", "b1"]
    assert any("no input gradient X" in note for note in result.notes)


# -- one catalogue of mistakes for check and grade ------------------------------------------------------------

@pytest.mark.parametrize("student, claim", [
    ("batchnorm/variance_treated_as_constant", "da1 = rstd2 * (dxhat2 - np.mean(dxhat2, axis=0))"),
    ("batchnorm/statistics_treated_as_constants", "da1 = dxhat2 * rstd2"),
    ("batchnorm/unbiased_variance", ("da1 = rstd2 / N * (N * dxhat2 - np.sum(dxhat2, axis=0) "
                                    "- xhat2 * np.sum(dxhat2 * xhat2, axis=0) * N / (N - 1))")),
    ("dropout/no_scaling", "da1 = da2 * M2"),
    ("dropout/scaled_twice", "da1 = da2 * M2 / 0.25"),
    ("dropout/mask_forgotten", "da1 = da2 * 2"),
    ("softmax_layer/diagonal_jacobian", "da2 = dY_pred * Y_pred * (1 - Y_pred)"),
    ("log_softmax/diagonal_jacobian", "da2 = dY_pred * (1 - softmax(a2))"),
    ("tanh/sigmoid_derivative", "dZ1 = da1 * sigmoid'(Z1)"),
    ("sigmoid/tanh_derivative", "dZ1 = da1 * tanh'(Z1)"),
])
def test_check_and_grade_name_a_mistake_in_the_same_words(student, claim):
    """The student's code and the formula it computes get the same entry of the layer kinds' catalogue."""
    spec = SPECS / f"{NETWORKS[student.split('/')[0]]}.toml"
    catalogue = {m.words for step in symbackprop.derive(spec).backward for m in step.mistakes}
    result = CliRunner().invoke(main, ["check", "--json", "--spec", str(spec), claim])
    detail = json.loads(result.output)[0]["detail"]
    mistakes = " ".join(g.mistake or "" for g in graded(student).gradients)
    named = [words for words in catalogue if words in detail]
    assert len(named) == 1, detail
    assert named[0] in mistakes, mistakes
