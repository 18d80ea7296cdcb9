"""Derivation (+ Report) -> text: printers make the math and code strings, Jinja2 templates lay them out.

Templates hold layout only; every sentence comes from a translation catalog (``templates/text/<lang>.toml``)
and every piece of user text (the title) passes the escaping filter of its target.
"""

from __future__ import annotations

import re
import tomllib
from functools import lru_cache
from importlib import resources

import jinja2

from .printing import function_name, latex, latex_name, numpy_code, shape_latex, shape_text, text, text_name
from .rules import ACTIVATIONS, LOSSES

# Format name -> (template, file written by `derive`).
FORMATS = {
    "markdown": ("backprop.md.j2", "backprop.md"),
    "latex": ("backprop.tex.j2", "backprop.tex"),
    "numpy": ("backprop.py.j2", "backprop.py"),
}
# Short names accepted on the command line.
ALIASES = {"md": "markdown", "tex": "latex", "py": "numpy"}
LANGUAGES = ("en", "ko")

_TEX_SPECIALS = {
    "\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#", "%": r"\%",
    "_": r"\_", "^": r"\^{}", "~": r"\~{}",
}


def tex_escape(value: str) -> str:
    """User text made inert in LaTeX: every special character printed literally."""
    return "".join(_TEX_SPECIALS.get(ch, ch) for ch in str(value))


def md_escape(value: str) -> str:
    """User text made inert in Markdown (no emphasis, links, HTML or math)."""
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>$~])", r"\\\1", str(value))


def py_comment(value: str) -> str:
    """User text safe inside a Python comment or docstring line."""
    return str(value).replace("\\", "\\\\").replace('"""', "'''")


@lru_cache(maxsize=None)
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resources.files("symbackprop.templates"))),
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters.update(tex=tex_escape, md=md_escape, pycomment=py_comment, pystr=repr)
    return env


@lru_cache(maxsize=None)
def catalog(lang: str) -> dict:
    """The translation catalog for ``lang``: every sentence the templates print."""
    if lang not in LANGUAGES:
        raise ValueError(f"unknown language {lang!r}; choose from {', '.join(LANGUAGES)}")
    return tomllib.loads(resources.files("symbackprop.templates").joinpath(f"text/{lang}.toml").read_text("utf-8"))


def render(derivation, fmt: str, *, lang: str = "en", report=None) -> str:
    """Render ``derivation`` in ``fmt`` (``markdown``, ``latex`` or ``numpy``; ``md``/``tex``/``py`` too)."""
    fmt = ALIASES.get(fmt, fmt)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if report is None and fmt != "numpy":
        report = derivation.verify()
    template = _environment().get_template(FORMATS[fmt][0])
    return template.render(**context(derivation, lang=lang, report=report))


def context(derivation, *, lang: str = "en", report=None) -> dict:
    """Everything the templates need, as printed strings."""
    net = derivation.network
    spec = net.spec
    sizes = dict(zip(net.widths, spec.sizes))
    code_sizes = {**sizes, net.N: "N"}
    t = catalog(lang)
    loss_rule = LOSSES[spec.loss.kind]

    layers = []
    for l, layer in enumerate(spec.layers, start=1):
        layers.append({
            "index": l, "size": layer.size, "activation": layer.activation,
            "latex": ACTIVATIONS[layer.activation].latex, "params": layer.params,
            "output": net.activation_name(l), "input": net.layer_input(l),
        })
    forward = []
    for step in net.steps:
        is_loss = step.kind == "loss"
        forward.append({
            "name": step.name, "kind": step.kind, "layer": step.layer,
            "lhs": "L" if is_loss else latex_name(step.name), "rhs": latex(step.expr),
            "shape": "1 \\times 1" if is_loss else shape_latex(step.symbol.shape),
            "shape_text": "scalar" if is_loss else shape_text(step.symbol.shape),
            "text": "" if is_loss else text(step.expr),
            "code": "" if is_loss else numpy_code(step.expr, code_sizes),
        })
    local = [{
        "of": "L" if lg.of == "L" else latex_name(lg.of), "wrt": latex_name(lg.wrt), "expr": latex(lg.expr),
        "side": lg.side, "layer": lg.layer,
    } for lg in derivation.local_gradients]
    backward = []
    for step in derivation.backward:
        backward.append({
            "name": step.name, "symbol": step.symbol.name, "layer": step.layer,
            "lhs": latex_name(step.symbol.name), "rhs": latex(step.expr),
            "upstream": latex_name(f"d{step.upstream}") if step.upstream else "",
            "local": latex(step.local.expr), "side": step.local.side,
            "local_of": "L" if step.local.of == "L" else latex_name(step.local.of),
            "local_wrt": latex_name(step.local.wrt),
            "shape": shape_latex(step.shape), "shape_text": shape_text(step.shape),
            "text": text(step.expr), "code": numpy_code(step.expr, code_sizes),
            "text_lhs": text_name(step.symbol.name),
        })
    helpers = {}
    for step in net.steps:
        if step.kind == "activation" and step.expr.activation != "identity":
            for order in (0, 1):
                node = type(step.expr)(step.expr.activation, step.expr.arg, order, tuple(step.expr.params.items()))
                helpers[function_name(node)] = ACTIVATIONS[node.activation].numpy(order, node.params, z="z")
    relu_layers = [layer for layer in layers if layer["activation"] == "relu"]
    return {
        "t": t, "lang": lang, "title": spec.title, "spec": spec, "layers": layers, "forward": forward,
        "local": local, "backward": backward, "report": report,
        "layout": spec.layout, "batch_first": net.batch_first, "input_name": spec.input.name,
        "input_latex": latex_name(spec.input.name),
        "sizes": list(spec.sizes), "sizes_literal": repr(tuple(spec.sizes)), "depth": net.depth,
        "loss": {"kind": loss_rule.name, "latex": loss_rule.latex, "reduction": loss_rule.reduction,
                 "numpy": loss_rule.numpy_value, "distributions": loss_rule.targets_are_distributions},
        "relu_at_zero": sorted({layer["params"]["relu_grad_at_zero"] for layer in relu_layers}),
        "helpers": helpers,
        "uses_batch_size": any(re.search(r"\bN\b", step["code"]) for step in backward),
        "needs_erf": any(ACTIVATIONS[layer.activation].needs_erf for layer in spec.layers),
        "needs_sigmoid": spec.loss.kind == "bce_logits",
        "needs_softmax": spec.loss.kind == "softmax_cross_entropy",
        "updates": [{"name": name, "param": latex_name(name), "grad": latex_name(f"d{name}")}
                    for name in net.inputs if name[0] in "Wb" and name[1:].isdigit()],
    }
