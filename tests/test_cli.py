"""The command line, run in-process: exit codes 0/1/2, --help, the report table, --out -, --force, --quiet,
suggestions for near misses, one-line usage errors; python -m symbackprop; make bench's wording."""

import dataclasses
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import sympy as sp
from click.testing import CliRunner

from symbackprop.cli import main
from symbackprop.rules import ACTIVATIONS

OUTPUTS = ("backprop.md", "backprop.tex", "backprop.py")
TANH_SPEC = """
[input]
size = 2

[[layers]]
size = 3
activation = "tanh"

[[layers]]
size = 1
activation = "identity"

[loss]
kind = "half_sse"
"""


def run(*args):
    return CliRunner().invoke(main, list(args))


def snapshot(directory):
    """Every file under ``directory`` with its bytes and modification time."""
    return {path.relative_to(directory): (path.read_bytes(), path.stat().st_mtime_ns)
            for path in sorted(directory.rglob("*")) if path.is_file()}


@pytest.mark.parametrize("args", [["--help"], ["-h"], ["derive", "--help"], ["verify", "--help"]])
def test_help_exits_0_and_lists_the_options(args):
    result = run(*args)
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.stdout
    for option in {"--help": ["derive", "verify", "--debug"], "-h": ["derive", "verify"],
                   "derive": ["--spec", "--format", "--out", "--force"], "verify": ["--spec", "--json"]}[args[0]]:
        assert option in result.stdout


def test_verify_prints_the_table_and_exits_0():
    result = run("verify")
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split()[:3] == ["formula", "ok", "method"]
    gradients = {"dL/dW1", "dL/db1", "dL/dW2", "dL/db2", "dL/dW3", "dL/db3", "dL/dX"}
    rows = {line.split()[0]: line.split()[1] for line in lines[1:] if line.startswith("dL/")}
    assert gradients <= set(rows)
    assert set(rows.values()) == {"yes"}
    assert result.stderr == ""


def test_verify_json_is_parseable():
    result = run("verify", "--json")
    assert result.exit_code == 0, result.output
    assert isinstance(json.loads(result.stdout), dict)


def test_a_wrong_rule_fails_verification_with_exit_1(monkeypatch, tmp_path):
    """tanh' given as 1 - tanh instead of 1 - tanh^2: the CLI must notice and exit 1."""
    wrong = dataclasses.replace(ACTIVATIONS["tanh"], derivative=lambda z, p: 1 - sp.tanh(z))
    monkeypatch.setitem(ACTIVATIONS, "tanh", wrong)
    spec = tmp_path / "tanh.toml"
    spec.write_text(TANH_SPEC)
    result = run("verify", "--spec", str(spec))
    assert result.exit_code == 1, result.output
    assert any(line.split()[1].lower() == "no" for line in result.stdout.splitlines()[1:] if line.strip())


