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
from .formats import ALIASES, FORMATS, FRAMEWORK_FORMATS, LANGUAGES
from .frameworks import framework_context
from .korean import particles
from .layers import LAYER_KINDS
from .lecture import LectureOptions, lecture_context, method_text
from .mathsize import measure
from .printing import latex, latex_name, shape_latex
from .rules import TRAINABLE_ACTIVATIONS, activation_rule, loss_rule
from .slides import display, plan, side_by_side
from .statements import Statement, brace, local_statement, term_statement
from .tex_text import tex_escape
from .verify import form_check_name
from .walks import normalization_walks, softmax_walks

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
    if hasattr(derivation.network, "loss_name"):  # a forward pass written as code (forward_code.py)
        from .forward_code import render_forward

        return render_forward(derivation, fmt, report, lang, options)
    if report is None and fmt not in ("numpy", *FRAMEWORK_FORMATS):
        report = derivation.verify()
    options = options or LectureOptions()
    if fmt == "ipynb":
        from .notebook import notebook

        return notebook(derivation, lang=lang, report=report, batch=batch, options=options)
    ctx = context(derivation, lang=lang, report=report, batch=batch)
    if fmt in ("numpy", *FRAMEWORK_FORMATS):
        ctx.update(_module(derivation, ctx["custom_activations"], fmt))
    if fmt in LECTURE_FORMATS:
        ctx.update(lecture_context(derivation, t=ctx["t"], lang=lang, report=report, batch=batch,
                                   options=options))
    if fmt == "beamer":
        ctx["deck"] = plan(ctx, derivation, ctx["t"])
    text = _environment().get_template(FORMATS[fmt][0]).render(**ctx)
    return particles(text) if lang == "ko" else text


def _chain(step, spec) -> tuple[str, list[Statement]]:
    r"""The chain-rule form of a backward step and the statements its braces make: each local factor braced
    and labelled, ``\underbrace{a^{[2]\top}}_{\partial Z^{[3]} / \partial W^{[3]}} \, \delta^{[3]}``. A value
    read by several steps (a skip connection, a weight with an L2 penalty) gets the sum of their
    contributions; a term with no factor of its own is braced whole, as the path it comes back through or as
    the penalty's share. ("", []) where the step is the loss's own gradient."""
    if len(step.terms) == 1 and step.terms[0].upstream is None:
        return "", []
    # The paths through the network first, an L2 penalty's own term last (as the formula prints it).
    terms = sorted(step.terms, key=lambda term: term.upstream is None)
    printed = [_chain_term(term, spec, len(terms) > 1) for term in terms]
    return " + ".join(text for text, _ in printed), [statement for _, statement in printed if statement]


def _chain_term(term, spec, in_sum: bool) -> tuple[str, Statement | None]:
    statement = term_statement(term, spec)
    if statement.kind != "local":
        # No factor of its own: the whole contribution, braced where it is one of several.
        whole = latex(term.expr)
        return (brace(whole, statement), statement) if in_sum else (whole, None)
    local = term.local
    upstream = latex_name(f"d{term.upstream}")
    factor = latex(local.expr)
    if local.side == "elementwise" and _needs_brackets(local.expr):
        factor = rf"\left({factor}\right)"
    factor = brace(factor, statement)
    return {"left": f"{factor} \\, {upstream}", "right": f"{upstream} \\, {factor}",
            "elementwise": rf"{upstream} \odot {factor}"}[local.side], statement


def _of(name: str) -> str:
    return "L" if name == "L" else latex_name(name)


def _row_of(statement) -> str:
    """The output column of a local-gradient row: a penalty's share is listed under the penalty it
    differentiates, not under L."""
    return statement.penalty or _of(statement.of)


def _needs_brackets(expr) -> bool:
    """Whether a factor of an elementwise product needs brackets: a sum, or a negative term."""
    return isinstance(expr, (sp.MatAdd, sp.HadamardProduct)) or (
        isinstance(expr, sp.MatMul) and expr.as_coeff_mmul()[0].is_negative)


def _alternative(step, alt, t: dict, report) -> dict:
    """A shorter form of a backward step as the documents show it: its name and introduction, the formula,
    the assumption it needs, and what the verifier found (its report row ``dL/d<name> (<label>)``)."""
    row = form_check_name(step.name, alt.label)
    check = next((check for check in report.checks if check.name == row), None) if report else None
    return {"label": alt.label, "title": t[f"form_{alt.label}"], "intro": t[f"form_{alt.label}_intro"],
            "rhs": latex(alt.expr), "assumes": alt.assumes,
            "assumption": t[f"form_assumes_{alt.assumes}"] if alt.assumes else "",
            "proof": "" if check is None else (t["form_proved"].format(method=method_text(check.method, t))
                                               if check.ok else t["form_failed"])}


