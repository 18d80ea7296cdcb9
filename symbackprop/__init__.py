"""symbackprop: symbolic, verified backpropagation derivations for feed-forward networks.

``derive(spec)`` turns a network spec into a :class:`~symbackprop.derive.Derivation` whose formulas are
checked against direct differentiation (``.verify()``) and rendered as Markdown, LaTeX or NumPy
(``.render(fmt)``). SymPy is imported on first use, so ``import symbackprop`` stays cheap.
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
