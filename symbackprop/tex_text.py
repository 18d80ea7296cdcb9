"""User text (a title, messages) as pdflatex text: inert, on one line, and compilable whatever its characters.

pdflatex with ``inputenc`` and the default OT1 fonts has glyphs for ASCII and little else, so each other
character is, in this order:

- a TeX command from a table: Greek letters and common mathematical symbols in math mode (``β`` ->
  ``$\\beta$``), typographic punctuation (``–`` -> ``--``), Latin letters such as ``ß`` or ``ø``;
- dropped when invisible (zero-width and direction marks such as U+200B or U+202E, stray combining marks)
  and a plain space when it is one (no-break space, ideographic space, ...);
- kept as it is under ``korean`` (the Korean documents load kotex): Hangul and the wide characters of the
  Korean standard set (hanja, kana, CJK punctuation), all of which kotex's fonts have;
- rebuilt from its Unicode decomposition: a letter with accents becomes TeX accent commands (``é`` ->
  ``\\'{e}``), super- and subscripts ``\\textsuperscript``/``\\textsubscript``, other compatibility forms
  (``ﬁ``, full-width letters) their plain letters;
- otherwise shown as its code point, ``[U+1F600]``, in typewriter type: visible, never an error.
"""

from __future__ import annotations

import unicodedata

from .errors import LINE_BREAKING

_ASCII_SPECIALS = {
    "\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#", "%": r"\%",
    "_": r"\_", "^": r"\^{}", "~": r"\~{}", "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
}
_MATH = {
    **dict(zip("αβγδεζηθικλμνξπρςστυφχψωϑϕϵϱϖ", [
        r"\alpha", r"\beta", r"\gamma", r"\delta", r"\varepsilon", r"\zeta", r"\eta", r"\theta", r"\iota",
        r"\kappa", r"\lambda", r"\mu", r"\nu", r"\xi", r"\pi", r"\rho", r"\varsigma", r"\sigma", r"\tau",
        r"\upsilon", r"\varphi", r"\chi", r"\psi", r"\omega", r"\vartheta", r"\phi", r"\epsilon", r"\varrho",
        r"\varpi"])),
    **dict(zip("ΓΔΘΛΞΠΣΥΦΨΩ", [r"\Gamma", r"\Delta", r"\Theta", r"\Lambda", r"\Xi", r"\Pi", r"\Sigma",
                               r"\Upsilon", r"\Phi", r"\Psi", r"\Omega"])),
    # Symbols our own plain-text formulas use (verification details), and other common ones.
    "ᵀ": "^{T}", "⊙": r"\odot", "∂": r"\partial", "≤": r"\le", "≥": r"\ge", "×": r"\times", "÷": r"\div",
    "±": r"\pm", "−": "-", "·": r"\cdot", "⋅": r"\cdot", "∘": r"\circ", "°": r"^{\circ}", "≠": r"\ne",
    "≈": r"\approx", "≡": r"\equiv", "∼": r"\sim", "∝": r"\propto", "≪": r"\ll", "≫": r"\gg",
    "∞": r"\infty", "∑": r"\sum", "∏": r"\prod", "∫": r"\int", "√": r"\surd", "∇": r"\nabla", "∈": r"\in",
    "∉": r"\notin", "∀": r"\forall", "∃": r"\exists", "∅": r"\emptyset", "⊗": r"\otimes", "⊕": r"\oplus",
    "¬": r"\neg", "∧": r"\wedge", "∨": r"\vee", "→": r"\to", "←": r"\leftarrow", "↔": r"\leftrightarrow",
    "⇒": r"\Rightarrow", "⇐": r"\Leftarrow", "⇔": r"\Leftrightarrow", "ℓ": r"\ell",
    "ℝ": r"\mathbb{R}", "ℕ": r"\mathbb{N}", "ℤ": r"\mathbb{Z}", "ℚ": r"\mathbb{Q}", "ℂ": r"\mathbb{C}",
}
_TEXT = {
    # Greek capitals that look like Latin ones, and omicron.
    **dict(zip("ΑΒΕΖΗΙΚΜΝΟΡΤΧο", "ABEZHIKMNOPTXo")),
    "ß": r"\ss{}", "æ": r"\ae{}", "Æ": r"\AE{}", "œ": r"\oe{}", "Œ": r"\OE{}", "ø": r"\o{}", "Ø": r"\O{}",
    "ł": r"\l{}", "Ł": r"\L{}", "ı": r"\i{}", "ȷ": r"\j{}", "đ": "d", "Đ": "D", "ð": "d", "Ð": "D",
    "þ": "th", "Þ": "Th", "ŋ": "ng", "Ŋ": "Ng", "ħ": "h", "Ħ": "H", "ŧ": "t", "Ŧ": "T", "ĸ": "k",
    "–": "--", "—": "---", "‐": "-", "‑": "-", "‒": "-", "‘": "`", "’": "'", "‚": ",", "“": "``", "”": "''",
    "„": ",,", "′": "'", "″": "''", "«": r"\textless{}\textless{}", "»": r"\textgreater{}\textgreater{}",
    "‹": r"\textless{}", "›": r"\textgreater{}", "…": r"\ldots{}", "•": r"\textbullet{}", "†": r"\dag{}",
    "‡": r"\ddag{}", "§": r"\S{}", "¶": r"\P{}", "©": r"\copyright{}", "®": r"\textregistered{}",
    "£": r"\pounds{}", "€": "EUR", "¥": "JPY", "¢": "c", "⁄": "/", "¡": "!`", "¿": "?`",
    "\u3164": "",  # the Hangul filler, a letter that draws nothing
}
# Combining marks -> the TeX accent commands that the OT1 fonts can draw (ogonek, for one, they cannot).
_ACCENTS = {
    "\u0300": "\\`", "\u0301": "\\'", "\u0302": "\\^", "\u0303": "\\~", "\u0304": "\\=", "\u0306": "\\u",
    "\u0307": "\\.", "\u0308": '\\"', "\u030a": "\\r", "\u030b": "\\H", "\u030c": "\\v", "\u0323": "\\d",
    "\u0327": "\\c", "\u0331": "\\b",
}
_INVISIBLE = ("Cf", "Mn", "Me")  # format characters (U+200B, U+202E, ...) and combining marks left alone
_SCRIPTS = {"<super>": r"\textsuperscript", "<sub>": r"\textsubscript"}


