"""The output formats and languages, in a module of their own so that the CLI can check its output targets
before importing anything slow (SymPy comes in with the renderer)."""

# Format name -> (template, file written by `derive`).
FORMATS = {
    "markdown": ("backprop.md.j2", "backprop.md"),
    "latex": ("backprop.tex.j2", "backprop.tex"),
    "numpy": ("backprop.py.j2", "backprop.py"),
    "beamer": ("backprop_slides.tex.j2", "backprop_slides.tex"),
    "ipynb": (None, "backprop.ipynb"),  # built by notebook.py with nbformat, not by a template
}
# Short names accepted on the command line.
ALIASES = {"md": "markdown", "tex": "latex", "py": "numpy"}
LANGUAGES = ("en", "ko")
