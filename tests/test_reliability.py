"""Reliability: bad specs get one clear line (exit 2, nothing written), hostile titles stay text and any
Unicode title compiles, huge sizes derive fast, depth and size limits refuse cleanly, input files are read
with a size limit, writes are atomic and all-or-nothing even for concurrent runs, outputs that cannot be
written are one clean error, and output is byte-identical across runs and hash seeds."""

import ast
import errno
import functools
import json
import math
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import textwrap
import time
import tokenize
from io import StringIO
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from symbackprop import derive
from symbackprop.cli import main
from symbackprop.rules import ACTIVATIONS, LOSS_KINDS
from symbackprop.spec import LAYOUTS

SPECS = sorted((Path(__file__).parent / "specs").glob("*.toml"))
VALID = {"title": "t", "layout": "batch-first", "input": {"size": 2, "name": "X"},
         "layers": [{"size": 3, "activation": "relu"}, {"size": 2, "activation": "identity"}],
         "loss": {"kind": "half_sse"}}


def toml_value(value) -> str:
    """A TOML literal for ``value`` (an independent writer: tomllib only reads)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(map(toml_value, value)) + "]"
    return "{" + ", ".join(f"{json.dumps(k, ensure_ascii=False)} = {toml_value(v)}" for k, v in value.items()) + "}"


def toml_document(spec: dict) -> str:
    return "".join(f"{json.dumps(key, ensure_ascii=False)} = {toml_value(value)}\n" for key, value in spec.items())


def derive_cli(spec_path, out, *extra):
    return CliRunner().invoke(main, ["derive", "--spec", str(spec_path), "--out", str(out), *extra])


def assert_one_clean_error(result, out):
    """Exit 2, exactly one line on stderr, nothing on stdout, no traceback, no file written."""
    assert result.exit_code == 2, (result.exit_code, result.output, result.exception)
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    assert "Traceback" not in result.output
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("symbackprop: error: "), result.stderr
    assert not Path(out).exists() or not any(Path(out).iterdir())
    return lines[0]


# --- spec errors through the CLI -------------------------------------------------------------------------

SPEC_ERRORS = {
    "toml-syntax": ("[input\nsize = 2\n", ["invalid TOML", "line 1"]),
    "misspelled-key": (VALID | {"layers": [{"size": 3, "activaton": "relu"}]},
                       ["layers[0].activaton", "allowed: kind, size, activation", "did you mean 'activation'?"]),
    "misspelled-top-key": ({key: value for key, value in VALID.items() if key != "layers"} | {"layer": VALID["layers"]},
                           ["layer", "did you mean 'layers'?"]),
    "wrong-type": (VALID | {"input": {"size": "2"}}, ["input.size", "must be an integer, got a string"]),
    "size-zero": (VALID | {"input": {"size": 0}}, ["input.size", "positive integer, got 0"]),
    "size-negative": (VALID | {"layers": [{"size": 3, "activation": "relu"}, {"size": -4, "activation": "identity"}]},
                      ["layers[1].size", "positive integer, got -4"]),
    "unknown-activation": (VALID | {"layers": [{"size": 3, "activation": "sigmoud"}]},
                           ["layers[0].activation", "allowed: identity, relu", "did you mean 'sigmoid'?"]),
    "unknown-loss": (VALID | {"loss": {"kind": "half_see"}}, ["loss.kind", "did you mean 'half_sse'?"]),
    "loss-needs-outputs": (VALID | {"layers": [{"size": 1, "activation": "identity"}],
                                    "loss": {"kind": "softmax_cross_entropy"}},
                           ["loss.kind", "needs at least 2 outputs", "layers[0]", "has 1"]),
    "input-name": (VALID | {"input": {"size": 2, "name": "x-1"}}, ["input.name", "invalid input name"]),
    "title-newline": (VALID | {"title": "two\nlines"}, ["title", "control characters"]),
}


@pytest.mark.parametrize("kind", SPEC_ERRORS)
def test_spec_error_is_one_line_naming_file_key_and_allowed_values(tmp_path, kind):
    content, expected = SPEC_ERRORS[kind]
    spec = tmp_path / "net.toml"
    spec.write_text(content if isinstance(content, str) else toml_document(content), encoding="utf-8")
    line = assert_one_clean_error(derive_cli(spec, tmp_path / "out"), tmp_path / "out")
    assert line.startswith(f"symbackprop: error: {spec}: ")
    for piece in expected:
        assert piece in line


def test_missing_spec_file(tmp_path):
    line = assert_one_clean_error(derive_cli(tmp_path / "nope.toml", tmp_path / "out"), tmp_path / "out")
    assert str(tmp_path / "nope.toml") in line and "not found" in line


def test_debug_shows_the_traceback(tmp_path):
    spec = tmp_path / "net.toml"
    spec.write_text(toml_document(VALID | {"loss": {"kind": "half_see"}}))
    code = "from symbackprop.cli import main; main()"
    plain = subprocess.run([sys.executable, "-c", code, "derive", "--spec", str(spec), "--out", str(tmp_path / "o")],
                           check=False, capture_output=True, text=True, timeout=120)
    debug = subprocess.run([sys.executable, "-c", code, "--debug", "derive", "--spec", str(spec),
                            "--out", str(tmp_path / "o")], check=False, capture_output=True, text=True,
                           timeout=120)
    assert plain.returncode == 2 and "Traceback" not in plain.stderr and len(plain.stderr.splitlines()) == 1
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "SpecError" in debug.stderr
    assert not (tmp_path / "o").exists()


# --- hypothesis: malformed specs never give a traceback or a file -----------------------------------------

scalars = st.one_of(st.booleans(), st.integers(-10**20, 10**20), st.floats(allow_nan=True),
                    st.text(max_size=12))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=3)),
                      max_leaves=6)
not_positive = st.integers(-10**20, 0)
not_a_string = st.one_of(st.booleans(), st.integers(), st.floats(), st.lists(scalars, max_size=2),
                         st.dictionaries(st.text(max_size=4), scalars, max_size=2))
not_a_number = st.one_of(st.booleans(), st.text(max_size=8), st.lists(scalars, max_size=2),
                         st.dictionaries(st.text(max_size=4), scalars, max_size=2))
not_an_int = st.one_of(st.floats(), not_a_number)


@st.composite
def malformed_specs(draw):
    """A TOML document (str) or raw bytes that must be rejected: a valid spec with exactly one defect."""
    spec = json.loads(json.dumps(VALID))
    layer = draw(st.integers(0, len(spec["layers"]) - 1))
    defect = draw(st.sampled_from(["bytes", "unknown-key", "size", "size-type", "activation", "loss", "layout",
                                   "title-type", "missing", "layers-type", "table-type", "alpha"]))
    if defect == "bytes":
        return draw(st.binary(max_size=200))
    if defect == "unknown-key":
        table = draw(st.sampled_from([spec, spec["input"], spec["loss"], spec["layers"][layer]]))
        allowed = {"title", "layout", "input", "layers", "loss", "size", "name", "kind", "activation",
                   "alpha", "relu_grad_at_zero"}
        table[draw(st.text(min_size=1, max_size=12).filter(lambda key: key not in allowed))] = draw(values)
    elif defect == "size":
        target = draw(st.sampled_from([spec["input"], spec["layers"][layer]]))
        target["size"] = draw(not_positive)
    elif defect == "size-type":
        target = draw(st.sampled_from([spec["input"], spec["layers"][layer]]))
        target["size"] = draw(not_an_int)
    elif defect == "activation":
        spec["layers"][layer]["activation"] = draw(st.one_of(
            st.text(max_size=12).filter(lambda name: name not in ACTIVATIONS), not_a_string))
    elif defect == "loss":
        spec["loss"]["kind"] = draw(st.one_of(st.text(max_size=12).filter(lambda name: name not in LOSS_KINDS),
                                              not_a_string))
    elif defect == "layout":
        spec["layout"] = draw(st.one_of(st.text(max_size=12).filter(lambda name: name not in LAYOUTS),
                                        not_a_string))
    elif defect == "title-type":
        spec["title"] = draw(not_a_string)
    elif defect == "missing":
        path = draw(st.sampled_from([("input",), ("layers",), ("loss",), ("input", "size"), ("loss", "kind"),
                                     ("layers", layer, "size"), ("layers", layer, "activation")]))
        container = spec
        for key in path[:-1]:
            container = container[key]
        del container[path[-1]]
    elif defect == "layers-type":
        spec["layers"] = draw(st.one_of(st.just([]), scalars, st.lists(scalars, min_size=1, max_size=3)))
    elif defect == "table-type":
        spec[draw(st.sampled_from(["input", "loss"]))] = draw(st.one_of(scalars, st.lists(scalars, max_size=2)))
    elif defect == "alpha":  # relu takes no alpha; leaky_relu takes a finite alpha > 0
        spec["layers"][layer] = {"size": 2, "activation": "leaky_relu",
                                 "alpha": draw(st.one_of(st.floats(max_value=0), st.sampled_from([math.inf, math.nan]),
                                                         not_a_number))}
    return toml_document(spec)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(document=malformed_specs())
def test_malformed_specs_never_give_a_traceback_or_a_file(tmp_path, document):
    spec = tmp_path / "fuzz.toml"
    spec.write_bytes(document if isinstance(document, bytes) else document.encode("utf-8", "surrogatepass"))
    out = tmp_path / "out"
    shutil.rmtree(out, ignore_errors=True)
    line = assert_one_clean_error(derive_cli(spec, out), out)
    assert str(spec) in line


# --- free text is escaped per target ----------------------------------------------------------------------

HOSTILE_TITLES = ['"""; import os; os.system("x") #', r"\input{/etc/passwd}", "$x$ **b** <script>",
                  '\\"""\\', "^^5cinput{/etc/passwd} %}{ & _ ~ # | \\\\ ``` [a](b)"]


