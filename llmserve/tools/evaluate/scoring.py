"""Scoring for scripts/evaluate, pure: normalization, exact match, token F1, the judge's prompt and reply, means.

The reference match is in matching.py, similarity in similarity.py, model calls in targets/judges, tables in report.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import EvalCode, EvalError

# Dropped before comparing, as SQuAD drops English articles; Spanish ones too since the dataset is Spanish.
ARTICLES = frozenset({"el", "la", "los", "las", "lo", "un", "una", "unos", "unas", "the", "a", "an"})

# Any punctuation or symbol, except a point or comma between two digits (a decimal: "0,75", "3.14").
_PUNCTUATION = re.compile(r"(?!(?<=\d)[.,](?=\d))[^\w\s]|_")
_DECIMAL_COMMA = re.compile(r"(?<=\d),(?=\d)")
_EXPLANATION_CHARS = 300


@dataclass(frozen=True)
class Question:
    pregunta: str
    respuesta: str
    categoria: str = ""


@dataclass(frozen=True)
class JudgeVerdict:
    score: float  # clamped to [0, 1]
    explanation: str  # one line


@dataclass(frozen=True)
class RowResult:
    """One question's answer and scores; `error` is set when the prediction failed (every score is then 0)."""

    question: Question
    answer: str
    exact_match: float
    token_f1: float
    similarity: float
    seconds: float
    error: str = ""
    judge: JudgeVerdict | None = None
    judge_error: str = ""
    match: float = 0.0  # matching.reference_match: 1 when the answer states the reference
    match_reason: str = ""

    def score(self, judged: bool) -> float | None:
        """The Score column: the judge's score when a judge is used (None if its call failed), else the match."""
        if not judged:
            return 0.0 if self.error else self.match
        if self.error:
            return 0.0
        return self.judge.score if self.judge else None

    def explanation(self, judged: bool) -> str:
        if self.error:
            return f"error: {self.error}"
        if judged:
            return self.judge.explanation if self.judge else f"judge error: {self.judge_error}"
        return f"{self.match_reason} ({metrics_explanation(self.exact_match, self.token_f1, self.similarity)})"


