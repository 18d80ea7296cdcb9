"""Korean particles whose form depends on the sound before them (로/으로, 은/는, 이/가, 을/를, 과/와).

The catalogs write such a particle in both forms, ``(으)로``, where what comes before it is filled in later (a
number, a formula); ``particles`` picks the form once the text is complete. A number is read by its last digit
(0 영, 1 일, 2 이, 3 삼, ...; 10 십, 100 백 and 1000 천 end in a consonant like 0), a formula that ends in a digit
by that digit; a marker after anything else keeps both forms, as Korean writes it when the sound is unknown.
"""

from __future__ import annotations

import re

# Marker -> (after a consonant, after a vowel); ㄹ takes the vowel's 로, and the consonant's form elsewhere.
_FORMS = {"(으)로": ("으로", "로"), "(은)는": ("은", "는"), "(이)가": ("이", "가"), "(을)를": ("을", "를"),
          "(과)와": ("과", "와")}
# The final sound of each digit read aloud: "" a vowel, "ㄹ", or "c" another consonant.
_DIGITS = {"0": "c", "1": "ㄹ", "2": "", "3": "c", "4": "", "5": "", "6": "c", "7": "ㄹ", "8": "ㄹ", "9": ""}
_MARKED = re.compile(r"([0-9\uac00-\ud7a3])(\$?)(" + "|".join(map(re.escape, _FORMS)) + ")")


def _final_sound(ch: str) -> str:
    """The final sound of a digit or Hangul syllable: "" (a vowel), "ㄹ" or "c" (another consonant)."""
    if ch in _DIGITS:
        return _DIGITS[ch]
    final = (ord(ch) - 0xAC00) % 28
    return "" if final == 0 else "ㄹ" if final == 8 else "c"


def _particle(before: str, marker: str) -> str:
    """The form of ``marker`` (``(으)로``) after the character ``before``."""
    consonant, vowel = _FORMS[marker]
    sound = _final_sound(before)
    return vowel if sound == "" or (sound == "ㄹ" and marker == "(으)로") else consonant


def particles(text: str) -> str:
    """``text`` with each marked particle after a digit or syllable (or a formula ending in a digit) in its form."""
    return _MARKED.sub(lambda m: m.group(1) + m.group(2) + _particle(m.group(1), m.group(3)), text)