def python_names(source: str) -> set[str]:
    """Every identifier the module's code uses (strings and comments excluded)."""
    return {token.string for token in tokenize.generate_tokens(StringIO(source).readline)
            if token.type == tokenize.NAME}


@functools.cache
def plain_module_names() -> set[str]:
    """The identifiers of the NumPy module of VALID under a plain title."""
    return python_names(derive(VALID | {"title": "Plain"}).render("numpy"))


@pytest.mark.parametrize("title", HOSTILE_TITLES)
def test_a_hostile_title_stays_text_in_every_format(tmp_path, title):
    spec = tmp_path / "net.toml"
    spec.write_text(toml_document(VALID | {"title": title}), encoding="utf-8")
    result = derive_cli(spec, tmp_path / "out", "--format", "md,tex,py")
    assert result.exit_code == 0, result.output
    py = (tmp_path / "out" / "backprop.py").read_text(encoding="utf-8")
    module = ast.parse(py)
    assert ast.get_docstring(module, clean=False).startswith(title + ":")
    assert python_names(py) == plain_module_names()  # the title added no code: no name, no import
    md_title = (tmp_path / "out" / "backprop.md").read_text(encoding="utf-8").splitlines()[0]
    assert md_title.startswith("# ")
    # CommonMark: a backslash before ASCII punctuation makes it literal; every special must be escaped.
    assert not re.search(r"(?<!\\)(?:\\\\)*[`*_<>\[\]$&|]", md_title[2:].replace("\\\\", ""))
    assert re.sub(r"\\(.)", r"\1", md_title[2:]) == title

    tex = (tmp_path / "out" / "backprop.tex").read_text(encoding="utf-8")
    title_line = next(line for line in tex.splitlines() if line.startswith(r"\title{"))
    assert not re.search(r"\\(input|include|write|openin|read|catcode|def)\b", title_line)
    assert "^^" not in title_line
    if shutil.which("pdflatex"):
        compiled = subprocess.run(["pdflatex", "-no-shell-escape", "-interaction=nonstopmode", "-halt-on-error",
                                   "backprop.tex"], cwd=tmp_path / "out", check=False, capture_output=True, timeout=180)
        assert compiled.returncode == 0, compiled.stdout.decode(errors="replace")[-2000:]
        if shutil.which("pdftotext"):
            subprocess.run(["pdftotext", "backprop.pdf"], cwd=tmp_path / "out", check=True, timeout=60)
            pdf_text = (tmp_path / "out" / "backprop.txt").read_text(errors="replace")
            assert "root:" not in pdf_text
            first_page = pdf_text.split("\n")[0]  # the title, printed (quotes and dashes may be typeset)
            assert re.findall(r"[A-Za-z0-9]+", first_page) == re.findall(r"[A-Za-z0-9]+", title)


