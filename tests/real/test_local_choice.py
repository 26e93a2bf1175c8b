"""Without MODEL_ID and without the hub, the local scripts answer with the embedded model, and say so."""

from __future__ import annotations

import os

import httpx

from llmserve.serving.embedded import EMBEDDED
from llmserve.tools.cogserver import serving
from tests.helpers import run_script


def _without_the_default_model(embedded_dir, tmp_path) -> dict[str, str]:
    """The environment of a machine without the hub whose WEIGHTS_DIR holds only the built embedded model."""
    (tmp_path / "embedded").mkdir()
    (tmp_path / "embedded" / embedded_dir.name).symlink_to(embedded_dir)
    return {k: v for k, v in os.environ.items() if k != "MODEL_ID"} | {"WEIGHTS_DIR": str(tmp_path), "DTYPE": "float32"}


def test_predict_without_model_id_or_hub_answers_with_the_embedded_model(embedded_dir, tmp_path):
    env = _without_the_default_model(embedded_dir, tmp_path)
    result = run_script("predict", "What is the capital of France?", "-i", "temperature=0", env=env, timeout=600)
    assert result.returncode == 0, result.stderr
    assert "Paris" in result.stdout
    assert "MODEL_ID is unset and tiiuae/falcon-rw-1b is neither in" in result.stderr
    assert f"(answered by {EMBEDDED.label})" in result.stderr


def test_serve_without_model_id_or_hub_serves_the_embedded_model(embedded_dir, tmp_path):
    env = _without_the_default_model(embedded_dir, tmp_path)
    with serving(env, timeout=300) as url:
        reply = httpx.post(
            f"{url}/predictions",
            json={"input": {"pregunta": "What is the capital of France?", "temperature": 0, "max_new_tokens": 16}},
            timeout=300,
            trust_env=False,
        )
    assert reply.status_code == 200 and reply.json()["status"] == "succeeded", reply.text
    assert "Paris" in "".join(reply.json()["output"])
