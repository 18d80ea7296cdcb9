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
from .codegen import module_context
from .errors import LINE_BREAKING, one_line
from .expressions import Elementwise
from .formats import ALIASES, FORMATS, LANGUAGES
from .lecture import LectureOptions, lecture_context
from .mathsize import measure
from .printing import latex, latex_name, shape_latex, shape_text, text, text_name
from .rules import TRAINABLE_ACTIVATIONS, activation_rule, loss_rule
from .slides import display, plan, side_by_side
from .tex_text import tex_escape

# The width (pt) of the article's local-gradient column; a wider formula gets a row of its own.
LOCAL_TABLE_WIDTH = 170
# Formats that carry the lecture material (worked example, memory table, notation, verification table).
LECTURE_FORMATS = ("markdown", "latex", "beamer")


def _breaks_line(ch: str) -> bool:
    return unicodedata.category(ch) in LINE_BREAKING


@jinja2.pass_context
def _tex_filter(context, value) -> str:
    """The templates' ``tex`` filter: Korean documents load kotex, so Hangul and hanja stay as they are."""
    return tex_escape(value, korean=context.get("lang") == "ko")


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


def _tex_code(sentence: str) -> str:
    """A sentence for LaTeX: its `code` spans (identifiers such as a layout's name) as escaped \\texttt."""
    return re.sub(r"`([^`]*)`", lambda code: rf"\texttt{{{tex_escape(code.group(1))}}}", sentence)


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(resources.files("symbackprop.templates"))),
        undefined=jinja2.StrictUndefined, autoescape=False, keep_trailing_newline=True,
        trim_blocks=True, lstrip_blocks=True,
    )
    env.filters.update(tex=_tex_filter, md=md_escape, pycomment=py_comment, pystr=repr, display=display,
                       tex_code=_tex_code, side_by_side=side_by_side)
    return env


@cache
def catalog(lang: str) -> dict:
    """The translation catalog for ``lang``: every sentence the templates print."""
    if lang not in LANGUAGES:
        raise ValueError(f"unknown language {lang!r}; choose from {', '.join(LANGUAGES)}")
    return tomllib.loads(resources.files("symbackprop.templates").joinpath(f"text/{lang}.toml").read_text("utf-8"))


def render(derivation, fmt: str, *, lang: str = "en", report=None, batch: int = 64,
           options: LectureOptions | None = None) -> str:
    """Render ``derivation`` in ``fmt`` (a name of ``FORMATS`` or ``ALIASES``).

    ``batch`` is the batch size of the memory table in the lecture formats; ``options`` are the lecturer's
    choices (title page, handout deck, the worked example's seed)."""
    fmt = ALIASES.get(fmt, fmt)
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; choose from {', '.join(FORMATS)}")
    if report is None and fmt != "numpy":
        report = derivation.verify()
    options = options or LectureOptions()
    if fmt == "ipynb":
        from .notebook import notebook

        return notebook(derivation, lang=lang, report=report, batch=batch, options=options)
    ctx = context(derivation, lang=lang, report=report, batch=batch)
    if fmt in LECTURE_FORMATS:
        ctx.update(lecture_context(derivation, t=ctx["t"], lang=lang, report=report, batch=batch,
                                   options=options))
    if fmt == "beamer":
        ctx["deck"] = plan(ctx, derivation, ctx["t"])
    return _environment().get_template(FORMATS[fmt][0]).render(**ctx)


def _chain(step) -> str:
    """The chain-rule product behind a backward step, each local factor labelled: ``a^{[2]T} \\delta^{[3]}``;
    a value read by several steps gets the sum of their contributions."""
    parts = [_chain_term(term) for term in step.terms]
    return "" if not all(parts) else " + ".join(parts)


def _chain_term(term) -> str:
    if term.upstream is None:
        return ""
    local = term.local
    upstream = latex_name(f"d{term.upstream}")
    if local.side in ("identity", "vjp"):
        return latex(term.expr) if local.side == "vjp" else upstream
    factor = rf"\underbrace{{{latex(local.expr)}}}_{{\partial {latex_name(local.of)} / \partial {latex_name(local.wrt)}}}"
    return {"left": f"{factor} \\, {upstream}", "right": f"{upstream} \\, {factor}",
            "elementwise": rf"{upstream} \odot {factor}"}[local.side]


def _layer_entry(net, l: int, layer) -> dict:
    """One row of the layer table: kind, width, activation (dense) and the printed names."""
    activation = layer.activation or ""
    latex_activation = (TRAINABLE_ACTIVATIONS.get(activation) or activation_rule(activation).latex) if activation else ""
    if activation and activation not in TRAINABLE_ACTIVATIONS:
        activation = activation_rule(activation).name  # a custom activation's own name, not its key
    return {"index": l, "kind": layer.kind, "size": net.spec.sizes[l], "activation": activation,
            "latex": latex_activation, "params": layer.params,
            "output": net.activation_name(l), "input": net.layer_input(l)}