def tex_escape(value: str, *, korean: bool = False) -> str:
    """``value`` as inert pdflatex text on one line (see the module docstring for each kind of character).

    With every backslash escaped no control sequence (``\\input``, ``\\write18``) can be formed, and ``^``
    is escaped too, so neither can TeX's ``^^5c`` notation for a backslash. ``korean``: the document loads
    kotex, so Hangul and hanja are kept.
    """
    text = "".join(_character(ch, korean) for ch in unicodedata.normalize("NFC", str(value)))
    return text.replace(r"]}\texttt{[", " ")  # a run of code points in one box (user text cannot form this)


def _character(ch: str, korean: bool) -> str:
    if ch.isascii():
        return " " if unicodedata.category(ch) in LINE_BREAKING else _ASCII_SPECIALS.get(ch, ch)
    if ch in _MATH:
        return f"${_MATH[ch]}$"
    if ch in _TEXT:
        return _TEXT[ch]
    category = unicodedata.category(ch)
    if category in _INVISIBLE:
        return ""
    if category.startswith("Z") or category in LINE_BREAKING:
        return " "
    if korean and _kotex_has(ch):
        return ch
    rebuilt = _decomposed(ch, korean)
    return rebuilt if rebuilt is not None else rf"\texttt{{[U+{ord(ch):04X}]}}"


def _kotex_has(ch: str) -> bool:
    """Whether kotex's fonts draw ``ch``: Hangul syllables, and the wide characters of the Korean standard
    set (KS X 1001 in its Unified Hangul Code form, cp949): compatibility jamo, hanja, kana, CJK punctuation.
    The set's Latin and Greek letters are left to the tables, since inputenc claims them for OT1."""
    if "\uac00" <= ch <= "\ud7a3":
        return True
    if unicodedata.east_asian_width(ch) not in ("W", "F"):
        return False
    try:
        ch.encode("cp949")
    except UnicodeEncodeError:
        return False
    return True


def _decomposed(ch: str, korean: bool) -> str | None:
    """``ch`` rebuilt from its decomposition (accents, super/subscripts, compatibility forms), or None."""
    decomposition = unicodedata.decomposition(ch)
    if not decomposition:
        return None
    tag = decomposition.split()[0] if decomposition.startswith("<") else None
    if tag is None:  # canonical: a base and combining marks
        base, *marks = unicodedata.normalize("NFD", ch)
        accents = [_ACCENTS[mark] for mark in marks if mark in _ACCENTS] if base.isascii() else []
        text = r"\i{}" if base == "i" and accents else _character(base, korean)
        for accent in accents:
            text = f"{accent}{{{text}}}"
        return text
    plain = unicodedata.normalize("NFKD", ch)
    if plain == ch:
        return None
    inner = "".join(_character(part, korean) for part in plain)
    return f"{_SCRIPTS[tag]}{{{inner}}}" if tag in _SCRIPTS else inner
