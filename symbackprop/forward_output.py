"""The outputs of a forward pass written as code (``forward_code.py``): Markdown, the LaTeX article, the NumPy
module and the notebook, laid out by the ``forward_backprop.*.j2`` templates.

The lecture formats walk the file's lines backwards, as a computational graph: at each line, the gradient of
the value it defines (the sum of the shares of the lines that read it) and the local gradient it sends back to
each value it reads. ``exact_zeros`` decides, by the exact check's evaluation modulo a prime, which gradients
and which shares are identically 0 (a stabilizing maximum's path), so the outputs can say so as a proved fact,
and splits such a gradient into the paths that cancel in it (a stabilizing maximum's two: through the softmax's
numerator and through its sum), each shown not to be 0. The sentences come from the catalog (``en``, ``ko``).
The deck (``beamer``) lays the article's content out on frames planned by ``slides.py``, as a spec's deck is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import sympy as sp

from .errors import FormatError
from .evaluate import PRIME_TEXT, Evaluator, FieldBackend
from .expressions import Elementwise, MaxMask, RowMax
from .formats import FORWARD_FORMATS
from .korean import particles
from .lecture import method_text
from .mathsize import measure, text_width
from .printing import MathPrinter, NumPyPrinter, function_name, shape_latex, shape_text, text
from .rules import activation_rule
from .slides import (
    TABLE_PADDING,
    TABLE_SCALE,
    TEXT_WIDTH,
    break_equation,
    cell_lines,
    equation_parts,
    heading,
    math,
    pack,
    pack_groups,
    table_frames,
)
from .slides import text as sentence_block
from .tex_text import tex_escape

# Names the generated module defines besides the forward pass's own.
_MODULE_NAMES = {"np", "forward", "backward", "inputs", "cache", "random_inputs", "gradient_check", "SIZES",
                 "SHAPES", "IDS", "one_hot", "unpick", "first_max_mask", "_full"}


def render_forward(derivation, fmt: str, report=None, lang: str = "en", options=None) -> str:
    """A forward pass written as code in ``fmt`` (``FORWARD_FORMATS``) and ``lang`` (the lecture formats' sentences
    come from the catalog); other formats refuse in one line. ``options`` (``lecture.LectureOptions``): the deck's
    title page and handout form."""
    from .lecture import LectureOptions
    from .rendering import _environment

    if fmt not in FORWARD_FORMATS:
        raise FormatError(f"--format {fmt}: a forward pass written as code (--forward) is printed as md, tex, "
                          "beamer, py or ipynb")
    if fmt == "numpy":
        return _environment().get_template("forward_backprop.py.j2").render(module_context(derivation))
    report = report or derivation.verify()
    if fmt == "ipynb":
        return _notebook(derivation, report, lang)
    template = {"markdown": "forward_backprop.md.j2", "latex": "forward_backprop.tex.j2",
                "beamer": "forward_backprop_slides.tex.j2"}[fmt]
    ctx = lecture_context(derivation, report, fmt != "markdown", lang)
    if fmt == "beamer":
        ctx.update(deck_context(ctx, derivation, report, options or LectureOptions()))
    text = _environment().get_template(template).render(ctx)
    return particles(text) if lang == "ko" else text


# -- which gradients and shares are exactly 0 -------------------------------------------------------------------

@dataclass(frozen=True)
class Zeros:
    """Gradients (names) and shares ((value, the line's name that sends it)) that are identically 0: every
    entry vanishes at a random point modulo a prime; ``bound`` is the chance that one that is not identically 0
    would (Schwartz-Zippel). ``paths``: a zero gradient -> the paths that cancel in it (``Paths``)."""

    gradients: frozenset
    shares: frozenset
    bound: float
    paths: dict


@dataclass(frozen=True)
class Paths:
    """A zero gradient as the sum of the paths it comes back along, none of them 0 on its own: its formula with
    the gradient of ``split`` (the nearest value, along single reads, whose gradient sums several shares) replaced
    by each share in turn. ``terms``: (the line's name that sends the share, the path's formula)."""

    split: str
    terms: tuple


def exact_zeros(derivation, seed: int = 0) -> Zeros:
    """The gradients and shares of ``derivation`` that are identically 0, evaluated exactly at a random point
    modulo the verifier's prime, at the witness sizes."""
    from .verify import evaluate_formulas, false_pass_bound

    net = derivation.network
    sizes = net.sizes()
    backend = FieldBackend(seed)
    env = {}
    for name, symbol in net.inputs.items():
        rows, cols = (int(d.xreplace(sizes)) for d in symbol.shape)
        env[name] = np.array([[backend.random() for _ in range(cols)] for _ in range(rows)], dtype=object)
    values = evaluate_formulas(derivation, backend, env, sizes)
    zero = backend.scalar(0)

    def vanishes(value) -> bool:
        return all(entry == zero for entry in np.asarray(value).flat)

    evaluator = Evaluator(backend, values, sizes)
    gradients = frozenset(step.name for step in derivation.backward if vanishes(values[step.symbol.name]))
    shares = frozenset((step.name, term.local.of) for step in derivation.backward for term in step.terms
                       if vanishes(evaluator(term.expr)))
    paths = {name: found for name in gradients if (found := _paths(derivation, name)) is not None
             and not any(vanishes(evaluator(expr)) for _, expr in found.terms)}
    return Zeros(gradients, shares, false_pass_bound(net, backend), paths)


def _paths(derivation, name: str) -> Paths | None:
    """``name``'s gradient split into its paths (see ``Paths``), or None where its formula reads no single
    gradient that sums several shares."""
    steps = {step.symbol: step for step in derivation.backward}
    expr = derivation.step(name).expr
    for _ in steps:
        read = [symbol for symbol in expr.atoms(sp.MatrixSymbol) if symbol in steps]
        if len(read) != 1:
            return None
        step = steps[read[0]]
        if len(step.terms) > 1:
            return Paths(step.name, tuple((term.local.of, expr.xreplace({read[0]: term.expr}).doit())
                                          for term in step.terms))
        expr = expr.xreplace({read[0]: step.expr})
    return None


# -- the lecture formats -----------------------------------------------------------------------------------------

class _CodeMath(MathPrinter):
    """LaTeX for the formulas of a forward pass written as code: its names as written (``norm\\_logits``), a
    gradient as ``d`` and the name, integer ids as one-hot matrices, the loss line's value as its formula."""

    def __init__(self, values, ids):
        super().__init__()
        self.values, self.ids = values, ids

    def _print_MatrixSymbol(self, expr):
        name = expr.name
        if name in self.ids:
            return rf"\operatorname{{onehot}}\left({_tex_name(name)}\right)"
        if name not in self.values and name[1:] in self.values:
            return r"\mathrm{d}" + _tex_name(name[1:])
        return _tex_name(name)

    def _print_Block(self, expr):
        if isinstance(expr.arg, sp.MatrixSymbol) and expr.arg.name in self.ids and expr.axis == 1:
            return rf"\operatorname{{onehot}}\left({_tex_name(expr.arg.name)}_{{:,{expr.index}}}\right)"
        return super()._print_Block(expr)

    def _print_ScalarOf(self, expr):
        return self._print(expr.arg)


def _tex_name(name: str) -> str:
    return r"\mathit{" + name.replace("_", r"\_") + "}"


def lecture_context(derivation, report, tex: bool, lang: str = "en") -> dict:
    """What the Markdown and LaTeX templates lay out: the lines, the walk backwards, the proof, and the
    sentences in ``lang`` (code in backticks, which the LaTeX template sets as ``\\texttt``)."""
    from .rendering import catalog

    t = catalog(lang)
    net = derivation.network
    steps = {step.name: step for step in net.steps}
    ids = {name for name, role in net.roles.items() if role == "ids"}
    math = _CodeMath({*net.inputs, *steps}, ids)
    zeros = exact_zeros(derivation)
    backward = {step.name: step for step in derivation.backward}
    line = {name: net.lines.get(name, (step.layer, ""))[0] for name, step in steps.items()}
    loss = net.steps[-1]
    prime = re.sub(r"\^(\d+)", r"^{\1}", PRIME_TEXT)  # as math

    def shape(value):
        return shape_latex(value) if tex else shape_text(value)

    def reader(name):
        return t["forward_code_reader"].format(line=line[name], name=name)

    def readers(names):
        listed = [reader(name) for name in names]
        return listed[0] if len(listed) == 1 else ", ".join(listed[:-1]) + t["forward_code_and"] + listed[-1]

    def paths(step):
        """The paths that cancel in a zero gradient, each with its formula, and their sum equal to 0."""
        found = zeros.paths.get(step.name)
        if found is None:
            return None
        labels = [rf"{math.doprint(step.symbol)}\big|_{{{_tex_name(of)}}}" for of, _ in found.terms]
        return {"intro": t["forward_code_paths"].format(split=found.split, line=line[found.split], name=step.name,
                                                         readers=readers([of for of, _ in found.terms])),
                "terms": [(t["forward_code_path"].format(reader=reader(of)), label, math.doprint(expr))
                          for label, (of, expr) in zip(labels, found.terms)],
                "sum": [" + ".join(labels), math.doprint(step.symbol), "0"]}

    def gradient(step):
        """A value's gradient: the sum of its readers' shares, with what is exactly 0 said and dropped."""
        zero_from = [str(line[term.local.of]) for term in step.terms if (step.name, term.local.of) in zeros.shares]
        kept = [term.expr for term in step.terms if (step.name, term.local.of) not in zeros.shares]
        names = [term.local.of for term in step.terms]
        label = rf"\textbf{{{t['forward_code_zero_label']}}}" if tex else f"**{t['forward_code_zero_label']}**"
        return {"name": step.name, "lhs": math.doprint(step.symbol), "rhs": math.doprint(step.expr),
                "shape": shape(step.shape),
                "read_by": t["forward_code_read_by"].format(readers=readers(names)) if len(names) > 1
                else t["forward_code_read_by_one"].format(reader=reader(names[0])),
                "zero": t["forward_code_zero"].format(label=label, name=step.name, prime=prime,
                                                      bound=f"{zeros.bound:.0e}")
                if step.name in zeros.gradients else None,
                "paths": paths(step),
                "zero_from": t["forward_code_zero_share" if len(zero_from) == 1 else "forward_code_zero_shares"]
                .format(lines=", ".join(zero_from)) if zero_from else None,
                "rest": math.doprint(sp.MatAdd(*kept)) if zero_from and kept and len(kept) < len(step.terms)
                else None}

    walk = []
    for step in reversed(net.steps):
        sends = [{"to": t["forward_code_to"].format(name=local.wrt), "lhs": math.doprint(backward[local.wrt].symbol),
                  "expr": math.doprint(local.expr), "zero": (local.wrt, step.name) in zeros.shares,
                  "only": len(backward[local.wrt].terms) == 1}
                 for local in derivation.local_gradients if local.of == step.name]
        code = net.lines.get(step.name, (0, ""))[1]
        walk.append({"title": t["forward_code_line_title"].format(line=line[step.name], code=code),
                     "slide_title": t["forward_code_slide_title"].format(line=line[step.name], name=step.name),
                     "gradient": None if step is loss else gradient(backward[step.name]), "sends": sends})
    forward_rows = [{"line": line[step.name], "code": net.lines.get(step.name, (0, ""))[1], "name": step.name,
                     "lhs": _tex_name(step.name), "formula": math.doprint(step.expr), "shape": "1 \\times 1" if tex and step is loss else
                     "1 x 1" if step is loss else shape(step.symbol.shape)} for step in net.steps]
    inputs = [gradient(step) for step in derivation.backward if step.name in net.inputs]
    exprs = [*(step.expr for step in net.steps), *(step.expr for step in derivation.backward)]
    witness = ", ".join(f"{_tex_name(k)} = {v}" for k, v in report.witness.items())
    conventions = [t["forward_code_batch_first"]]
    if ids:
        conventions.append(t["forward_code_ids"].format(
            ids=", ".join(f"`{name}`" for name in sorted(ids, key=list(net.inputs).index))))
    conventions += [t["forward_code_flattened"].format(name=name, shape=_shape_words(shape))
                    for name, shape in net.module_shapes.items() if len(shape) == 3]
    if any(node.activation == "relu" for expr in exprs for node in expr.atoms(Elementwise)):
        conventions.append(t["forward_code_relu"])
    if any(expr.atoms(RowMax, MaxMask) for expr in exprs):
        conventions.append(t["forward_code_row_max"])
    return {
        "t": t, "lang": lang, "hangul": lang == "ko",
        "title": t["forward_code_title"].format(function=net.spec.function, path=net.spec.path),
        "intro": t["forward_code_intro"].format(loss=net.loss_name), "conventions": conventions,
        "forward": forward_rows, "walk": walk, "inputs": inputs,
        "verified": t["forward_code_verified" if report.ok else "forward_code_not_verified"].format(witness=witness),
        "checks": [{"name": _check_name(check.name, t), "ok": t["forward_code_yes" if check.ok else "forward_code_no"],
                    "method": method_text(check.method, t)} for check in report.checks],
    }


# -- the deck ------------------------------------------------------------------------------------------------------

# The width of a typewriter character at 10 pt (cmtt10), in pt: a line of code in the deck's forward table.
_TT_CHAR = 5.25


def deck_context(ctx: dict, derivation, report, options) -> dict:
    """What ``forward_backprop_slides.tex.j2`` lays out besides the article's context: the title page and the
    frames (``slides.pack``): conventions, the forward pass, each line walked backwards, the inputs' gradients and
    the verification."""
    from .rendering import _tex_code

    t = ctx["t"]
    net = derivation.network
    frames = pack(t["conventions"], [sentence_block(ctx["intro"], step=False),
                                     *(sentence_block(rf"$\bullet$~{sentence}") for sentence in ctx["conventions"])], t)
    frames += _forward_table(ctx["forward"], t)
    for index, (row, entry) in enumerate(zip(reversed(ctx["forward"]), ctx["walk"])):
        line = [sentence_block(t["forward_code_walk_intro"], step=False)] if index == 0 else []
        # (ragged: a typewriter space does not stretch, so a justified line of code would not break)
        line += [replace(sentence_block(rf"{{\raggedright `{row['code']}`\par}}", step=False), leads=True),
                 math(_related(row["lhs"], row["formula"], tail=rf" \quad ({row['shape']})"), step=False)]
        groups = [line, *(_gradient_groups(entry["gradient"], t) if entry["gradient"] else
                          [[sentence_block(t["forward_code_loss_itself"])]])]
        sends = [heading(t["forward_code_locals"])]
        for send in entry["sends"]:
            words = send["to"] + (f" ({t['forward_code_zero_note']})" if send["zero"] else "")
            sends += [replace(sentence_block(f"{words}:", step=False), leads=True),
                      math(_related(send["lhs"], send["expr"], "=" if send["only"] else r"\ni"), step=False)]
        frames += pack_groups(_tex_code(entry["slide_title"]), [*groups, sends], t)
    frames += pack_groups(t["forward_code_inputs"], [group for g in ctx["inputs"] for group in _gradient_groups(g, t)],
                          t)
    frames += _verification_frames(ctx["verified"], report, t)
    page = {key: getattr(options, key) or "" for key in ("author", "institute", "date")}
    return {"deck": frames, "handout": options.handout, "title_page": page,
            "title": t["forward_code_title"].format(function=net.spec.function, path=Path(net.spec.path).name)}


def _related(lhs: str, rhs: str, relation: str = "=", tail: str = "") -> list[str]:
    """``lhs relation rhs`` (then ``tail``) as display lines that fit a frame."""
    lines = break_equation(equation_parts([lhs, rhs]), TEXT_WIDTH, tail)
    if len(lines) == 1:
        return [lines[0].replace(" = ", f" {relation} ", 1)]
    return [lines[0].replace(" &= ", f" &{relation} ", 1), *lines[1:]]


def _gradient_groups(g: dict, t: dict) -> list[list]:
    """A value's gradient as the article states it (``lecture_context``'s ``gradient``), in groups of blocks that
    belong on one frame: who reads the value and the sum of their shares (and that it is exactly 0), the paths
    that cancel in it, the shares that are exactly 0 left out."""
    groups = [[replace(sentence_block(g["read_by"]), leads=True),
               math(_related(g["lhs"], g["rhs"], tail=rf" \quad ({g['shape']})"), step=False),
               *([sentence_block(g["zero"], step=False)] if g["zero"] else [])]]
    if g["paths"]:
        paths = [replace(sentence_block(g["paths"]["intro"]), leads=True)]
        for words, label, formula in g["paths"]["terms"]:
            paths += [replace(sentence_block(words, step=False), leads=True), math(_related(label, formula), step=False)]
        groups.append([*paths, replace(sentence_block(t["forward_code_paths_sum"], step=False), leads=True),
                       math(break_equation(g["paths"]["sum"], TEXT_WIDTH), step=False)])
    if g["zero_from"] and g["rest"]:
        groups.append([replace(sentence_block(g["zero_from"], step=False), leads=True),
                       math(_related(g["lhs"], g["rest"]), step=False)])
    return groups


def _forward_table(rows: list[dict], t: dict) -> list[dict]:
    """The forward pass as a table of its lines (number, code, shape), on as many frames as it needs."""
    number = max(measure(str(row["line"]), display=False).w for row in rows) * TABLE_SCALE
    shape = max(measure(row["shape"], display=False).w for row in rows) * TABLE_SCALE
    code = TEXT_WIDTH - number - shape - 6 * TABLE_PADDING - 10
    cells = [[str(row["line"]), rf"\texttt{{{tex_escape(row['code'])}}}", f"${row['shape']}$"] for row in rows]
    return table_frames(t["forward_pass"], rf"r>{{\raggedright\arraybackslash}}p{{{code:.0f}pt}}l",
                        [t["forward_code_line"], t["forward_code_code"], t["shape"]], cells,
                        [_code_lines(row["code"], code) for row in rows], t)


def _verification_frames(verified: str, report, t: dict) -> list[dict]:
    """The verification: the sentence, then a row per method and verdict listing the formulas it judged (the
    local rules of several lines as one item), a long list continued on rows of its own."""
    from .rendering import _tex_code

    groups = {}
    for check in report.checks:
        groups.setdefault((method_text(check.method, t), check.ok), []).append(check.name)
    verdict = max(text_width(t[key]) for key in ("forward_code_ok", "forward_code_yes", "forward_code_no"))
    method = 0.3 * TEXT_WIDTH
    names = TEXT_WIDTH - method - verdict * TABLE_SCALE - 6 * TABLE_PADDING - 10
    rows, lines = [], []
    for (how, ok), checked in groups.items():
        local = [found.group(1) for name in checked if (found := _LOCAL_CHECK.fullmatch(name))]
        items = []
        for name in checked:
            if not _LOCAL_CHECK.fullmatch(name):
                items.append(_check_name(name, t))
            elif name.endswith(f" {local[0]}"):  # the local rules of every line, where the first one stood
                items.append(t["forward_code_check_local" if len(local) == 1 else "forward_code_check_locals"]
                             .format(line=local[0], lines=", ".join(local)))
        how_lines = cell_lines(how, method)
        for index, part in enumerate(_runs(items, names)):
            cell = ", ".join(part)
            rows.append([_tex_code(cell), t["forward_code_yes" if ok else "forward_code_no"],
                         _tex_code(how) if index == 0 else ""])
            lines.append(max(_code_lines(cell.replace("`", ""), names), how_lines if index == 0 else 1))
    columns = rf">{{\raggedright\arraybackslash}}p{{{names:.0f}pt}}l>{{\raggedright\arraybackslash}}p{{{method:.0f}pt}}"
    return table_frames(t["verification"], columns, [t["formula"], t["forward_code_ok"], t["verification_method"]],
                        rows, lines, t, intro=(sentence_block(verified, step=False),))


# The most lines a row of the deck's verification table lists before it continues on the next row.
_ROW_LINES = 6


def _runs(items: list[str], width: float) -> list[list[str]]:
    """``items`` in runs whose comma-separated cell takes at most ``_ROW_LINES`` lines of ``width``."""
    runs = [[]]
    for item in items:
        if runs[-1] and _code_lines(", ".join([*runs[-1], item]).replace("`", ""), width) > _ROW_LINES:
            runs.append([])
        runs[-1].append(item)
    return runs


def _code_lines(cell: str, width: float) -> int:
    """The lines a table cell of code and words takes at ``\\footnotesize`` (every character as wide as
    typewriter's, to be safe)."""
    return max(1, int(-(-len(cell) * _TT_CHAR * TABLE_SCALE // width)))


_LOCAL_CHECK = re.compile(r"local: layer (\d+)")


def _check_name(name: str, t: dict) -> str:
    """A verification row's name: a line's local rules and the loss's own gradient in the catalog's words, a
    formula (``dL/dx``, ``tanh'(z)``) as code."""
    local = _LOCAL_CHECK.fullmatch(name)
    if local:
        return t["forward_code_check_local"].format(line=local.group(1))
    return t["check_local_loss"] if name == "local: loss gradient" else f"`{name}`"


def _shape_words(shape) -> str:
    return "(" + ", ".join(str(d) for d in shape) + ")"


def _notebook(derivation, report, lang: str) -> str:
    """The Markdown as cells, one per section, then the NumPy module and its gradient check as code."""
    import nbformat

    markdown = render_forward(derivation, "markdown", report, lang)
    module = render_forward(derivation, "numpy")
    module = module[: module.index('\nif __name__ == "__main__":')].rstrip() + "\n"
    v4 = nbformat.v4
    cells = [v4.new_markdown_cell(part.strip()) for part in re.split(r"\n(?=## )", markdown) if part.strip()]
    cells += [v4.new_code_cell(module), v4.new_code_cell(
        "loss, cache = forward(random_inputs(0))\ngrads = backward(cache)\n"
        'print(f"loss {loss:.4f}; gradient check: largest relative error {gradient_check():.1e}")')]
    for index, cell in enumerate(cells):
        cell["id"] = f"cell-{index}"
    notebook = v4.new_notebook(cells=cells, metadata={"kernelspec": {"name": "python3", "display_name": "Python 3",
                                                                     "language": "python"}})
    return nbformat.writes(notebook) + "\n"


# -- the NumPy module --------------------------------------------------------------------------------------------

class _CodePrinter(NumPyPrinter):
    """NumPy code against the module's names: integer ids stay integers, so a product with a one-hot matrix is
    a gather (``C[Xb[:, 0]]``) or a scatter-add, one entry per row is picked by fancy indexing and put back by
    ``unpick``, and a one-hot matrix that is needed as such is made by ``one_hot``."""

    def __init__(self, sizes: dict, ids: dict):
        super().__init__(sizes, ids=frozenset(ids))
        self.id_inputs = ids  # name -> (the size the ids are below, ids per row or None)

    def _ids(self, expr):
        if isinstance(expr, sp.MatrixSymbol) and expr.name in self.id_inputs:
            per_row = self.id_inputs[expr.name][1]
            return expr.name if per_row is None else f"{expr.name}[:, 0]" if per_row == 1 else None
        return super()._ids(expr)

    def _print_MatrixSymbol(self, expr):
        if expr.name in self.id_inputs:
            return f"one_hot({expr.name}, {self._print(self.id_inputs[expr.name][0])})"
        return expr.name

    def _vector_ids(self, expr):
        """The name of a 1-D ids input whose one-hot matrix ``expr`` is, else None."""
        if isinstance(expr, sp.MatrixSymbol) and self.id_inputs.get(expr.name, (None, 0))[1] is None:
            return expr.name
        return None

    def _print_MatMul(self, expr):
        # (A ⊙ onehot(y)) 1: each row's entry at its id
        if len(expr.args) == 2 and isinstance(expr.args[1], sp.OneMatrix) and \
                isinstance(expr.args[0], sp.HadamardProduct) and len(expr.args[0].args) == 2:
            ids = [arg for arg in expr.args[0].args if self._vector_ids(arg)]
            if ids:
                other = next(arg for arg in expr.args[0].args if arg is not ids[0])
                name = ids[0].name
                return f"{self._operand(other)}[np.arange(len({name})), {name}][:, None]"
        return super()._print_MatMul(expr)

    def _print_HadamardProduct(self, expr):
        # (G 1ᵀ) ⊙ onehot(y): each row's upstream entry put back at its id
        if len(expr.args) == 2:
            ids = [arg for arg in expr.args if self._vector_ids(arg)]
            other = [arg for arg in expr.args if not self._vector_ids(arg)]
            if ids and other and isinstance(other[0], sp.MatMul) and len(other[0].args) == 2 and \
                    isinstance(other[0].args[1], sp.OneMatrix) and other[0].args[1].shape[0] == 1:
                name = ids[0].name
                vocab = self._print(self.id_inputs[name][0])
                return f"unpick({self._print(other[0].args[0])}, {name}, {vocab})"
        return super()._print_HadamardProduct(expr)


def module_context(derivation) -> dict:
    """What ``forward_backprop.py.j2`` lays out: the forward and backward lines, the helpers they call."""
    net = derivation.network
    ids = {name: (net.inputs[name].shape[1] / (net.module_shapes[name][1:] or (1,))[0],
                  (net.module_shapes[name][1:] or (None,))[0]) for name, role in net.roles.items() if role == "ids"}
    ids = {name: (vocab, None if per_row is None else int(per_row)) for name, (vocab, per_row) in ids.items()}
    intermediates = [step.name for step in net.steps if step.kind != "loss"]
    values = {*net.inputs, *intermediates, *(f"d{step.name}" for step in derivation.backward)}
    elementwise = {}
    for expr in [*(s.expr for s in net.steps), *(s.expr for s in derivation.backward)]:
        for node in sorted(expr.atoms(Elementwise), key=str):
            elementwise[function_name(node)] = activation_rule(node.activation).numpy(node.order, node.params, z="z")
    clash = values & {*elementwise, *_MODULE_NAMES}
    if clash:
        raise FormatError(f"--format py: the name(s) {', '.join(sorted(clash))} of the forward pass are taken by the "
                          "generated module; rename them")
    names = {symbol: str(symbol) if str(symbol) not in values else f"size_{symbol}" for symbol in net.dims}
    printer = _CodePrinter(names, ids)
    constants = NumPyPrinter({symbol: f"SIZES[{str(symbol)!r}]" for symbol in net.dims})

    def numpy_shape(name):
        return net.module_shapes.get(name, net.symbol(name).shape)

    binding = {}  # size symbol -> "input.shape[axis]"
    for name in net.inputs:
        for axis, d in enumerate(numpy_shape(name)):
            if isinstance(d, sp.Symbol):
                binding.setdefault(d, f"{name}.shape[{axis}]")
    sizes = [f"{names[symbol]} = {binding.get(symbol, f'SIZES[{str(symbol)!r}]')}" for symbol in net.dims]

    def shape_code(shape, to=printer):
        return "(" + ", ".join(to.doprint(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"

    def reshaped(variable, name, shape):
        """``variable`` (a value of ``name``) reshaped to ``shape`` where the forward code's shape of ``name`` is
        not the derivation's matrix (ids stay as they are)."""
        if name not in net.module_shapes or net.roles.get(name) == "ids":
            return variable
        return f"{variable}.reshape{shape_code(shape)}"

    forward = [f"{name} = inputs[{name!r}]" for name in net.inputs] + sizes
    for step in net.steps:
        source = net.lines.get(step.name, (0, ""))[1]
        if step.kind == "loss":
            forward.append(f"{step.name} = float(np.sum({printer.doprint(step.expr.arg)}))  # {source}")
        else:
            forward.append(f"{step.name} = {printer.doprint(step.expr)}  # {source}")
    backward = [f"{name} = cache[{name!r}]" for name in net.inputs] + sizes
    backward += [f"{name} = {reshaped(f'cache[{name!r}]', name, net.symbol(name).shape)}" for name in intermediates]
    for step in derivation.backward:
        expr = step.code_expr
        code = printer.doprint(expr)
        if expr.atoms(sp.OneMatrix) or not expr.atoms(sp.MatrixSymbol):
            code = f"_full({code}, {shape_code(step.shape)})"
        backward.append(f"d{step.name} = {code}  # {text(expr)}  ({shape_text(step.shape)})")
    code = "\n".join([*forward, *backward])
    helpers = {name for name in ("one_hot", "unpick", "scatter_rows", "first_max_mask", "_full")
               if re.search(rf"\b{name}\(", code)}
    return {
        "path": net.spec.path, "function": net.spec.function, "loss": net.loss_name,
        "sizes": "{" + ", ".join(f"{str(s)!r}: {v}" for s, (v, _) in net.dims.items()) + "}",
        "shapes": "{" + ", ".join(f"{name!r}: {shape_code(numpy_shape(name), constants)}" for name in net.inputs) + "}",
        "ids": "{" + ", ".join(f"{name!r}: {constants.doprint(vocab)}" for name, (vocab, _) in ids.items()) + "}",
        "id_names": list(ids), "reshaped": [name for name in net.module_shapes if name not in ids],
        "elementwise": elementwise, "helpers": helpers, "forward": forward, "backward": backward,
        "cache": "{" + ", ".join(f"{name!r}: {reshaped(name, name, numpy_shape(name))}"
                                 for name in [*net.inputs, *intermediates]) + "}",
        "grads": "{" + ", ".join(f"'d{step.name}': {reshaped('d' + step.name, step.name, numpy_shape(step.name))}"
                                 for step in derivation.backward) + "}",
    }
