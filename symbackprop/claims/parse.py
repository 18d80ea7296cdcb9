"""Read a claim in either notation into a ``Claim`` (see ``syntax.py``)."""

from __future__ import annotations

from .errors import ClaimError
from .latex_syntax import LatexParser
from .numpy_syntax import NumPyParser
from .syntax import Claim

MAX_CLAIM_LENGTH = 10_000


def parse(text: str, context, latex: bool) -> Claim:
    """Parse one claim about ``context``'s network (``context``: ``.names``, ``.local_factor(of, wrt)``)."""
    if len(text) > MAX_CLAIM_LENGTH:
        raise ClaimError(f"the claim is longer than {MAX_CLAIM_LENGTH} characters")
    parser = (LatexParser if latex else NumPyParser)(text, context)
    return parser.claim()
