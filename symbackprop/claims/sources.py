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


_MATH_BLOCK = re.compile(r"\$\$(.+?)\$\$|\\\[(.+?)\\\]|\$(.+?)\$", re.DOTALL)
_EQUATION_BREAK = re.compile(r"\\q?quad(?![A-Za-z])|\\\\|(?<!\\),(?=\s*\\frac)")


def numbered_latex_claims(text: str) -> list[Source]:
    r"""LaTeX claims: each ``$$...$$``, ``\[...\]`` or ``$...$`` block holding ``=``, or else one per line.

    Lines starting with ``%`` are comments. A block may hold several equations separated by ``\quad``,
    ``\qquad`` or ``\\`` (as slides write them side by side); each is one claim, numbered by the line its
    block starts on.
    """
    text = "\n".join("" if line.lstrip().startswith("%") else line for line in text.splitlines())
    blocks = [(match.start(), next(g for g in match.groups() if g is not None))
              for match in _MATH_BLOCK.finditer(text)]
    if not blocks:
        starts = [0] + [m.end() for m in re.finditer("\n", text)]
        blocks = list(zip(starts, text.split("\n")))
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