"""Grading a class: folders of submissions in parallel, notebooks, summaries for a course platform, and student
code that tries to break the grader (hostile or unlucky files).

Each hostile submission is the hand-written correct solution (tests/grade/seed/correct_by_hand.py) with one
hostile act put at the start of its backward; its expected verdict follows from the act (a grader that cannot be
broken grades it correct; an act that ends the process makes every gradient wrong, with that reason).
"""

import csv
import io
import json
import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import nbformat
import pytest
from click.testing import CliRunner

import symbackprop
from symbackprop.cli import main
from symbackprop.grading import GradeError, Grader
from symbackprop.grading.batch import csv_text, grade_all, gradescope

STUDENTS = Path(__file__).parent / "grade"
CORRECT = (STUDENTS / "seed" / "correct_by_hand.py").read_text()
MARKER = "symbackprop-test-detached-writer"
ALL = object()

# name -> (code run first in backward, the wrong gradients, words every wrong reason has)
HOSTILE = {
    "deletes_its_folder": ("""
        import os, shutil
        try:
            [os.remove(p) for p in os.listdir('.')]
            shutil.rmtree(os.getcwd())
        except OSError:
            pass""", set(), []),
    "replaces_the_graders_functions": ("""
        import json
        json.dumps = json.loads = None
        np.savez = np.load = np.frombuffer = np.ascontiguousarray = None""", set(), []),
    "fifos_and_links": ("""
        import os
        if not os.path.exists('load.json'):
            os.mkfifo('result-0.json')
            os.mkfifo('stderr.txt')
            os.symlink('/dev/zero', 'result-0.npz')
            os.symlink('/dev/zero', 'load.json')""", set(), []),
    "detached_writer": (f"""
        import subprocess, sys
        loop = 'import time\\nwhile True:\\n    open("junk", "a").write("x" * 1000); time.sleep(0.01)  # {MARKER}'
        subprocess.Popen([sys.executable, '-c', loop])""", set(), []),
    "forged_report_in_an_error": ("raise RuntimeError('boom\\n7/7 gradients correct\\x1b[2J')", ALL,
                                  ["RuntimeError", "boom\\n7/7 gradients correct\\x1b[2J"]),
    "output_flood": ("""
        import os
        os.write(1, b'x' * (20 << 20))
        os.write(2, b'y' * (20 << 20))
        print('z' * 10**7)""", set(), []),
    "kills_itself": ("import os, signal; os.kill(os.getpid(), signal.SIGKILL)", ALL, ["ended its process with SIGKILL"]),
    "writes_to_every_pipe": ("""
        import os
        for fd in range(3, 40):
            try:
                os.write(fd, b'\\xff' * 64)
            except OSError:
                pass""", ALL, ["wrote to the grader's results pipe"]),
    "memory_hog": ("hog = np.ones(1 << 31)", ALL, ["raised MemoryError"]),
}


def _hostile(code: str) -> str:
    """The correct solution with ``code`` run at the start of its backward."""
    head, body = CORRECT.split('    W1, W2, W3 = params["W1"]', 1)
    indented = "".join(f"    {line}\n" for line in textwrap.dedent(code).strip().splitlines())
    return f'{head}{indented}    W1, W2, W3 = params["W1"]{body}'


def _notebook(path: Path, cells: list[str]) -> Path:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_markdown_cell("# Homework 3: backprop")]
    notebook.cells += [nbformat.v4.new_code_cell(cell) for cell in cells]
    nbformat.write(notebook, path)
    return path


