"""scripts/loadtest against Replicate: the real replicate library, pointed at the fake API on 127.0.0.1."""

from __future__ import annotations

import json

import pytest

from llmserve.tools import cli
from llmserve.tools.loadtest.plan import DEFAULT_PREGUNTA
from tests.helpers.fakereplicate import TOKEN, FakeReplicate, serve_fake_replicate

VERSION = "0a1b2c3d"


@pytest.fixture
def api(monkeypatch: pytest.MonkeyPatch):
    fake = FakeReplicate(models={"alice/pregunta": [VERSION]}, output=["Apren", "dizaje", " automático."])
    fake.add_deployment(
        "alice", "pregunta-prod", model="alice/pregunta", version=VERSION, hardware="gpu-t4", lo=0, hi=2
    )
    with serve_fake_replicate(fake):
        monkeypatch.setenv("REPLICATE_API_TOKEN", TOKEN)
        monkeypatch.setenv("REPLICATE_BASE_URL", fake.url)
        yield fake


def run(tmp_path, *args: str) -> tuple[int, dict]:
    code = cli.main(["loadtest", *args, "--out", str(tmp_path), "--requests", "3"])
    results = tmp_path / "results.json"
    return code, json.loads(results.read_text()) if results.exists() else {}


def test_a_deployment_is_loaded_through_the_library(api, tmp_path, capsys):
    code, results = run(tmp_path, "--url", "replicate-deployment:alice/pregunta-prod", "--users", "2")
    assert code == 0
    assert [(lv["users"], lv["requests"], lv["ok"], lv["errors"]) for lv in results["levels"]] == [
        (1, 3, 3, {}),
        (2, 3, 3, {}),
    ]
    creates = [r for r in api.requests if r.method == "POST"]
    assert len(creates) == 6
    assert {r.path for r in creates} == {"/v1/deployments/alice/pregunta-prod/predictions"}
    assert creates[0].body == {"input": {"pregunta": DEFAULT_PREGUNTA, "max_new_tokens": 64}, "stream": True}
    assert all(r.headers["Authorization"] == f"Bearer {TOKEN}" for r in api.requests)
    streams = [r for r in api.requests if r.path.startswith("/stream/")]
    assert len(streams) == 6 and streams[0].headers["Accept"] == "text/event-stream"
    # The fake sends no output_token_count metric: the three chunks of each answer are counted instead.
    assert results["levels"][0]["output_tokens"] == 9 and results["levels"][0]["tokens_from_chunks"] == 3
    out = capsys.readouterr().out
    assert "their tokens were counted as streamed chunks" in out
    assert out.rstrip().splitlines()[-1].split()[:3] == ["2", "3", "3"]


def test_a_model_version_is_loaded_by_version(api, tmp_path):
    code, results = run(tmp_path, "--url", f"replicate:alice/pregunta:{VERSION}", "--input", "temperature=0")
    assert code == 0 and results["levels"][0]["ok"] == 3
    creates = [r for r in api.requests if r.method == "POST"]
    assert {r.path for r in creates} == {"/v1/predictions"}
    assert creates[0].body["version"] == VERSION and creates[0].body["input"]["temperature"] == 0.0


def test_failed_and_refused_predictions_are_counted_not_raised(api, tmp_path, capsys):
    api.error = "E1006 OutOfRange: temperature: ..."
    code, results = run(tmp_path / "failed", "--url", "replicate-deployment:alice/pregunta-prod")
    assert code == 1  # no successful request
    assert results["levels"][0]["errors"] == {"failed": 3}
    assert "No successful request: no cost to report." in capsys.readouterr().out
    code, results = run(tmp_path / "refused", "--url", "replicate-deployment:alice/pregunta-prod", "-i", "top_k=5000")
    assert results["levels"][0]["errors"] == {"invalid_input": 3}  # the API's 422


def test_a_missing_token_is_refused_before_any_request(api, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("REPLICATE_API_TOKEN")
    code, _ = run(tmp_path, "--url", "replicate-deployment:alice/pregunta-prod")
    assert code == 2
    assert "E4004 MissingApiToken: REPLICATE_API_TOKEN" in capsys.readouterr().err
    assert api.requests == []
