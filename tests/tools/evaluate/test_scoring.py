"""scripts/evaluate's pure parts: normalization, EM, F1, the judge's reply, the dataset, the tables. No torch."""

from __future__ import annotations

import ast
import csv
import json
import math
import operator
import re
import subprocess
import sys

import pytest

from llmserve.tools.evaluate.errors import EvalError
from llmserve.tools.evaluate.judges import parse_judge
from llmserve.tools.evaluate.report import COLUMNS, format_summary, table_rows, write_csv, write_markdown
from llmserve.tools.evaluate.run import DEFAULT_DATASET
from llmserve.tools.evaluate.scoring import (
    JudgeVerdict,
    Question,
    RowResult,
    aggregates,
    exact_match,
    judge_prompt,
    load_dataset,
    metrics_explanation,
    normalize,
    parse_judge_reply,
    token_f1,
)
from llmserve.tools.evaluate.targets import join_output, parse_target
from tests.helpers import ROOT


@pytest.mark.parametrize(
    "text, expected",
    [
        ("¿El Océano Pacífico?", "oceano pacifico"),
        ("La capital de Francia es París.", "capital de francia es paris"),
        ("ÁRBOL, ñandú y pingüino", "arbol nandu y pinguino"),
        ("The answer is a cat", "answer is cat"),
        ("Los unos y las otras", "y otras"),  # "unos" is an article too
        ("0,75", "0.75"),
        ("Son 56.", "son 56"),
        ("Buenos-Aires", "buenos aires"),
        ("  «Don   Quijote»\n", "don quijote"),
        ("", ""),
    ],
)
def test_normalize_drops_case_accents_punctuation_and_articles(text, expected):
    assert normalize(text) == expected


def test_exact_match_compares_normalized_text():
    assert exact_match("el Océano Pacífico.", "Océano pacifico") == 1.0
    assert exact_match("0.75", "0,75") == 1.0
    assert exact_match("París, Francia", "París") == 0.0
    assert exact_match("", "París") == 0.0


@pytest.mark.parametrize(
    "prediction, reference, expected",
    [
        # 5 tokens (capital de francia es paris) against 1 (paris): P 1/5, R 1, F1 2*(1/5)/(6/5) = 1/3.
        ("La capital de Francia es París", "París", 1 / 3),
        # 4 against 3, all 3 shared: P 3/4, R 1, F1 1.5/1.75 = 6/7.
        ("Miguel de Cervantes Saavedra", "Miguel de Cervantes", 6 / 7),
        # A repeated token counts once per occurrence in the reference: P 1/2, R 1, F1 2/3.
        ("París París", "París", 2 / 3),
        # Articles and accents do not count: identical after normalization.
        ("El Júpiter", "jupiter", 1.0),
        ("Roma", "París", 0.0),
        ("", "París", 0.0),
        ("¿?", "", 1.0),  # both empty after normalization
    ],
)
def test_token_f1_values_computed_by_hand(prediction, reference, expected):
    assert token_f1(prediction, reference) == pytest.approx(expected)


def test_metrics_explanation_reads_like_the_docs():
    assert metrics_explanation(0.0, 2 / 3, 0.8234) == "EM 0, F1 0.67, sim 0.82"
    assert metrics_explanation(1.0, 1.0, 1.0) == "EM 1, F1 1.00, sim 1.00"


# --- the judge's reply ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply, score, explanation",
    [
        ('{"score": 0.8, "explanation": "Casi correcta."}', 0.8, "Casi correcta."),
        ('Claro:\n```json\n{"score": 1, "explanation": "Dice París."}\n```', 1.0, "Dice París."),
        ('{"score": "0.5", "explanation": "A medias."}', 0.5, "A medias."),
        ('{"score": 7, "explanation": "x"}', 1.0, "x"),  # clamped
        ('{"score": -0.2}', 0.0, ""),
        ('{"note": "no score here"} {"score": 0.3, "explicación": "Parcial\\n y breve."}', 0.3, "Parcial y breve."),
        ('{"score": 0, "explanation": {"why": "nested"}}', 0.0, "{'why': 'nested'}"),
    ],
)
def test_parse_judge_reply_finds_clamps_and_flattens(reply, score, explanation):
    assert parse_judge_reply(reply) == JudgeVerdict(score, explanation)