def _snapshot(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns, p.read_bytes() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


def _scratch_dirs() -> set:
    return {p.name for p in Path(tempfile.gettempdir()).glob("symbackprop-grade-*")}


def _leftover_processes() -> str:
    return subprocess.run(["pgrep", "-af", MARKER], capture_output=True, text=True, check=False).stdout.strip()


@pytest.fixture(scope="module")
def seed_grader():
    return Grader(time_limit=1.0)


@pytest.fixture(scope="module")
def class_folder(tmp_path_factory):
    """30 submissions: correct, buggy, crashing, hanging, hostile; a notebook; a student's own folder."""
    folder = tmp_path_factory.mktemp("class")
    expected = {}
    for name, wrong, words in [("correct_by_hand", set(), []), ("bias_not_summed", {"b1"}, []),
                               ("sign_flipped", ALL, []), ("z_for_a", {"W2"}, []), ("two_mistakes", {"b3", "W2"}, []),
                               ("transposed_weight_gradient", {"W3"}, [])]:
        shutil.copy(STUDENTS / "seed" / f"{name}.py", folder / f"seed_{name}.py")
        expected[f"seed_{name}.py"] = (wrong, words)
    for name, words in [("crash", ["raised ValueError"]), ("not_a_dict", ["returned a tuple"]),
                        ("syntax_error", ["SyntaxError"]), ("misnamed_function", ["defines no function backward"]),
                        ("exits", ["exit status 3"]), ("hang", ["ran longer than the time limit"]),
                        ("hang_at_import", ["loading the file took longer"])]:
        shutil.copy(STUDENTS / "failures" / f"{name}.py", folder / f"failure_{name}.py")
        expected[f"failure_{name}.py"] = (ALL, words)
    for name, (code, wrong, words) in HOSTILE.items():
        (folder / f"hostile_{name}.py").write_text(_hostile(code))
        expected[f"hostile_{name}.py"] = (wrong, words)
    for index in range(6):  # more correct students, one writing files of its own
        (folder / f"student_{index}.py").write_text(CORRECT + ("open('notes.txt', 'w').write('mine')\n" * (index == 0)))
        expected[f"student_{index}.py"] = (set(), [])
    _notebook(folder / "notebook_student.ipynb", ["%matplotlib inline\nimport numpy as np", "!pip install numpy",
                                                  CORRECT.replace("import numpy as np\n", "")])
    expected["notebook_student.ipynb"] = (set(), [])
    own = folder / "alice"
    own.mkdir()
    (own / "homework.py").write_text(CORRECT)
    (own / "README.txt").write_text("my homework")
    expected["alice/homework.py"] = (set(), [])
    assert len(expected) == 30
    return folder, expected


def test_a_folder_of_30_submissions_grades_in_parallel_with_every_report_right(seed_grader, class_folder, tmp_path):
    folder, expected = class_folder
    before, scratch = _snapshot(folder), _scratch_dirs()
    outcomes = grade_all(seed_grader, [folder], jobs=2)
    assert {str(Path(o.file).relative_to(folder)) for o in outcomes} == set(expected)
    for outcome in outcomes:
        wrong, words = expected[str(Path(outcome.file).relative_to(folder))]
        assert outcome.grade is not None, outcome
        names = {g.name for g in outcome.grade.gradients}
        assert {g.name for g in outcome.grade.gradients if not g.ok} == (names if wrong is ALL else wrong), \
            outcome.grade.text()
        text = outcome.grade.text()
        assert "\x1b" not in text and text.splitlines().count(f"{outcome.grade.score} gradients correct") == 1
        assert "7/7 gradients correct" not in text.splitlines()[:-1]
        for gradient in outcome.grade.gradients:
            if not gradient.ok:
                assert all(w in gradient.reason for w in words), gradient.reason
    assert _snapshot(folder) == before  # nothing of the class's folder changed
    assert _scratch_dirs() == scratch  # every scratch folder removed
    time.sleep(0.2)
    assert not _leftover_processes()


def test_the_class_summaries_table_csv_json_and_exit_code(class_folder, tmp_path):
    folder, _ = class_folder
    table = tmp_path / "class.csv"
    result = CliRunner().invoke(main, ["grade", "--time-limit", "1", "--jobs", "2", "--csv", str(table),
                                       str(folder)])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0].split() == ["submission", "score", "wrong"]
    assert lines[-1].startswith("30 submissions: 14 all correct, 16 with wrong gradients, 0 not graded")
    rows = list(csv.DictReader(io.StringIO(table.read_text())))
    assert [row["file"] for row in rows] == [line.split()[0] for line in lines[1:-1]]
    assert list(rows[0]) == ["file", "correct", "total", "W3", "b3", "W2", "b2", "W1", "b1", "X", "error"]
    bias = next(row for row in rows if row["file"].endswith("seed_bias_not_summed.py"))
    assert (bias["correct"], bias["b1"], bias["W1"]) == ("6", "wrong", "correct")