# --- huge sizes --------------------------------------------------------------------------------------------

HUGE = VALID | {"input": {"size": 100000},
                "layers": [{"size": 100000, "activation": "relu"}, {"size": 100000, "activation": "sigmoid"},
                           {"size": 100000, "activation": "identity"}],
                "loss": {"kind": "softmax_cross_entropy"}}


def test_huge_widths_derive_in_seconds(tmp_path):
    spec = tmp_path / "huge.toml"
    spec.write_text(toml_document(HUGE))
    start = time.perf_counter()
    result = derive_cli(spec, tmp_path / "out", "--format", "md,tex,py")
    seconds = time.perf_counter() - start
    assert result.exit_code == 0, result.output
    assert seconds < 30, seconds
    assert "100000" in (tmp_path / "out" / "backprop.md").read_text(encoding="utf-8")


def _limit_memory():
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def test_numpy_demo_with_huge_widths_skips_or_runs_small(tmp_path):
    spec = tmp_path / "huge.toml"
    spec.write_text(toml_document(HUGE))
    assert derive_cli(spec, tmp_path, "--format", "py").exit_code == 0
    demo = subprocess.run([sys.executable, "backprop.py"], cwd=tmp_path, check=False, capture_output=True, text=True,
                          timeout=120, preexec_fn=_limit_memory)
    assert demo.returncode == 0, demo.stderr[-2000:]
    assert "skipped" in demo.stdout or "gradient check" in demo.stdout


