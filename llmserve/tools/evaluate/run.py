"""scripts/evaluate: ask a dataset's questions to a target, score each answer, write the table and the aggregates."""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from ...config import PROJECT_ROOT, JudgeSettings, ReplicateSettings
from ..inputs import AssignmentError, declared_inputs, input_defaults, input_types, parse_assignment
from .errors import EvalError
from .judges import Judge, JudgeFailed, open_judge, parse_judge
from .matching import reference_match
from .report import format_summary, write_results
from .scoring import Question, RowResult, aggregates, exact_match, load_dataset, token_f1
from .targets import AnswerFailed, Target, TargetSpec, open_target, parse_target

logger = logging.getLogger(__name__)

DEFAULT_DATASET = PROJECT_ROOT / "data" / "eval" / "preguntas_es.jsonl"
# Greedy decoding, so that the same model gives the same answers and scores on every run; --input overrides it.
EVAL_INPUT_DEFAULTS: dict[str, Any] = {"temperature": 0.0}


class Similarity(Protocol):
    def similarities(self, pairs: Sequence[tuple[str, str]]) -> list[float]: ...


class RunStopped(Exception):
    """The target was lost mid-run (or the run interrupted): `results` holds every row, the unasked ones as errors."""

    def __init__(self, results: list[RowResult], cause: BaseException) -> None:
        super().__init__(str(cause))
        self.results = results
        self.cause = cause


def why_stopped(cause: BaseException) -> str:
    """A lost target's coded message, or "interrupted" for Ctrl-C (whose exception says nothing)."""
    return str(cause) or "interrupted"


def evaluate(
    questions: Sequence[Question],
    target: Target,
    *,
    inputs: dict[str, Any],
    embedder: Similarity,
    judge: Judge | None = None,
    question_input: str = "pregunta",
) -> list[RowResult]:
    """Answer every question, then score: EM and F1, similarity in one batch, then the judge row by row.

    A failed prediction is its row's error; a lost target (or Ctrl-C) raises RunStopped with every row scored.
    """
    answers: list[tuple[str, str, float]] = []
    stopped: BaseException | None = None
    for number, question in enumerate(questions, start=1):
        start = time.perf_counter()
        try:
            answer, error = target.answer({**inputs, question_input: question.pregunta}), ""
        except AnswerFailed as e:
            answer, error = "", str(e)
        except (EvalError, KeyboardInterrupt) as e:
            stopped = e
            logger.error("[%d/%d] the run stops: %s", number, len(questions), why_stopped(e))
            break
        seconds = time.perf_counter() - start
        answers.append((answer.strip(), error, seconds))
        status = f"failed: {error}" if error else f"{len(answer)} chars"
        logger.info("[%d/%d] %.1f s, %s: %s", number, len(questions), seconds, status, question.pregunta[:60])
    if stopped is not None:
        answers += [("", f"not asked: {why_stopped(stopped)}", 0.0)] * (len(questions) - len(answers))

    similarities = embedder.similarities(
        [(answer, q.respuesta) for q, (answer, _, _) in zip(questions, answers, strict=True)]
    )
    results = []
    for question, (answer, error, seconds), similarity in zip(questions, answers, similarities, strict=True):
        verdict, judge_error = None, ""
        match = reference_match(answer, question.respuesta, question.pregunta)
        if judge is not None and not error:
            try:
                verdict = judge.judge(question.pregunta, question.respuesta, answer)
            except JudgeFailed as e:
                judge_error = str(e)
                logger.warning("judge failed on %r: %s", question.pregunta[:60], judge_error)
        results.append(
            RowResult(
                question=question,
                answer=answer,
                exact_match=exact_match(answer, question.respuesta),
                token_f1=token_f1(answer, question.respuesta),
                similarity=similarity,
                seconds=seconds,
                error=error,
                judge=verdict,
                judge_error=judge_error,
                match=match.score,
                match_reason=match.reason,
            )
        )
    if stopped is not None:
        raise RunStopped(results, stopped)
    return results