def test_a_notebook_grades_like_the_same_code_in_a_file(seed_grader, tmp_path):
    for name in ("z_for_a", "correct_by_hand"):
        code = (STUDENTS / "seed" / f"{name}.py").read_text()
        notebook = _notebook(tmp_path / f"{name}.ipynb", ["%load_ext autoreload", code, "%%time\nprint(1)"])
        from_file, from_notebook = seed_grader.grade(STUDENTS / "seed" / f"{name}.py"), seed_grader.grade(notebook)
        assert [g.to_dict() for g in from_notebook.gradients] == [g.to_dict() for g in from_file.gradients]
        assert any("%load_ext autoreload" in note and "%%time" in note for note in from_notebook.notes)


def test_an_error_in_a_notebook_names_its_cell_and_line(seed_grader, tmp_path):
    cell = "def backward(params, cache, Y_true):\n    return {'W3': cache['nothing']}"
    notebook = _notebook(tmp_path / "broken.ipynb", ["import numpy as np", cell])
    reason = seed_grader.grade(notebook).gradients[0].reason
    assert "KeyError at cell 3, line 2 (return {'W3': cache['nothing']})" in reason, reason


def test_a_students_own_threading_shutil_and_zipfile_do_not_break_the_grader(seed_grader, tmp_path):
    for module in ("threading", "shutil", "zipfile", "json", "struct", "selectors"):
        (tmp_path / f"{module}.py").write_text("raise ImportError('a module of the student')\n")
    (tmp_path / "submission.py").write_text(CORRECT)
    assert seed_grader.grade(tmp_path / "submission.py").ok


def test_the_projects_generated_backward_for_a_wide_net_grades_all_correct(tmp_path):
    """Results come back over a pipe: no file-size limit of the student's process caps them (the gradients of
    784-3000-3000-10 take 90 MB)."""
    spec = {"input": {"size": 784}, "layers": [{"size": 3000, "activation": "relu"},
                                                {"size": 3000, "activation": "relu"},
                                                {"size": 10, "activation": "identity"}], "loss": {"kind": "half_sse"}}
    path = tmp_path / "generated.py"
    path.write_text(symbackprop.derive(spec).render("numpy"))
    assert Grader(spec, time_limit=60).grade(path).ok


@pytest.mark.parametrize("arguments, message", [
    (["submission.txt"], "not a Python file (.py) or a Jupyter notebook"),
    (["--function", "a b", "submission.py"], "'a b' is not a Python function name"),
    (["--time-limit", "1e10", "submission.py"], "at most 3600"),
    (["--jobs", "0", "submission.py"], "--jobs must be"),
    (["--gradescope", "out.json", "."], "--gradescope writes the results of one submission"),
    (["not_a_notebook.ipynb"], "not a Jupyter notebook"),
])
def test_usage_errors_exit_2_before_any_student_code_runs(tmp_path, arguments, message, monkeypatch):
    loud = "open('ran.txt', 'w').write('the student code ran')\n" + CORRECT
    for name in ("submission.txt", "submission.py", "not_a_notebook.ipynb"):
        (tmp_path / name).write_text(loud)
    (tmp_path / "other.py").write_text(loud)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["grade", *arguments])
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output
    assert not list(tmp_path.rglob("ran.txt"))
    assert not list(Path(tempfile.gettempdir()).glob("symbackprop-grade-*/ran.txt"))