# --- atomic, all-or-nothing writes ------------------------------------------------------------------------

def _leftovers(directory):
    return sorted(path.name for path in Path(directory).iterdir() if path.name.endswith(".tmp"))


def test_new_files_get_the_umask_mode_and_overwritten_files_keep_theirs(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "backprop.py").write_text("old\n")
    os.chmod(out / "backprop.py", 0o754)
    umask = os.umask(0o022)
    try:
        assert derive_cli("seed", out, "--format", "md,py", "--force").exit_code == 0
    finally:
        os.umask(umask)
    assert (out / "backprop.md").stat().st_mode & 0o777 == 0o644
    assert (out / "backprop.py").stat().st_mode & 0o777 == 0o754


@pytest.mark.parametrize("existing", [False, True])
def test_a_failure_mid_way_leaves_no_temp_file_and_no_partial_output(tmp_path, monkeypatch, existing):
    """The disk fills while the second file is staged: no target is created or changed, no temp file stays."""
    out = tmp_path / "out"
    out.mkdir()
    if existing:
        for name in ("backprop.md", "backprop.tex", "backprop.py"):
            (out / name).write_text(f"old {name}\n")
    before = {path.name: path.read_bytes() for path in out.iterdir()}
    calls = []
    real_fsync = os.fsync

    def fsync(fd):
        calls.append(fd)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    line = assert_one_clean_error(derive_cli("seed", out, "--force"), tmp_path / "nothing")
    assert len(calls) == 2
    assert os.strerror(errno.ENOSPC) in line
    assert {path.name: path.read_bytes() for path in out.iterdir()} == before


KILL_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from symbackprop.cli import main

    stall_on, calls, real = sys.argv[1], [], getattr(os, sys.argv[1])

    def stall(*args):
        calls.append(args)
        if len(calls) == 2 if stall_on == "replace" else True:
            print("stalled", flush=True)
            time.sleep(600)
        return real(*args)

    setattr(os, stall_on, stall)
    main(["derive", "--out", sys.argv[2], "--format", "md,tex", "--force"])
