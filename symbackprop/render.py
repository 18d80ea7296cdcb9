"""Derivation (+ Report) -> text: printers make the math and code strings, Jinja2 templates lay them out.

Templates hold layout only; every sentence comes from a translation catalog (``templates/text/<lang>.toml``)
and every piece of user text (the title) passes the escaping filter of its target.
"""

from __future__ import annotations

import re
import tomllib
import unicodedata
from functools import cache
from importlib import resources

import jinja2
import sympy as sp

from . import formula
from .errors import LINE_BREAKING, one_line
from .expressions import Elementwise
from .lecture import lecture_context
from .printing import function_name, latex, latex_name, numpy_code, shape_latex, shape_text, text, text_name
from .rules import LOSSES, activation_rule

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

_TEX_SPECIALS = {
    "\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#", "%": r"\%",
    "_": r"\_", "^": r"\^{}", "~": r"\~{}", "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
    # The math symbols our own plain-text formulas use (verification details), which pdflatex lacks as text.
    "δ": r"$\delta$", "ᵀ": r"$^{T}$", "⊙": r"$\odot$", "∂": r"$\partial$", "≤": r"$\le$", "×": r"$\times$",
    "σ": r"$\sigma$", "α": r"$\alpha$", "′": "'",
}


def _breaks_line(ch: str) -> bool:
    return unicodedata.category(ch) in LINE_BREAKING


def tex_escape(value: str) -> str:
    """User text made inert in LaTeX: every special character printed literally, all on one line.

    With every backslash escaped no control sequence (``\\input``, ``\\write18``) can be formed, and ``^``
    is escaped too, so neither can TeX's ``^^5c`` notation for a backslash.
    """
    return "".join(" " if _breaks_line(ch) else _TEX_SPECIALS.get(ch, ch) for ch in str(value))


def md_escape(value: str) -> str:
    """User text made inert in Markdown (no emphasis, links, HTML, entities or math), all on one line."""
    line = "".join(" " if _breaks_line(ch) else ch for ch in str(value))
    return re.sub(r"([\\`*_{}\[\]()#+\-.!|<>$~&])", r"\\\1", line)


def py_comment(value: str) -> str:
    """User text safe inside a Python docstring (whose value is then exactly the text) or a comment line.

    Backslashes and double quotes are escaped, so the text can neither end the string nor form an escape;
    line breaks and other control characters become escapes, so it cannot leave a comment line either.
    """
    return one_line(str(value).replace("\\", "\\\\").replace('"', '\\"'))


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resources.files("symbackprop.templates"))),
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters.update(tex=tex_escape, md=md_escape, pycomment=py_comment, pystr=repr)
    return env


@cache
def catalog(lang: str) -> dict:
    """The translation catalog for ``lang``: every sentence the templates print."""
    if lang not in LANGUAGES:
        raise ValueError(f"unknown language {lang!r}; choose from {', '.join(LANGUAGES)}")
    return tomllib.loads(resources.files("symbackprop.templates").joinpath(f"text/{lang}.toml").read_text("utf-8"))


def render(derivation, fmt: str, *, lang: str = "en", report=None, batch: int = 64) -> str:
    """Render ``derivation`` in ``fmt`` (a name of ``FORMATS`` or ``ALIASES``).

    ``batch`` is the batch size of the memory table in the lecture formats."""
    fmt = ALIASES.get(fmt, fmt)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if report is None and fmt != "numpy":
        report = derivation.verify()
    if fmt == "ipynb":
        from .notebook import notebook

        return notebook(derivation, lang=lang, report=report, batch=batch)
    template = _environment().get_template(FORMATS[fmt][0])
    return template.render(**context(derivation, lang=lang, report=report, batch=batch))


