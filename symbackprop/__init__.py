"""symbackprop: symbolic, verified backpropagation derivations for feed-forward networks.

``derive(spec)`` turns a network spec (a preset name such as ``"seed"``, a TOML path, a dict, or a ``Spec``
from ``load_spec``) into a :class:`~symbackprop.derivation.Derivation` whose formulas are checked against
direct differentiation (``.verify()``) and rendered as Markdown, LaTeX, Beamer, NumPy or a notebook
(``.render(fmt)``). SymPy is imported on first use, so ``import symbackprop`` stays cheap.
``python -m symbackprop`` runs the command line.
"""

__version__ = "0.1.0"
__all__ = ["Checker", "Grader", "LectureOptions", "check", "derive", "grade", "load_spec", "render", "seed_spec"]

# name -> (module, attribute): imported on first use, so that ``import symbackprop`` stays cheap.
_LAZY = {"derive": ("derivation", "derive"), "load_spec": ("spec", "load_spec"), "seed_spec": ("spec", "seed_spec"),
         "check": ("claims", "check"), "Checker": ("claims", "Checker"), "grade": ("grading", "grade"),
         "Grader": ("grading", "Grader"), "render": ("rendering", "render"), "LectureOptions": ("lecture", "LectureOptions")}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'symbackprop' has no attribute {name!r}")
    import importlib

    module, attribute = _LAZY[name]
    return getattr(importlib.import_module(f".{module}", __name__), attribute)
