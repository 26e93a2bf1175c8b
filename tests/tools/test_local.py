"""scripts/make_tiny_model and scripts/predict as a person runs them."""

from __future__ import annotations

import os
import subprocess

from tests.helpers import ROOT


def test_make_tiny_model_then_predict_streams_an_answer(tmp_path):
    model = tmp_path / "tiny"
    made = subprocess.run([str(ROOT / "scripts" / "make_tiny_model"), str(model)], capture_output=True, text=True)
    assert made.returncode == 0, made.stderr
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in model.iterdir()}

    env = {**os.environ, "MODEL_ID": str(model)}
    answered = subprocess.run(
        [
            str(ROOT / "scripts" / "predict"),
            "¿Qué es el aprendizaje automático?",
            "-i",
            "max_new_tokens=8",
            "-i",
            "temperature=0",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout.strip()


def test_predict_rejects_an_unknown_input_name(tmp_path):
    result = subprocess.run(
        [str(ROOT / "scripts" / "predict"), "hola", "-i", "temprature=0"], capture_output=True, text=True
    )
    assert result.returncode == 2 and "temprature" in result.stderr and "temperature" in result.stderr


def test_predict_reports_a_bad_value_with_its_code(tiny_model_dir):
    env = {**os.environ, "MODEL_ID": str(tiny_model_dir)}
    result = subprocess.run(
        [str(ROOT / "scripts" / "predict"), "hola", "-i", "top_k=5000"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 2 and "E1006 OutOfRange: top_k" in result.stderr


def test_serve_refuses_a_bad_slot_count_before_starting():
    # coglet would silently fall back to 1 slot while the engine sized its batch from the same variable.
    env = {**os.environ, "COG_MAX_CONCURRENCY": "0"}
    result = subprocess.run([str(ROOT / "scripts" / "serve"), "--port", "1"], env=env, capture_output=True, text=True)
    assert result.returncode == 2
    assert "E2001 BadConfig: COG_MAX_CONCURRENCY" in result.stderr and "at least 1" in result.stderr
