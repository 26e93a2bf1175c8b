"""scripts/moderation_report: recall per category, false positives and latency of the input guardrails."""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from ...config import PROJECT_ROOT, Settings
from ...moderation.policy import CATEGORIES
from ..tables import align

# The development part (rules may be written against it) and two held-out parts (never tuned on; data/moderation/).
DEFAULT_CORPORA = [
    PROJECT_ROOT / "data" / "moderation" / name for name in ("requests.jsonl", "heldout.jsonl", "heldout2.jsonl")
]


@dataclass(frozen=True)
class Item:
    id: str
    text: str
    lang: str
    label: str  # "unsafe" or "safe"
    category: str
    style: str
    split: str


@dataclass(frozen=True)
class Verdict:
    item: Item
    refused: bool
    categories: tuple[str, ...]
    backend: str
    seconds: float


def load_corpus(path: Path) -> list[Item]:
    return [Item(**json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def check_all(moderator, items: Sequence[Item]) -> list[Verdict]:
    """The input check on each request alone, as a prediction's `pregunta`; its wall time included."""
    verdicts = []
    for item in items:
        start = time.perf_counter()
        decision = moderator.check_input({"pregunta": item.text})
        seconds = time.perf_counter() - start
        verdicts.append(Verdict(item, not decision.allowed, decision.categories, decision.backend, seconds))
    return verdicts


def rows(verdicts: Sequence[Verdict], split: str) -> list[dict]:
    """One row per category of the split's unsafe requests, then the safe ones, then all unsafe."""
    mine = [v for v in verdicts if v.item.split == split]
    unsafe = [v for v in mine if v.item.label == "unsafe"]
    out = []
    for code in sorted({v.item.category for v in unsafe}, key=lambda c: int(c[1:])):
        group = [v for v in unsafe if v.item.category == code]
        out.append(_row(f"{code} {CATEGORIES[code]}", group, refused_is_right=True))
    out.append(_row("all unsafe", unsafe, refused_is_right=True))
    for lang in ("en", "es"):
        out.append(_row(f"unsafe, {lang}", [v for v in unsafe if v.item.lang == lang], refused_is_right=True))
    for style in sorted({v.item.style for v in unsafe}):
        out.append(_row(f"unsafe, {style}", [v for v in unsafe if v.item.style == style], refused_is_right=True))
    out.append(_row("safe (false positives)", [v for v in mine if v.item.label == "safe"], refused_is_right=False))
    return out


def _row(name: str, group: Sequence[Verdict], *, refused_is_right: bool) -> dict:
    refused = sum(v.refused for v in group)
    return {
        "set": name,
        "n": len(group),
        "refused": refused,
        "rate": refused / len(group) if group else 0.0,  # recall for unsafe sets, false-positive rate for safe
        "missed" if refused_is_right else "refused_ids": [
            v.item.id for v in group if v.refused != refused_is_right
        ],
    }


def refused_by(verdicts: Sequence[Verdict], split: str) -> dict[str, int]:
    """How many of the split's refusals each backend made (the first to refuse decides)."""
    return dict(Counter(v.backend for v in verdicts if v.item.split == split and v.refused))


def latency_ms(verdicts: Sequence[Verdict]) -> dict[str, float]:
    ms = sorted(v.seconds * 1000 for v in verdicts)
    return {"p50": statistics.median(ms), "p95": ms[int(0.95 * (len(ms) - 1))], "max": ms[-1]}


def markdown(report: dict) -> str:
    lines = [f"Backend: {report['backend']}. Latency per check: p50 {report['latency_ms']['p50']:.2f} ms, "
             f"p95 {report['latency_ms']['p95']:.2f} ms, max {report['latency_ms']['max']:.2f} ms.", ""]
    for split in report["splits"]:
        lines += [f"**{split}**", "", "| set | n | refused | rate |", "| --- | --- | --- | --- |"]
        lines += [f"| {r['set']} | {r['n']} | {r['refused']} | {r['rate']:.1%} |" for r in report["splits"][split]]
        by = ", ".join(f"{name} {n}" for name, n in sorted(report["refused_by"][split].items()))
        lines += ["", f"Refusals by backend: {by or 'none'}.", ""]
    if report.get("output"):
        out = report["output"]
        o = out["ordinary"]
        lines += [
            f"**Output filter on {o['answers']} greedy answers of {out['model']}**: {o['unchanged']} let out "
            f"unchanged; at most {o['max_words_held']} words held back at once; each character waited "
            f"{o['delay_ms_p50']:.0f} ms (p50) and {o['delay_ms_p95']:.0f} ms (p95) more than without the filter.",
            "",
        ]
        for echo in out["unsafe_echoes"]:
            verdict = f"stopped ({', '.join(echo['blocked'])})" if echo["blocked"] else "NOT stopped"
            lines.append(f"- An answer that turns unsafe, {verdict}; let out: {echo['emitted']!r}")
        lines.append("")
    return "\n".join(lines)


def _output_check(settings: Settings, moderator, n: int) -> dict:
    """Greedy answers of the model to n English evaluation questions, and to two requests to repeat harmful text."""
    from ...request.params import validate_request
    from ...serving.loader import load_answerer
    from ..evaluate.scoring import load_dataset
    from .output import ECHO_QUESTION, UNSAFE_ECHOES, replay, summary, timed_chunks

    answerer = load_answerer(settings)
    try:

        def answer(pregunta: str):
            request = validate_request(pregunta=pregunta, temperature=0.0, max_new_tokens=64)
            return replay(moderator.output_filter(pregunta), timed_chunks(answerer.stream(answerer.prepare(request))))

        questions = load_dataset(PROJECT_ROOT / "data" / "eval" / "questions_en.jsonl")[:n]
        ordinary = [answer(q.pregunta) for q in questions]
        echoes = [answer(ECHO_QUESTION.format(text=text)) for text in UNSAFE_ECHOES]
    finally:
        answerer.close()
    return {
        "model": answerer.model_name,
        "ordinary": summary(ordinary),
        "unsafe_echoes": [
            {"answer": r.answer, "emitted": r.emitted, "blocked": list(r.blocked)} for r in echoes
        ],
    }


def main(argv: list[str]) -> int:
    """Check every request of the corpus with the configured guardrails (MODERATION_RULES, MODERATION_MODEL)."""
    parser = argparse.ArgumentParser(prog="scripts/moderation_report", description=main.__doc__)
    parser.add_argument(
        "--corpus", type=Path, action="append", help="JSONL of labelled requests (repeatable; default data/moderation/)"
    )
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="for report.json and report.md")
    parser.add_argument(
        "--answers", type=int, default=0, metavar="N",
        help="also stream N real answers (MODEL_ID, e.g. embedded) through the output filter, and two that turn unsafe",
    )  # fmt: skip
    args = parser.parse_args(argv)
    from ...serving.moderator import build_moderator

    settings = Settings.from_env()
    moderator = build_moderator(replace(settings, moderation="both"))
    corpora = args.corpus or DEFAULT_CORPORA
    verdicts = check_all(moderator, [item for path in corpora for item in load_corpus(path)])
    splits = list(dict.fromkeys(v.item.split for v in verdicts))  # in the order the corpora give them
    report = {
        "corpus": [str(path) for path in corpora],
        "backend": moderator.name,
        "rules": str(settings.moderation_rules),
        "model": settings.moderation_model or None,
        "latency_ms": latency_ms(verdicts),
        "refused_by": {split: refused_by(verdicts, split) for split in splits},
        "splits": {split: rows(verdicts, split) for split in splits},
        "output": _output_check(settings, moderator, args.answers) if args.answers else None,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    (args.out / "report.md").write_text(markdown(report) + "\n", encoding="utf-8")
    print(f"wrote {args.out / 'report.json'}, {args.out / 'report.md'}\n")
    for split in splits:
        table = [("set", "n", "refused", "rate")]
        table += [(r["set"], str(r["n"]), str(r["refused"]), f"{r['rate']:.1%}") for r in report["splits"][split]]
        print(f"{split}:\n{align(table, numbers_right=True)}\n")
    return 0
