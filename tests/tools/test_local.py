"""scripts/make_tiny_model and scripts/predict as a person runs them."""

from __future__ import annotations

import os

from tests.helpers import run_script


def test_make_tiny_model_then_predict_streams_an_answer(tmp_path):
    model = tmp_path / "tiny"
    made = run_script("make_tiny_model", str(model))
    assert made.returncode == 0, made.stderr
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {p.name for p in model.iterdir()}

    env = {**os.environ, "MODEL_ID": str(model)}
    answered = run_script(
        "predict", "¿Qué es el aprendizaje automático?", "-i", "max_new_tokens=8", "-i", "temperature=0", env=env
    )
    assert answered.returncode == 0, answered.stderr
    assert answered.stdout.strip()


def test_predict_rejects_an_unknown_input_name_and_names_the_one_meant(tmp_path):
    result = run_script("predict", "hola", "-i", "temprature=0")
    assert result.returncode == 2 and "'temprature' is not an input" in result.stderr
    assert "Did you mean temperature?" in result.stderr
    result = run_script("predict", "hola", "-i", "max_tokens=3")
    assert result.returncode == 2 and "Did you mean max_new_tokens?" in result.stderr


def test_predict_reports_a_bad_value_with_its_code(tiny_model_dir):
    result = run_script("predict", "hola", "-i", "top_k=5000", env={**os.environ, "MODEL_ID": str(tiny_model_dir)})
    assert result.returncode == 2 and "E1006 OutOfRange: top_k" in result.stderr


def test_serve_refuses_a_bad_slot_count_before_starting():
    # coglet would silently fall back to 1 slot while the engine sized its batch from the same variable.
    env = {**os.environ, "COG_MAX_CONCURRENCY": "0"}
    result = run_script("serve", "--port", "1", env=env)
    assert result.returncode == 2
    assert "E2001 BadConfig: COG_MAX_CONCURRENCY" in result.stderr and "at least 1" in result.stderr


def test_the_scripts_read_a_dotenv_file_and_say_which_model_answered(tmp_path, tiny_model_dir):
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"# kept out of git\nMODEL_ID={tiny_model_dir}\nDTYPE=float32\n")
    env = {k: v for k, v in os.environ.items() if k not in ("MODEL_ID", "DTYPE")} | {"ENV_FILE": str(dotenv)}
    result = run_script("predict", "hola", "-i", "max_new_tokens=4", env=env)
    assert result.returncode == 0, result.stderr
    assert f"(answered by {tiny_model_dir})" in result.stderr
    assert "finished: stop=" in result.stderr  # the answer's log lines, written once it has been printed


def test_a_set_variable_wins_over_the_dotenv_file(tmp_path, monkeypatch):
    from llmserve.config import Settings, read_env_file

    dotenv = tmp_path / ".env"
    dotenv.write_text("HUGGINGFACE_HUB_TOKEN=hf_from_file\nDTYPE=bfloat16\n")
    monkeypatch.setenv("ENV_FILE", str(dotenv))
    monkeypatch.setenv("DTYPE", "float32")
    monkeypatch.delenv("HUGGINGFACE_HUB_TOKEN", raising=False)
    assert read_env_file() == dotenv
    settings = Settings.from_env()
    monkeypatch.delenv("HUGGINGFACE_HUB_TOKEN")  # read_env_file wrote it outside monkeypatch
    assert settings.hf_token == "hf_from_file" and settings.dtype == "float32"


def test_without_model_id_a_cached_default_model_is_chosen_not_the_embedded_one(tmp_path, tiny_model_dir, monkeypatch):
    import shutil

    from llmserve.config import DEFAULT_MODEL_REVISION
    from llmserve.tools.local import choose_model

    snapshot = tmp_path / "models--tiiuae--falcon-rw-1b" / "snapshots" / DEFAULT_MODEL_REVISION
    shutil.copytree(tiny_model_dir, snapshot)
    monkeypatch.setenv("WEIGHTS_DIR", str(tmp_path))
    settings = choose_model()
    assert settings.model_id == "tiiuae/falcon-rw-1b" and not settings.is_embedded
    assert "MODEL_ID" not in os.environ
