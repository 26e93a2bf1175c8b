"""scripts/evaluate end to end on the tiny model in process, and the offline semantic similarity."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import pytest

from llmserve.tools import cli
from llmserve.tools.evaluate.report import COLUMNS
from llmserve.tools.evaluate.similarity import Embedder
from tests.helpers import ROOT
from tests.helpers.fakeopenai import FakeOpenAI, Reply, serve_fake_openai

QUESTIONS = [
    {"pregunta": "¿Cuál es la capital de Francia?", "respuesta": "París", "categoria": "cultura_general"},
    {"pregunta": "¿Cuánto es 7 por 8?", "respuesta": "56", "categoria": "aritmetica"},
    {"pregunta": "¿Qué función de activación devuelve max(0, x)?", "respuesta": "ReLU", "categoria": "ml"},
]


def _dataset(path, rows=QUESTIONS):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path


def _read_csv(path):
    with path.open(encoding="utf-8", newline="") as f:
        return list(csv.reader(f))


@pytest.fixture(scope="module")
def embedder() -> Embedder:
    return Embedder()


def test_similarity_ranks_a_paraphrase_above_an_unrelated_answer(embedder):
    close, far, same, blank = embedder.similarities(
        [
            ("La capital de Francia es París.", "París"),
            ("El agua hierve a 100 grados.", "París"),
            ("Aprendizaje supervisado", "aprendizaje supervisado"),
            ("", "París"),
        ]
    )
    assert close > far + 0.2
    assert same == pytest.approx(1.0, abs=1e-4)
    assert blank == 0.0
    assert all(0.0 <= s <= 1.0 for s in (close, far, same))
    overfit = "El modelo memoriza los datos de entrenamiento y generaliza mal."
    reference = "Cuando un modelo se ajusta demasiado a los datos de entrenamiento y generaliza mal a datos nuevos"
    assert embedder.similarities([(overfit, reference)])[0] > embedder.similarities([("Madrid", reference)])[0]


def test_similarity_model_loads_from_the_wheel_without_any_connection(tmp_path):
    """No HF_HUB_OFFLINE here: the embedder itself must not try the network; every connect() would raise."""
    script = (
        "import socket, time\n"
        "def refuse(self, address):\n"
        "    raise OSError(f'network access attempted: {address}')\n"
        "socket.socket.connect = refuse\n"
        "from llmserve.tools.evaluate.similarity import Embedder\n"
        "start = time.perf_counter()\n"
        "print(Embedder().similarities([('París', 'París')])[0], time.perf_counter() - start)\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    command = [sys.executable, "-c", script]
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    similarity, seconds = map(float, done.stdout.split())
    assert similarity == pytest.approx(1.0, abs=1e-4)
    assert seconds < 120


def test_scripts_evaluate_local_writes_the_table_and_prints_the_summary_last(tmp_path, tiny_model_dir):
    out = tmp_path / "out"
    env = {**os.environ, "MODEL_ID": str(tiny_model_dir)}
    done = subprocess.run(
        [
            str(ROOT / "scripts" / "evaluate"),
            "--target",
            "local",
            "--dataset",
            str(_dataset(tmp_path / "d.jsonl")),
            "--out",
            str(out),
            "--input",
            "max_new_tokens=8",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    rows = _read_csv(out / "results.csv")
    assert tuple(rows[0]) == COLUMNS
    assert [r[:2] for r in rows[1:]] == [[q["pregunta"], q["respuesta"]] for q in QUESTIONS]
    for _, _, answer, score, explanation in rows[1:]:
        assert answer  # gibberish from random weights, but there is an answer
        assert float(score) in (0.0, 1.0)  # the reference match
        assert explanation.startswith(("correcta: ", "incorrecta: ")) and "(EM " in explanation
    markdown = (out / "results.md").read_text(encoding="utf-8").splitlines()
    assert markdown[0] == "| " + " | ".join(COLUMNS) + " |" and len(markdown) == 2 + len(QUESTIONS)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["score"] == "match" and summary["inputs"]["temperature"] == 0.0
    assert summary["inputs"]["max_new_tokens"] == 8 and len(summary["rows"]) == 3
    assert [a["name"] for a in summary["aggregates"]] == ["all", "aritmetica", "cultura_general", "ml"]
    lines = done.stdout.strip().splitlines()
    assert lines[-5].split()[:3] == ["set", "n", "errors"] and lines[-4].split()[:3] == ["all", "3", "0"]


def test_evaluate_with_a_judge_records_a_failed_call_and_a_failed_prediction_per_row(
    tmp_path, tiny_model_dir, monkeypatch, capsys
):
    monkeypatch.setenv("MODEL_ID", str(tiny_model_dir))
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    rows = QUESTIONS[:2] + [{"pregunta": "¿" + "muy larga " * 400 + "?", "respuesta": "x"}]  # past the context
    fake = FakeOpenAI([Reply('{"score": 0.25, "explanation": "No dice París."}'), Reply("sin JSON")])
    with serve_fake_openai(fake):
        code = cli.main(
            [
                "evaluate",
                "--target",
                "local",
                "--dataset",
                str(_dataset(tmp_path / "d.jsonl", rows)),
                "--out",
                str(tmp_path / "out"),
                "-i",
                "max_new_tokens=8",
                "--judge",
                "openai:tiny-judge",
                "--judge-base-url",
                fake.url,
            ]
        )
    assert code == 0
    table = _read_csv(tmp_path / "out" / "results.csv")[1:]
    assert table[0][3:] == ["0.250", "No dice París."]
    assert table[1][3] == "" and table[1][4].startswith("judge error: no JSON object with a score")
    assert table[2][2:4] == ["", "0.000"] and table[2][4].startswith("error: E1002 PromptTooLong: pregunta")
    assert len(fake.requests) == 2  # the failed prediction is not judged
    assert table[0][2] in fake.requests[0][2]["messages"][1]["content"]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    overall = summary["aggregates"][0]
    assert (overall["errors"], overall["judge_failures"], overall["judge"]) == (1, 1, 0.25)
    assert overall["score"] == pytest.approx(0.125)  # 0.25 and the failed prediction's 0
    assert summary["judge"] == f"tiny-judge at {fake.url}"
    assert "Score (judge)" in capsys.readouterr().out.strip().splitlines()[-5]


def test_evaluate_refuses_a_bad_input_or_dataset_before_loading_the_model(tmp_path, capsys):
    dataset = _dataset(tmp_path / "d.jsonl")
    with pytest.raises(SystemExit) as info:
        cli.main(
            ["evaluate", "--target", "local", "--dataset", str(dataset), "--out", str(tmp_path), "-i", "temprature=0"]
        )
    assert info.value.code == 2 and "temprature" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text('{"pregunta": "¿a?"}\n', encoding="utf-8")
    assert (
        cli.main(["evaluate", "--target", "local", "--dataset", str(tmp_path / "bad.jsonl"), "--out", str(tmp_path)])
        == 2
    )
    assert "E3001 BadDataset" in capsys.readouterr().err
