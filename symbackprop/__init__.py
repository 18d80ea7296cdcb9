"""symbackprop: symbolic, verified backpropagation derivations for feed-forward networks.

``derive(spec)`` turns a network spec (a preset name such as ``"seed"``, a TOML path, a dict, or a ``Spec``
from ``load_spec``) into a :class:`~symbackprop.derivation.Derivation` whose formulas are checked against
direct differentiation (``.verify()``) and rendered as Markdown, LaTeX, Beamer, NumPy or a notebook
(``.render(fmt)``). SymPy is imported on first use, so ``import symbackprop`` stays cheap.
``python -m symbackprop`` runs the command line.
"""

__version__ = "0.1.0"
__all__ = ["check", "derive", "grade", "load_spec", "seed_spec"]


def __getattr__(name):
    if name == "derive":
        from .derivation import derive

        return derive
    if name in ("load_spec", "seed_spec"):
        from . import spec

        return getattr(spec, name)
    if name == "check":
        from .claims import check

        return check
    if name == "grade":
        from .grading import grade

        return grade
    raise AttributeError(f"module 'symbackprop' has no attribute {name!r}")
