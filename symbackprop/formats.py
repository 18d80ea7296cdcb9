"""The output formats and languages, in a module of their own so that the CLI can check its output targets
before importing anything slow (SymPy comes in with the renderer)."""

# Format name -> (template, file written by `derive`).
FORMATS = {
    "markdown": ("backprop.md.j2", "backprop.md"),
    "latex": ("backprop.tex.j2", "backprop.tex"),
    "numpy": ("backprop.py.j2", "backprop.py"),
    "beamer": ("backprop_slides.tex.j2", "backprop_slides.tex"),
    "ipynb": (None, "backprop.ipynb"),  # built by notebook.py with nbformat, not by a template
    "torch": ("backprop_torch.py.j2", "backprop_torch.py"),
    "jax": ("backprop_jax.py.j2", "backprop_jax.py"),
}
# Formats whose module runs on a framework (PyTorch, JAX) that symbackprop does not install: `all` leaves them
# out, so that it writes only what runs with the core's dependencies; name them to get them.
FRAMEWORK_FORMATS = ("torch", "jax")
# The base name of the files `derive` writes (``--name`` changes it).
DEFAULT_NAME = "backprop"
# Formats whose file pdflatex can compile (``--pdf``).
TEX_FORMATS = ("latex", "beamer")
# Formats of a forward pass written as code (``derive --forward``).
FORWARD_FORMATS = ("markdown", "latex", "numpy", "beamer", "ipynb")
# Short names accepted on the command line.
ALIASES = {"md": "markdown", "tex": "latex", "py": "numpy"}
LANGUAGES = ("en", "ko")


def file_name(fmt: str, name: str = DEFAULT_NAME, suffix: str | None = None) -> str:
    """The file ``derive`` writes for ``fmt`` under the base name ``name`` (``week3_slides.tex``); with
    ``suffix`` another extension (``.pdf``)."""
    default = FORMATS[fmt][1]
    stem, extension = default.rsplit(".", 1)
    return name + stem[len(DEFAULT_NAME):] + (suffix or "." + extension)