def test_a_spec_whose_reference_overflows_is_refused_not_blamed_on_the_student(tmp_path):
    spec = tmp_path / "overflow.toml"
    spec.write_text('[input]\nsize = 2\n[activations.big]\nforward = "exp(exp(exp(exp(z))))"\n'
                    '[[layers]]\nsize = 3\nactivation = "big"\n[[layers]]\nsize = 1\nactivation = "identity"\n'
                    '[loss]\nkind = "half_sse"\n')
    with pytest.raises(GradeError, match="not finite at the grading instance"):
        Grader(spec)
    result = CliRunner().invoke(main, ["grade", "--spec", str(spec), str(STUDENTS / "seed" / "correct_by_hand.py")])
    assert result.exit_code == 2 and "RuntimeWarning" not in result.output


@pytest.mark.parametrize("signal_number, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_an_interrupted_grader_kills_what_the_student_started_and_removes_its_scratch(tmp_path, signal_number, code):
    hanging = tmp_path / "hanging.py"
    hanging.write_text(_hostile(textwrap.dedent(HOSTILE["detached_writer"][0]) + "\nimport time\ntime.sleep(60)"))
    scratch = _scratch_dirs()
    process = subprocess.Popen([sys.executable, "-m", "symbackprop", "grade", "--time-limit", "60", str(hanging)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while not _leftover_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _leftover_processes(), "the student's writer never started"
    process.send_signal(signal_number)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == code, stderr
    assert "interrupted" in stderr and "Traceback" not in stderr
    time.sleep(0.2)
    assert not _leftover_processes()
    assert _scratch_dirs() == scratch


def test_the_gradescope_file_has_the_formats_documented_fields(tmp_path):
    output = tmp_path / "results.json"
    result = CliRunner().invoke(main, ["grade", "--gradescope", str(output),
                                       str(STUDENTS / "seed" / "two_mistakes.py")])
    assert result.exit_code == 1
    results = json.loads(output.read_text())
    # Gradescope's autograder specification: top-level and per-test keys, with their types.
    top = {"score": (int, float), "execution_time": (int, float), "output": str, "tests": list}
    per_test = {"score": (int, float), "max_score": (int, float), "name": str, "number": str, "output": str,
                "status": str}
    assert set(results) <= set(top) and all(isinstance(results[k], top[k]) for k in results)
    assert len(results["tests"]) == 7
    for test in results["tests"]:
        assert set(test) <= set(per_test) and all(isinstance(test[k], per_test[k]) for k in test)
        assert test["status"] in ("passed", "failed") and 0 <= test["score"] <= test["max_score"]
    failed = {t["name"] for t in results["tests"] if t["status"] == "failed"}
    assert failed == {"db3", "dW2"} and results["score"] == 5
    assert "sum over the samples is left out" in next(t["output"] for t in results["tests"] if t["name"] == "db3")


def test_one_submission_that_cannot_be_graded_does_not_stop_the_class(seed_grader, tmp_path):
    (tmp_path / "good.py").write_text(CORRECT)
    (tmp_path / "broken.ipynb").write_text("{not json")
    both = tmp_path / "two_files"
    both.mkdir()
    (both / "a.py").write_text(CORRECT)
    (both / "b.py").write_text(CORRECT)
    outcomes = {Path(o.file).name: o for o in grade_all(seed_grader, [tmp_path], jobs=2)}
    assert outcomes["good.py"].ok
    assert "not a Jupyter notebook" in outcomes["broken.ipynb"].error
    assert "several files to grade (a.py, b.py)" in outcomes["two_files"].error
    rows = list(csv.DictReader(io.StringIO(csv_text(list(outcomes.values()), seed_grader.order))))
    assert {row["file"].split(os.sep)[-1]: row["error"] != "" for row in rows} == {
        "good.py": False, "broken.ipynb": True, "two_files": True}
    assert gradescope(outcomes["broken.ipynb"])["score"] == 0


# Files that are not notebooks whose code cells can be read: each is refused with a reason, never a traceback.
BROKEN_NOTEBOOKS = {
    "empty_object.ipynb": ("{}", "without a notebook's keys nbformat and cells"),
    "version_3_without_worksheets.ipynb": ('{"cells": [{"cell_type": "code", "source": "x=1"}], "nbformat": 3}',
                                           "missing an expected key: worksheets"),
    "source_a_number.ipynb": (('{"cells": [{"cell_type": "code", "source": 5, "metadata": {}, "outputs": []}], '
                               '"metadata": {}, "nbformat": 4, "nbformat_minor": 5}'),
                              "the source of cell 1 is a number, not text"),
    "source_a_list_of_numbers.ipynb": (('{"cells": [{"cell_type": "markdown", "source": "# Homework"}, '
                                        '{"cell_type": "code", "source": [1, 2]}], "nbformat": 4, '
                                        '"nbformat_minor": 5}'),
                                       "the source of cell 2 is a list, not text"),
    "cells_a_number.ipynb": ('{"cells": 5, "nbformat": 4, "nbformat_minor": 5}', "its cells are a number, not a list"),
    "cell_a_string.ipynb": ('{"cells": ["x = 1"], "nbformat": 4, "nbformat_minor": 5}',
                            "cell 1 is text, not a cell"),
    "top_level_list.ipynb": ("[]", "the file holds a list, not a notebook's JSON object"),
    "version_as_text.ipynb": ('{"cells": [], "nbformat": "4"}', "its nbformat version is text, not a number"),
    "version_7.ipynb": ('{"cells": [], "nbformat": 7}', "nbformat version 7; versions 1 to 4 can be read"),
    "deeply_nested.ipynb": ("[" * 100_000 + "]" * 100_000, "not JSON"),
    "empty_file.ipynb": ("", "the file is empty"),
}


@pytest.mark.parametrize("name", BROKEN_NOTEBOOKS)
def test_a_broken_notebook_is_refused_with_its_reason(seed_grader, tmp_path, name):
    text, reason = BROKEN_NOTEBOOKS[name]
    (tmp_path / name).write_text(text)
    with pytest.raises(GradeError) as refusal:
        seed_grader.grade(tmp_path / name)
    assert f"{name}: not a Jupyter notebook (" in str(refusal.value) and reason in str(refusal.value)
    assert "\n" not in str(refusal.value)


@pytest.mark.parametrize("name", ["empty_object.ipynb", "version_3_without_worksheets.ipynb", "source_a_number.ipynb"])
def test_grading_one_broken_notebook_is_one_line_and_exit_2_before_the_spec_is_derived(tmp_path, name):
    text, reason = BROKEN_NOTEBOOKS[name]
    (tmp_path / name).write_text(text)
    start = time.perf_counter()
    result = CliRunner().invoke(main, ["grade", str(tmp_path / name)])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"symbackprop: error: {tmp_path / name}: not a Jupyter notebook (")
    assert reason in result.output
    assert len(result.output.splitlines()) == 1 and "Traceback" not in result.output
    assert time.perf_counter() - start < 2


def test_broken_notebooks_in_a_folder_are_rows_of_the_summary_and_the_rest_is_graded(tmp_path):
    folder = tmp_path / "class"
    folder.mkdir()
    shutil.copy(STUDENTS / "seed" / "correct_by_hand.py", folder / "correct_by_hand.py")
    broken = ["empty_object.ipynb", "version_3_without_worksheets.ipynb", "source_a_number.ipynb"]
    for name in broken:
        (folder / name).write_text(BROKEN_NOTEBOOKS[name][0])
    # Valid enough for Jupyter, not for nbformat's schema (no cell ids, source as a list of lines): it is
    # graded, and nbformat's warnings about it do not reach the terminal.
    cell = {"cell_type": "code", "source": CORRECT.splitlines(keepends=True), "metadata": {}, "outputs": [],
            "execution_count": None}
    (folder / "lenient.ipynb").write_text(json.dumps({"cells": [cell], "metadata": {}, "nbformat": 4,
                                                      "nbformat_minor": 5}))
    table = tmp_path / "class.csv"
    result = CliRunner().invoke(main, ["grade", "--jobs", "2", "--csv", str(table), str(folder)])
    assert result.exit_code == 1, result.output
    assert "Traceback" not in result.output and result.stderr == ""
    assert result.output.splitlines()[-1].startswith("5 submissions: 2 all correct, 0 with wrong gradients, "
                                                     "3 not graded")
    rows = {Path(row["file"]).name: row for row in csv.DictReader(io.StringIO(table.read_text()))}
    assert set(rows) == {"correct_by_hand.py", "lenient.ipynb", *broken}
    for name in ("correct_by_hand.py", "lenient.ipynb"):
        assert (rows[name]["correct"], rows[name]["total"], rows[name]["error"]) == ("7", "7", "")
    for name in broken:
        assert rows[name]["correct"] == "" and BROKEN_NOTEBOOKS[name][1] in rows[name]["error"]
        assert "not a Jupyter notebook" in rows[name]["error"]


def _loud_submission(tmp_path: Path) -> Path:
    """The correct solution, leaving ran.txt behind when it runs: no refusal may come after grading."""
    path = tmp_path / "submission.py"
    path.write_text("open('ran.txt', 'w').write('the student code ran')\n" + CORRECT)
    return path


def _character_device(path: Path) -> None:
    try:
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 7))  # a node of /dev/full, made here
    except PermissionError:
        pytest.skip("making a device node needs root")


