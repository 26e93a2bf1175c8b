"""scripts/evaluate against the real Cog server on the tiny model."""

from __future__ import annotations

import csv
import json
import logging
import os
import subprocess

import httpx
import pytest

from llmserve.tools.evaluate.report import COLUMNS
from llmserve.tools.evaluate.targets import AnswerFailed, ServerTarget
from tests.helpers import ROOT
from tests.helpers.server import SLOTS

pytestmark = pytest.mark.http

QUESTIONS = [
    {"pregunta": "¿Cuál es la capital de Francia?", "respuesta": "París"},
    {"pregunta": "¿Cuánto es 7 por 8?", "respuesta": "56"},
    {"pregunta": "¿Qué es el sobreajuste?", "respuesta": "Cuando un modelo memoriza los datos y generaliza mal"},
]


def test_scripts_evaluate_against_the_server_writes_the_table(server, tmp_path):
    dataset = tmp_path / "d.jsonl"
    dataset.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in QUESTIONS), encoding="utf-8")
    out = tmp_path / "out"
    server.wait_idle()
    done = subprocess.run(
        [
            str(ROOT / "scripts" / "evaluate"),
            *("--target", server.url, "--dataset", str(dataset), "--out", str(out)),
            *("--input", "max_new_tokens=8", "--input", "stop_sequences=\\n\\n"),
        ],
        env={k: v for k, v in os.environ.items() if k != "MODEL_ID"},  # the server has the model, not this process
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    with (out / "results.csv").open(encoding="utf-8", newline="") as f:
        rows = list(csv.reader(f))
    assert tuple(rows[0]) == COLUMNS and len(rows) == 1 + len(QUESTIONS)
    for (pregunta, gt, answer, score, explanation), question in zip(rows[1:], QUESTIONS, strict=True):
        assert (pregunta, gt) == (question["pregunta"], question["respuesta"])
        assert answer and float(score) in (0.0, 1.0) and explanation.startswith(("correcta: ", "incorrecta: "))
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["target"] == f"Cog server at {server.url}"
    assert summary["inputs"] == {"temperature": 0.0, "max_new_tokens": 8, "stop_sequences": "\\n\\n"}
    assert done.stdout.strip().splitlines()[-2].split()[:3] == ["set", "n", "errors"]


def test_server_target_answers_greedily_like_a_plain_request(server):
    target = ServerTarget(server.url)
    inputs = {"pregunta": "¿Cuál es la capital de Francia?", "temperature": 0.0, "max_new_tokens": 12}
    try:
        answer = target.answer(inputs)
    finally:
        target.close()
    assert answer == "".join(server.predict(**inputs).json()["output"]).strip()


def test_server_target_records_a_refused_input(server):
    target = ServerTarget(server.url)
    server.wait_idle()
    with pytest.raises(AnswerFailed, match="HTTP 422.*top_k"):
        target.answer({"pregunta": "¿a?", "top_k": 5000})
    target.close()


def test_server_target_waits_for_a_busy_slot(server, caplog):
    """Predictions already hold every slot: the target's request gets 409 until one ends, then its answer."""
    server.wait_idle()
    long = {"pregunta": "hola", "temperature": 0, "max_new_tokens": 300, "min_new_tokens": 300}
    for _ in range(SLOTS):
        started = httpx.post(
            f"{server.url}/predictions",
            json={"input": long},
            headers={"Prefer": "respond-async"},
            timeout=30,
            trust_env=False,
        )
        assert started.status_code == 202
    target = ServerTarget(server.url)
    try:
        with caplog.at_level(logging.INFO, logger="llmserve.tools.evaluate.targets"):
            assert target.answer({"pregunta": "¿Capital de Francia?", "temperature": 0.0, "max_new_tokens": 4})
    finally:
        target.close()
    assert any("busy (409)" in r.getMessage() for r in caplog.records)