def _loss_context(derivation, t) -> dict:
    """The loss's printed forms: its formula, and a sentence naming its rule, reduction, scale and penalty."""
    net = derivation.network
    settings = net.spec.loss
    rule = loss_rule(settings)
    parts = [t[f"loss_{rule.name}"], t[f"reduction_{settings.reduction}"]]
    if settings.scale != 1:
        parts.append(t["loss_scale"].format(scale=f"{settings.scale:g}"))
    if settings.l2:
        parts.append(t[f"l2_{settings.l2_scale}"].format(l2=f"{settings.l2:g}"))
    english = catalog("en")
    summary = [english[f"loss_{rule.name}"], english[f"reduction_{settings.reduction}"]]
    if settings.scale != 1:
        summary.append(english["loss_scale"].format(scale=f"{settings.scale:g}"))
    if settings.l2:
        summary.append(english[f"l2_{settings.l2_scale}"].format(l2=f"{settings.l2:g}"))
    return {"kind": settings.kind, "rule": rule.name, "latex": latex(net.steps[-1].expr),
            "reduction": "; ".join(parts), "summary": "; ".join(summary),
            "distributions": any(alt.assumes for step in derivation.backward for alt in step.alternatives),
            "targets": rule.targets}


def custom_activations(network, t: dict) -> list[dict]:
    """The derivation step of each custom activation the network uses: the formula, its derivative worked
    out by SymPy and simplified, kinks, the form in the output; comments for the NumPy helpers."""
    steps = []
    applied = [node.activation for step in network.steps for node in sorted(step.expr.atoms(Elementwise), key=str)]
    for key in dict.fromkeys(applied):
        rule = activation_rule(key)
        d = rule.derivation
        if d is None:
            continue
        node = Elementwise(key, network.inputs[network.input_name], 0)
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
        # Keyed like the module's helpers: (function key, order, written with the output).
        comments = {(node.key, 0, False): lines[0], (node.key, 1, False): f"{rule.name}'(z) = {formula.text(d.simplified)}"}
        if d.from_output is not None:
            comments[node.key, 1, True] = (
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
    t = catalog(lang)
    layers = [_layer_entry(net, l, layer) for l, layer in enumerate(spec.layers, start=1)]
    forward = []
    for step in net.steps:
        is_loss = step.kind == "loss"
        forward.append({
            "name": step.name, "kind": step.kind, "layer": step.layer,
            "lhs": "L" if is_loss else latex_name(step.name), "rhs": latex(step.expr),
            "shape": "1 \\times 1" if is_loss else shape_latex(step.symbol.shape),
            "shape_text": "scalar" if is_loss else shape_text(step.symbol.shape),
            "text": "" if is_loss else text(step.expr),
        })
    local = [{
        "of": "L" if lg.of == "L" else latex_name(lg.of), "wrt": latex_name(lg.wrt), "expr": latex(lg.expr),
        "side": lg.side, "layer": lg.layer, "wide": measure(latex(lg.expr)).w > LOCAL_TABLE_WIDTH,
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
            "text": text(step.expr), "text_lhs": text_name(step.symbol.name),
            "chain": _chain(step), "terms": len(step.terms),
            "alternatives": [{"label": alt.label, "title": t[f"form_{alt.label}"], "rhs": latex(alt.expr),
                              "assumes": alt.assumes} for alt in step.alternatives],
        })
    relu_values = {layer.relu_grad_at_zero for layer in spec.layers if layer.activation == "relu"}
    module = module_context(derivation)
    kinds = ", ".join(layer["activation"] or layer["kind"] for layer in layers)
    return {
        "t": t, "lang": lang, "title": spec.title, "spec": spec, "layers": layers, "forward": forward,
        "local": local, "backward": backward, "report": report,
        "layout": spec.layout, "batch_first": net.batch_first, "input_name": spec.input.name,
        "input_latex": latex_name(spec.input.name),
        "sizes": list(spec.sizes), "sizes_literal": repr(tuple(spec.sizes)), "depth": net.depth,
        "loss": _loss_context(derivation, t),
        "relu_at_zero": sorted(relu_values),
        "layer_summary": f"layers: {kinds}",
        "parameter_names": net.parameters,
        "updates": [{"name": name, "param": latex_name(name), "grad": latex_name(f"d{name}")}
                    for name in net.parameters],
        **module,
        "custom_activations": (custom := custom_activations(net, t)),
        "helper_comments": {module["helper_names"][key]: line for step in custom
                            for key, line in step["comments"].items() if key in module["helper_names"]},
        "custom_numpy": list(dict.fromkeys(note for step in custom for note in step["numpy"])),
    }