def _fifo(path: Path) -> None:
    os.mkfifo(path)


def _dangling_link(path: Path) -> None:
    path.symlink_to(path.parent / "nothing_here.csv")


def _link_to_a_fifo(path: Path) -> None:
    os.mkfifo(path.parent / "pipe")
    path.symlink_to(path.parent / "pipe")


@pytest.fixture
def special_files(tmp_path):
    """tmp_path, with the device nodes and FIFOs a test makes in it removed at its end (pytest keeps the
    temporary folders of recent runs)."""
    yield tmp_path
    for path in tmp_path.iterdir():
        if not stat.S_ISREG(path.lstat().st_mode) and not path.is_dir():
            path.unlink()


@pytest.mark.parametrize("option", ["--csv", "--gradescope"])
@pytest.mark.parametrize("make, words", [
    (_character_device, "is a character device, not a regular file"),
    (_fifo, "is a FIFO (a pipe), not a regular file"),
    (_link_to_a_fifo, "is a FIFO (a pipe) (through a symbolic link), not a regular file"),
    (_dangling_link, "is a symbolic link to nothing (dangling)"),
])
def test_an_output_that_is_not_a_regular_file_is_refused_before_grading_and_left_as_it_was(
        special_files, monkeypatch, option, make, words):
    tmp_path = special_files
    target = tmp_path / "out"
    make(target)
    before = os.lstat(target)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["grade", option, str(target), str(_loud_submission(tmp_path))])
    assert result.exit_code == 2, result.output
    assert result.output.startswith(f"symbackprop: error: {option} {target}: {words}")
    assert len(result.output.splitlines()) == 1
    after = os.lstat(target)
    assert (after.st_mode, after.st_ino, after.st_rdev) == (before.st_mode, before.st_ino, before.st_rdev)
    assert not list(tmp_path.rglob("ran.txt")) and not list(Path(tempfile.gettempdir()).glob(
        "symbackprop-grade-*/ran.txt"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["out", "submission.py", *(["pipe"] if make is _link_to_a_fifo else [])])


@pytest.mark.parametrize("arguments, words", [
    (["--csv", "{sub}", "{sub}"], "--csv {sub}: is a submission this run reads ({sub})"),
    (["--gradescope", "{sub}", "{sub}"], "--gradescope {sub}: is a submission this run reads ({sub})"),
    (["--csv", "{link}", "{dir}"], "--csv {link}: is a submission this run reads ({sub})"),
    (["--csv", "{dir}/two_files/a.py", "{dir}"], "--csv {dir}/two_files/a.py: is a submission this run reads"),
    (["--csv", "{spec}", "--spec", "{spec}", "{sub}"], "--csv {spec}: is the spec this run reads"),
    (["--csv", "{dir}/same", "--gradescope", "{dir}/same", "{sub}"], "--gradescope {dir}/same: --csv names the same"),
    (["--csv", "{dir}/no_folder/class.csv", "{sub}"], "the folder {dir}/no_folder does not exist"),
    (["--csv", "{sub}/class.csv", "{sub}"], "--csv {sub}/class.csv: a part of the path is not a folder"),
])
def test_an_output_that_would_replace_an_input_or_cannot_be_made_is_refused_before_grading(
        tmp_path, monkeypatch, arguments, words):
    """A submission (named, in the folder graded, reached through a link, or in a student's folder that holds
    several), the spec, or one file named twice."""
    submission = _loud_submission(tmp_path)
    two = tmp_path / "two_files"
    two.mkdir()
    (two / "a.py").write_text(CORRECT)
    (tmp_path / "link.csv").symlink_to(submission)
    spec = tmp_path / "net.toml"
    shutil.copy(Path(__file__).parent / "specs" / "seed.toml", spec)
    names = {"sub": submission, "dir": tmp_path, "link": tmp_path / "link.csv", "spec": spec}
    before = _snapshot(tmp_path)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["grade", *(a.format(**names) for a in arguments)])
    assert result.exit_code == 2, result.output
    assert words.format(**names) in result.output and len(result.output.splitlines()) == 1
    assert _snapshot(tmp_path) == before  # nothing written, nothing replaced, the student's code never ran


