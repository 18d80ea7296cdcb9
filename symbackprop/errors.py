"""Errors symbackprop raises on purpose; the CLI maps each to an exit code and one line on stderr."""

import difflib
import re
import unicodedata
from collections.abc import Iterable

# Unicode categories of characters that can break a line (or a comment, a paragraph), or cannot be encoded.
LINE_BREAKING = ("Cc", "Cs", "Zl", "Zp")


def one_line(text: str) -> str:
    """``text`` with line breaks and other control characters written as Python escapes (``\\n``, ``\\x1e``)."""
    return "".join(ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) in LINE_BREAKING
                   else ch for ch in text)


def suggestion(word, choices: Iterable[str]) -> str | None:
    """The choice ``word`` most likely meant: the one equal to it ignoring case, else the closest spelling."""
    if not isinstance(word, str) or not word:
        return None
    folded = {choice.casefold(): choice for choice in choices}
    if word.casefold() in folded:
        return folded[word.casefold()]
    close = difflib.get_close_matches(word.casefold(), list(folded), n=1)
    return folded[close[0]] if close else None


def allowed(word, choices: Iterable[str]) -> str:
    """'allowed: a, b, c', plus "; did you mean 'b'?" when ``word`` is a near miss (case ignored)."""
    choices = list(choices)
    guess = suggestion(word, choices)
    return "allowed: " + ", ".join(choices) + (f"; did you mean {guess!r}?" if guess else "")


class SymbackpropError(Exception):
    """Base class: a problem the user can fix, reported without a traceback."""

    exit_code = 2


class SpecError(SymbackpropError):
    """A spec that cannot be read or does not describe a supported network."""

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None):
        self.message = message
        self.source = source
        self.key = key
        # A key path into ``layers`` also names the layer as every output counts them, from 1.
        layer = re.match(r"layers\[(\d+)\]", key or "")
        shown = f"{key} (layer {int(layer.group(1)) + 1})" if layer else key
        where = ": ".join(part for part in (source, shown) if part)
        super().__init__(f"{where}: {message}" if where else message)


class InputFileError(SymbackpropError):
    """A file the user named (spec, claims) that cannot be read: missing, not a regular file, too large, not
    UTF-8. ``reason`` is the message without the file name, for callers that name the file their own way."""

    def __init__(self, path: str, reason: str):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: {reason}")


class OutputError(SymbackpropError):
    """An output file that cannot be written (exists without --force, bad directory, ...)."""


class VerificationError(SymbackpropError):
    """A formula that direct differentiation contradicts."""

    exit_code = 1


class FormatError(SymbackpropError):
    """A network that an output format cannot express yet (a layer kind the PyTorch or JAX code lacks)."""
