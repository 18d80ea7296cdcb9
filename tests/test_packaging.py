"""The wheel carries the templates and catalogs, and a non-editable install finds them."""

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "-w", str(out), str(ROOT)], check=True, capture_output=True)
    return next(out.glob("symbackprop-*.whl"))


def test_wheel_ships_every_template_and_catalog(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    for template in (ROOT / "templates").rglob("*"):
        if template.suffix in (".j2", ".toml"):
            assert f"symbackprop/templates/{template.relative_to(ROOT / 'templates').as_posix()}" in names


def test_non_editable_install_renders_from_its_own_templates(wheel, tmp_path):
    target = tmp_path / "installed"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
                   check=True, capture_output=True)
    code = ("import symbackprop.rendering as r; from symbackprop import derive; "
            f"assert r.__file__.startswith({str(target)!r}), r.__file__; "
            "print(derive().render('markdown', lang='ko')[:40])")
    result = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, cwd=tmp_path,
                            env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"})
    assert result.returncode == 0, result.stderr


def test_in_ci_a_test_skipped_for_want_of_tex_fails(tmp_path):
    # With SYMBACKPROP_REQUIRE_TOOLS=1 (.ci/run), a test that skips because pdflatex is missing is a failure;
    # without it, the same test skips. The test runs with a PATH that has Python but no TeX.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(sys.executable)
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
               "tests/test_lecture_layout.py::test_handout_has_one_page_per_frame"]
    results = {flag: subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False,
                                    env={"PATH": str(bin_dir), "SYMBACKPROP_REQUIRE_TOOLS": flag})
               for flag in ("0", "1")}
    assert results["0"].returncode == 0 and "1 skipped" in results["0"].stdout, results["0"].stdout
    assert results["1"].returncode != 0 and "CI installs what it needs" in results["1"].stdout, results["1"].stdout