def _predictor_inputs(spec: TargetSpec, pairs: list[str], question_input: str, parser) -> dict[str, Any]:
    """EVAL_INPUT_DEFAULTS and --input NAME=VALUE, typed by predict.py's inputs; local runs get every default."""
    declared = declared_inputs()
    local = spec.kind == "local"
    inputs = {**(input_defaults(declared) if local else {}), **EVAL_INPUT_DEFAULTS}
    if local and question_input not in declared:
        parser.error(f"--question-input {question_input!r}: predict.py has no such input")
    types = input_types(declared)
    for pair in pairs:
        if pair.partition("=")[0] == question_input:
            parser.error(f"--input {pair!r}: expected NAME=VALUE, NAME not the question ({question_input})")
        try:
            # Another model's inputs (a server or Replicate target) need not be this predictor's.
            name, value = parse_assignment(pair, types, open_ended=not local)
        except AssignmentError as e:
            parser.error(f"--input {e}")
        inputs[name] = value
    return inputs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="scripts/evaluate",
        description="Ask a dataset's questions to the model and score the answers: exact match, token F1, "
        "semantic similarity, and optionally an LLM judge.",
    )
    parser.add_argument(
        "--target",
        required=True,
        help="local (predict.Predictor in this process, model from MODEL_ID), a Cog server URL such as "
        "http://127.0.0.1:5000, or replicate:OWNER/MODEL[:VERSION]",
    )
    parser.add_argument("--dataset", type=Path, default=DEFAULT_DATASET, help="JSONL of {pregunta, respuesta}")
    parser.add_argument("--out", type=Path, required=True, help="folder for results.csv, results.md, summary.json")
    parser.add_argument(
        "-i",
        "--input",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a predictor input for every question, e.g. max_new_tokens=64 (temperature is 0 unless given)",
    )
    parser.add_argument("--judge", metavar="SPEC", help="openai:MODEL or replicate:OWNER/MODEL[:VERSION]")
    parser.add_argument("--judge-base-url", help="OpenAI-compatible endpoint; default OPENAI_BASE_URL, else OpenAI's")
    parser.add_argument("--limit", type=int, help="only the first N questions")
    parser.add_argument(
        "--question-input", default="pregunta", help="the input that carries the question (another model's: prompt)"
    )
    args = parser.parse_args(argv)
    if args.limit is not None and args.limit < 1:
        parser.error("--limit: give a whole number from 1")
    spec = parse_target(args.target)
    judge_spec = parse_judge(args.judge) if args.judge else None
    questions = load_dataset(args.dataset)[: args.limit]
    inputs = _predictor_inputs(spec, args.input, args.question_input, parser)
    replicate_settings = ReplicateSettings.from_env()
    judge = (
        open_judge(
            judge_spec,
            base_url=args.judge_base_url,
            judge_settings=JudgeSettings.from_env(),
            replicate_settings=replicate_settings,
        )
        if judge_spec
        else None
    )
    from .similarity import Embedder

    target = open_target(spec, replicate_settings)
    stopped: BaseException | None = None
    try:
        results = evaluate(
            questions, target, inputs=inputs, embedder=Embedder(), judge=judge, question_input=args.question_input
        )
    except RunStopped as e:  # write what was answered, then say why the rest was not
        results, stopped = e.results, e.cause
    finally:
        target.close()
    meta = {
        "target": target.description,
        "dataset": str(args.dataset),
        "inputs": dict(inputs),
        "judge": judge.description if judge else None,
        "stopped": why_stopped(stopped) if stopped is not None else None,
    }
    judged = judge is not None
    for path in write_results(args.out, results, judged=judged, meta=meta):
        print(f"wrote {path}")
    print()
    print(format_summary(aggregates(results, judged), "judge" if judged else "match"))
    if isinstance(stopped, EvalError):
        raise stopped  # cli.main prints it and exits with 2, after the partial results are on disk
    if stopped is not None:
        raise KeyboardInterrupt
    return 0
