"""scripts/evaluate's output: the five-column table as CSV and Markdown, summary.json, the terminal summary."""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ..tables import align
from .scoring import Aggregate, RowResult, aggregates

# The table's columns, in this order, in results.csv and results.md.
COLUMNS = ("Pregunta", "Respuesta-GT", "Respuesta-LLM", "Score", "Explicación")


def table_rows(results: Sequence[RowResult], judged: bool) -> list[list[str]]:
    """The five columns of each result as text; an empty Score when the judge's call failed."""
    rows = []
    for r in results:
        score = r.score(judged)
        rows.append(
            [
                r.question.pregunta,
                r.question.respuesta,
                r.answer,
                "" if score is None else f"{score:.3f}",
                r.explanation(judged),
            ]
        )
    return rows


def write_csv(path: Path, rows: Iterable[Sequence[str]]) -> Path:
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        writer.writerows(rows)
    return path


def write_markdown(path: Path, rows: Iterable[Sequence[str]]) -> Path:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(_markdown_cell(cell) for cell in row) + " |" for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _markdown_cell(text: str) -> str:
    """A table cell keeps its line breaks as <br> and its pipes escaped, so the row stays one line."""
    text = text.strip().replace("\\", "\\\\").replace("|", "\\|")
    return "<br>".join(line.strip() for line in text.splitlines())


def format_summary(lines: Sequence[Aggregate], score_source: str) -> str:
    """A fixed-width table of the aggregates, for the terminal."""
    header = ("set", "n", "errors", "match", "EM", "F1", "sim", "judge", f"Score ({score_source})")
    body = [
        (
            a.name,
            str(a.n),
            str(a.errors),
            f"{a.match:.3f}",
            f"{a.exact_match:.3f}",
            f"{a.token_f1:.3f}",
            f"{a.similarity:.3f}",
            "-"
            if a.judge is None
            else f"{a.judge:.3f}" + (f" ({a.judge_failures} failed)" if a.judge_failures else ""),
            "-" if a.score is None else f"{a.score:.3f}",
        )
        for a in lines
    ]
    return align([header, *body])


def write_results(out_dir: Path, results: Sequence[RowResult], *, judged: bool, meta: dict[str, Any]) -> list[Path]:
    """results.csv and results.md (the five columns), and summary.json (aggregates and every row's metrics)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = table_rows(results, judged)
    summary = {
        **meta,
        "score": "judge" if judged else "match",
        "aggregates": [asdict(a) for a in aggregates(results, judged)],
        "rows": [
            {
                "pregunta": r.question.pregunta,
                "respuesta_gt": r.question.respuesta,
                "respuesta_llm": r.answer,
                "categoria": r.question.categoria,
                "match": r.match,
                "match_reason": r.match_reason,
                "exact_match": r.exact_match,
                "token_f1": r.token_f1,
                "similarity": r.similarity,
                "judge_score": r.judge.score if r.judge else None,
                "judge_explanation": r.judge.explanation if r.judge else None,
                "judge_error": r.judge_error or None,
                "error": r.error or None,
                "score": r.score(judged),
                "seconds": round(r.seconds, 3),
            }
            for r in results
        ],
    }
    summary_path = out_dir / "summary.json"
    summary_path.write_text(json.dumps(summary, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return [write_csv(out_dir / "results.csv", rows), write_markdown(out_dir / "results.md", rows), summary_path]
