"""Deep and odd networks (issue 15): every stage succeeds on them, and verdicts never lie.

- A hypothesis test draws deep and odd specs (up to 60 dense layers of widths 1-4, every activation and layer
  kind, input names that look like the tool's own, extreme slopes) and checks that ``derive``, ``verify`` (every
  row), ``python backprop.py`` (exit 0, its own gradient check included) and ``check`` of the derivation's own
  formulas, written out in the claim syntax, all succeed.
- Networks where float64 underflows or overflows: ``verify`` passes the correct formulas (the exact proof
  decides; finite differences only annotate) and still fails a wrong one.
- ``verify``'s budget from the Python API must be a finite positive number.
- A 30-layer network derives its Markdown in seconds.
"""

import dataclasses
import math
import os
import re
import subprocess
import sys
import time

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st

from symbackprop import derive
from symbackprop.claims.explain import formula
from symbackprop.claims.verdict import Checker
from symbackprop.cli import main
from symbackprop.derivation import gradient_symbol
from symbackprop.errors import SpecError, SymbackpropError
from symbackprop.rules import ACTIVATIONS, TRAINABLE_ACTIVATIONS
from symbackprop.verify import FD_TOLERANCE

# Input names that look like the verifier's or the generated module's own names.
ODD_NAMES = ("X", "G", "P_W1", "P_Z1", "P_a1", "P_Y_pred", "da1_dZ1", "x")
EXTREME_ALPHAS = (1e6, 1e-6, None)  # None: the activation's default
ALL_ACTIVATIONS = (*ACTIVATIONS, *TRAINABLE_ACTIVATIONS)


def net(depth: int, width: int, activation: str, name: str = "X", **keys) -> dict:
    """``depth`` dense layers: ``depth - 1`` of ``width`` units and ``activation`` (with ``keys``), one linear
    output; half the sum of squared errors."""
    hidden = [{"size": width, "activation": activation, **keys}] * (depth - 1)
    return {"input": {"size": width, "name": name}, "layers": [*hidden, {"size": 1, "activation": "identity"}],
            "loss": {"kind": "half_sse"}}


def _activation_keys(draw, activation: str) -> dict:
    keys = {"activation": activation}
    if activation in ("leaky_relu", "elu"):
        alpha = draw(st.sampled_from(EXTREME_ALPHAS))
        if alpha is not None:
            keys["alpha"] = alpha
    if activation == "relu":
        keys["relu_grad_at_zero"] = draw(st.sampled_from([0, 0.5, 1]))
    return keys


@st.composite
def deep_odd_specs(draw):
    """A stack of dense layers (widths 1-4, any activation), some followed by a layer of another kind."""
    depth = draw(st.sampled_from([1, 2, 3, 5, 8, 13, 60]))
    name = draw(st.sampled_from(ODD_NAMES))
    width_in = draw(st.integers(1, 4))
    layers, widths = [], {name: width_in}  # value name -> width, for skip connections
    width = width_in
    for dense in range(depth):
        last = dense == depth - 1
        width = draw(st.integers(1, 4))
        layer = {"size": width, **_activation_keys(draw, draw(st.sampled_from(ALL_ACTIVATIONS)))}
        if draw(st.booleans()):
            layer["bias"] = False
        layers.append(layer)
        if last:
            break
        widths[f"a{len(layers)}"] = width
        extra = draw(st.sampled_from(["none", "none", "batchnorm", "layernorm", "dropout", "activation",
                                      "softmax", "log_softmax", "add"]))
        if extra == "add":
            sources = [value for value, w in widths.items() if w == width and value != f"a{len(layers)}"]
            if not sources:
                continue
            layers.append({"kind": "add", "from": draw(st.sampled_from(sources))})
        elif extra == "activation":
            layers.append({"kind": "activation", **_activation_keys(draw, draw(st.sampled_from(ALL_ACTIVATIONS)))})
        elif extra == "dropout":
            layers.append({"kind": "dropout", "p": draw(st.sampled_from([0.0, 0.5, 0.9]))})
        elif extra != "none":
            layers.append({"kind": extra})
        if extra != "none":
            widths[f"a{len(layers)}"] = width
    return {"title": "deep and odd", "input": {"size": width_in, "name": name}, "layers": layers,
            "loss": {"kind": "half_sse"}}