def _layer_entry(l: int, layer) -> dict:
    """One layer as the documents introduce it: its kind and activation (a custom one by its own name)."""
    activation = layer.activation or ""
    if activation and activation not in TRAINABLE_ACTIVATIONS:
        activation = activation_rule(activation).name  # a custom activation's own name, not its key
    return {"index": l, "kind": layer.kind, "activation": activation}


def _loss_sentence(t: dict, net, math: bool) -> str:
    """The loss's rule, reduction, scale and L2 penalty in words, with math (``$...$``) or in plain text: parts
    joined as the catalog joins them (clauses in English, whole sentences in Korean)."""
    settings = net.spec.loss
    width = net.symbol("Y_pred").shape[1 if net.batch_first else 0]
    l2 = f"{settings.l2:g}"
    over_n = settings.l2_scale == "batch_mean"
    if math:
        entries, coefficient = f"${latex(net.N * width)}$", rf"$\frac{{{l2}}}{{2{' N' if over_n else ''}}}$"
    else:
        entries, coefficient = f"N x {width}", f"{l2}/(2N)" if over_n else f"{l2}/2"
    samples = "$N$" if math else "N"
    parts = [t["loss_with_reduction"].format(
        loss=t[f"loss_{loss_rule(settings).name}"],
        reduction=t[f"reduction_{settings.reduction}"].format(entries=entries, N=samples))]
    if settings.scale != 1:
        parts.append(t["loss_scale"].format(scale=f"{settings.scale:g}"))
    if settings.l2:
        parts.append(t["loss_l2"].format(coefficient=coefficient))
    return t["loss_join"].join(parts)


def _loss_context(derivation, t) -> dict:
    """The loss's printed forms: its formula, and a sentence naming its rule, reduction, scale and penalty
    (``reduction``: with math; ``summary``: plain text for the module), both in the document's language."""
    net = derivation.network
    settings = net.spec.loss
    return {"kind": settings.kind, "latex": latex(net.steps[-1].expr),
            "reduction": _loss_sentence(t, net, math=True), "summary": _loss_sentence(t, net, math=False),
            "distributions": any(alt.assumes for step in derivation.backward for alt in step.alternatives)}