def test_parse_judge_reply_caps_the_explanation():
    verdict = parse_judge_reply(json.dumps({"score": 1, "explanation": "a" * 1000}))
    assert len(verdict.explanation) == 300


@pytest.mark.parametrize(
    "reply",
    ["", "La respuesta es correcta.", '{"score": "alto"}', '{"score": true}', '{"score": NaN}', '{"score": null}'],
)
def test_parse_judge_reply_refuses_a_reply_without_a_usable_score(reply):
    with pytest.raises(ValueError, match="score"):
        parse_judge_reply(reply)


def test_judge_prompt_carries_question_reference_answer_and_the_json_to_return():
    prompt = judge_prompt("¿Capital de Francia?", "París", "Es París.")
    for part in ("¿Capital de Francia?", "París", "Es París.", '"score"', '"explanation"'):
        assert part in prompt
    assert "(vacía)" in judge_prompt("¿?", "x", "")


# --- targets and judges, as written on the command line --------------------------------------------


def test_parse_target_kinds():
    assert parse_target("local").kind == "local"
    server = parse_target("http://127.0.0.1:5000/")
    assert (server.kind, server.location) == ("server", "http://127.0.0.1:5000")
    assert parse_target("https://model.example.com").kind == "server"
    rep = parse_target("replicate:alice/pregunta:0123abcd")
    assert (rep.kind, rep.location) == ("replicate", "alice/pregunta:0123abcd")
    assert parse_target("replicate:meta/meta-llama-3-8b-instruct").location == "meta/meta-llama-3-8b-instruct"


@pytest.mark.parametrize("text", ["remote", "ftp://host", "127.0.0.1:5000", "replicate:pregunta", "replicate:a/b:"])
def test_parse_target_refuses_anything_else_with_a_code(text):
    with pytest.raises(EvalError, match="E3002 BadEvalTarget: --target"):
        parse_target(text)


def test_parse_judge_kinds_and_refusals():
    assert (parse_judge("openai:gpt-4o-mini").kind, parse_judge("openai:gpt-4o-mini").model) == (
        "openai",
        "gpt-4o-mini",
    )
    assert parse_judge("openai:qwen2.5:7b").model == "qwen2.5:7b"  # Ollama's names have a colon
    assert parse_judge("replicate:meta/meta-llama-3-70b-instruct").kind == "replicate"
    for bad in ("gpt-4o", "openai:", "replicate:llama", "anthropic:claude"):
        with pytest.raises(EvalError, match="E3003 BadJudge: --judge"):
            parse_judge(bad)


def test_join_output_of_a_streamed_or_plain_output():
    assert join_output(["Pa", "rís", "."]) == "París."
    assert join_output("París") == "París"
    assert join_output(None) == ""


# --- the dataset -------------------------------------------------------------------------------------


