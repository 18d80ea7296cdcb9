r"""Where claims come from: lines of a claims file, LaTeX blocks, and the file itself, read with a size limit.

Each claim keeps its line and the column it starts at, so a parse error points into the file.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

from ..files import MAX_INPUT_BYTES, decode_text, read_bytes, read_limited

MAX_FILE_BYTES = MAX_INPUT_BYTES  # a claims file's limit: the one every input file has


@dataclass(frozen=True)
class Source:
    """One claim and where it is: ``line`` (1-based) and ``offset`` (its 0-based column in that line)."""

    text: str
    line: int
    offset: int = 0


def numbered_claims(text: str) -> list[Source]:
    """NumPy-like claims, one per line; blank lines and ``#`` comments are skipped."""
    sources = []
    for number, line in enumerate(text.splitlines(), start=1):
        code = line.split("#", 1)[0]
        claim = code.strip()
        if claim:
            sources.append(Source(claim, number, len(code) - len(code.lstrip())))
    return sources


def claims_from_text(text: str) -> list[str]:
    """NumPy-like claims, one per line; blank lines and ``#`` comments are skipped."""
    return [source.text for source in numbered_claims(text)]


_EQUATION_BREAK = re.compile(r"\\q?quad(?![A-Za-z])|\\\\|(?<!\\),(?=\s*\\frac)")
# The display environments whose body is math (amsmath's and LaTeX's own).
_MATH_ENVIRONMENTS = {f"{name}{star}" for name in ("equation", "align", "gather", "multline", "flalign",
                                                   "eqnarray", "displaymath", "math") for star in ("", "*")}


def _math_blocks(text: str) -> list[tuple[int, str]]:
    r"""(offset, body) of every math block a LaTeX walker (pylatexenc) finds, in order: ``$...$``, ``$$...$$``,
    ``\(...\)``, ``\[...\]`` and the display environments (``equation``, ``align``, ...), inside groups and
    other environments too; comments are skipped, and an escaped ``\$`` starts no math."""
    from pylatexenc.latexwalker import (
        LatexCommentNode,
        LatexEnvironmentNode,
        LatexGroupNode,
        LatexMacroNode,
        LatexMathNode,
        LatexWalker,
    )

    def body(node) -> str:
        return "".join(child.latex_verbatim() for child in node.nodelist
                       if child is not None and not child.isNodeType(LatexCommentNode))

    found = []

    def visit(nodes) -> None:
        for node in nodes or ():
            if node is None or node.isNodeType(LatexCommentNode):
                continue
            if node.isNodeType(LatexMathNode) or (node.isNodeType(LatexEnvironmentNode)
                                                  and node.environmentname in _MATH_ENVIRONMENTS):
                found.append((node.pos, body(node)))
            elif node.isNodeType(LatexEnvironmentNode) or node.isNodeType(LatexGroupNode):
                visit(node.nodelist)
            elif node.isNodeType(LatexMacroNode) and node.nodeargd is not None:
                visit(node.nodeargd.argnlist)

    visit(LatexWalker(text, tolerant_parsing=True).get_latex_nodes()[0])
    return found


def numbered_latex_claims(text: str) -> list[Source]:
    r"""LaTeX claims: each math block (``$...$``, ``$$...$$``, ``\(...\)``, ``\[...\]``, an ``equation``,
    ``align``, ... environment) holding ``=``, or where the text has no math block, one per line.

    ``%`` comments are skipped and ``\$`` is a dollar sign, as LaTeX reads them. A block may hold several
    equations separated by ``\quad``, ``\qquad`` or ``\\`` (as slides and ``align`` write them); each is one
    claim, numbered by the line its block starts on.
    """
    blocks = _math_blocks(text)
    if not blocks:
        lines = ["" if line.lstrip().startswith("%") else line for line in text.split("\n")]
        starts = [0] + [m.end() for m in re.finditer("\n", text)]
        blocks = list(zip(starts, lines))
    sources, line, counted = [], 1, 0
    for start, block in blocks:  # in order: count the line breaks since the previous block only
        line, counted = line + text.count("\n", counted, start), start
        for part in _EQUATION_BREAK.split(block):
            part = " ".join(part.replace("&", " ").split()).rstrip(".,; ")
            if "=" in part:
                sources.append(Source(part, line))
    return sources


def latex_claims_from_text(text: str) -> list[str]:
    r"""LaTeX claims (see ``numbered_latex_claims``)."""
    return [source.text for source in numbered_latex_claims(text)]


def read_claims_file(path: str) -> str:
    """The text of a claims file (``-``: standard input), read as every input file is (``files.py``: a regular
    file, at most ``MAX_FILE_BYTES``, UTF-8)."""
    if path == "-":
        return decode_text(read_limited(sys.stdin.buffer, "standard input", limit=MAX_FILE_BYTES), "standard input")
    return decode_text(read_bytes(path, limit=MAX_FILE_BYTES), path)