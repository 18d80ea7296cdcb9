"""Every example in README.md runs as written, in order, on a fresh copy of the repository after `make demo`.

How the README's fenced code blocks are run (this is the convention to follow when adding to the README):

- ``console``: each line starting with ``$ `` is a command, run with bash from the repository root (the
  environment's ``symbackprop`` and ``python`` first on PATH); the lines after it, up to the next command,
  are output that must appear in what the command prints (stdout and stderr together), in order, each
  as part of one printed line. Numbers are compared only as "a number" (timings and rounding errors vary)
  and runs of spaces as one space; a line ``...`` stands for any output. The command must exit 0, unless
  it ends in a comment naming another code: ``$ symbackprop check 'dL/dW1 = W1' # exit code 1``.
- ``sh``: the whole block runs as one bash script (``set -e``) and must exit 0; its output is not checked.
- ``python``: the whole block runs as one script with the environment's python and must exit 0.
- ``toml``: the block must be a valid spec (``load_spec``).
- any other language is not run, unless a marker says what to do with it.

A marker is an HTML comment on the line just before the opening fence (invisible on GitHub):

- ``<!-- readme-test: skip (why) -->``: the block is not run (use it for blocks that install things, run
  the test suite or compile TeX: this test must stay fast; the decks are compiled in test_lecture.py);
- ``<!-- readme-test: file PATH -->``: the block is exactly the content of the repository file PATH;
- ``<!-- readme-test: excerpt PATH -->``: the block's lines appear, in order, in the file PATH as the
  commands before it left it (compared as console output is).

The copy is made of the files git tracks or would track (nothing ignored, so no ``out/`` or ``.venv``);
`make demo`'s own command comes from the Makefile.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from symbackprop.spec import load_spec

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
TIMEOUT = 300

_FENCE = re.compile(r"^(`{3,})([\w+-]*)\s*$")
_MARKER = re.compile(r"^<!--\s*readme-test:\s*(skip|file|excerpt)\b\s*(.*?)\s*-->\s*$")
_EXIT = re.compile(r"\s#.*\bexit code (\d+)\b")
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
RUN = ("console", "sh", "python", "toml")


@dataclass
class Block:
    """A fenced code block of the README: its language, text, first line number and marker, if any."""

    language: str
    text: str
    line: int
    marker: tuple[str, str] | None


def readme_blocks(text: str) -> list[Block]:
    blocks, lines, index = [], text.splitlines(), 0
    while index < len(lines):
        opening = _FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        end = index + 1
        while end < len(lines) and lines[end].strip() != opening.group(1):
            end += 1
        previous = next((line for line in reversed(lines[:index]) if line.strip()), "")
        marker = _MARKER.match(previous)
        blocks.append(Block(opening.group(2), "\n".join(lines[index + 1:end]) + "\n", index + 2,
                            (marker.group(1), marker.group(2)) if marker else None))
        index = end + 1
    return blocks


def normalized(line: str) -> str:
    """A line compared loosely: numbers as '#', runs of white space as one space."""
    return " ".join(_NUMBER.sub("#", line).split())


def missing_lines(expected: list[str], output: str) -> list[str]:
    """The expected lines (``...`` skipped) not found in order, each inside one line of ``output``."""
    printed = [normalized(line) for line in output.splitlines()]
    position, missing = 0, []
    for line in expected:
        if line.strip() in ("", "..."):
            continue
        want = normalized(line)
        found = next((i for i in range(position, len(printed)) if want in printed[i]), None)
        if found is None:
            missing.append(line)
        else:
            position = found + 1
    return missing


def console_commands(text: str) -> list[tuple[str, list[str]]]:
    """``$ command`` lines of a console block, each with the output lines shown after it."""
    commands = []
    for line in text.splitlines():
        if line.startswith("$ "):
            commands.append((line[2:], []))
        elif commands:
            commands[-1][1].append(line)
    return commands


def tracked_files(root: Path) -> list[str]:
    """The files a fresh clone would have: tracked, or untracked but not ignored (new files not yet added)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=root,
                            check=True, capture_output=True, timeout=60).stdout.decode()
    return sorted({name for name in listed.split("\0") if name and (root / name).is_file()})


def demo_commands(makefile: str) -> list[str]:
    """The Makefile's `demo` recipe lines that run symbackprop, with $(BIN) made the test's environment."""
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", makefile, re.MULTILINE)
    assert recipe, "the Makefile has no demo target"
    lines = [line.strip() for line in recipe.group(1).splitlines()]
    commands = [line.replace("$(BIN)/", f"{BIN}/") for line in lines if line.startswith("$(BIN)/symbackprop")]
    assert commands, "the demo target runs no symbackprop command"
    return commands


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to know which files a fresh clone has")
    directory = tmp_path_factory.mktemp("readme") / "symbackprop"
    for name in tracked_files(ROOT):
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, directory / name)
    for command in demo_commands((ROOT / "Makefile").read_text()):
        done = run(command, directory)
        assert done.returncode == 0, f"make demo's `{command}` failed:\n{done.stdout}"
    return directory


