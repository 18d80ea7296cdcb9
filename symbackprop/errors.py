"""Errors symbackprop raises on purpose; the CLI maps each to an exit code and one line on stderr."""

import unicodedata

# Unicode categories of characters that can break a line (or a comment, a paragraph), or cannot be encoded.
LINE_BREAKING = ("Cc", "Cs", "Zl", "Zp")


def one_line(text: str) -> str:
    """``text`` with line breaks and other control characters written as Python escapes (``\\n``, ``\\x1e``)."""
    return "".join(ch.encode("unicode_escape").decode("ascii") if unicodedata.category(ch) in LINE_BREAKING
                   else ch for ch in text)


class SymbackpropError(Exception):
    """Base class: a problem the user can fix, reported without a traceback."""

    exit_code = 2


class SpecError(SymbackpropError):
    """A spec that cannot be read or does not describe a supported network."""

    def __init__(self, message: str, *, source: str | None = None, key: str | None = None):
        self.message = message
        self.source = source
        self.key = key
        where = ": ".join(part for part in (source, key) if part)
        super().__init__(f"{where}: {message}" if where else message)


class OutputError(SymbackpropError):
    """An output file that cannot be written (exists without --force, bad directory, ...)."""


class VerificationError(SymbackpropError):
    """A formula that direct differentiation contradicts."""

    exit_code = 1