def _chain(step) -> str:
    """The chain-rule product behind a backward step, its local factor labelled: ``a^{[2]T} \\delta^{[3]}``."""
    if step.upstream is None:
        return ""
    local = step.local
    factor = rf"\underbrace{{{latex(local.expr)}}}_{{\partial {latex_name(local.of)} / \partial {latex_name(local.wrt)}}}"
    upstream = latex_name(f"d{step.upstream}")
    return {"left": f"{factor} \\, {upstream}", "right": f"{upstream} \\, {factor}",
            "elementwise": rf"{upstream} \odot {factor}"}[local.side]


def _product_and_bias(expr, sizes) -> dict:
    """A linear step's code in two parts, so the module adds the bias in place: ``Z = A @ W``; ``Z += b``."""
    product, bias = sorted(expr.args, key=lambda term: term.has(sp.OneMatrix))
    return {"product": numpy_code(product, sizes), "bias": numpy_code(bias, sizes)}


def _kept_local_gradient(activation, local_gradients: dict, sizes: dict) -> dict:
    """For an activation whose derivative the forward pass keeps: the variable, its code and its formula."""
    if activation.arg not in local_gradients:
        return {}
    derivative = type(activation)(activation.activation, activation.arg, 1, tuple(activation.params.items()))
    name = local_gradients[activation.arg]
    return {"local_gradient": {"name": name, "code": numpy_code(derivative, sizes), "text": text(derivative),
                               "text_lhs": "∂{}/∂{}".format(*name[1:].split("_d", 1))}}


def custom_activations(network, t: dict) -> list[dict]:
    """The derivation step of each custom activation the network uses: the formula, its derivative worked
    out by SymPy and simplified, kinks, the form in the output; comments for the NumPy helpers."""
    steps = []
    for key in dict.fromkeys(layer.activation for layer in network.spec.layers):
        rule = activation_rule(key)
        d = rule.derivation
        if d is None:
            continue
        node, grad = Elementwise(key, network.symbol("Z1"), 0), Elementwise(key, network.symbol("Z1"), 1)
        f, otherwise = rule.latex, t["custom_otherwise"]
        worked, simplified = formula.latex(d.worked, otherwise), formula.latex(d.simplified, otherwise)
        named = [form for function, form in ((formula.sigmoid, r"\sigma\left(u\right) = \frac{1}{1 + e^{-u}}"), (
            formula.softplus, r"\operatorname{softplus}\left(u\right) = \log\left(1 + e^{u}\right)"))
            if d.simplified.has(function)]
        definition = next(c for c in network.spec.activations if c.key == key)
        values = ", ".join(f"{name} = {value}" for name, value in d.parameters)
        lines = [f"{rule.name}(z) = {definition.forward}" + (f", with {values}" if values else ""),
                 f"{rule.name}'(z) = {formula.text(d.worked)}"]
        if simplified != worked:
            lines.append(f"{' ' * len(rule.name)}    = {formula.text(d.simplified)}")
        if d.kinks:
            lines.append(f"{rule.name}'(z) = {rule.grad_at_kinks} at z = {', '.join(map(str, d.kinks))} (grad_at_kinks)")
        comments = {function_name(node): lines[0], function_name(grad): f"{rule.name}'(z) = {formula.text(d.simplified)}"}
        if d.from_output is not None:
            comments[function_name(grad, from_output=True)] = (
                f"{rule.name}'(z) = {formula.text(d.from_output)} with a = {rule.name}(z) (proved by SymPy)")
        steps.append({
            "name": rule.name, "latex": f,
            "formula": rf"{f}\left(z\right) = {formula.latex(d.formula, otherwise)}",
            "parameters": r", \quad ".join(f"{formula.latex(sp.Symbol(name))} = {value}" for name, value in d.parameters),
            "worked": rf"{f}'\left(z\right) = {worked}",
            "simplified": rf"{f}'\left(z\right) = {simplified}" if simplified != worked else "",
            "named": r", \quad ".join(named),
            "kinks": t["custom_kinks"].format(points=", ".join(map(str, d.kinks)), value=rule.grad_at_kinks)
                     if d.kinks else "",
            "from_output": (rf"{f}'\left(z\right) = {formula.latex(d.from_output)}, \quad a = {f}\left(z\right)"
                            if d.from_output is not None else ""),
            "text": lines, "comments": comments,
            "numpy": [t[f"numpy_note_{name}"] for name in d.numpy_notes],
        })
    return steps


