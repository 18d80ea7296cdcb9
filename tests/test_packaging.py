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
