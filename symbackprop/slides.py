"""The Beamer deck planned in Python: which content goes on which frame, and where long formulas break.

Every piece of content is a *block* (a sentence, a heading, a formula, a table) with a height estimated by
``mathsize``; blocks are packed into frames under the page's height, and what does not fit continues on a
frame titled "(continued)". Formulas wider than their column break at top-level ``=`` (then ``+``, ``-``,
``\\odot``) into aligned lines; matrices are elided past a readable size; the worked example shows one
layer's parameters per frame. The template (``backprop_slides.tex.j2``) only lays the frames out, and its
fitting macros shrink and log whatever the estimates missed, so a test can hold the deck to its limits.

The deck iterates over the steps the derivation gives (forward steps per layer, backward steps per layer,
the local gradients each backward step uses); it never branches on a layer kind.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from itertools import pairwise

from .lecture import example_data, example_sentences, latex_matrix, number
from .mathsize import last_group, measure, split_top_level, text_width

# Page geometry of the default Beamer theme at 10 pt (128 mm x 96 mm), in pt, with a margin for error.
TEXT_WIDTH = 307.0
BODY_HEIGHT = 225.0  # estimated pt; estimates run 5-30% high, and the frame body holds 222 real pt
PANEL_SHARE = 0.40  # the backward pass's panel; the formulas get 0.57 of the width
PANEL_SCALE = 0.8  # \footnotesize in the panel: 8 pt, the smallest text a slide shows
MAIN_WIDTH = 0.57 * TEXT_WIDTH
# At 8 pt, TeX sets scripts at 6 and 5 pt (at 10 pt: 7 and 5), so a formula with indices comes to about 0.88 of
# its 10 pt width, not 0.8.
PANEL_MATH_SCALE = 0.88
# In 10 pt units, inside the panel's padding, with 10 % to spare: at 8 pt, a panel line must never shrink.
PANEL_WIDTH = 0.9 * (PANEL_SHARE * TEXT_WIDTH - 8) / PANEL_MATH_SCALE
COLUMN_WIDTH = 0.48 * TEXT_WIDTH
ARTICLE_WIDTH = 440.0  # an A4 article with 2.2 cm margins is 472 pt wide
LINE = 12.5
MAX_STEPS_PER_FRAME = 4
WALK_WIDTH = 0.85 * TEXT_WIDTH
# A backward step's chain-rule form may take at most this share of a frame's height.
CHAIN_MAX_SHARE = 0.6
# The height estimates run high for braced lines: walk frames with braces may hold this share of the body.
WALK_HEIGHT_SHARE = 1.05
STRIP_HEIGHT = 16.0  # the row of layer boxes above a forward or backward frame's body
STRIP_MAX_LAYERS = 10  # past this many layers the strip elides the ones far from the current layer
PANEL_PADDING = 8.0  # the panel's box around its blocks
# Tables are set in \footnotesize: a row of one line, each further line of a wrapped cell, a column's padding.
TABLE_SCALE = 0.8
TABLE_ROW = 11.0
TABLE_LINE = 9.5
TABLE_PADDING = 6.0
# The worked example on slides: 3 decimals, at most 6 rows and 6 columns of a matrix.
SLIDE_DIGITS = 3
SLIDE_MATRIX = 6
_DESCENT = r"\theta \leftarrow \theta - {rate} \frac{{\partial L}}{{\partial \theta}}"
_SCALAR_CHAIN = r"z = f(y),\quad y = g(x) \qquad \Rightarrow \qquad \frac{dz}{dx} = \frac{dz}{dy} \cdot \frac{dy}{dx}"


@dataclass
class Block:
    """One piece of a frame: ``kind`` is ``text``, ``heading``, ``math``, ``table`` or ``picture`` (a layout kind;
    a picture is a convolution's patch, ``index_forms.patch_picture``).

    ``step``: the block is revealed on a click of its own (numbered into ``reveal`` when packed); ``leads``: it
    introduces the next block and never ends a frame (a heading, or the sentence before a formula).
    """

    kind: str
    height: float
    text: str = ""
    math: str = ""
    table: dict = field(default_factory=dict)
    picture: dict = field(default_factory=dict)
    step: bool = True
    reveal: int = 1
    leads: bool = False

    def view(self) -> dict:
        return {"kind": self.kind, "text": self.text, "math": self.math, "table": self.table,
                "picture": self.picture, "reveal": self.reveal, "height": self.height}


# -- blocks -----------------------------------------------------------------------------------------------

def _inline_width(text: str) -> float:
    """Running text with ``$...$`` math: the text's width plus each math piece's."""
    parts = text.split("$")
    return sum(text_width(part) if index % 2 == 0 else measure(part, display=False).w
               for index, part in enumerate(parts))


# The most names of kept values a row of the deck's memory table lists (an unrolled layer keeps dozens).
MEMORY_NAMES = 6
# The height of a cell of the patch picture (0.3 cm), in pt.
PICTURE_CELL = 8.6
# The general forms' equations are set a little smaller, so that attention's five fit on one frame.
PATTERN_SCALE = 0.85


def text(sentence: str, width: float = TEXT_WIDTH, step: bool = True, scale: float = 1.0) -> Block:
    """A sentence (with ``$...$`` math) set in ``width`` at ``scale`` times 10 pt."""
    lines = max(1, -(-_inline_width(sentence) * 1.03 // width))
    return Block("text", lines * LINE * scale + 2, text=sentence, step=step)


def heading(sentence: str, step: bool = True, scale: float = 1.0) -> Block:
    return Block("heading", LINE * scale + 2, text=sentence, step=step)


def _scaled_height(math: str, width: float) -> float:
    box = measure(math)
    return box.total * min(1.0, width / box.w) if box.w else box.total


def join_lines(lines: list[str]) -> str:
    """Display lines as one formula: a single line as it is, several as ``aligned`` (lines carry their ``&``)."""
    return lines[0] if len(lines) == 1 else r"\begin{aligned}" + r" \\ ".join(lines) + r"\end{aligned}"


def _unbraced(math: str) -> str:
    """``math`` without its under-braces' labels and thin spaces: ``{\\underbrace{X^{\\top}}_{...}} \\, d``
    reads ``X^{\\top}d``, so a chain-rule form can be compared with the formula it gives."""
    while r"{\underbrace{" in math:  # statements.brace: {\underbrace{body}_{label}}
        start = math.index(r"{\underbrace{")
        body_end = _group_end(math, start + len(r"{\underbrace"))
        label_end = _group_end(math, body_end + 1) if math[body_end:body_end + 2] == "_{" else body_end
        math = math[:start] + math[start + len(r"{\underbrace{"):body_end - 1] + math[label_end + 1:]
    return math.replace(r"\,", "").replace(" ", "")


def _group_end(math: str, start: int) -> int:
    """The index after the braced group opening at ``start``."""
    depth = 0
    for index in range(start, len(math)):
        depth += {"{": 1, "}": -1}.get(math[index], 0)
        if depth == 0:
            return index + 1
    return len(math)


def equation_parts(parts: list[str]) -> list[str]:
    """The sides of a chain of equalities worth printing: empty parts dropped, and a last part dropped
    that only repeats the one before (the chain-rule form without its under-brace labels)."""
    parts = [part for part in parts if part]
    if len(parts) > 2 and _unbraced(parts[-1]) == _unbraced(parts[-2]):
        parts.pop()
    return parts


def display(parts: list[str], width: float = ARTICLE_WIDTH, tail: str = "") -> str:
    """A Jinja filter: the equation ``parts[0] = parts[1] = ...`` broken to fit ``width``."""
    return join_lines(break_equation(equation_parts(parts), width, tail))


def side_by_side(items: list[str], width: float = ARTICLE_WIDTH) -> list[str]:
    """Display formulas two to a line (``\\qquad`` between) where the pair surely fits ``width`` (the
    estimate has a tenth to spare, so a pair is never shrunk where a single formula would not be); a Jinja
    filter."""
    lines, index = [], 0
    while index < len(items):
        pair = rf"{items[index]} \qquad {items[index + 1]}" if index + 1 < len(items) else None
        if pair and measure(pair).w <= 0.9 * width:
            lines.append(pair)
            index += 2
        else:
            lines.append(items[index])
            index += 1
    return lines


def math(lines: list[str], step: bool = True, width: float = TEXT_WIDTH, scale: float = 1.0) -> Block:
    """A display block of one or more lines (``width`` in 10 pt units, set at ``scale`` times 10 pt)."""
    body = join_lines(lines)
    return Block("math", (_scaled_height(body, width) + 3 * (len(lines) - 1) + 5) * scale + 1, math=body,
                 step=step)


def table(columns: str, header: list[str], rows: list[list[str]], step: bool = False,
          lines: list[int] | None = None) -> Block:
    """A table set in ``\\footnotesize``; ``lines``: how many lines each row's wrapped cells take (one each by
    default)."""
    height = TABLE_ROW * (len(rows) + 1) + TABLE_LINE * sum(count - 1 for count in lines or []) + 10
    return Block("table", height, table={"columns": columns, "header": header, "rows": rows}, step=step)


def cell_lines(cell: str, width: float) -> int:
    """How many lines a table's cell (text with ``$...$`` math) takes in a column ``width`` pt wide."""
    return max(1, int(-(-_inline_width(cell) * TABLE_SCALE * 1.05 // width)))


def table_frames(title: str, columns: str, header: list[str], rows: list[list[str]], lines: list[int],
                 t: dict, intro: tuple[Block, ...] = ()) -> list[dict]:
    """A table on as many frames as its rows need, cut into runs of even heights, after the blocks ``intro``;
    ``lines``: how many lines each row's wrapped cells take."""
    heights = [TABLE_ROW + TABLE_LINE * (count - 1) for count in lines]
    return pack(title, [*intro, *(table(columns, header, rows[a:b], lines=lines[a:b])
                                  for a, b in _even(heights, BODY_HEIGHT - TABLE_ROW - 10))], t)


def _even(heights: list[float], budget: float) -> list[tuple[int, int]]:
    """Index ranges cutting items of ``heights`` into as few runs under ``budget`` as fit, of even sizes where
    even runs fit too (no near-empty last frame)."""
    greedy, start, used = [], 0, 0.0
    for index, height in enumerate(heights):
        if index > start and used + height > budget:
            greedy.append((start, index))
            start, used = index, 0.0
        used += height
    greedy.append((start, len(heights)))
    bounds = [round(index * len(heights) / len(greedy)) for index in range(len(greedy) + 1)]
    even = list(pairwise(bounds))
    return even if all(sum(heights[a:b]) <= budget for a, b in even) else greedy


def break_equation(parts: list[str], width: float, tail: str = "") -> list[str]:
    """``parts[0] = parts[1] = ...`` (then ``tail``) as display lines that each fit ``width``: one plain line
    if it fits, else aligned lines ``lhs &= p1``, ``&= p2``, a part too wide itself continuing at its
    top-level ``+``, ``-`` or ``\\odot`` on lines of its own."""
    one = " = ".join(parts) + tail
    if measure(one).w <= width:
        return [one]
    lines, lead = [], measure(parts[0]).w

    def fits(line: str) -> bool:  # a line after the first sits right of the left side's column
        return measure(line.replace("&", "")).w + (lead if line.startswith("&") else 0) <= width

    for index, part in enumerate(parts[1:]):
        prefix = f"{parts[0]} &= " if index == 0 else "&= "
        pieces = _pieces(part, width - measure(f"{parts[0]} =").w)  # the first line holds the left side too
        current = pieces[0]
        for piece in pieces[1:]:
            if fits(f"{prefix}{current} {piece}"):
                current = f"{current} {piece}"
            else:
                lines.append(prefix + current)
                prefix, current = r"&\quad ", piece
        lines.append(prefix + current)
    if tail and fits(lines[-1] + tail):
        lines[-1] += tail
    elif tail:
        lines.append("&" + tail)
    return lines if len(lines) > 1 else [lines[0].replace(" &= ", " = ", 1)]


def _pieces(math: str, width: float, operators: tuple = (("+", "-"), (r"\odot",))) -> list[str]:
    r"""``math`` cut where a line may break: at top-level ``+`` and ``-``; a piece still wider than ``width`` at
    its top-level ``\odot``, and then, if it has a bracket (``\frac{1}{N} \left(a - b\right)``), opened at its
    last one, set as ``\Bigl( ... \Bigr)`` around the inside's own pieces."""
    out = []
    for piece in split_top_level(math, operators[0]):
        if measure(piece).w <= width:
            out.append(piece)
        elif len(operators) > 1:
            out += _pieces(piece, width, operators[1:])
        else:
            out += _opened(piece, width)
    return out


def _opened(piece: str, width: float) -> list[str]:
    """A piece with no place to break, opened at its last bracket where the inside has some (where the inside
    itself fits, at its first operators), else cut before a function it multiplies by (``\\cdot \\log ...``)."""
    group = last_group(piece)
    inner = _pieces(group[2], width) if group else []
    if group and len(inner) < 2:
        inner = next((pieces for operators in (("+", "-"), (r"\odot",))
                      if len(pieces := split_top_level(group[2], operators)) > 1), inner)
    if len(inner) < 2:
        if stacked := _stacked_brace(piece, width):
            return [stacked]
        factors = split_top_level(piece, (r"\log", r"\exp"))
        return [factors[0], *(rf"\cdot {factor}" for factor in factors[1:])]
    before, opening, _, closing, after = group
    pieces = [rf"{before}\Bigl{opening} {inner[0]}", *inner[1:-1], rf"{inner[-1]} \Bigr{closing}{after}"]
    # An end piece still too wide (what follows the bracket) opens at its own last bracket in turn.
    return [part for piece in pieces for part in (
        _opened(piece, width) if measure(piece).w > width and piece not in (before, after) and last_group(piece)
        and len(piece) < len(before) + len(after) + len(group[2]) else [piece])]


def _stacked_brace(piece: str, width: float) -> str | None:
    """A braced term too wide for a line (a brace cannot span lines): the lines of its body stacked under the
    one brace, inside its brackets where the body is one bracketed group; None where the body has no break."""
    start = piece.find(r"{\underbrace{")
    if start < 0:
        return None
    body_start = start + len(r"{\underbrace{")
    body_end = _group_end(piece, body_start - 1) - 1
    body, opening, closing = piece[body_start:body_end], "", ""
    group = last_group(body)
    if group and not group[0].strip() and not group[4].strip():
        body, opening, closing = group[2], rf"\left{group[1]}", rf"\right{group[3]}"
    lines = _fill(body, width - measure(piece[:start]).w - 10)  # room for the brackets
    if len(lines) < 2:
        return None
    return piece[:body_start] + opening + join_lines(lines) + closing + piece[body_end:]


def _fill(math: str, width: float) -> list[str]:
    """``math`` on aligned lines that fit ``width``, as many pieces to a line as fit, each after the first
    indented."""
    room, lines = width - 10, []  # the continuation's indent
    for item in _pieces(math, room):
        if lines and measure(f"{lines[-1]} {item}").w <= room:
            lines[-1] = f"{lines[-1]} {item}"
        else:
            lines.append(item)
    return lines if len(lines) < 2 else ["&" + lines[0], *(rf"&\quad {line}" for line in lines[1:])]


def _wrap_list(items: list[str], width: float, max_lines: int = 3) -> list[str]:
    """Items joined by commas into lines that fit ``width``; past ``max_lines`` the middle is elided."""
    lines, current = [], ""
    for item in items:
        candidate = f"{current},\\ {item}" if current else item
        if current and measure(candidate).w > width:
            lines.append(current)
            current = item
        else:
            current = candidate
    lines.append(current)
    if len(lines) > max_lines:
        lines = [*lines[:max_lines - 2], r"\vdots", lines[-1]]
    return lines


# -- packing ----------------------------------------------------------------------------------------------

def _number_reveals(blocks: list[Block]) -> list[Block]:
    numbered, reveal = [], 0
    for block in blocks:
        reveal += 1 if block.step or reveal == 0 else 0
        numbered.append(replace(block, reveal=reveal))
    return numbered


def frame(title: str, blocks: list[Block], **extra) -> dict:
    """A frame as the template reads it; ``extra``: ``label`` (a link target), ``panel`` (blocks beside the
    main ones), ``columns`` (two lists of blocks side by side), ``strip`` (the network strip), ``link``."""
    view = {"title": title, "blocks": [b.view() for b in _number_reveals(blocks)], "label": None,
            "panel": None, "columns": None, "strip": None, "link": None}
    for key, value in extra.items():
        view[key] = [[b.view() for b in column] for column in value] if key == "columns" else (
            [b.view() for b in value] if key == "panel" else value)
    return view


def pack(title: str, blocks: list[Block], t: dict, *, budget: float = BODY_HEIGHT, **extra) -> list[dict]:
    """Frames holding ``blocks`` in order, each under ``budget``; a heading never ends a frame."""
    return _titled(title, _parts(blocks, budget), t, extra)


def pack_groups(title: str, groups: list[list[Block]], t: dict, *, budget: float = BODY_HEIGHT,
                **extra) -> list[dict]:
    """Frames holding ``groups`` of blocks in order, each group on one frame where it fits one (a new frame
    rather than a group cut in two), a group taller than a frame cut as ``pack`` cuts."""
    parts, current = [], []
    for group in groups:
        joined = [*current, *group]
        if sum(b.height for b in joined) <= budget:
            current = joined
        elif current and sum(b.height for b in group) <= budget:
            parts.append(current)
            current = list(group)
        else:  # a group taller than a frame: the frame so far filled with its start, the rest continued
            *full, current = _parts(joined, budget)
            parts += full
    return _titled(title, [*parts, current] if current else parts, t, extra)


def _titled(title: str, parts: list[list[Block]], t: dict, extra: dict) -> list[dict]:
    """A frame per part, titled ``title`` and then ``title (continued)``; a label and a link on the first only."""
    return [frame(title if index == 0 else f"{title} {t['continued']}", chunk,
                  **{key: value for key, value in extra.items() if index == 0 or key not in ("label", "link")})
            for index, chunk in enumerate(parts)]


def _parts(blocks: list[Block], budget: float) -> list[list[Block]]:
    """``blocks`` in order, cut into parts each under ``budget``; a heading or a leading sentence never ends a
    part."""
    frames, current, used = [], [], 0.0
    for index, block in enumerate(blocks):
        rest = sum(b.height for b in blocks[index:])
        # A small remainder stays rather than open a frame of its own (the estimates run high).
        if current and used + block.height > budget and not (rest < 0.1 * budget and used + rest < 1.03 * budget):
            carried = [current.pop()] if (current[-1].kind == "heading" or current[-1].leads) and len(current) > 1 else []
            frames.append(current)
            current, used = carried, sum(b.height for b in carried)
        current.append(block)
        used += block.height
    if current:
        frames.append(current)
    return frames


def _balanced(blocks: list[Block], budget: float) -> list[list[Block]]:
    """``blocks`` on as few parts under ``budget`` as ``_parts`` needs, of about equal heights (a panel that
    continues on a second frame leaves neither half nearly empty)."""
    parts = _parts(blocks, budget)
    share = sum(b.height for b in blocks) / len(parts)
    while share < budget:
        even = _parts(blocks, share)
        if len(even) <= len(parts):
            return even
        share *= 1.05
    return parts


# -- the deck -----------------------------------------------------------------------------------------------

def strip(depth: int, current: int, backward: bool) -> list[dict]:
    """The network as a row of small boxes (input, layers, loss) with ``current`` highlighted, the layers
    the pass has finished shaded, and past ``STRIP_MAX_LAYERS`` the layers far from ``current`` elided."""
    shown = sorted({0, 1, current - 1, current, current + 1, depth} & set(range(depth + 1))
                   if depth > STRIP_MAX_LAYERS else range(depth + 1))
    items, previous = [], None
    for index in shown:
        if previous is not None and index > previous + 1:
            items.append({"label": r"\cdots", "state": "gap"})
        done = index > current if backward else index < current
        items.append({"label": "X" if index == 0 else str(index),
                      "state": "current" if index == current else ("done" if done else "todo")})
        previous = index
    items.append({"label": "L", "state": "done" if backward else "todo"})
    return items


class Deck:
    """Builds the deck's variable frames from the render context (printed formulas) and the lecture notes."""

    def __init__(self, ctx: dict, derivation, t: dict):
        self.ctx, self.derivation, self.t = ctx, derivation, t
        self.network = derivation.network
        self.depth = self.network.depth
        self.layers = sorted({step["layer"] for step in ctx["forward"]})

    # -- opening ----------------------------------------------------------------------------------------
    def symbols(self) -> list[dict]:
        """The notation table, every row, on as many frames as it needs; a long meaning wraps in its column."""
        t, symbols = self.t, self.ctx["symbols"]
        rows = [[f"${row['symbol']}$", row["meaning"], f"${row['shape']}$"] for row in symbols]
        # The symbol and shape columns as wide as their widest entry, the meaning column the rest of the line.
        widths = [max(measure(row[key], display=False).w for row in symbols) * TABLE_SCALE
                  for key in ("symbol", "shape")]
        meaning = TEXT_WIDTH - sum(widths) - 6 * TABLE_PADDING - 10
        lines = [cell_lines(row[1], meaning) for row in rows]
        columns = rf"l>{{\raggedright\arraybackslash}}p{{{meaning:.0f}pt}}l"
        return table_frames(t["symbols_title"], columns, [t["symbol"], t["meaning"], t["shape"]], rows, lines, t)

    def loss(self) -> list[dict]:
        t, ctx = self.t, self.ctx
        need = _wrap_list([u["grad"] for u in ctx["updates"]], TEXT_WIDTH)
        blocks = [text(t["loss_intro"], step=False),
                  math(break_equation(["L", ctx["loss"]["latex"]], TEXT_WIDTH), step=False),
                  text(t["loss_stated"].format(reduction=ctx["loss"]["reduction"]), step=False),
                  heading(t["gradient_descent"]), math([_DESCENT.format(rate=ctx["rate"])], step=False),
                  text(t["gd_intro_symbols"].format(rate=ctx["rate"]), step=False), text(t["gd_need"]),
                  math(need, step=False)]
        return pack(t["loss_title"], blocks, t)

    def chain(self) -> list[dict]:
        """The chain rule: scalar form, then the matrix form of the last layer's first parameter gradient
        with its factors in the order of the matrix formula, their shapes, and a link to that slide."""
        t, example = self.t, self.ctx["chain_example"]
        blocks = [text(t["chain_intro"], step=False),
                  math([_SCALAR_CHAIN], step=False)]
        if example:
            blocks += [text(t["chain_network"]), math([example["braced"]], step=False),
                       text(t["chain_shapes"]), math([example["shapes"]], step=False),
                       text(t["chain_order"], step=False)]
        # The shortest sum of the backward pass shows gradients adding up (a skip connection, say).
        summed = min((s for s in self.ctx["backward"] if s["terms"] > 1), key=lambda s: measure(s["chain"]).w,
                     default=None)
        if summed:
            blocks += [text(t["sum_intro"]), math(break_equation([summed["lhs"], summed["chain"]], TEXT_WIDTH),
                                                  step=False)]
        return pack(t["chain_title"], blocks, t, label="chain-rule", link=example and {
            "target": f"backward-{example['layer']}",
            "text": t["chain_link"].format(layer=example["layer"])})

    def delta(self) -> list[dict]:
        t, ctx = self.t, self.ctx
        blocks = [text(t["delta_words"], step=False), math([ctx["notation"]["delta_def"].strip("$")], step=False),
                  text(t["delta_shape"]), text(t["delta_role"])]
        first = next((step for step in ctx["backward"] if step["lhs"].startswith(r"\delta")), None)
        if first:
            blocks += [text(t["delta_example"]),
                       math(break_equation([first["lhs"], first["rhs"]], TEXT_WIDTH), step=False)]
        return pack(t["delta_title"], blocks, t)

    def activations(self) -> list[dict]:
        t, frames = self.t, []
        for note in self.ctx["activations"]:
            f = note["name"]
            blocks = [text(note["used"], step=False), math([f"{f}(z) = {note['forward']}"], step=False),
                      math([f"{f}'(z) = {note['derivative']}"])]
            if note["parameters"]:
                blocks.append(text(note["parameters"], step=False))
            if note["definitions"]:
                blocks.append(text(" ".join(note["definitions"]), step=False))
            blocks += [text(sentence) for sentence in note["conventions"]]
            frames += pack(t["activation_title"].format(name=f"${f}$"), blocks, t)
        return frames

    # -- forward and backward -----------------------------------------------------------------------
    def forward(self) -> list[dict]:
        t, frames = self.t, []
        for layer in self.layers:
            steps = [s for s in self.ctx["forward"] if s["layer"] == layer and s["kind"] != "loss"]
            if not steps:
                continue
            intro = self.ctx["intros"].get(layer)
            blocks = [text(intro, step=False)] if intro else []
            blocks += [math(break_equation([s["lhs"], s["rhs"]], TEXT_WIDTH, rf" \qquad ({s['shape']})"))
                       for s in steps]
            blocks.append(heading(t["forward_local"]))
            if not frames:  # the arrows of these lists, said in words where they first appear
                blocks.append(text(t["local_arrows"], step=False))
            blocks += [replace(math(lines, step=index > 0 and part == 0), leads=part < len(formulas) - 1)
                       for index, row in enumerate(r for r in self.ctx["local"]
                                                   if r["layer"] == layer and r["side"] not in ("loss", "penalty"))
                       for formulas in [_local_formulas(row, TEXT_WIDTH)] for part, lines in enumerate(formulas)]
            frames += pack(t["forward_layer_title"].format(layer=layer), blocks, t,
                           budget=BODY_HEIGHT - STRIP_HEIGHT, strip=strip(self.depth, layer, backward=False))
        loss_steps = [s for s in self.ctx["forward"] if s["kind"] == "loss"]
        blocks = [math(break_equation([s["lhs"], s["rhs"]], TEXT_WIDTH), step=False) for s in loss_steps]
        blocks.append(heading(t["forward_local"]))
        blocks += [math(break_equation([row["lhs"], row["expr"]], TEXT_WIDTH),
                        step=False) for row in self.ctx["local"] if row["side"] in ("loss", "penalty")]
        return frames + pack(t["forward_loss_title"], blocks, t)

    def _panel(self, steps: list[dict]) -> tuple[list[Block], float]:
        """The panel beside backward steps: symbols, forward equations and local gradients they use, and
        its estimated height (with the box's padding)."""
        t, ctx = self.t, self.ctx
        used = [pair for s in steps for pair in s["locals"]]
        quantities = {of for of, _ in used} | {wrt for _, wrt in used}
        forward = [s for s in ctx["forward"] if s["lhs"] in {of for of, _ in used}]
        symbols = [row for row in ctx["symbols"]
                   if row["symbol"] in quantities and not row["symbol"].startswith(r"\delta")]
        # (the loss's own gradient is the step beside the panel: it is not repeated there)
        shown = {s["rhs"] for s in steps}
        local = [row for row in ctx["local"] if (row["of"], row["wrt"]) in used
                 and not (row["side"] == "loss" and row["expr"] in shown)]
        width, scale, tall = PANEL_WIDTH, PANEL_SCALE, PANEL_MATH_SCALE  # tall: formulas, with their scripts
        blocks = [heading(t["panel_symbols"], step=False, scale=scale),
                  *(text(f"${row['symbol']}$: {row['meaning']}", width, step=False, scale=scale)
                    for row in symbols),
                  heading(t["panel_forward"], step=False, scale=scale),
                  *(math(break_equation([s["lhs"], s["rhs"]], width), step=False, width=width, scale=tall)
                    for s in forward),
                  *([heading(t["panel_local"], step=False, scale=scale)] if local else [])]
        # Rows that fit a line go two to a line where a pair fits; a longer row breaks over lines of its own.
        pending = []
        for formulas in [*(_local_formulas(row, width) for row in local), []]:
            if len(formulas) == 1 and len(formulas[0]) == 1:
                pending.append(formulas[0][0])
                continue
            blocks += [math([line], step=False, width=width, scale=tall) for line in side_by_side(pending, width)]
            pending = []
            blocks += [replace(math(lines, step=False, width=width, scale=tall), leads=part < len(formulas) - 1)
                       for part, lines in enumerate(formulas)]
        return blocks, sum(b.height for b in blocks) + PANEL_PADDING

    def _fits(self, steps: list[dict]) -> bool:
        main = sum(self._step_block(step).height for step in steps)
        return len(steps) <= MAX_STEPS_PER_FRAME and max(main, self._panel(steps)[1]) <= BODY_HEIGHT - STRIP_HEIGHT

    def _chunks(self, steps: list[dict]) -> list[list[dict]]:
        """The steps on as few frames as fit, spread evenly over them (no lone step on a continuation)."""
        greedy, current = [], []
        for step in steps:
            if current and not self._fits([*current, step]):
                greedy.append(current)
                current = []
            current.append(step)
        greedy.append(current)
        count = len(greedy)
        bounds = [round(index * len(steps) / count) for index in range(count + 1)]
        even = [steps[start:end] for start, end in pairwise(bounds)]
        return even if all(self._fits(chunk) for chunk in even) else greedy

    def backward(self) -> list[dict]:
        t, frames = self.t, []
        for layer in reversed(self.layers):
            title, index = t["backward_layer_title"].format(layer=layer), 0
            for chunk in self._chunks([s for s in self.ctx["backward"] if s["layer"] == layer]):
                # A panel taller than the frame continues beside the same steps on the next frame.
                for panel in _balanced(self._panel(chunk)[0], BODY_HEIGHT - STRIP_HEIGHT - PANEL_PADDING):
                    frames.append(frame(title if index == 0 else f"{title} {t['continued']}",
                                        [self._step_block(s) for s in chunk], panel=panel,
                                        label=f"backward-{layer}" + (f"-{index + 1}" if index else ""),
                                        strip=strip(self.depth, layer, backward=True)))
                    index += 1
                # A step's shorter forms follow the frames that derive it step by step.
                frames += [page for step in chunk for alt in step["alternatives"] for page in self._shorter(step, alt)]
            frames += [page for pattern in self.ctx["patterns"] if pattern["layer"] == layer
                       for page in self._pattern(pattern)]
            frames += [page for walk in self.ctx["walks"] if walk["layer"] == layer for page in self._walk(walk)]
        return frames

    def _walk(self, walk: dict) -> list[dict]:
        """A derivation people study (``walks.py``) on frames of its own: each line after its sentence."""
        blocks = []
        for line in walk["lines"]:
            # (braced terms with long labels measure narrower than they set: break with room to spare)
            formula = [line["math"]] if "math" in line else break_equation([line["lhs"], line["rhs"]],
                                                                           WALK_WIDTH)
            blocks += [replace(text(line["note"], step=False), leads=True), math(formula)]
        share = WALK_HEIGHT_SHARE if any(r"\underbrace" in block.math for block in blocks) else 1.0
        return pack(walk["title"], blocks, self.t, budget=share * (BODY_HEIGHT - STRIP_HEIGHT),
                    label=f"walk-{walk['id']}", strip=strip(self.depth, walk["layer"], backward=True))

    def _pattern(self, pattern: dict) -> list[dict]:
        """A layer's general backward form (BPTT, attention, an embedding, a convolution's index form) on frames of
        its own; a convolution's patch picture on the first, before the equations."""
        where = {"label": f"pattern-{pattern['layer']}", "strip": strip(self.depth, pattern["layer"], backward=True)}
        blocks = [text(pattern["intro"], step=False)]
        frames = []
        if pattern["picture"]:
            rows = pattern["picture"]["rows"]
            blocks += [Block("picture", (rows + 2) * PICTURE_CELL + 4, picture=pattern["picture"], step=False, leads=True),
                       text(pattern["caption"], step=False)]
            frames = pack(pattern["title"], blocks, self.t, budget=BODY_HEIGHT - STRIP_HEIGHT, **where)
            blocks, where["label"] = [], f"pattern-{pattern['layer']}-sums"
        blocks += [math(break_equation([eq["lhs"], eq["rhs"]], TEXT_WIDTH / PATTERN_SCALE,
                                       rf" \qquad {eq['range']}" if eq["range"] else ""), scale=PATTERN_SCALE)
                   for eq in pattern["equations"]]
        return frames + pack(pattern["title"], blocks, self.t, budget=BODY_HEIGHT - STRIP_HEIGHT, **where)

    def _shorter(self, step: dict, alt: dict) -> list[dict]:
        """A shorter form of a backward step on a frame of its own: what it is, the formula, the assumption it
        needs, the step-by-step form beside it and what the verifier proved."""
        t = self.t
        blocks = [text(alt["intro"], step=False),
                  math(break_equation([step["lhs"], alt["rhs"]], TEXT_WIDTH, rf" \quad ({step['shape']})"), step=False)]
        if alt["assumption"]:
            blocks.append(text(alt["assumption"], step=False))
        blocks += [text(t["form_staged"]), math(break_equation([step["lhs"], step["rhs"]], TEXT_WIDTH), step=False),
                   text(alt["proof"], step=False)]
        label = f"form-{step['name']}-{alt['label']}".replace("_", "-")
        return pack(t["form_frame_title"].format(form=alt["title"]), blocks, t, budget=BODY_HEIGHT - STRIP_HEIGHT,
                    label=label, strip=strip(self.depth, step["layer"], backward=True))

    def _step_block(self, step: dict, chain: bool = True) -> Block:
        """A backward step: the chain-rule form, and where it reads differently the formula it gives, on a
        line of its own with the shape. A chain-rule form so wide that its braced terms stack into more than
        ``CHAIN_MAX_SHARE`` of the frame (an LSTM's four gates) gives way to the formula alone."""
        tail = rf" \quad ({step['shape']})"
        parts = equation_parts([step["lhs"], step["chain"] if chain else "", step["rhs"]])
        if len(parts) == 3:
            lines = [line.strip() for part in (parts[:2], ["", parts[2]])
                     for line in _aligned(break_equation(part, MAIN_WIDTH, tail if not part[0] else ""))]
        else:
            lines = break_equation(parts, MAIN_WIDTH, tail)
        body = join_lines(lines)
        block = Block("math", _scaled_height(body, MAIN_WIDTH) + 3 * (len(lines) - 1) + 10, math=body)
        if chain and len(parts) == 3 and block.height > CHAIN_MAX_SHARE * (BODY_HEIGHT - STRIP_HEIGHT):
            return self._step_block(step, chain=False)
        return block

    # -- closing --------------------------------------------------------------------------------------
    def updates(self) -> list[dict]:
        t, lines = self.t, []
        for layer in self.layers:
            items = [rf"{u['param']} \leftarrow {u['param']} - {self.ctx['rate']} \, {u['grad']}"
                     for u in self.ctx["updates"] if self.ctx["param_layers"].get(u["name"]) == layer]
            if items:
                lines.append(math(_wrap_list(items, TEXT_WIDTH, max_lines=99), step=len(lines) > 0))
        return pack(t["gradient_descent"], [text(t["gradient_descent_intro"].format(rate=self.ctx["rate"]), step=False),
                                            *lines], t)

    def algorithm(self) -> list[dict]:
        """Forward and backward side by side, each with the formulas of one representative layer."""
        t, ctx = self.t, self.ctx
        # The last layer with weights before the output layer (its few formulas fit a column), else the
        # layer before the output.
        inner = self.layers[:-1] or self.layers
        weighted = [layer for layer in inner if f"W{layer}" in ctx["param_layers"]]
        layer = (weighted or inner)[-1]
        width = COLUMN_WIDTH
        forward = [heading(t["algorithm_forward_title"], step=False),
                   text(t["algorithm_forward"], width, step=False),
                   text(t["algorithm_layer"].format(layer=layer), width, step=False)]
        forward += [math(break_equation([s["lhs"], s["rhs"]], width), step=False, width=width)
                    for s in ctx["forward"] if s["layer"] == layer and s["kind"] != "loss"]
        kept = next((row["kept"] for row in ctx["memory"]["rows"] if row["layer"] == layer), "")
        if kept:
            forward.append(text(t["algorithm_keep"].format(values=f"${kept}$"), width, step=False))
        backward = [heading(t["algorithm_backward_title"], step=False),
                    text(t["algorithm_backward"], width, step=False),
                    text(t["algorithm_layer"].format(layer=layer), width, step=False)]
        backward += [math(break_equation([s["lhs"], s["rhs"]], width), step=False, width=width)
                     for s in ctx["backward"] if s["layer"] == layer]
        # Columns taller than the page continue side by side on the next frame; the closing line ends the last.
        update = text(t["algorithm_update"], step=False)
        parts = [_balanced(column, BODY_HEIGHT - update.height - 8) for column in (forward, backward)]
        count = max(map(len, parts))
        return [frame(t["algorithm_title"] if index == 0 else f"{t['algorithm_title']} {t['continued']}",
                      [update] if index == count - 1 else [],
                      columns=[part[index] if index < len(part) else [] for part in parts],
                      label="algorithm" if index == 0 else None)
                for index in range(count)]

    def memory(self) -> list[dict]:
        t, memory = self.t, self.ctx["memory"]
        rows = [[str(r["layer"]), _kept_names(r["kept_names"]), str(r["floats"]), r["bytes32"], r["bytes64"]]
                for r in memory["rows"]]
        rows.append([t["memory_total"], "", str(memory["floats"]), memory["bytes32"], memory["bytes64"]])
        header = [t["layer"], t["memory_kept"], t["memory_floats"], t["memory_bytes32"], t["memory_bytes64"]]
        per_frame = int((BODY_HEIGHT - 60) // 12.5)
        chunks = [rows[i:i + per_frame] for i in range(0, len(rows), per_frame)]
        blocks = [text(t["memory_intro"].format(batch=memory["batch"]), step=False)]
        blocks += [table("llrrr", header, chunk) for chunk in chunks]
        return pack(t["memory_table"], blocks, t)

    # -- the worked example ---------------------------------------------------------------------------
    def example(self) -> list[dict]:
        """The worked example: data, one layer's parameters per frame, forward values, each layer's
        gradients, the update (a line per layer) and the loss before and after it."""
        ex = self.ctx["example_values"]
        if ex is None:
            return []
        t, ctx, frames = self.t, self.ctx, []
        title = t["worked_example"]
        names, layer_of = ctx["names"], ctx["param_layers"]

        def by_layer(values: dict, layers: dict) -> list[list[tuple[str, object]]]:
            return [[(names[name], value) for name, value in values.items() if layers[name] == layer]
                    for layer in self.layers]

        data = [*(text(sentence, step=False) for sentence in example_sentences(self.network, ex, t, SLIDE_DIGITS)),
                *_matrices([[(names[name], value) for name, value in example_data(self.network, ex).items()]])]
        frames += pack(f"{title}: {t['worked_data']}", data, t)
        params = {name: ex.inputs[name] for name in ex.updated}
        for layer, group in zip(self.layers, by_layer(params, layer_of)):
            if group:
                frames += pack(f"{title}: {t['worked_params_layer'].format(layer=layer)}", _matrices([group]), t)
        step_layers = {step["name"]: step["layer"] for step in ctx["forward"]}
        values = _matrices(by_layer(ex.forward, step_layers))
        frames += pack(f"{title}: {t['worked_forward']}", [*values, math([f"L = {number(ex.loss)}"])], t)
        for layer in reversed(self.layers):
            grads = [(step["lhs"], ex.gradients[step["symbol"]]) for step in ctx["backward"]
                     if step["layer"] == layer]
            frames += pack(f"{title}: {t['worked_gradients_layer'].format(layer=layer)}", _matrices([grads]), t)
        update = [text(t["worked_step"].format(lr=number(ex.lr), rate=ctx["rate"]), step=False),
                  *_matrices(by_layer(ex.updated, layer_of), relation=r"\leftarrow"),
                  text(t["worked_loss_change"].format(before=number(ex.loss), after=number(ex.loss_after)))]
        return frames + pack(f"{title}: {t['gradient_descent']}", update, t)


def _kept_names(names: list[str], most: int = MEMORY_NAMES) -> str:
    """A layer's kept values for a slide's table: past ``most``, the first and last ones around a count."""
    if len(names) > most:
        names = [*names[:most - 2], rf"\ldots ({len(names)})", *names[-1:]]
    return f"${', '.join(names)}$" if names else ""


def _matrices(groups: list[list[tuple[str, object]]], relation: str = "=") -> list[Block]:
    """Blocks of ``lhs = matrix`` (3 decimals, elided past 6 rows or columns), two to a line within a
    group where they fit."""
    return [math([line]) for group in groups for line in side_by_side(
        [f"{lhs} {relation} {latex_matrix(value, SLIDE_DIGITS, SLIDE_MATRIX, SLIDE_MATRIX)}"
         for lhs, value in group], TEXT_WIDTH)]


def _aligned(lines: list[str]) -> list[str]:
    """Display lines ready for ``aligned``: a single unbroken line gets its ``&`` before the first ``=``."""
    return lines if len(lines) > 1 else [lines[0].replace(" = ", " &= ", 1)]


def _local_formulas(row: dict, width: float) -> list[list[str]]:
    """A local-gradient row as one formula (its display lines), or where the map's lines do not fit beside a
    header wider than the upstream gradient (the header widens the left column every line shares), as two:
    the header ``da/dgamma:`` above the map; a value too long to break beside its left side (a loss's whole
    gradient), on lines of their own below ``dL/dY ->``."""
    lines = _local_lines(row, width)
    if measure(join_lines(lines)).w <= width:
        return [lines]
    if not lines[0].endswith(": &"):  # a value too long beside its left side: its lines below it
        head, expr = rf"{row['lhs']} \to", row["expr"]
        if row["side"] in ("identity", "vjp"):
            upstream, _, expr = row["expr"].partition(r" \mapsto ")
            head = rf"{row['lhs']}:\ {upstream} \mapsto"
        return [[head], _fill(expr, width)]
    upstream, _, expr = row["expr"].partition(r" \mapsto ")
    body = break_equation([upstream, expr], width)
    body = [body[0].replace(" = ", r" \mapsto ", 1)] if len(body) == 1 else [
        body[0].replace(" &= ", r" &\mapsto ", 1), *body[1:]]
    return [[lines[0].removesuffix(" &")], body]


def _local_lines(row: dict, width: float) -> list[str]:
    """A local-gradient row as display lines that fit ``width``: ``dZ/dW -> A^T``, or where there is no single
    factor, the map it applies to the upstream gradient: ``da/dgamma: dL/da |-> 1^T (dL/da (.) xhat)``, the
    map on lines of its own below ``da/dgamma:`` where it does not fit beside it."""
    lhs, relation, expr = row["lhs"], r"\to", row["expr"]
    header = []
    if row["side"] in ("identity", "vjp"):
        upstream, _, expr = expr.partition(r" \mapsto ")
        relation = r"\mapsto"
        if measure(rf"{lhs}:\ {upstream} \mapsto {expr}").w <= width:
            lhs = rf"{lhs}:\ {upstream}"
        else:
            header, lhs = [rf"{lhs}: &"], upstream
    # A header wider than the upstream gradient widens the left column that every line shares.
    lines = break_equation([lhs, expr], width - max(0.0, measure(rf"{header[0]}:").w - measure(lhs).w) if header
                           else width)
    if len(lines) == 1 and not header:
        line = lines[0].replace(" = ", f" {relation} ", 1)
        # A left side too wide to share a line with its value: the value on a line of its own below it.
        return [line] if measure(line).w <= width else [lhs, rf"\quad {relation} {expr}"]
    lines = _aligned(lines)
    return [*header, lines[0].replace(" &= ", f" &{relation} ", 1), *lines[1:]]


def plan(ctx: dict, derivation, t: dict) -> dict:
    """The deck's variable frames by section; the template interleaves them with its fixed frames."""
    deck = Deck(ctx, derivation, t)
    return {name: getattr(deck, name)() for name in (
        "symbols", "loss", "chain", "delta", "activations", "forward", "backward", "updates", "algorithm",
        "example", "memory")}