def test_an_output_through_a_link_is_written_to_the_file_it_points_at_whole(tmp_path):
    real = tmp_path / "results" / "class.csv"
    real.parent.mkdir()
    real.write_text("last week's results\n")
    real.chmod(0o640)
    link = tmp_path / "class.csv"
    link.symlink_to(real)
    result = CliRunner().invoke(main, ["grade", "--csv", str(link), str(STUDENTS / "seed" / "correct_by_hand.py")])
    assert result.exit_code == 0, result.output
    assert link.is_symlink() and link.resolve() == real
    assert real.read_text().startswith("file,correct,total,W3") and real.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in real.parent.iterdir()) == ["class.csv"]  # no staged file left behind


def test_an_output_that_fails_to_be_written_is_an_error_after_the_grades_are_printed(tmp_path):
    """A full disk (here: a file-size limit) while writing --csv: exit 2 with one line naming the file, the
    grades still on stdout, the file as it was and no staged file left."""
    resource = pytest.importorskip("resource")
    table = tmp_path / "class.csv"
    table.write_text("old\n")

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (100, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    done = subprocess.run([sys.executable, "-m", "symbackprop", "grade", "--csv", str(table),
                           str(STUDENTS / "seed" / "correct_by_hand.py"), str(STUDENTS / "seed" / "two_mistakes.py")],
                          capture_output=True, text=True, preexec_fn=small_files, check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr == f"symbackprop: error: --csv {table}: cannot be written (File too large)\n"
    assert done.stdout.splitlines()[-1].startswith("2 submissions: 1 all correct, 1 with wrong gradients")
    assert table.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["class.csv"]