def _claims(derivation, checker):
    """A few of the derivation's own formulas in the claim syntax: the first, middle and last backward steps and a
    local gradient from the middle. Formulas ``check`` cannot read back yet are left out, each pinned by a test
    below: PReLU's (``negpart``) and the local gradients of batch and layer norm (judged by the wrong shape)."""
    kinds = {l: (layer.kind, layer.activation) for l, layer in enumerate(derivation.spec.layers, start=1)}

    def readable(layer):
        kind, activation = kinds.get(layer, ("dense", None))
        return activation != "prelu" and kind not in ("batchnorm", "layernorm")

    steps = [step for step in derivation.backward if readable(step.layer)]
    chosen = [steps[0], steps[len(steps) // 2], steps[-1]] if steps else []
    claims = [formula("L", step.name, step.expr, False, checker.gradient_names) for step in chosen]
    local = [lg for lg in derivation.local_gradients if readable(lg.layer)]
    if local:
        middle = local[len(local) // 2]
        claims.append(formula(middle.of, middle.wrt, middle.expr, False, checker.gradient_names))
    return [claim for claim in claims if "negpart" not in claim]  # a PReLU layer's output read by the next


def _steep(spec: dict) -> bool:
    """A slope of 1e6: float64 itself can then lose every digit of a gradient entry (a batch norm after it sums
    terms of 1e5 to 1e-3), so the module's gradient check may rightly report that its float64 backward() is off;
    such a module must still run cleanly."""
    return any(layer.get("alpha", 0) >= 1e6 for layer in spec["layers"])


DEEP_ODD = {"title": "60 layers, odd name", "input": {"size": 2, "name": "da1_dZ1"},
            "layers": [{"size": 1 + l % 4, "activation": ALL_ACTIVATIONS[l % len(ALL_ACTIVATIONS)],
                        **({"alpha": 1e6} if ALL_ACTIVATIONS[l % len(ALL_ACTIVATIONS)] == "leaky_relu" else {})}
                       for l in range(59)] + [{"size": 2, "activation": "identity"}],
            "loss": {"kind": "half_sse"}}


# Each example takes seconds (a 60-layer one about ten): no shrinking, which would take minutes on a failure;
# the failing spec is printed as drawn. One drawn example beside the explicit one by default (make test's
# budget), five with SYMBACKPROP_FULL_LECTURE=1.
@settings(max_examples=5 if os.environ.get("SYMBACKPROP_FULL_LECTURE") == "1" else 1, deadline=None, phases=[Phase.explicit, Phase.reuse, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(spec=deep_odd_specs())
@example(spec=DEEP_ODD)
def test_deep_and_odd_specs_derive_verify_run_and_check(tmp_path, spec):
    derivation = derive(spec)
    report = derivation.verify()
    assert report.ok, report.table()
    module = tmp_path / "backprop.py"
    module.write_text(derivation.render("numpy"), encoding="utf-8")
    done = subprocess.run([sys.executable, str(module)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          check=False)
    # (a slope of 1e6 can make the demo's few training steps diverge: NumPy's overflow warnings, no traceback)
    assert "Traceback" not in done.stderr and "gradient check: max relative error" in done.stdout, \
        done.stdout[-2000:] + done.stderr[-2000:]
    if not _steep(spec):
        assert done.returncode == 0, done.stdout[-2000:]
    checker = Checker(spec)
    for claim in _claims(derivation, checker):
        verdict = checker.check(claim)
        assert verdict.ok, (claim, verdict.text())


@pytest.mark.parametrize("alpha", [1e6, 1e-6])
@pytest.mark.parametrize("activation", ["leaky_relu", "elu"])
def test_extreme_slopes_give_a_module_that_runs_and_passes_its_check(tmp_path, activation, alpha):
    derivation = derive(net(4, 3, activation, name="P_W1", alpha=alpha))
    assert derivation.verify().ok
    done = _run_module(derivation.render("numpy"), tmp_path)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stdout[-2000:] + done.stderr[-2000:]


PRELU = {"input": {"size": 2}, "layers": [{"size": 2, "activation": "prelu"}, {"size": 1, "activation": "identity"}],
         "loss": {"kind": "half_sse"}}


@pytest.mark.parametrize("as_latex", [False, True])
def test_prelu_formulas_printed_for_check_read_back_as_correct(as_latex):
    checker = Checker(PRELU)
    for name in ("alpha1", "Z1"):
        claim = formula("L", name, checker.derivation.step(name).expr, as_latex, checker.gradient_names)
        assert checker.check(claim, as_latex).ok, claim


@pytest.mark.parametrize("kind", ["batchnorm", "layernorm"])
def test_normalization_local_gradients_printed_for_check_read_back_as_correct(kind):
    checker = Checker({"input": {"size": 2}, "layers": [{"size": 3, "activation": "identity"}, {"kind": kind},
                                                         {"size": 1, "activation": "identity"}],
                       "loss": {"kind": "half_sse"}})
    for lg in checker.derivation.local_gradients:
        claim = formula(lg.of, lg.wrt, lg.expr, False, checker.gradient_names)
        assert checker.check(claim).ok, claim


# --- the generated module's own gradient check, where rounding is large -----------------------------------

# Correct modules whose gradient check failed when it assumed the loss rounds to 1e-15 |L| and backward() not at
# all (found by the test above): a width-1 layer norm makes the batch norm after it normalize a feature that is
# constant over the batch (pure rounding, amplified 316 times); PReLU stacks ending in batch norm; slopes of 1e6.
def _stack(n_in: int, layers: list) -> dict:
    return {"input": {"size": n_in}, "layers": layers, "loss": {"kind": "half_sse"}}


ROUNDING_HEAVY = {
    "constant feature into batch norm": _stack(3, [{"size": 1, "activation": "sigmoid"}, {"kind": "layernorm"},
                                                   {"size": 2, "activation": "identity"}, {"kind": "batchnorm"}]),
    "prelu stack into batch norm": _stack(4, [
        {"size": 3, "activation": "prelu", "bias": False}, {"kind": "log_softmax"},
        {"size": 2, "activation": "relu", "bias": False}, {"size": 4, "activation": "prelu"},
        {"size": 1, "activation": "prelu"}, {"kind": "batchnorm"}]),
    "width 1, two batch norms": _stack(2, [
        *[{"size": 1, "activation": "identity"}] * 2, *[{"size": 1, "activation": "relu", "relu_grad_at_zero": 0}] * 2,
        *[{"size": 1, "activation": "identity"}] * 4, {"size": 1, "activation": "relu", "relu_grad_at_zero": 0},
        {"kind": "batchnorm"}, *[{"size": 1, "activation": "identity"}] * 2, {"size": 1, "activation": "softplus"},
        {"kind": "batchnorm"}, {"size": 1, "activation": "identity"}]),
}


def _run_module(source: str, directory) -> subprocess.CompletedProcess:
    (directory / "backprop.py").write_text(source, encoding="utf-8")
    return subprocess.run([sys.executable, "backprop.py"], cwd=directory, capture_output=True, text=True,
                          timeout=300, check=False)


@pytest.mark.parametrize("case", ROUNDING_HEAVY)
def test_the_modules_gradient_check_passes_a_correct_module_where_rounding_is_large(tmp_path, case):
    derivation = derive(ROUNDING_HEAVY[case])
    assert derivation.verify().ok
    source = derivation.render("numpy")
    done = _run_module(source, tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    # ... and still fails a wrong formula there: the loss gradient scaled by 1.5, or its sign flipped
    for wrong in ("1.5 * ", "-"):
        assert "    dY_pred = " in source
        done = _run_module(source.replace("    dY_pred = ", f"    dY_pred = {wrong}"), tmp_path)
        assert done.returncode == 1, (wrong, done.stdout[-2000:], done.stderr[-2000:])


# --- verdicts that never lie: the exact proof decides, finite differences only annotate ------------------

def with_formula(derivation, name, expr):
    """``derivation`` with the backward formula for ``name`` replaced by ``expr`` (and no cached reports)."""
    backward = tuple(dataclasses.replace(s, expr=expr) if s.name == name else s for s in derivation.backward)
    return dataclasses.replace(derivation, backward=backward, _reports={})


LYING_CASES = {
    "identity depth 11": net(11, 3, "identity"),
    "identity depth 200": net(200, 3, "identity"),
    "tanh depth 30": net(30, 3, "tanh"),
    "50 layers of width 10": net(50, 10, "tanh"),
    "sigmoid depth 60": net(60, 3, "sigmoid"),
    "leaky_relu alpha 1e5": net(6, 3, "leaky_relu", alpha=1e5),
    "elu alpha 1e308": net(6, 3, "elu", alpha=1e308),
}


@pytest.mark.parametrize("case", LYING_CASES)
def test_verify_passes_where_float64_cannot_resolve_and_still_fails_a_wrong_formula(case):
    derivation = derive(LYING_CASES[case])
    report = derivation.verify()
    assert report.ok, report.table()
    rows = {check.name: check for check in report.checks}
    assert "finite differences" in rows["dL/dW1"].detail  # the sanity row is still reported
    if derivation.network.depth > 60:
        return  # a second 200-layer verification would double the test's time; the smaller cases show it
    # dL/dW1 scaled by 1 + 2^-20: float64 differences cannot tell (or see nothing at all); the proof can.
    wrong = with_formula(derivation, "W1", (1 + 2**-20) * derivation.step("W1").expr).verify()
    failed = {check.name for check in wrong.checks if not check.ok}
    assert "dL/dW1" in failed and "dL/db1" not in failed, wrong.table()


@pytest.mark.parametrize("spec", ["tests/specs_sequence/transformer_block.toml", "tests/specs_conv/small_cnn.toml"])
def test_the_stacked_reruns_of_finite_differences_agree_with_every_proved_formula(spec):
    """The finite-difference reruns of all quantities go through the forward pass side by side, as a stack of
    matrices: two causal heads (blocks of columns put back in place), layer norm, max pooling (a window's
    maximum, per matrix of the stack). Each row's difference quotient must agree with its exactly proved
    formula, as a rerun of one quantity at a time does."""
    report = derive(spec).verify()
    rows = [check for check in report.checks if re.fullmatch(r"dL/d\S+", check.name)]  # not the shorter forms
    assert report.ok and len(rows) > 15
    for check in rows:
        error = re.search(r"finite differences: rel\. error (\S+)$", check.detail)
        assert error and float(error.group(1)) <= FD_TOLERANCE, check


def test_a_vanishing_gradient_set_to_zero_is_still_wrong():
    """Depth 60 sigmoid: dL/dW1 underflows in float64; the formula 0 is still caught."""
    derivation = derive(LYING_CASES["sigmoid depth 60"])
    net_ = derivation.network
    wrong = with_formula(derivation, "W1", 0 * net_.inputs["X"].T * gradient_symbol(net_, "Z1")).verify()
    assert "dL/dW1" in {check.name for check in wrong.checks if not check.ok}


# --- the budget from the Python API ---------------------------------------------------------------------

@pytest.mark.parametrize("batch", [None, 4])
@pytest.mark.parametrize("budget", [math.nan, -1.0, 0.0, -math.inf, math.inf, "60"])
def test_a_budget_that_is_not_finite_and_positive_is_refused(budget, batch):
    derivation = derive(net(3, 2, "tanh"))
    with pytest.raises((ValueError, SymbackpropError), match="budget must be a finite number of seconds > 0"):
        derivation.verify(batch=batch, budget=budget)


def test_a_finite_positive_budget_is_kept():
    assert derive(net(3, 2, "tanh")).verify(batch=4, budget=60.0).sizes == "spec"


# --- an extreme slope the spec reader may refuse --------------------------------------------------------

def test_elu_alpha_1e308_is_read_or_refused_clearly():
    try:
        derivation = derive(net(4, 3, "elu", alpha=1e308))
    except SpecError as error:  # a clear spec error naming the key is a right answer too
        assert "alpha" in str(error)
    else:
        assert derivation.verify().ok


# --- a 30-layer network derives its Markdown in seconds ---------------------------------------------------

def test_thirty_layers_derive_markdown_in_seconds(tmp_path):
    spec = tmp_path / "deep.toml"
    layers = "".join('[[layers]]\nsize = 3\nactivation = "tanh"\n\n' for _ in range(29))
    spec.write_text(f'[input]\nsize = 3\n\n{layers}[[layers]]\nsize = 1\nactivation = "identity"\n\n'
                    '[loss]\nkind = "half_sse"\n', encoding="utf-8")
    start = time.perf_counter()
    result = CliRunner().invoke(main, ["derive", "--spec", str(spec), "--out", str(tmp_path / "out"),
                                       "--format", "md"])
    seconds = time.perf_counter() - start
    assert result.exit_code == 0, result.output
    assert seconds < 30, seconds
    text = (tmp_path / "out" / "backprop.md").read_text(encoding="utf-8")
    assert "W_{30}" in text or "W30" in text or "W^{[30]}" in text