""")


@pytest.mark.parametrize("stall_on", ["fsync", "replace"])
def test_killed_during_a_write_leaves_every_file_whole(tmp_path, stall_on):
    """SIGKILL while a file is staged (fsync) or between two renames (replace): each target is whole."""
    fresh = tmp_path / "fresh"
    assert derive_cli("seed", fresh, "--format", "md,tex").exit_code == 0
    new = {name: (fresh / name).read_bytes() for name in ("backprop.md", "backprop.tex")}
    out = tmp_path / "out"
    out.mkdir()
    old = {name: f"old {name}, written by hand\n".encode() for name in new}
    for name, data in old.items():
        (out / name).write_bytes(data)
    process = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, stall_on, str(out)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout.readline().strip() == "stalled", process.stderr.read()
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL
    contents = {name: (out / name).read_bytes() for name in new}
    if stall_on == "fsync":
        assert contents == old  # killed while staging: nothing was replaced
        assert _leftovers(out)  # the staged temp file shows the kill came mid-write
    else:
        assert contents == {"backprop.md": new["backprop.md"], "backprop.tex": old["backprop.tex"]}


# --- determinism ------------------------------------------------------------------------------------------

REGENERATE = textwrap.dedent("""
    import sys
    from pathlib import Path
    from symbackprop.derivation import derive
    from symbackprop.output import write_outputs
    from symbackprop.spec import load_spec

    out = Path(sys.argv[1])
    for path in sys.argv[2:]:
        derivation = derive(load_spec(path))
        write_outputs(derivation, derivation.verify(), "md,tex,py", out / Path(path).stem)
""")


# Regenerating costs seconds a spec: every spec with SYMBACKPROP_FULL_LECTURE=1, by default every third one.
DETERMINISM = SPECS if os.environ.get("SYMBACKPROP_FULL_LECTURE") == "1" else SPECS[::3]


def test_corpus_specs_regenerate_byte_identically_across_hash_seeds(tmp_path):
    runs = {}
    for seed in ("0", "4242"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        runs[seed] = subprocess.Popen([sys.executable, "-c", REGENERATE, str(tmp_path / seed),
                                       *map(str, DETERMINISM)],
                                      env=env, stderr=subprocess.PIPE, text=True)
    for seed, process in runs.items():
        assert process.wait(timeout=900) == 0, process.stderr.read()[-3000:]
    files = sorted(path.relative_to(tmp_path / "0") for path in (tmp_path / "0").rglob("*") if path.is_file())
    assert len(files) == 3 * len(DETERMINISM)
    different = [str(name) for name in files
                 if (tmp_path / "0" / name).read_bytes() != (tmp_path / "4242" / name).read_bytes()]
    assert different == []


# --- concurrent runs into one directory ---------------------------------------------------------------------

# Each process waits, at its first rename or link into the output directory, until the other has got that
# far too: both have passed the early existence check and staged their files, so only the write itself can
# keep them from replacing each other's files.
RACE_SCRIPT = textwrap.dedent("""
    import os, sys, time
    from pathlib import Path
    from symbackprop.cli import main

    spec, out, meeting = sys.argv[1], sys.argv[2], Path(sys.argv[3])
    waited = []

    def meet(real):
        def wrapper(*args, **kwargs):
            if not waited:
                waited.append(True)
                (meeting / str(os.getpid())).touch()
                deadline = time.monotonic() + 60
                while len(list(meeting.iterdir())) < 2 and time.monotonic() < deadline:
                    time.sleep(0.01)
            return real(*args, **kwargs)
        return wrapper

    os.replace, os.rename, os.link = meet(os.replace), meet(os.rename), meet(os.link)
    main(["derive", "--spec", spec, "--out", out, "--format", "md,tex,py"])
