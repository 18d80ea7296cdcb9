"""verify(): exact local steps, composed formulas by expansion and by Schwartz-Zippel, batch sizes, budget."""

import dataclasses
import json
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from symbackprop import verify as verify_module
from symbackprop.cli import main
from symbackprop.derivation import derive, gradient_symbol
from symbackprop.spec import load_spec, seed_spec

SPECS = sorted((Path(__file__).parent / "specs").glob("*.toml"))
DEEP = Path(__file__).parent / "specs" / "depth6_smooth.toml"


def with_formula(derivation, name, expr):
    """``derivation`` with the backward formula for ``name`` replaced by ``expr`` (and no cached reports)."""
    backward = tuple(dataclasses.replace(s, expr=expr) if s.name == name else s for s in derivation.backward)
    return dataclasses.replace(derivation, backward=backward, _reports={})


def failures(report) -> dict:
    return {check.name: check for check in report.checks if not check.ok}


def test_seed_verifies_and_names_the_method_of_every_row():
    report = derive(seed_spec()).verify()
    assert report.ok and report.sizes == "witness" and report.note == ""
    methods = {check.name: check.method for check in report.checks}
    assert methods["relu'(z)"] == "sympy.diff"
    local = ("local: loss gradient", "local: layer 1", "local: layer 3")
    assert {methods[name] for name in local} == {"expand"}
    assert methods["dL/dW1"] == "expand"
    assert "dL/dW1 = Xᵀ δ1" in next(c.detail for c in report.checks if c.name == "local: layer 1")


@pytest.mark.parametrize("spec", ["seed", "tests/specs/skip_one_layer.toml", "tests/specs/dropout_column.toml"])
def test_finite_differences_agree_with_every_formula_where_float64_resolves_them(spec):
    """The sanity row perturbs each quantity and reruns the forward pass after it: dL/dY_pred included (which a
    rerun from the start would overwrite: relative error 1)."""
    report = derive(spec).verify(batch=4)
    rows = [check for check in report.checks if check.name.startswith("dL/d")]
    assert rows and all("finite differences: rel. error" in check.detail and "beyond" not in check.detail
                        for check in rows), report.table()


@pytest.mark.parametrize("limit, method", [(verify_module.EXPAND_LIMIT, "expand"), (0, "schwartz-zippel")])
def test_z_instead_of_the_activation_is_caught_by_both_paths_with_the_entry_named(monkeypatch, limit, method):
    monkeypatch.setattr(verify_module, "EXPAND_LIMIT", limit)
    d = derive(seed_spec())
    net = d.network
    report = with_formula(d, "W2", net.symbol("Z1").T * gradient_symbol(net, "Z2")).verify()
    failed = failures(report)
    assert set(failed) == {"local: layer 2", "dL/dW2"}
    assert failed["dL/dW2"].method == method and "entry (" in failed["dL/dW2"].detail
    assert failed["local: layer 2"].detail.startswith("dL/dW2 = Z1ᵀ δ2: entry (")


def test_a_wrong_loss_scale_is_caught_at_the_specs_own_sizes_by_schwartz_zippel(monkeypatch):
    monkeypatch.setattr(verify_module, "EXPAND_LIMIT", 0)
    d = derive(DEEP)
    net = d.network
    report = with_formula(d, "Y_pred", 2 * d.step("Y_pred").expr).verify(batch=3, budget=60)
    assert report.sizes == "spec" and not report.ok
    failed = failures(report)
    assert "local: loss gradient" in failed
    assert failed["dL/dY_pred"].method == "schwartz-zippel" and "entry (0, 0)" in failed["dL/dY_pred"].detail
    assert {f"dL/dW{l}" for l in range(1, net.depth + 1)} <= set(failed)  # everything built on it


def test_a_missing_activation_derivative_is_caught():
    d = derive(seed_spec())
    report = with_formula(d, "Z1", gradient_symbol(d.network, "a1")).verify()
    assert {"local: layer 1", "dL/dZ1", "dL/dW1", "dL/db1", "dL/dX"} <= set(failures(report))


def test_a_misplaced_transpose_is_reported_as_a_shape_error():
    d = derive(seed_spec())
    net = d.network
    report = with_formula(d, "W1", gradient_symbol(net, "Z1").T * net.inputs["X"]).verify()
    failed = failures(report)
    assert list(failed) == ["dL/dW1"] and failed["dL/dW1"].method == "shape"


def test_batch_verifies_at_the_specs_own_widths():
    spec = seed_spec()
    report = derive(spec).verify(batch=5, budget=60)
    assert report.ok and report.sizes == "spec" and report.note == ""
    assert report.witness == {"N": 5, **{f"n_{l}": n for l, n in enumerate(spec.sizes)}}


def test_sizes_far_over_the_budget_are_refused_up_front_and_witness_sizes_verified():
    d = derive(DEEP)
    start = time.perf_counter()
    report = d.verify(batch=10**6, budget=1)
    assert time.perf_counter() - start < 20
    assert report.ok and report.sizes == "witness" and report.witness["N"] == 2
    assert "batch 1000000" in report.note and "1 s budget" in report.note and "witness sizes" in report.note


def test_a_run_past_its_budget_is_stopped_and_falls_back(monkeypatch):
    # An estimate that lets everything start, so only the deadline inside the run can stop it.
    monkeypatch.setattr(verify_module, "SECONDS_PER_TERM", 0.0)
    monkeypatch.setattr(verify_module, "SECONDS_PER_LOCAL_TERM", 0.0)
    d = derive(DEEP)
    report = d.verify(batch=128, budget=0.01)
    assert report.ok and report.sizes == "witness"
    assert "did not finish within the 0.01 s budget" in report.note
    wrong = with_formula(d, "Y_pred", 2 * d.step("Y_pred").expr).verify(batch=128, budget=0.01)
    assert wrong.sizes == "witness" and "dL/dY_pred" in failures(wrong)


def test_progress_counts_up_to_the_total():
    calls = []
    derive(seed_spec()).verify(progress=lambda done, total: calls.append((done, total)))
    dones = [done for done, _ in calls]
    assert dones == sorted(dones) and len({total for _, total in calls}) == 1
    assert calls[-1][0] == calls[-1][1]


def test_cli_verify_batch_json():
    spec = SPECS[[p.name for p in SPECS].index("seed.toml")]
    result = CliRunner().invoke(main, ["verify", "--spec", str(spec), "--batch", "4", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["ok"] and data["sizes"] == "spec" and data["seconds"] > 0
    assert data["witness"] == {"N": 4, **{f"n_{l}": n for l, n in enumerate(load_spec(spec).sizes)}}
    assert {"name", "ok", "method", "detail"} == set(data["checks"][0])
    assert result.stderr == ""  # no progress bar off a terminal, no note


def test_cli_verify_says_so_on_stderr_when_it_falls_back():
    result = CliRunner().invoke(main, ["verify", "--spec", str(DEEP), "--batch", "1000000", "--budget", "2",
                                       "--json"])
    assert result.exit_code == 0, result.output
    assert "2 s budget" in result.stderr and "witness sizes" in result.stderr
    data = json.loads(result.stdout)
    assert data["ok"] and data["sizes"] == "witness" and data["note"]


@pytest.mark.parametrize("path", SPECS, ids=[p.stem for p in SPECS])
def test_corpus_verifies_at_witness_and_spec_sizes(path):
    d = derive(path)
    for report in (d.verify(), d.verify(batch=3, budget=60)):
        assert report.ok, report.table()
    assert report.sizes == "spec"
