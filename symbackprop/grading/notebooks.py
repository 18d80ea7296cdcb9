"""A Jupyter notebook submission as one Python source: its code cells in order, IPython-only lines skipped.

A line magic (``%timeit``), a shell escape (``!pip install``) or a cell magic (``%%time``, the whole cell) has no
meaning outside IPython; each becomes ``pass`` at the same indentation (so line numbers and blocks stay as they
were) and is listed in the grade's notes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nbformat

from ..errors import SymbackpropError


@dataclass(frozen=True)
class NotebookSource:
    """The code cells joined (``text``); ``cells`` pairs each cell's first line in it with the cell's number in
    the notebook (counting every cell from 1); ``skipped`` names what was left out."""

    text: str
    cells: tuple[tuple[int, int], ...]
    skipped: tuple[str, ...]


def notebook_source(path: Path, error=SymbackpropError) -> NotebookSource:
    """The code of the notebook at ``path``; ``error`` (a SymbackpropError class) when it is not a notebook."""
    try:
        notebook = nbformat.read(path, as_version=4)
    except (OSError, ValueError, KeyError, AttributeError, TypeError, nbformat.reader.NotJSONError) as problem:
        raise error(f"{path}: not a Jupyter notebook ({str(problem).splitlines()[0] if str(problem) else problem!r})")
    lines, cells, skipped = [], [], []
    for number, cell in enumerate(notebook.cells, start=1):
        if cell.get("cell_type") != "code":
            continue
        source = cell.get("source", "")
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