def normalize(text: str) -> str:
    """Casefold, drop accents, punctuation and articles, one space: "¿El Océano Pacífico?" -> "oceano pacifico"."""
    text = unicodedata.normalize("NFKD", text.casefold())
    text = "".join(ch for ch in text if not unicodedata.combining(ch))
    text = _DECIMAL_COMMA.sub(".", _PUNCTUATION.sub(" ", text))
    return " ".join(token for token in text.split() if token not in ARTICLES)


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when both normalize to the same text, else 0.0."""
    return float(normalize(prediction) == normalize(reference))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD's token F1 on normalized text: harmonic mean of token precision and recall (bags of words)."""
    predicted, expected = normalize(prediction).split(), normalize(reference).split()
    if not predicted or not expected:
        return float(predicted == expected)
    common = sum((Counter(predicted) & Counter(expected)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(predicted), common / len(expected)
    return 2 * precision * recall / (precision + recall)


def metrics_explanation(em: float, f1: float, similarity: float) -> str:
    """The metrics written out: "EM 0, F1 0.67, sim 0.82"."""
    return f"EM {em:.0f}, F1 {f1:.2f}, sim {similarity:.2f}"


def load_dataset(path: Path) -> list[Question]:
    """Read a JSONL file of {"pregunta": ..., "respuesta": ...} objects ("categoria" optional, other keys ignored)."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise EvalError(
            EvalCode.BadDataset, "--dataset", f"cannot read {path}: {e}.", "Give a UTF-8 JSONL file."
        ) from e
    questions = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            raise EvalError(
                EvalCode.BadDataset, where, f"not JSON ({e.msg}).", "Write one JSON object per line."
            ) from e
        if not isinstance(row, dict):
            raise EvalError(
                EvalCode.BadDataset, where, "not a JSON object.", 'Write {"pregunta": ..., "respuesta": ...}.'
            )
        for key in ("pregunta", "respuesta"):
            if not isinstance(row.get(key), str) or not row[key].strip():
                raise EvalError(
                    EvalCode.BadDataset, where, f'"{key}" is missing, empty or not a string.', f'Give "{key}" a text.'
                )
        questions.append(Question(row["pregunta"].strip(), row["respuesta"].strip(), str(row.get("categoria", ""))))
    if not questions:
        raise EvalError(EvalCode.BadDataset, "--dataset", f"{path} has no questions.", "Add at least one line.")
    return questions


JUDGE_SYSTEM_PROMPT = (
    "Eres un evaluador estricto y justo de respuestas a preguntas. Comparas la respuesta de un modelo con una "
    "respuesta de referencia que se da por correcta."
)


def judge_prompt(pregunta: str, reference: str, answer: str) -> str:
    """The judge's user turn: the question, the reference, the answer, and the JSON it must reply with."""
    return (
        f"Pregunta: {pregunta}\n"
        f"Respuesta de referencia: {reference}\n"
        f"Respuesta del modelo: {answer or '(vacía)'}\n\n"
        "Puntúa de 0 a 1 si la respuesta del modelo es correcta según la referencia: 1 si dice lo mismo (aunque "
        "use otras palabras o añada detalles correctos), 0 si es incorrecta, está vacía o no responde, y un valor "
        "intermedio si es parcialmente correcta.\n"
        'Contesta solo con un objeto JSON en una línea: {"score": <número de 0 a 1>, "explanation": "<una frase>"}'
    )


def parse_judge_reply(text: str) -> JudgeVerdict:
    """The first JSON object with a "score" in the judge's reply (code fences and prose around it are fine).

    Score clamped to [0, 1], explanation one line; ValueError without such an object or a finite score.
    """
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", text):
        try:
            obj, _ = decoder.raw_decode(text, match.start())
        except json.JSONDecodeError:
            continue
        if isinstance(obj, dict) and "score" in obj:
            break
    else:
        raise ValueError(f"no JSON object with a score in the judge's reply: {_one_line(text)[:200]!r}")
    raw = obj["score"]
    try:
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            raise ValueError
        score = float(raw)
    except ValueError:
        raise ValueError(f"the judge's score {raw!r} is not a number") from None
    if not math.isfinite(score):
        raise ValueError(f"the judge's score {raw!r} is not a finite number")
    explanation = obj.get("explanation", obj.get("explicación", obj.get("explicacion", "")))
    return JudgeVerdict(min(1.0, max(0.0, score)), _one_line(str(explanation))[:_EXPLANATION_CHARS])


def _one_line(text: str) -> str:
    return " ".join(text.split())


@dataclass(frozen=True)
class Aggregate:
    """Means over one set of rows; judge and Score only over rows that have one."""

    name: str
    n: int
    errors: int
    match: float
    exact_match: float
    token_f1: float
    similarity: float
    judge: float | None
    judge_failures: int
    score: float | None


def aggregate(name: str, results: Sequence[RowResult], judged: bool) -> Aggregate:
    judged_scores = [r.judge.score for r in results if r.judge]
    scores = [s for r in results if (s := r.score(judged)) is not None]
    return Aggregate(
        name=name,
        n=len(results),
        errors=sum(1 for r in results if r.error),
        match=_mean([r.match for r in results]),
        exact_match=_mean([r.exact_match for r in results]),
        token_f1=_mean([r.token_f1 for r in results]),
        similarity=_mean([r.similarity for r in results]),
        judge=_mean(judged_scores) if judged_scores else None,
        judge_failures=sum(1 for r in results if r.judge_error),
        score=_mean(scores) if scores else None,
    )


def aggregates(results: Sequence[RowResult], judged: bool) -> list[Aggregate]:
    """All rows first, then one line per categoria (when the dataset has more than one)."""
    lines = [aggregate("all", results, judged)]
    categories = sorted({r.question.categoria for r in results})
    if len(categories) > 1:
        lines += [aggregate(c or "-", [r for r in results if r.question.categoria == c], judged) for c in categories]
    return lines


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0
