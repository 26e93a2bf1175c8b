"""A failure mid-run loses nothing: failed requests become error rows, a lost target still writes what it has."""

from __future__ import annotations

import csv
import json
import threading

import pytest

from llmserve.errors import ErrorCode, ModerationError
from llmserve.tools import cli
from llmserve.tools.evaluate import run as evaluate_run
from llmserve.tools.evaluate.errors import EvalCode, EvalError
from llmserve.tools.evaluate.run import RunStopped, evaluate
from llmserve.tools.evaluate.scoring import Question
from llmserve.tools.evaluate.targets import AnswerFailed, LocalTarget, ServerTarget
from tests.helpers.localserver import QuietHandler, local_server

QUESTIONS = [Question(f"¿Pregunta {i}?", "París") for i in range(4)]


class NoSimilarity:
    def similarities(self, pairs):
        return [0.0 for _ in pairs]


class Scripted:
    """A target that answers from a list: a text, or an exception to raise."""

    description = "scripted"

    def __init__(self, replies):
        self.replies = list(replies)

    def answer(self, inputs):
        reply = self.replies.pop(0)
        if isinstance(reply, BaseException):
            raise reply
        return reply

    def close(self):
        pass


class FailingPredictor:
    """A predictor whose run() fails the way the real one can, question by question."""

    def __init__(self, failures):
        self.failures = list(failures)

    def setup(self):
        pass

    async def run(self, **inputs):
        failure = self.failures.pop(0)
        if failure is not None:
            raise failure
        return iter(["París"])


def test_a_local_target_turns_any_prediction_failure_into_that_rows_error():
    blocked = ModerationError(ErrorCode.OutputBlocked, "output", "S1 Violent Crimes.", "Ask otherwise.")
    target = LocalTarget(FailingPredictor([blocked, RuntimeError("CUDA error: device lost"), None]))
    with pytest.raises(AnswerFailed, match="E5001 OutputBlocked"):
        target.answer({})
    with pytest.raises(AnswerFailed, match="RuntimeError: CUDA error: device lost"):
        target.answer({})
    assert target.answer({}) == "París"


def test_a_lost_target_stops_the_run_with_the_rows_so_far_and_the_rest_not_asked():
    lost = EvalError(EvalCode.BadEvalTarget, "--target", "lost the server.", "Is it still running?")
    with pytest.raises(RunStopped) as info:
        evaluate(QUESTIONS, Scripted(["París", lost]), inputs={}, embedder=NoSimilarity())
    rows = info.value.results
    assert [r.answer for r in rows] == ["París", "", "", ""] and rows[0].match == 1.0
    assert rows[1].error.startswith("not asked: E3002 BadEvalTarget") and all(r.error for r in rows[1:])
    assert info.value.cause is lost


def test_scripts_evaluate_writes_the_partial_table_then_exits_2(tmp_path, monkeypatch, capsys):
    dataset = tmp_path / "d.jsonl"
    dataset.write_text("".join(json.dumps({"pregunta": q.pregunta, "respuesta": "París"}) + "\n" for q in QUESTIONS))
    lost = EvalError(EvalCode.BadEvalTarget, "--target", "lost the server at http://x.", "Is it still running?")
    monkeypatch.setattr(evaluate_run, "open_target", lambda spec, settings: Scripted(["París", "Roma", lost]))
    monkeypatch.setattr("llmserve.tools.evaluate.similarity.Embedder", NoSimilarity)
    code = cli.main(["evaluate", "--target", "http://127.0.0.1:9", "--dataset", str(dataset), "--out", str(tmp_path)])
    assert code == 2
    with (tmp_path / "results.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))[1:]
    assert [r[3] for r in rows] == ["1.000", "0.000", "0.000", "0.000"]
    assert rows[2][4].startswith("error: not asked: E3002")
    summary = json.loads((tmp_path / "summary.json").read_text(encoding="utf-8"))
    assert summary["stopped"].startswith("E3002 BadEvalTarget")
    assert "E3002 BadEvalTarget" in capsys.readouterr().err


class NeverAnswers(QuietHandler):
    release = threading.Event()

    def do_GET(self):
        self.send_json(200, {"status": "READY"})

    def do_POST(self):
        self.release.wait(10)  # holds the request past the client's timeout, then lets the server shut down


def test_a_server_that_does_not_answer_in_time_fails_that_question_not_the_run():
    with local_server(NeverAnswers) as url:
        target = ServerTarget(url, timeout=0.5)
        try:
            with pytest.raises(AnswerFailed, match="no answer within 0.5 s"):
                target.answer({"pregunta": "¿a?"})
        finally:
            NeverAnswers.release.set()
            target.close()


def test_an_interrupted_run_says_so_in_every_row_it_did_not_ask():
    with pytest.raises(RunStopped) as info:
        evaluate(QUESTIONS, Scripted(["París", KeyboardInterrupt()]), inputs={}, embedder=NoSimilarity())
    assert [r.error for r in info.value.results[1:]] == ["not asked: interrupted"] * 3
