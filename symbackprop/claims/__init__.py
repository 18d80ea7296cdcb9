"""Check backprop formulas people write ("claims") against the derivation, and say why a wrong one is wrong.

A claim is ``dL/d<name> = <formula>`` (a gradient; also ``dW2 = ...``, ``delta2 = ...``) or ``d<of>/d<wrt> =
<factor>`` (a local gradient), in NumPy-like code as the courses write it (``dW2 = np.dot(dZ2, A1.T)``,
``dZ1 = np.dot(W2.T, dZ2) * (1 - np.power(A1, 2))``) or in LaTeX (``\\frac{\\partial L}{\\partial W^{[1]}} =
X^\\top \\delta^{[1]}``, ``\\delta^l = ((w^{l+1})^T \\delta^{l+1}) \\odot \\sigma'(z^l)``). The pipeline:

- ``sources``: claims from text and files (line numbers, a size limit);
- ``names``: which network quantity a word means, read from the network (with the courses' aliases);
- ``parse``: either notation (``numpy_syntax``, ``latex_syntax``, sharing ``syntax``) into one tree
  (``tree``), every problem a ``ClaimError`` with a column;
- ``shapes``: NumPy's shape rules, at symbolic sizes and at the spec's;
- ``operators``: the windows of the image operators a claim calls (``col2im``, ``unfold``), from the derivation;
- ``semantics``: exact values (integers modulo a prime, with the activations' identities built in);
- ``verdict``: the ``Checker``, which compares a claim with the derivation and explains the verdict
  (``explain``).
"""

from .errors import ClaimError
from .sources import (
                      MAX_FILE_BYTES,
                      Source,
                      claims_from_text,
                      latex_claims_from_text,
                      numbered_claims,
                      numbered_latex_claims,
                      read_claims_file,
)
from .syntax import Claim
from .verdict import Checker, Verdict, check, exit_code

__all__ = ["MAX_FILE_BYTES", "Checker", "Claim", "ClaimError", "Source", "Verdict", "check", "claims_from_text",
           "exit_code", "latex_claims_from_text", "numbered_claims", "numbered_latex_claims", "read_claims_file"]
