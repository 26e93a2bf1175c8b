"""The Replicate target on the real replicate library against the fake API, and a server target with no server."""

from __future__ import annotations

import pytest

from llmserve.config import ReplicateSettings
from llmserve.tools.evaluate.errors import EvalError
from llmserve.tools.evaluate.targets import AnswerFailed, ReplicateTarget, ServerTarget
from tests.helpers.fakereplicate import TOKEN, FakeReplicate, serve_fake_replicate
from tests.helpers.localserver import closed_port_url


def test_replicate_target_runs_a_version_polls_until_done_and_joins_the_chunks(monkeypatch):
    monkeypatch.setenv("REPLICATE_POLL_INTERVAL", "0.01")  # the client's own polling, read when it is built
    api = FakeReplicate(models={"alice/pregunta": ["0a1b"]}, status_on_create="starting")
    with serve_fake_replicate(api):
        target = ReplicateTarget("alice/pregunta:0a1b", ReplicateSettings(api_token=TOKEN, base_url=api.url))
        answer = target.answer({"pregunta": "¿Capital de Francia?", "temperature": 0.0})
    assert answer == "París."
    create, *polls = api.requests
    assert (create.method, create.path) == ("POST", "/v1/predictions")
    assert create.body == {"version": "0a1b", "input": {"pregunta": "¿Capital de Francia?", "temperature": 0.0}}
    assert polls and all(p.method == "GET" and p.path == "/v1/predictions/p1" for p in polls)


def test_replicate_target_records_a_failed_or_refused_prediction_and_stops_on_a_bad_token():
    api = FakeReplicate(models={"alice/pregunta": ["0a1b"]})
    with serve_fake_replicate(api):
        target = ReplicateTarget("alice/pregunta:0a1b", ReplicateSettings(api_token=TOKEN, base_url=api.url))
        with pytest.raises(AnswerFailed, match="422"):  # the schema refuses it, as Replicate does
            target.answer({"pregunta": "¿a?", "top_k": 5000})
        api.error = "E1002 PromptTooLong: pregunta: ..."
        with pytest.raises(AnswerFailed, match="failed: E1002 PromptTooLong"):
            target.answer({"pregunta": "¿a?"})
        wrong = ReplicateTarget("alice/pregunta:0a1b", ReplicateSettings(api_token="r8_wrong", base_url=api.url))
        with pytest.raises(EvalError, match="E3002 BadEvalTarget: --target: Replicate refused alice/pregunta:0a1b"):
            wrong.answer({"pregunta": "¿a?"})


def test_server_target_refuses_a_url_where_no_server_answers():
    with pytest.raises(EvalError, match="E3002 BadEvalTarget: --target: no Cog server answers"):
        ServerTarget(closed_port_url())