def custom_activations(network, t: dict) -> list[dict]:
    """The derivation step of each custom activation the network uses: the formula, its derivative worked
    out by SymPy and simplified, kinks and the breakpoints without one, the form in the output; comments for the
    NumPy helpers."""
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
        named = [formula.DEFINITIONS[function] for function in formula.named(d.simplified)]
        definition = next(c for c in network.spec.activations if c.key == key)
        values = ", ".join(f"{name} = {value}" for name, value in d.parameters)
        stated = f"{rule.name}(z) = {definition.forward}"
        lines = [t["code_custom_with"].format(formula=stated, values=values) if values else stated,
                 f"{rule.name}'(z) = {formula.text(d.worked)}"]
        if simplified != worked:
            lines.append(f"{' ' * len(rule.name)}    = {formula.text(d.simplified)}")
        if d.kinks:
            lines.append(t["code_custom_kinks"].format(derivative=f"{rule.name}'(z) = {rule.grad_at_kinks}",
                                                       points=", ".join(map(str, d.kinks))))
        slopes = ", ".join(f"{rule.name}'({formula.text(k)}) = {formula.text(slope)}" for k, slope in d.smooth)
        if d.smooth:
            lines.append(t["code_custom_smooth"].format(derivative=slopes))
        # Keyed like the module's helpers: (function key, order, written with the output).
        comments = {(node.key, 0, False): lines[0], (node.key, 1, False): f"{rule.name}'(z) = {formula.text(d.simplified)}"}
        if d.from_output is not None:
            comments[node.key, 1, True] = t["code_custom_from_output"].format(
                derivative=f"{rule.name}'(z) = {formula.text(d.from_output)}", name=rule.name)
        steps.append({
            "name": rule.name, "latex": f,
            "formula": rf"{f}\left(z\right) = {formula.latex(d.formula, otherwise)}",
            "parameters": r", \quad ".join(f"{formula.latex(sp.Symbol(name))} = {value}" for name, value in d.parameters),
            "worked": rf"{f}'\left(z\right) = {worked}",
            "simplified": rf"{f}'\left(z\right) = {simplified}" if simplified != worked else "",
            "named": r", \quad ".join(named),
            "kinks": t["custom_kinks"].format(points=", ".join(map(str, d.kinks)), value=rule.grad_at_kinks)
                     if d.kinks else "",
            "smooth": t["custom_smooth"].format(points=", ".join(formula.text(k) for k, _ in d.smooth), values=slopes)
                      if d.smooth else "",
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
    layers = [_layer_entry(l, layer) for l, layer in enumerate(spec.layers, start=1)]
    # Each kind beyond the dense layer, and a trainable activation (PReLU), is introduced in words where its
    # first layer appears.
    seen = {"dense"}
    for entry in layers:
        entry["kind_name"] = t[f"kind_name_{entry['kind']}"]
        intro = [] if entry["kind"] in seen else [t[LAYER_KINDS[entry["kind"]].explanation]]
        if entry["activation"] in TRAINABLE_ACTIVATIONS and entry["activation"] not in seen:
            intro.append(t[f"trainable_{entry['activation']}"])
        entry["intro"] = " ".join(intro)
        seen |= {entry["kind"], entry["activation"]}
    forward = []
    for step in net.steps:
        is_loss = step.kind == "loss"
        forward.append({
            "name": step.name, "kind": step.kind, "layer": step.layer,
            "lhs": "L" if is_loss else latex_name(step.name), "rhs": latex(step.expr),
            "shape": "1 \\times 1" if is_loss else shape_latex(step.symbol.shape),
        })
    local = []
    for lg in derivation.local_gradients:
        statement = local_statement(lg, spec)
        expr = latex(lg.expr)
        if statement.kind == "map":  # no factor: the map from the upstream gradient to this share
            expr = rf"{latex_name('d' + lg.of)} \mapsto {expr}"
        local.append({"of": _row_of(statement), "wrt": latex_name(lg.wrt), "expr": expr, "side": statement.kind
                      if statement.kind == "penalty" else lg.side, "lhs": statement.lhs, "statement": statement,
                      "layer": lg.layer, "wide": measure(expr).w > LOCAL_TABLE_WIDTH})
    backward = []
    for step in derivation.backward:
        chain, statements = _chain(step, spec)
        backward.append({
            "name": step.name, "symbol": step.symbol.name, "layer": step.layer,
            "lhs": latex_name(step.symbol.name), "rhs": latex(step.expr),
            "shape": shape_latex(step.shape), "chain": chain, "statements": statements, "terms": len(step.terms),
            "locals": [(_row_of(local_statement(term.local, spec)), latex_name(term.local.wrt))
                       for term in step.terms],
            "alternatives": [_alternative(step, alt, t, report) for alt in step.alternatives],
        })
    relu_values = {layer.relu_grad_at_zero for layer in spec.layers if layer.activation == "relu"}
    return {
        "t": t, "lang": lang, "title": spec.title, "spec": spec, "layers": layers, "forward": forward,
        "local": local, "backward": backward, "report": report,
        "local_maps": any(row["statement"].kind == "map" for row in local),
        "intros": {entry["index"]: entry["intro"] for entry in layers if entry["intro"]},
        "first_sum": next((step["name"] for step in backward if step["terms"] > 1), None),
        "layout": spec.layout, "batch_first": net.batch_first, "input_name": spec.input.name,
        "input_latex": latex_name(spec.input.name),
        "sizes": list(spec.sizes), "sizes_literal": repr(tuple(spec.sizes)), "depth": net.depth,
        "loss": _loss_context(derivation, t),
        "relu_at_zero": sorted(relu_values),
        "layer_kinds": ", ".join(f"`{layer['activation'] or layer['kind']}`" for layer in layers),
        "parameter_names": net.parameters,
        "updates": [{"name": name, "param": latex_name(name), "grad": latex_name(f"d{name}")}
                    for name in net.parameters],
        # The learning rate's symbol: alpha, as the lecture writes it, unless a PReLU slope is called alpha.
        "rate": r"\eta" if any(name.startswith("alpha") for name in net.parameters) else r"\alpha",
        "custom_activations": custom_activations(net, t),
        "walks": [*normalization_walks(derivation, t), *softmax_walks(net, t)],
    }


def _module(derivation, custom: list[dict], fmt: str = "numpy") -> dict:
    """What only the NumPy (or PyTorch, JAX) module needs: its code, and the comments and notes on custom
    activations."""
    module = module_context(derivation) if fmt == "numpy" else framework_context(derivation, fmt)
    return {**module,
            "helper_comments": {module["helper_names"][key]: line for step in custom
                                for key, line in step["comments"].items() if key in module["helper_names"]},
            "custom_numpy": list(dict.fromkeys(note for step in custom for note in step["numpy"]))}
