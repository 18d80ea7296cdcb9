"""A Jupyter notebook submission as one Python source: its code cells in order, IPython-only lines skipped.

A line magic (``%timeit``), a shell escape (``!pip install``) or a cell magic (``%%time``, the whole cell) has no
meaning outside IPython; each becomes ``pass`` at the same indentation (so line numbers and blocks stay as they
were) and is listed in the grade's notes.

A file that is not a notebook whose code cells can be read (not JSON, no list of cells, a cell whose source is
not text, a format nbformat cannot read or convert, a cell its schema check refuses) is refused with one line that
says why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import nbformat

from ..errors import InputFileError, SymbackpropError
from ..files import read_text

MAX_NOTEBOOK_BYTES = 256 << 20  # a notebook keeps its outputs (images), so far more than a spec or a .py file


@dataclass(frozen=True)
class NotebookSource:
    """The code cells joined (``text``); ``cells`` pairs each cell's first line in it with the cell's number in
    the notebook (counting every cell from 1); ``skipped`` names what was left out."""

    text: str
    cells: tuple[tuple[int, int], ...]
    skipped: tuple[str, ...]


def notebook_source(path: Path, error=SymbackpropError) -> NotebookSource:
    """The code of the notebook at ``path``; ``error`` (a SymbackpropError class) when it is not a notebook."""
    lines, cells, skipped = [], [], []
    for number, cell in enumerate(_read(path, error), start=1):
        source = _code(path, number, cell, error)
        if source is None:
            continue
        cells.append((len(lines) + 1, number))
        if source.lstrip().startswith("%%"):
            skipped.append(f"cell {number}: the cell magic {source.split()[0]} (the whole cell)")
            lines += ["pass"] + [""] * source.count("\n")
            continue
        for offset, line in enumerate(source.split("\n"), start=1):
            stripped = line.lstrip()
            if stripped.startswith(("%", "!")):
                indent = line[:len(line) - len(stripped)]
                skipped.append(f"cell {number}, line {offset}: {stripped[:60]}")
                line = f"{indent}pass"
            lines.append(line)
    return NotebookSource("\n".join(lines) + "\n", tuple(cells), tuple(skipped))


def _read(path: Path, error) -> list:
    """The cells of the notebook at ``path`` (any nbformat version, as version 4); ``error`` where the file is
    not a notebook, with the reason in one line."""
    def refuse(why: str):
        return error(f"{path}: not a Jupyter notebook ({why})")

    try:
        text = read_text(path, limit=MAX_NOTEBOOK_BYTES)
    except InputFileError as problem:
        raise refuse(problem.reason) from None
    if not text.strip():
        raise refuse("the file is empty")
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as problem:
        raise refuse(f"not JSON: {_first_line(problem)}") from None
    if not isinstance(data, dict):
        raise refuse(f"the file holds {_kind(data)}, not a notebook's JSON object")
    if "nbformat" not in data and "cells" not in data:
        raise refuse("a JSON object without a notebook's keys nbformat and cells")
    version = data.get("nbformat", 1)
    if isinstance(version, bool) or not isinstance(version, int):
        raise refuse(f"its nbformat version is {_kind(version)}, not a number")
    if version not in nbformat.versions:
        raise refuse(f"nbformat version {version}; versions {min(nbformat.versions)} to {max(nbformat.versions)} "
                     "can be read")
    if "cells" in data:  # version 4: its cells are checked here, where nbformat would fail on them with less to say
        if not isinstance(data["cells"], list):
            raise refuse(f"its cells are {_kind(data['cells'])}, not a list")
        for number, cell in enumerate(data["cells"], start=1):
            _code(path, number, cell, error)
    try:
        notebook = nbformat.convert(nbformat.reader.reads(text), 4)
    except Exception as problem:  # noqa: BLE001 - nbformat and jsonschema raise many kinds (ValidationError, ...)
        raise refuse(_first_line(problem)) from None
    cells = notebook.get("cells") if isinstance(notebook, dict) else None
    if not isinstance(cells, list):
        raise refuse("it has no list of cells")
    return cells


def _code(path: Path, number: int, cell, error) -> str | None:
    """The source of cell ``number`` when it is a code cell, None for another cell; ``error`` where the cell
    is not one, or its source is not text (a string, or a list of strings that nbformat joins)."""
    if not isinstance(cell, dict):
        raise error(f"{path}: not a Jupyter notebook (cell {number} is {_kind(cell)}, not a cell)")
    if cell.get("cell_type") != "code":
        return None
    source = cell.get("source", "")
    if isinstance(source, list) and all(isinstance(line, str) for line in source):
        source = "".join(source)
    if not isinstance(source, str):
        raise error(f"{path}: not a Jupyter notebook (the source of cell {number} is {_kind(source)}, not text)")
    return source


def _first_line(problem: BaseException) -> str:
    text = str(problem).strip()
    return text.splitlines()[0] if text else type(problem).__name__


def _kind(value) -> str:
    """What a JSON value is, in words (``a number``)."""
    kinds = ((bool, "true or false"), ((int, float), "a number"), (str, "text"), (list, "a list"),
             (dict, "an object"), (type(None), "null"))
    return next((words for types, words in kinds if isinstance(value, types)), type(value).__name__)