def context(derivation, *, lang: str = "en", report=None, batch: int = 64) -> dict:
    """Everything the templates need, as printed strings (``batch``: the memory table's batch size)."""
    net = derivation.network
    spec = net.spec
    sizes = dict(zip(net.widths, spec.sizes))
    code_sizes = {**sizes, net.N: "N"}
    t = catalog(lang)
    loss_rule = LOSSES[spec.loss.kind]

    layers = []
    for l, layer in enumerate(spec.layers, start=1):
        layers.append({
            "index": l, "size": layer.size, "activation": activation_rule(layer.activation).name,
            "latex": activation_rule(layer.activation).latex, "params": layer.params,
            "output": net.activation_name(l), "input": net.layer_input(l),
        })
    # Derivatives written in the output (sigmoid: a (1 - a)) reuse the activation the forward pass kept; the
    # others (relu's mask, ...) are local gradients the forward pass computes and keeps instead of Z.
    outputs = {net.symbol(f"Z{l}"): net.activation_name(l) for l in range(1, net.depth + 1)}
    local_gradients = {
        net.symbol(f"Z{l}"): f"d{net.activation_name(l)}_dZ{l}" for l, layer in enumerate(spec.layers, start=1)
        if layer.activation != "identity" and not activation_rule(layer.activation).numpy_derivative_from_output}
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
            **(_product_and_bias(step.expr, code_sizes) if step.kind == "linear" else {}),
            **(_kept_local_gradient(step.expr, local_gradients, code_sizes) if step.kind == "activation" else {}),
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
            "text": text(step.expr),
            "code": numpy_code(step.expr, code_sizes, outputs, in_place=True, local_gradients=local_gradients),
            "text_lhs": text_name(step.symbol.name),
            "chain": _chain(step),
        })
    helpers = {}  # function name -> (argument, NumPy expression): forward, and the derivative backward calls
    for step in net.steps:
        if step.kind == "activation" and step.expr.activation != "identity":
            node, rule = step.expr, activation_rule(step.expr.activation)
            helpers[function_name(node)] = ("z", rule.numpy(0, node.params, z="z"))
            grad = type(node)(node.activation, node.arg, 1, tuple(node.params.items()))
            from_output = rule.numpy_from_output(node.params, a="a")
            helpers[function_name(grad, from_output=bool(from_output))] = (
                ("a", from_output) if from_output else ("z", rule.numpy(1, node.params, z="z")))
    # The forward pass keeps only what a backward line reads.
    cached = [name for name in [spec.input.name, *(s.name for s in net.steps if s.kind != "loss"),
                                *local_gradients.values()]
              if any(re.search(rf"\b{re.escape(name)}\b", step["code"]) for step in backward)]
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
        "helpers": helpers, "cached": cached,
        "backward_params": [name for name in net.inputs if name[0] in "Wb" and name[1:].isdigit()
                            and any(re.search(rf"\b{name}\b", step["code"]) for step in backward)],
        "uses_batch_size": any(re.search(r"\bN\b", step["code"]) for step in backward),
        "needs_erf": any(activation_rule(layer.activation).needs_erf for layer in spec.layers),
        "needs_sigmoid": spec.loss.kind == "bce_logits",
        "needs_softmax": spec.loss.kind == "softmax_cross_entropy",
        "updates": [{"name": name, "param": latex_name(name), "grad": latex_name(f"d{name}")}
                    for name in net.inputs if name[0] in "Wb" and name[1:].isdigit()],
        "custom_activations": (custom := custom_activations(net, t)),
        "helper_comments": {name: line for step in custom for name, line in step["comments"].items()},
        "custom_numpy": list(dict.fromkeys(note for step in custom for note in step["numpy"])),
        **lecture_context(derivation, batch),
    }
