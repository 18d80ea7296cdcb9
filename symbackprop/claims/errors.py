"""The one error a claim can raise: it cannot be read (or a claims file cannot be)."""

from __future__ import annotations

from ..errors import SymbackpropError


class ClaimError(SymbackpropError):
    """A claim that cannot be parsed or names something the network does not have.

    ``column`` (1-based, within the claim) says where, when known; ``message`` is the text without it.
    """

    def __init__(self, message: str, *, column: int | None = None):
        self.message, self.column = message, column
        super().__init__(f"column {column}: {message}" if column else message)