def run(command: str, cwd: Path, *, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}", "PYTHONHASHSEED": "0"}
    env.pop("PYTHONPATH", None)
    return subprocess.run(["bash", "-c", command], cwd=cwd, env=env, input=stdin, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=TIMEOUT, check=False)


def check_block(block: Block, clone: Path) -> list[str]:
    """Run one block in ``clone``; the problems found, each naming the README line."""
    where = f"README.md:{block.line}"
    kind, argument = block.marker or (None, "")
    if kind == "skip":
        return []
    if kind == "file":
        shipped = clone / argument
        if not shipped.is_file():
            return [f"{where}: {argument} is not in the repository"]
        return [] if shipped.read_text(encoding="utf-8") == block.text else [
            f"{where}: the block differs from {argument}"]
    if kind == "excerpt":
        source = clone / argument
        if not source.is_file():
            return [f"{where}: {argument} does not exist at this point"]
        missing = missing_lines(block.text.splitlines(), source.read_text(encoding="utf-8"))
        return [f"{where}: not in {argument}: {line!r}" for line in missing]
    if block.language == "console":
        problems = []
        for command, expected in console_commands(block.text):
            code = _EXIT.search(command)
            done = run(command, clone)
            if done.returncode != (int(code.group(1)) if code else 0):
                problems.append(f"{where}: `{command}` exited {done.returncode}:\n{done.stdout[-3000:]}")
            problems += [f"{where}: `{command}` did not print {line!r}; it printed:\n{done.stdout[-3000:]}"
                         for line in missing_lines(expected, done.stdout)]
        return problems
    if block.language == "sh":
        done = run("set -e\n" + block.text, clone)
        return [] if done.returncode == 0 else [f"{where}: exited {done.returncode}:\n{done.stdout[-3000:]}"]
    if block.language == "python":
        done = run("python -", clone, stdin=block.text)
        return [] if done.returncode == 0 else [f"{where}: exited {done.returncode}:\n{done.stdout[-3000:]}"]
    if block.language == "toml":
        spec = clone / ".readme_spec.toml"
        spec.write_text(block.text, encoding="utf-8")
        try:
            load_spec(spec)
        except Exception as error:  # noqa: BLE001 - any failure is the finding
            return [f"{where}: not a valid spec: {error}"]
        finally:
            spec.unlink()
    return []


def test_every_readme_block_runs_as_written_and_what_it_writes_is_ignored_by_git(clone):
    blocks = readme_blocks(README.read_text(encoding="utf-8"))
    assert sum(block.language in RUN and block.marker is None for block in blocks) >= 5
    problems = [problem for block in blocks if block.language in RUN or block.marker
                for problem in check_block(block, clone)]
    assert not problems, "\n\n".join(problems)

    # What the commands wrote (out/, lecture/, LaTeX by-products) must all be ignored by git.
    tracked = set(tracked_files(ROOT))
    written = sorted(name for name in (str(path.relative_to(clone)) for path in clone.rglob("*") if path.is_file())
                     if name not in tracked)
    ignored = subprocess.run(["git", "check-ignore", "--no-index", "--stdin"], cwd=ROOT, input="\n".join(written),
                             capture_output=True, text=True, timeout=60, check=False).stdout.split("\n")
    assert "out/backprop.md" in written
    assert sorted(set(written) - set(ignored)) == []


# --- the checker itself must be able to fail ----------------------------------------------------------------

def test_the_block_checker_finds_a_wrong_excerpt_a_wrong_exit_code_and_a_stale_file(tmp_path):
    (tmp_path / "spec.toml").write_text("[input]\nsize = 2\n")
    readme = """
```console
$ echo 'took 0.25 s' && echo second
took 9.5 s
...
second
```
```console
$ echo fine
not printed
```
```console
$ exit 3  # exit code 2
```
<!-- readme-test: file spec.toml -->
```toml
[input]
size = 3
```
<!-- readme-test: skip (would fail) -->
```sh
false
```
```python
raise SystemExit(4)
```
"""
    blocks = readme_blocks(readme)
    results = [check_block(block, tmp_path) for block in blocks]
    assert results[0] == []  # numbers compared loosely, "..." skipped
    assert "did not print 'not printed'" in results[1][0]
    assert "exited 3" in results[2][0]
    assert "differs from spec.toml" in results[3][0]
    assert results[4] == []
    assert "exited 4" in results[5][0]