def test_load_dataset_reads_questions_and_skips_blank_lines(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(
        '{"pregunta": " ¿Uno? ", "respuesta": "1", "categoria": "a", "extra": 3}\n\n'
        '{"pregunta": "¿Dos?", "respuesta": "2"}\n',
        encoding="utf-8",
    )
    assert load_dataset(path) == [Question("¿Uno?", "1", "a"), Question("¿Dos?", "2", "")]


@pytest.mark.parametrize(
    "content, where, problem",
    [
        ('{"pregunta": "¿Uno?", "respuesta": "1"}\n{"pregunta": "¿Dos?"\n', ":2", "not JSON"),
        ('{"pregunta": "¿Uno?", "respuesta": " "}\n', ":1", '"respuesta" is missing, empty or not a string'),
        ('["¿Uno?", "1"]\n', ":1", "not a JSON object"),
        ("\n\n", "--dataset", "has no questions"),
    ],
)
def test_load_dataset_names_the_line_and_the_problem(tmp_path, content, where, problem):
    path = tmp_path / "d.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(EvalError, match="E3001 BadDataset") as info:
        load_dataset(path)
    assert where in info.value.field and problem in info.value.problem


def test_load_dataset_refuses_a_missing_file(tmp_path):
    with pytest.raises(EvalError, match="E3001 BadDataset: --dataset: cannot read"):
        load_dataset(tmp_path / "nope.jsonl")


def test_the_shipped_dataset_has_40_spanish_questions_in_three_categories():
    questions = load_dataset(DEFAULT_DATASET)
    assert len(questions) >= 40
    counts = {c: sum(1 for q in questions if q.categoria == c) for c in {q.categoria for q in questions}}
    assert set(counts) == {"cultura_general", "aritmetica", "aprendizaje_automatico"}
    assert min(counts.values()) >= 10
    assert len({q.pregunta for q in questions}) == len(questions)  # no duplicates
    assert all(q.pregunta.startswith("¿") and q.pregunta.endswith("?") for q in questions)
    assert (DEFAULT_DATASET.parent / "README.md").is_file()


_OPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}
_OPS[ast.Pow] = operator.pow


def _arithmetic(node: ast.AST) -> float:
    """Evaluate + - * / ** on numbers, and nothing else."""
    if isinstance(node, ast.Expression):
        return _arithmetic(node.body)
    if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return _OPS[type(node.op)](_arithmetic(node.left), _arithmetic(node.right))
    raise ValueError(f"not plain arithmetic: {ast.unparse(node)}")


ENGLISH_DATASET = DEFAULT_DATASET.parent / "questions_en.jsonl"


