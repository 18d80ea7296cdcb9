"""The command line, run in-process: exit codes 0/1/2, --help, the report table, --out -, --force."""

import dataclasses
import json

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