def test_derive_writes_every_format_and_prints_the_table(tmp_path):
    out = tmp_path / "out"
    result = run("derive", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert sorted(path.name for path in out.iterdir()) == sorted(OUTPUTS)
    assert result.stdout.splitlines()[0].split()[:2] == ["formula", "ok"]
    for name in OUTPUTS:
        assert f"wrote {out / name}" in result.stdout
        assert (out / name).stat().st_size > 0


def test_existing_files_are_refused_without_force_and_nothing_is_written(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "backprop.tex").write_text("my hand-edited notes\n")
    before = snapshot(out)
    result = run("derive", "--out", str(out))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1
    assert "backprop.tex" in result.stderr and "--force" in result.stderr
    assert snapshot(out) == before  # the md and py that did not exist were not written either


def test_force_overwrites(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "backprop.md").write_text("old\n")
    result = run("derive", "--out", str(out), "--format", "md", "--force")
    assert result.exit_code == 0, result.output
    assert (out / "backprop.md").read_text(encoding="utf-8").startswith("# ")


def test_out_dash_prints_one_format_on_stdout_and_the_report_on_stderr(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("derive", "--out", "-", "--format", "py")
    assert result.exit_code == 0, result.output
    compile(result.stdout, "backprop.py", "exec")  # stdout is exactly the module
    assert result.stdout.startswith('"""')
    assert result.stderr.splitlines()[0].split()[:2] == ["formula", "ok"]
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("formats", ["md,py", "md,tex,py"])
def test_out_dash_refuses_several_formats(tmp_path, monkeypatch, formats):
    monkeypatch.chdir(tmp_path)
    result = run("derive", "--out", "-", "--format", formats)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and "--format" in result.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("formats, wrong", [("md,docx", "docx"), (",", "no format")])
def test_bad_format_is_exit_2_before_anything_is_derived_or_written(tmp_path, formats, wrong):
    result = run("derive", "--out", str(tmp_path / "out"), "--format", formats)
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.startswith("symbackprop: error: --format") and wrong in result.stderr
    assert not (tmp_path / "out").exists()


def test_a_directory_in_place_of_an_output_is_refused_even_with_force(tmp_path):
    out = tmp_path / "out"
    (out / "backprop.py").mkdir(parents=True)
    result = run("derive", "--out", str(out), "--format", "md,py", "--force")
    assert result.exit_code == 2
    assert "is a directory" in result.stderr
    assert sorted(path.name for path in out.iterdir()) == ["backprop.py"]


# --- a newcomer's first hour (issue 17) ---------------------------------------------------------------------

def test_python_dash_m_runs_the_same_command_line(tmp_path):
    helped = subprocess.run([sys.executable, "-m", "symbackprop", "--help"], capture_output=True, text=True,
                            timeout=120, check=False)
    assert helped.returncode == 0 and "Usage: symbackprop" in helped.stdout, helped.stderr
    derived = subprocess.run([sys.executable, "-m", "symbackprop", "derive", "--format", "md", "--out", "o", "-q"],
                             cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert derived.returncode == 0, derived.stderr
    assert derived.stdout == "wrote o/backprop.md\n"


REFUSE_BEFORE_SYMPY = """
import sys, time
from symbackprop.cli import main
start = time.perf_counter()
try:
    main(["derive", "--out", sys.argv[1]])
except SystemExit as exit:
    code = exit.code
print(code, "sympy" in sys.modules, time.perf_counter() - start)
"""


def test_derive_refuses_existing_outputs_before_importing_sympy(tmp_path):
    for name in OUTPUTS:
        (tmp_path / name).write_text("mine\n")
    done = subprocess.run([sys.executable, "-c", REFUSE_BEFORE_SYMPY, str(tmp_path)], capture_output=True,
                          text=True, timeout=120, check=False)
    code, imported, seconds = done.stdout.split()
    assert (code, imported) == ("2", "False"), done.stderr
    assert "already exist" in done.stderr and len(done.stderr.splitlines()) == 1
    assert all((tmp_path / name).read_text() == "mine\n" for name in OUTPUTS)
    assert float(seconds) < 5  # a refusal, not a derivation (which takes about a second)


def test_quiet_derive_prints_only_the_paths_written(tmp_path):
    result = run("derive", "--out", str(tmp_path), "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [f"wrote {tmp_path / name}" for name in OUTPUTS]
    assert result.stderr == ""


def test_quiet_verify_prints_nothing_when_all_hold_and_names_the_failures_otherwise(monkeypatch, tmp_path):
    quiet = run("verify", "-q")
    assert quiet.exit_code == 0 and quiet.output == ""
    wrong = dataclasses.replace(ACTIVATIONS["tanh"], derivative=lambda z, p: 1 - sp.tanh(z))
    monkeypatch.setitem(ACTIVATIONS, "tanh", wrong)
    spec = tmp_path / "tanh.toml"
    spec.write_text(TANH_SPEC)
    failed = run("verify", "--spec", str(spec), "--quiet")
    assert failed.exit_code == 1 and failed.stdout == ""
    assert failed.stderr.startswith("symbackprop: verification failed: ") and "tanh'(z)" in failed.stderr
    assert len(failed.stderr.splitlines()) == 1


def test_the_python_api_takes_preset_names_wherever_it_takes_a_spec():
    from symbackprop import derive, load_spec, seed_spec

    assert load_spec("seed") == seed_spec()
    named, default = derive("seed"), derive(seed_spec())
    assert named.network.spec == default.network.spec
    assert {k: str(v) for k, v in named.gradients.items()} == {k: str(v) for k, v in default.gradients.items()}


def one_error_line(result) -> str:
    assert result.exit_code == 2, result.output
    assert result.stdout == "" and "Traceback" not in result.output
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("symbackprop: error: "), result.stderr
    return lines[0]


SPEC_WITH = """
layout = "{layout}"
[input]
size = 2
[[layers]]
size = 2
{key} = "{activation}"
[loss]
kind = "{loss}"
"""
CORRECT = {"layout": "column", "key": "activation", "activation": "relu", "loss": "mse"}


@pytest.mark.parametrize("field, typed, meant", [
    ("activation", "ReLU", "relu"), ("activation", "Sigmoid", "sigmoid"), ("activation", "LEAKY-RELU", "leaky_relu"),
    ("loss", "MSE", "mse"), ("loss", "Half_SSE", "half_sse"), ("layout", "Column", "column"),
    ("key", "Activation", "activation"),
])
def test_misspelled_enum_values_get_a_case_insensitive_suggestion(tmp_path, field, typed, meant):
    spec = tmp_path / "net.toml"
    spec.write_text(SPEC_WITH.format(**(CORRECT | {field: typed})))
    line = one_error_line(run("verify", "--spec", str(spec)))
    assert f"did you mean {meant!r}?" in line


@pytest.mark.parametrize("args, expected", [
    (["verify", "--spec", "sed"], "no such spec file or preset; presets: seed; did you mean 'seed'?"),
    (["verify", "--spec", "SEED"], "did you mean 'seed'?"),
    (["verify", "--spec", ""], "the spec path is empty; give a TOML file or a preset name (seed)"),
    (["derive", "--format", "MD", "--out", "-"], "unknown format 'MD'; allowed: md, tex, py"),
    (["derive", "--lang", "EN"], "did you mean 'en'?"),
    (["derive", "--format", "md,texx"], "did you mean 'tex'?"),
])
def test_presets_and_option_values_get_suggestions(args, expected):
    line = one_error_line(run(*args))
    assert expected in line


@pytest.mark.parametrize("budget", ["nan", "inf", "-inf", "0", "-1", "ten"])
def test_budget_must_be_a_finite_positive_number(budget):
    line = one_error_line(run("verify", "--batch", "2", "--budget", budget))
    assert "--budget" in line and (budget in line)


@pytest.mark.parametrize("args", [["--bogus"], ["derive", "--batch", "0"], ["derive", "extra"], ["nosuchcommand"]])
def test_usage_errors_are_one_line_naming_the_help(args):
    line = one_error_line(run(*args))
    assert "--help" in line


# --- make bench reports neutrally ---------------------------------------------------------------------------

def test_benchmarks_print_measurements_with_neutral_targets(tmp_path, monkeypatch, capsys):
    """A small run of both suites: every target is printed as 'target: ...', never as a verdict."""
    import numpy as np

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent))
    from benchmarks import training, verification

    monkeypatch.setattr(verification, "DEPTHS", range(1, 2))
    monkeypatch.setattr(verification, "WIDTHS", (2,))
    monkeypatch.setattr(verification, "naive_verify_w1", lambda *args, **kwargs: 1.0)
    verification.main(repeats=1)
    name = next(iter(training.TARGETS))
    training.bench_network(name, 4, [4, 2], np.float64, str(tmp_path), 1)
    printed = capsys.readouterr().out
    assert "(target: >= 100x)" in printed and "(target: < 10 s)" in printed and "(target: < 0.3 s)" in printed
    assert re.search(r"hand-written .* generated / this = +\d+\.\d\d   target: <= 1\.05", printed)
    assert re.search(r"matmul bound .* target: <= 1\.15", printed)
    assert not re.search(r"MISSED|target met|FAIL", printed, re.IGNORECASE)


def test_name_sets_the_base_name_of_every_file(tmp_path):
    out = tmp_path / "week3"
    result = run("derive", "--format", "md,py,beamer", "--name", "week3", "--out", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["week3.md", "week3.py", "week3_slides.tex"]
    assert run("derive", "--format", "md", "--name", "week3", "--out", str(out)).exit_code == 2  # no overwrite
    assert run("derive", "--format", "md", "--name", "week4", "--out", str(out), "--quiet").exit_code == 0


@pytest.mark.parametrize("name", ["../escape", "a/b", "", ".hidden", "x" * 101])
def test_a_name_that_is_not_a_plain_file_name_is_refused(tmp_path, name):
    result = run("derive", "--name", name, "--out", str(tmp_path / "out"))
    assert result.exit_code == 2 and "--name" in result.output and not (tmp_path / "out").exists()


def test_pdf_compiles_the_latex_outputs_beside_them(tmp_path):
    out = tmp_path / "pdf"
    result = run("derive", "--format", "tex,py", "--pdf", "--name", "w1", "--out", str(out), "--quiet")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["w1.pdf", "w1.py", "w1.tex"]  # no .aux or .log left
    assert (out / "w1.pdf").read_bytes().startswith(b"%PDF")
    assert "pdflatex" not in result.stderr  # --quiet: no progress
    # Without --quiet, each pdflatex pass is announced on stderr as it starts; stdout keeps the paths.
    result = run("derive", "--format", "tex", "--pdf", "--name", "w2", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert [line for line in result.stderr.splitlines() if "pdflatex" in line] == [
        f"compiling w2.tex with pdflatex (pass {k} of 2)" for k in (1, 2)]
    assert "pdflatex" not in result.stdout


def test_spec_completes_presets_and_files(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "seed_week3.toml").write_text("")
    env = {"COMP_WORDS": "symbackprop derive --spec se", "COMP_CWORD": "3", "_SYMBACKPROP_COMPLETE": "bash_complete"}
    result = CliRunner().invoke(main, [], env=env, prog_name="symbackprop")
    # the preset by name, then the shell's own file completion of what was typed
    assert result.output.splitlines() == ["plain,seed", "file,se"]
    env["COMP_WORDS"] = "symbackprop verify --spec x"
    result = CliRunner().invoke(main, [], env=env, prog_name="symbackprop")
    assert result.output.splitlines() == ["file,x"]


@pytest.mark.parametrize("args, message", [
    (("--format", "md,py", "--pdf"), "no LaTeX format"),
    (("--format", "tex", "--pdf", "--out", "-"), "cannot go with --out -"),
])
def test_pdf_refuses_what_it_cannot_do(tmp_path, args, message):
    result = run("derive", *args) if "--out" in args else run("derive", *args, "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and message in result.output


def test_pdf_without_pdflatex_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no pdflatex on this PATH
    result = run("derive", "--format", "tex", "--pdf", "--out", str(tmp_path / "o"))
    assert result.exit_code == 2 and "pdflatex is not installed" in result.output
    assert not (tmp_path / "o").exists()


def test_the_check_help_examples_paste_into_a_shell_and_are_correct_for_the_spec_they_name():
    """Each example line of `check --help` is pasted into bash as it is printed, after `symbackprop check`."""
    help_text = CliRunner().invoke(main, ["check", "--help"]).output
    lines = help_text.split("these are all correct:")[1].split("A claim with a backslash")[0].strip().splitlines()
    assert len(lines) == 3
    command = f"{Path(sys.executable).parent / 'symbackprop'} check " + " ".join(line.strip() for line in lines)
    result = subprocess.run(["bash", "-c", command], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.strip().endswith("6 of 6 claims correct")


def test_a_claims_file_with_a_byte_order_mark_and_escape_bytes(tmp_path):
    claims = tmp_path / "claims.txt"
    claims.write_bytes(b"\xef\xbb\xbfdL/dW3 = a2.T @ (Y_pred - Y_true)\ndL/dW2 = a1.T @ dZ2 \x1b[2J\n")
    result = CliRunner().invoke(main, ["check", "--file", str(claims)])
    assert result.output.startswith("correct   dL/dW3 = a2.T @ (Y_pred - Y_true)\n")
    assert "\x1b" not in result.output and "\\x1b[2J" in result.output


def test_the_api_names_import_from_the_top_level_and_expressions_print_as_formulas():
    import symbackprop

    for name in ("Checker", "Grader", "LectureOptions", "render", "derive", "check", "grade", "load_spec"):
        assert callable(getattr(symbackprop, name)), name
    d = symbackprop.derive("seed")
    shown, latex = str(d.gradients["W1"]), sp.latex(d.gradients["W1"])
    assert "relu'(Z1)" in shown and "Elementwise" not in shown and "relu_grad_at_zero" not in shown
    assert r"\operatorname{ReLU}'" in latex and "Elementwise" not in latex
    assert "Elementwise" not in sp.latex(d.forward["L"]) and "LossValue" not in str(d.forward["L"])


def test_a_missing_file_gets_one_wording_from_every_command(tmp_path):
    missing = str(tmp_path / "absent")
    for args in (["derive", "--spec", missing + ".toml", "--out", str(tmp_path)], ["grade", missing + ".py"],
                 ["check", "--file", missing + ".txt"], ["check", "--latex", missing + ".tex"]):
        result = run(*args)
        assert result.exit_code == 2 and result.output.strip().endswith(": file not found"), (args, result.output)


def test_messages_point_to_the_right_option_and_count_layers_from_1(tmp_path):
    assert "--pdf" in run("derive", "--format", "pdf", "--out", str(tmp_path)).output
    spec = tmp_path / "typo.toml"
    spec.write_text('[input]\nsize = 2\n[[layers]]\nsize = 2\nactivaton = "relu"\n[loss]\nkind = "half_sse"\n')
    assert "layers[0].activaton (layer 1): unknown key 'activaton'" in run("verify", "--spec", str(spec)).output
    assert "paths written" not in run("verify", "--help").output