def _rows(path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_the_english_dataset_asks_the_same_questions_in_the_same_order():
    spanish, english = _rows(DEFAULT_DATASET), _rows(ENGLISH_DATASET)
    assert len(spanish) == len(english) == 50
    for es, en in zip(spanish, english, strict=True):
        assert es.get("calculo") == en.get("calculo")
        if "calculo" in es:
            assert es["respuesta"].replace(",", ".") == en["respuesta"]


@pytest.mark.parametrize("dataset", [DEFAULT_DATASET, ENGLISH_DATASET], ids=["es", "en"])
def test_every_reference_matches_itself_and_a_non_answer_matches_none(dataset):
    from llmserve.tools.evaluate.matching import reference_match

    for question in load_dataset(dataset):
        assert reference_match(question.respuesta, question.respuesta).score == 1.0, question
        assert reference_match("No lo sé. I don't know.", question.respuesta).score == 0.0, question


@pytest.mark.parametrize("dataset", [DEFAULT_DATASET, ENGLISH_DATASET], ids=["es", "en"])
def test_every_arithmetic_answer_equals_its_calculation(dataset):
    rows = _rows(dataset)
    arithmetic = [r for r in rows if "calculo" in r]
    assert len(arithmetic) >= 10 and all("calculo" in r for r in arithmetic)
    for row in arithmetic:
        value = _arithmetic(ast.parse(row["calculo"], mode="eval"))
        assert math.isclose(value, float(row["respuesta"].replace(",", "."))), row


# --- the tables and the summary --------------------------------------------------------------------


def _results() -> list[RowResult]:
    q1 = Question("¿Capital de Francia?", "París", "geo")
    q2 = Question("¿7 por 8?", "56", "mat")
    q3 = Question("¿Pipe?", "a|b", "mat")
    return [
        RowResult(q1, "París", 1.0, 1.0, 0.9, 0.5, judge=JudgeVerdict(1.0, "Correcta."), match=1.0,
                  match_reason="correcta: contiene «paris»"),
        RowResult(q2, "Son 54\ny pico", 0.0, 0.0, 0.4, 0.7, judge_error="HTTP 500",
                  match_reason="incorrecta: su último número es 54, la referencia 56"),
        RowResult(q3, "", 0.0, 0.0, 0.0, 0.1, error="E1002 PromptTooLong: pregunta: ..."),
    ]


def test_table_rows_without_a_judge_score_the_reference_match_and_explain_it():
    rows = table_rows(_results(), judged=False)
    assert rows[0] == [
        "¿Capital de Francia?", "París", "París", "1.000", "correcta: contiene «paris» (EM 1, F1 1.00, sim 0.90)"
    ]
    assert rows[1][3:] == ["0.000", "incorrecta: su último número es 54, la referencia 56 (EM 0, F1 0.00, sim 0.40)"]
    assert rows[2][3:] == ["0.000", "error: E1002 PromptTooLong: pregunta: ..."]


def test_table_rows_with_a_judge_score_the_judge_and_leave_a_failed_call_empty():
    rows = table_rows(_results(), judged=True)
    assert rows[0][3:] == ["1.000", "Correcta."]
    assert rows[1][3:] == ["", "judge error: HTTP 500"]
    assert rows[2][3:] == ["0.000", "error: E1002 PromptTooLong: pregunta: ..."]


def test_csv_has_exactly_the_five_columns_and_round_trips(tmp_path):
    rows = table_rows(_results(), judged=True)
    path = write_csv(tmp_path / "results.csv", rows)
    with path.open(encoding="utf-8", newline="") as f:
        read = list(csv.reader(f))
    assert tuple(read[0]) == COLUMNS == ("Pregunta", "Respuesta-GT", "Respuesta-LLM", "Score", "Explicación")
    assert read[1:] == rows  # the newline inside an answer survives


def test_markdown_is_one_line_per_row_with_pipes_escaped(tmp_path):
    path = write_markdown(tmp_path / "results.md", table_rows(_results(), judged=False))
    lines = path.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "| Pregunta | Respuesta-GT | Respuesta-LLM | Score | Explicación |"
    assert lines[1] == "| --- | --- | --- | --- | --- |"
    assert len(lines) == 2 + 3
    assert "Son 54<br>y pico" in lines[3]
    assert "| a\\|b |" in lines[4]
    assert all(len(re.split(r"(?<!\\)\|", line)) == 2 + len(COLUMNS) for line in lines)  # unescaped pipes


def test_aggregates_overall_and_per_category():
    overall, geo, mat = aggregates(_results(), judged=True)
    assert (overall.name, overall.n, overall.errors, overall.judge_failures) == ("all", 3, 1, 1)
    assert overall.exact_match == pytest.approx(1 / 3)
    assert overall.similarity == pytest.approx((0.9 + 0.4 + 0.0) / 3)
    assert overall.judge == 1.0  # the one row the judge scored
    assert overall.score == pytest.approx(0.5)  # judge 1.0 and the failed prediction's 0; the judge failure is left out
    assert (geo.name, geo.n, mat.name, mat.n) == ("geo", 1, "mat", 2)
    assert mat.judge is None and mat.score == 0.0
    table = format_summary([overall, geo, mat], "judge").splitlines()
    assert table[0].split() == ["set", "n", "errors", "match", "EM", "F1", "sim", "judge", "Score", "(judge)"]
    assert table[1].split()[:5] == ["all", "3", "1", "0.333", "0.333"] and "(1 failed)" in table[1]
    assert aggregates(_results(), judged=False)[0].score == pytest.approx(1 / 3)  # the match, errors count 0
    assert len(table) == 4


def test_one_category_gives_only_the_overall_line():
    results = [RowResult(Question("¿a?", "b"), "b", 1.0, 1.0, 1.0, 0.1)]
    assert [a.name for a in aggregates(results, judged=False)] == ["all"]


def test_scoring_targets_judges_and_evaluate_import_no_torch():
    code = (
        "import sys; from llmserve.tools.evaluate import scoring, report, targets, judges, run, similarity; "
        "sys.exit('torch' in sys.modules)"
    )
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0
