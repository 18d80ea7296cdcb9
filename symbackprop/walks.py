"""The derivations people study, line by line: how a layer's staged backward steps become the compact formula
lectures give (batch and layer norm), and where a softmax's fused gradient comes from (its Jacobian, its
vector-Jacobian product, then cross-entropy or the negative log-likelihood on top).

Each printed line is an equation the claims checker judges, and each term of a line is braced with a
``Statement`` (the edge of the graph it comes back through), so the tests hold every line and label to the
derivation. The softmax pages are per-sample identities in index form, checked by SymPy in the tests.
"""

from __future__ import annotations

from dataclasses import replace

import sympy as sp

from .printing import latex, latex_name
from .rules import loss_rule
from .statements import Statement, brace, partial

# The softmax pages in index form, per sample (s = softmax(z), g = dL/ds, y the targets): what each line
# states, and the catalog key of the sentence before it.
SOFTMAX_LINES = (
    ("softmax_definition", r"s_i = \frac{e^{z_i}}{\sum_k e^{z_k}}"),
    ("softmax_jacobian", (r"\frac{\partial s_i}{\partial z_j} = s_i \left(\delta_{ij} - s_j\right), \qquad "
                         r"J = \operatorname{diag}(s) - s s^{\top}")),
    ("softmax_vjp", (r"\frac{\partial L}{\partial z_j} = \sum_i g_i \, s_i \left(\delta_{ij} - s_j\right) = "
                    r"s_j \Bigl(g_j - \sum_i g_i s_i\Bigr)")),
    ("softmax_with_ce", (r"L = -\sum_i y_i \log s_i, \quad g_i = -\frac{y_i}{s_i} \quad \Rightarrow \quad "
                        r"\frac{\partial L}{\partial z_j} = s_j \sum_i y_i - y_j = s_j - y_j")),
)
LOG_SOFTMAX_LINES = (
    ("log_softmax_definition", r"\ell_i = \log s_i = z_i - \log \sum_k e^{z_k}"),
    ("log_softmax_jacobian", r"\frac{\partial \ell_i}{\partial z_j} = \delta_{ij} - s_j"),
    ("log_softmax_vjp", (r"\frac{\partial L}{\partial z_j} = \sum_i g_i \left(\delta_{ij} - s_j\right) = "
                        r"g_j - s_j \sum_i g_i")),
    ("log_softmax_with_nll", (r"L = -\sum_i y_i \ell_i, \quad g_i = -y_i \quad \Rightarrow \quad "
                             r"\frac{\partial L}{\partial z_j} = s_j \sum_i y_i - y_j = s_j - y_j")),
)


def _part(expr, edge, locals_: dict) -> tuple[str, Statement | None]:
    """One term of a line, braced with the edge it comes back through: the factor of a local gradient that
    is one (``dL/dxhat ⊙ (1 r)`` with the brace under ``1 r``), else the whole term as that path (a negative
    term's minus sign left outside the brace)."""
    if edge is None:
        return latex(expr), None
    if isinstance(expr, sp.MatMul) and expr.as_coeff_mmul()[0] < 0:
        printed, statement = _part(-expr, edge, locals_)
        # a path states the whole term, its sign included; a factor is the same either way
        return f"-{printed}", replace(statement, expr=expr) if statement.kind == "path" else statement
    lg = locals_[edge]
    upstream = sp.MatrixSymbol(f"d{lg.of}", *expr.shape)
    if lg.side == "elementwise" and expr == sp.hadamard_product(upstream, lg.expr):
        statement = Statement("local", lg.of, lg.wrt, lg.expr)
        factor = brace(rf"\left({latex(lg.expr)}\right)", statement)
        return rf"{latex_name(f'd{lg.of}')} \odot {factor}", statement
    statement = Statement("path", lg.of, lg.wrt, expr)
    return brace(latex(expr), statement), statement


def _sum(printed: list[str]) -> str:
    """Terms joined by ``+``, a term that starts with a minus sign joined by ``-``."""
    text = printed[0]
    for term in printed[1:]:
        text += f" - {term[1:].lstrip()}" if term.startswith("-") else f" + {term}"
    return text


def normalization_walks(derivation, t: dict) -> list[dict]:
    """Each compact form's derivation as printed lines: ``id``, ``layer``, ``title``, and ``lines`` (``note``: the
    sentence, ``lhs``, ``rhs`` with braces, ``claim``: the line as a claim, ``statements``: its braces)."""
    network = derivation.network
    locals_ = {(lg.of, lg.wrt): lg for lg in derivation.local_gradients}
    walks = []
    for compact in network.compacts:
        if not compact.walk:
            continue
        layer = network.step(compact.replaces[0]).layer
        mu, xc = (latex_name(name) for name in compact.replaces)
        names = {"x": latex_name(compact.wrt), "mu": mu, "xc": xc, "dxc": latex_name(f"d{compact.replaces[1]}")}
        lines = []
        for line in compact.walk:
            printed = [_part(expr, edge, locals_) for expr, edge in line.parts]
            lhs = partial("L", line.lhs)
            lines.append({"note": t[line.note].format(**names), "lhs": lhs, "rhs": _sum([p for p, _ in printed]),
                          "claim": f"{lhs} = {' + '.join(latex(expr) for expr, _ in line.parts)}",
                          "statements": [s for _, s in printed if s]})
        kind = network.spec.layers[layer - 1].kind
        name = t[f"kind_name_{kind}"]
        walks.append({"id": f"normalization-{layer}", "layer": layer, "lines": lines,
                      "title": t["walk_title"].format(kind=name[:1].upper() + name[1:])})
    return walks


def softmax_walks(network, t: dict) -> list[dict]:
    """The softmax and log-softmax pages this network needs: where a softmax (or log-softmax) meets the loss,
    its Jacobian, its vector-Jacobian product, and the fused gradient as a consequence."""
    fusions = {step.fusion for step in network.steps}
    pages = []
    if "softmax" in fusions or loss_rule(network.spec.loss).name == "softmax_cross_entropy":
        pages.append(("softmax", SOFTMAX_LINES))
    if "log_softmax" in fusions:
        pages.append(("log_softmax", LOG_SOFTMAX_LINES))
    return [{"id": name.replace("_", "-"), "layer": network.depth, "title": t[f"{name}_title"],
             "lines": [{"note": t[key], "math": math} for key, math in lines]} for name, lines in pages]
