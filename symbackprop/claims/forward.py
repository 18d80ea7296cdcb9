"""Check claims about a forward pass written as code (``check --forward FILE.py``): ``dlogprobs = ...`` judged
against the derivation of the file's own forward pass, with the same exact judge as a spec's claims.

The names are the file's (inputs, parameters and assigned names; ``d<name>`` their gradients; ``N``/``n``/``m``
the batch, the rows of the first data input), and the claims are judged at the witness sizes of the exact proof
(small and distinct, so that no factor fits by accident).
"""

from __future__ import annotations

import dataclasses

from .verdict import Checker


@dataclasses.dataclass(frozen=True)
class _Loss:
    """The loss of a forward pass written as code: its own last line, with no loss rule, scaling or L2 term."""

    kind: str
    rule: None = None
    reduction: str = "as written"
    scale: float = 1.0
    l2: float = 0.0


@dataclasses.dataclass(frozen=True)
class _CodeSpec:
    """What the claim checker reads from a spec, for a forward pass written as code."""

    path: str
    function: str
    sizes: tuple
    loss: _Loss
    layout: str = "batch-first"
    layers: tuple = ()
    activations: tuple = ()


class CodeChecker(Checker):
    """Checks claims about the forward pass ``function`` in the Python file ``path`` (never executed)."""

    def __init__(self, path, function: str = "forward", sizes=None):
        from ..forward_code import derive_forward

        derivation = derive_forward(path, function, sizes)
        net = derivation.network
        witness = net.sizes()
        spec = _CodeSpec(str(path), function, tuple(witness[w] for w in net.widths),
                         _Loss(f"{net.loss_name} (the last line of {function}())"))
        network = dataclasses.replace(net, spec=spec)
        super().__init__(derivation=dataclasses.replace(derivation, network=network, _reports={}))

    def _forward(self, claim) -> tuple:
        """The loss as a 1 x 1 matrix is its last line's expression (the spec's loss has a ``definition``; the
        file's loss is exactly what its last line computes)."""
        if claim.wrt == "L":
            loss = self.network.steps[-1].expr.arg
            return loss, loss
        return super()._forward(claim)

    def _factor_reason(self, claim, target, factor) -> tuple[str, str]:
        """A claim off by a loss scaling is a wrong value here, not another convention: the file's loss is
        exactly what its last line computes."""
        reason, detail = super()._factor_reason(claim, target, factor)
        if reason != "convention":
            return reason, detail
        spec = self.network.spec
        return "value", (f"the claim is {str(factor).replace('*', ' ')} times {target.label}; the loss is "
                         f"{self.network.loss_name} exactly as {spec.function}() computes it")
