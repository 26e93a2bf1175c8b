"""The reference match, 1 or 0 with its reason: does the answer state the reference? Score without a judge."""

# Exact match fails every answer that is a sentence ("La capital de Francia es París") and token F1 penalises its
# length, while similarity gives wrong answers on the right topic 0.4-0.5. So:
# - a reference with a number (56, "100 grados Celsius", 0,75) matches when the answer's last number equals it,
#   or when the answer gives it anywhere and the question does not hold it, so echoing "144 / 12" is no credit
#   (one-word numbers count: "cincuenta" is 50, "cincuenta y seis" reads as 50 and 6; "86.400" and "86,400"
#   also read as 86400);
# - any other reference matches when its words appear together, in order, in the answer, after normalization
#   (case, accents, punctuation, articles, a plural's final s); a parenthesis gives another accepted form:
#   "La retropropagación (backpropagation)" accepts either, and "cross-entropy" also "crossentropy".

from __future__ import annotations

import re
from dataclasses import dataclass

from .scoring import normalize

# "uno" and "one" are left out: as pronouns ("one of them") they would read as numbers.
_UNITS_ES = "cero - dos tres cuatro cinco seis siete ocho nueve diez once doce trece catorce quince".split()
_UNITS_EN = "zero - two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen".split()
_WORDS = {w: n for words in (_UNITS_ES, _UNITS_EN) for n, w in enumerate(words) if w != "-"}
_WORDS |= dict(zip("dieciseis diecisiete dieciocho diecinueve veinte".split(), range(16, 21), strict=True))
_WORDS |= dict(zip("sixteen seventeen eighteen nineteen twenty".split(), range(16, 21), strict=True))
_TENS = {"treinta": 30, "cuarenta": 40, "cincuenta": 50, "sesenta": 60, "setenta": 70, "ochenta": 80, "noventa": 90}
_TENS_EN = {"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90}
_WORDS |= _TENS | _TENS_EN | {"cien": 100, "hundred": 100, "mil": 1000, "thousand": 1000}
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_THOUSANDS = re.compile(r"\d{1,3}(?:\.\d{3})+")  # "86.400" or "86,400": also read as 86400
_PARENTHESIS = re.compile(r"\(([^()]*)\)")


@dataclass(frozen=True)
class Match:
    score: float  # 1.0 or 0.0
    reason: str  # one phrase in Spanish, for the Explicación column


def reference_match(answer: str, reference: str, question: str = "") -> Match:
    """Whether `answer` states `reference`: by its numbers, or by containing one of the reference's forms."""
    expected = _numbers(reference)
    if expected:
        return _number_match(_numbers(answer), float(expected[0]), {float(n) for n in _numbers(question)})
    words = f" {_singular(answer)} "
    for form in reference_forms(reference):
        if f" {_singular(form)} " in words:
            return Match(1.0, f"correcta: contiene «{form}»")
    return Match(0.0, f"incorrecta: no contiene «{' » ni «'.join(reference_forms(reference))}»")


def _number_match(found: list[str], want: float, in_question: set[float]) -> Match:
    # The last number is the answer's result ("144 / 12 = 12"); elsewhere the reference counts only when the
    # question does not hold it ("100 °C (212 °F)" states 100, "144 / 12 = 11" does not state 12).
    if not found:
        return Match(0.0, f"incorrecta: la respuesta no da ningún número (referencia {_show(want)})")
    if _equal(found[-1], want):
        return Match(1.0, f"correcta: su último número es {found[-1]}")
    if want not in in_question and any(_equal(n, want) for n in found):
        return Match(1.0, f"correcta: da {_show(want)}")
    return Match(0.0, f"incorrecta: su último número es {found[-1]}, la referencia {_show(want)}")


def _equal(number: str, want: float) -> bool:
    readings = {float(number)} | ({float(number.replace(".", ""))} if _THOUSANDS.fullmatch(number) else set())
    return any(abs(value - want) <= 1e-9 * max(1.0, abs(want)) for value in readings)


def reference_forms(reference: str) -> list[str]:
    """The normalized forms a reference accepts: itself without parentheses, each parenthesis, hyphens joined."""
    forms = [_PARENTHESIS.sub(" ", reference), *_PARENTHESIS.findall(reference)]
    forms += [f.replace("-", "") for f in forms if "-" in f]  # "cross-entropy" is also "crossentropy"
    normalized = (" ".join(_digits(normalize(f))) for f in forms)
    return list(dict.fromkeys(f for f in normalized if f))


def _singular(text: str) -> str:
    """Normalized words, number words as digits, a plural's final s dropped ("networks" and "network" agree)."""
    words = _digits(normalize(text))
    return " ".join(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w for w in words)


def _digits(text: str) -> list[str]:
    return [str(_WORDS[t]) if t in _WORDS else t for t in text.split()]


def _numbers(text: str) -> list[str]:
    """The numbers in `text`, in order, number words included ("cuatro" -> "4", "0,75" -> "0.75")."""
    return [t for t in _digits(normalize(text)) if _NUMBER.fullmatch(t)]


def _show(value: float) -> str:
    return str(int(value)) if value.is_integer() else f"{value:g}"