""")


def _race(tmp_path, specs, out, meeting=None):
    """Run ``derive`` of each spec into ``out`` at the same time; return (exit code, stderr) of each."""
    script = RACE_SCRIPT if meeting else "import sys; from symbackprop.cli import main; main(sys.argv[1:])"
    processes = []
    for spec in specs:
        args = [str(spec), str(out), str(meeting)] if meeting else [
            "derive", "--spec", str(spec), "--out", str(out), "--format", "md,tex,py"]
        processes.append(subprocess.Popen([sys.executable, "-c", script, *args], stdout=subprocess.DEVNULL,
                                          stderr=subprocess.PIPE, text=True))
    return [(process.wait(timeout=300), process.stderr.read()) for process in processes]


def test_concurrent_derives_into_one_directory_never_replace_each_others_files(tmp_path):
    specs, expected = [], []
    for index in range(2):
        spec = tmp_path / f"net{index}.toml"
        spec.write_text(toml_document(VALID | {"title": f"run {index}"}))
        specs.append(spec)
        alone = tmp_path / f"alone{index}"
        assert derive_cli(spec, alone, "--format", "md,tex,py").exit_code == 0
        expected.append({path.name: path.read_bytes() for path in alone.iterdir()})
    assert expected[0] != expected[1]
    for attempt, meeting in enumerate([tmp_path / "meeting", None, None]):
        if meeting:
            meeting.mkdir()
        out = tmp_path / f"out{attempt}"
        results = _race(tmp_path, specs, out, meeting)
        codes = sorted(code for code, _ in results)
        assert codes == [0, 2], results
        loser = next(stderr for code, stderr in results if code == 2)
        assert "already exist" in loser and len(loser.splitlines()) == 1 and "Traceback" not in loser
        winner = next(index for index, (code, _) in enumerate(results) if code == 0)
        written = {path.name: path.read_bytes() for path in out.iterdir()}
        assert written == expected[winner]  # all three files from one run, none from the other, no temp file


def test_a_dangling_symlink_counts_as_existing(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "backprop.md").symlink_to(tmp_path / "nowhere.md")
    line = assert_one_clean_error(derive_cli("seed", out, "--format", "md"), tmp_path / "nothing")
    assert "already exist" in line
    assert (out / "backprop.md").is_symlink() and not (tmp_path / "nowhere.md").exists()
    assert derive_cli("seed", out, "--format", "md", "--force").exit_code == 0
    assert not (out / "backprop.md").is_symlink() and not (tmp_path / "nowhere.md").exists()
    assert (out / "backprop.md").read_text(encoding="utf-8").startswith("# ")


# --- outputs that cannot be written -------------------------------------------------------------------------

def test_an_out_name_too_long_is_one_clean_error(tmp_path):
    out = tmp_path / ("a" * 300)
    line = assert_one_clean_error(derive_cli("seed", out), tmp_path / "nothing")
    assert os.strerror(errno.ENAMETOOLONG) in line


def _stdout_run(redirect: str):
    command = f"{shlex.quote(sys.executable)} -c 'from symbackprop.cli import main; main()' " \
              f"derive --format md --out - {redirect}"
    return subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_out_dash_into_a_full_device_is_one_clean_error():
    done = _stdout_run("> /dev/full")
    assert done.returncode == 2, done.stderr
    lines = done.stderr.splitlines()
    assert lines[-1] == f"symbackprop: error: cannot write to stdout: {os.strerror(errno.ENOSPC)}", done.stderr
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    assert not any(line.startswith("symbackprop: error") for line in lines[:-1])


def test_out_dash_into_a_closed_stdout_is_one_clean_error():
    done = _stdout_run(">&-")
    assert done.returncode == 2, done.stderr
    assert done.stderr == "symbackprop: error: --out -: stdout is closed\n"


def test_out_dash_into_a_closed_pipe_is_one_clean_error():
    command = f"{shlex.quote(sys.executable)} -c 'from symbackprop.cli import main; main()' " \
              "derive --format tex --out - | (exec 0<&-)"
    done = subprocess.run(["bash", "-o", "pipefail", "-c", command], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines()[-1].startswith("symbackprop: error: cannot write to stdout: ")
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr


# --- bounded input -------------------------------------------------------------------------------------------

def _timed_derive(spec: str, tmp_path):
    code = "import sys; from symbackprop.cli import main; main(sys.argv[1:])"
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, "derive", "--spec", spec, "--out", str(tmp_path / "out")],
                          capture_output=True, text=True, timeout=60, check=False)
    return done, time.perf_counter() - start


@pytest.mark.parametrize("device", ["/dev/zero", "/dev/urandom", "/dev/null"])
def test_a_device_as_spec_fails_fast(tmp_path, device):
    if not Path(device).exists():
        pytest.skip(f"no {device}")
    done, seconds = _timed_derive(device, tmp_path)
    assert done.returncode == 2 and done.stderr == f"symbackprop: error: {device}: is a character device, " \
                                                   "not a regular file\n", done.stderr
    assert seconds < 30


def test_a_fifo_without_a_writer_as_spec_fails_fast(tmp_path):
    fifo = tmp_path / "spec.fifo"
    os.mkfifo(fifo)
    done, seconds = _timed_derive(str(fifo), tmp_path)
    assert done.returncode == 2 and "is a FIFO (a pipe), not a regular file" in done.stderr, done.stderr
    assert seconds < 30


def test_spec_files_are_read_up_to_one_mebibyte(tmp_path):
    from symbackprop.files import MAX_INPUT_BYTES

    document = toml_document(VALID).encode()
    at_limit = tmp_path / "at_limit.toml"
    at_limit.write_bytes(document + b"#" * (MAX_INPUT_BYTES - len(document) - 1) + b"\n")
    assert at_limit.stat().st_size == MAX_INPUT_BYTES == 1 << 20
    assert derive_cli(at_limit, tmp_path / "ok", "--format", "md").exit_code == 0
    over = tmp_path / "over.toml"
    over.write_bytes(document + b"#" * (MAX_INPUT_BYTES - len(document)) + b"\n")
    line = assert_one_clean_error(derive_cli(over, tmp_path / "out"), tmp_path / "out")
    assert line == f"symbackprop: error: {over}: larger than 1 MiB, the limit for input files"


def test_a_spec_that_is_not_utf8_is_one_clean_error(tmp_path):
    spec = tmp_path / "latin1.toml"
    spec.write_bytes(toml_document(VALID | {"title": "café"}).encode("latin-1"))
    line = assert_one_clean_error(derive_cli(spec, tmp_path / "out"), tmp_path / "out")
    assert f"{spec}: not UTF-8 text" in line and "at byte" in line


def _deep(depth: int) -> dict:
    return VALID | {"layers": [{"size": 2, "activation": "tanh"}] * (depth - 1) + [{"size": 1, "activation": "identity"}]}


def test_the_largest_supported_depth_derives():
    from symbackprop import derive
    from symbackprop.spec import MAX_LAYERS, load_spec

    assert MAX_LAYERS == 200
    start = time.perf_counter()
    derivation = derive(load_spec(_deep(MAX_LAYERS)))
    assert derivation.verify().ok and len(derivation.network.spec.layers) == 200
    assert time.perf_counter() - start < 120


@pytest.mark.parametrize("depth", [201, 1000, 10_000])
def test_deeper_specs_are_refused_with_a_message(tmp_path, depth):
    spec = tmp_path / "deep.toml"
    spec.write_text(toml_document(_deep(depth)))
    start = time.perf_counter()
    line = assert_one_clean_error(derive_cli(spec, tmp_path / "out"), tmp_path / "out")
    assert line == f"symbackprop: error: {spec}: layers: {depth} layers; at most 200 are supported"
    assert time.perf_counter() - start < 60


def test_the_parameter_count_is_limited():
    from symbackprop.errors import SpecError
    from symbackprop.spec import MAX_PARAMETERS, load_spec

    # one layer: (input + 1) * width weights and biases
    width = MAX_PARAMETERS // 1000
    assert load_spec(VALID | {"input": {"size": 999}, "layers": [{"size": width, "activation": "identity"}]})
    with pytest.raises(SpecError, match=r"layers: 1\.001e\+12 trainable parameters; at most 1e\+12 are supported"):
        load_spec(VALID | {"input": {"size": 1000}, "layers": [{"size": width, "activation": "identity"}]})
    with pytest.raises(SpecError, match="trainable parameters"):
        load_spec(VALID | {"input": {"size": 10**400}})


# --- any Unicode in a title compiles ---------------------------------------------------------------------------

UNICODE_TITLE = ("β-VAE σ(x) 🚀 zero\u200bwidth \u202eRTL\u202c 역전파 漢字 中文 かな ｱ שלום مرحبا Привет "
                 "naïve façade Łódź straße x² H₂O ½ ﬁ — “q” … e\u0301 ①")


def _pdflatex(directory: Path, name: str) -> str:
    done = subprocess.run(["pdflatex", "-no-shell-escape", "-interaction=nonstopmode", "-halt-on-error", name],
                          cwd=directory, check=False, capture_output=True, timeout=300)
    log = (directory / name).with_suffix(".log").read_text(encoding="latin-1")
    assert done.returncode == 0, log[-3000:]
    assert "Missing character" not in log, [line for line in log.splitlines() if "Missing character" in line]
    return log


def _base_letters(text: str) -> str:
    """``text`` without accents (the dotless i and the L with stroke as plain letters)."""
    import unicodedata

    plain = unicodedata.normalize("NFKD", text.replace("ı", "i").replace("Ł", "L"))
    return "".join(ch for ch in plain if not unicodedata.combining(ch))


@pytest.mark.skipif(not shutil.which("pdflatex") or not shutil.which("pdftotext"), reason="needs TeX Live")
@pytest.mark.parametrize("lang", ["en", "ko"])
def test_a_unicode_title_compiles_in_article_and_beamer(tmp_path, lang):
    spec = tmp_path / "net.toml"
    spec.write_text(toml_document(VALID | {"title": UNICODE_TITLE}), encoding="utf-8")
    out = tmp_path / "out"
    assert derive_cli(spec, out, "--format", "tex,beamer", "--lang", lang).exit_code == 0
    for name in ("backprop.tex", "backprop_slides.tex"):
        _pdflatex(out, name)
        pdf = out / Path(name).with_suffix(".pdf").name
        title = subprocess.run(["pdftotext", "-l", "1", str(pdf), "-"], capture_output=True, text=True, timeout=60,
                               check=True).stdout
        flat = " ".join(title.split())
        compact = flat.replace(" ", "")  # pdftotext spaces the title as it likes
        for visible in ("β-VAEσ(x)[U+1F680]zerowidthRTL", "x2H2O1/2fi"):
            assert visible in compact, (visible, flat)
        assert "naivefacadeLodzstraße" in _base_letters(compact), flat  # TeX accents extract as combining marks
        for korean in ("역전파", "漢字", "かな"):
            assert (korean in flat) == (lang == "ko"), (korean, flat)
        if lang == "en":
            assert "[U+C5ED U+C804 U+D30C]" in flat


@pytest.mark.skipif(not shutil.which("pdflatex"), reason="needs pdflatex")
@pytest.mark.parametrize("lang", ["en", "ko"])
def test_every_assigned_character_compiles_in_the_documents_preamble(tmp_path, lang):
    """All of the Basic Multilingual Plane, emoji and mathematical letters, escaped, in the real preamble."""
    import unicodedata

    from symbackprop.tex_text import tex_escape

    assert derive_cli("seed", tmp_path, "--format", "tex", "--lang", lang).exit_code == 0
    preamble = (tmp_path / "backprop.tex").read_text(encoding="utf-8").split(r"\begin{document}")[0]
    codes = [*range(0x20, 0xD800), *range(0xE000, 0x10000), *range(0x1F300, 0x1F700), *range(0x1D400, 0x1D800)]
    chars = [chr(code) for code in codes if unicodedata.category(chr(code)) not in ("Cn", "Co")]
    body = "\n\n".join(tex_escape("".join(chars[i:i + 64]), korean=lang == "ko") for i in range(0, len(chars), 64))
    (tmp_path / "all.tex").write_text(f"{preamble}\\begin{{document}}\n{body}\n\\end{{document}}\n", encoding="utf-8")
    _pdflatex(tmp_path, "all.tex")
