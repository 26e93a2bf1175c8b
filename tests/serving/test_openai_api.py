"""The OpenAI request mapped onto the project's Request; the app in process on a tiny model: overload, metrics."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from llmserve.request.answer import Answerer
from llmserve.request.params import SamplingParams
from llmserve.serving.openai_api.app import Service, create_app
from llmserve.serving.openai_api.schema import APIError, ChatCompletionRequest, to_request


def request(**fields):
    fields.setdefault("messages", [{"role": "user", "content": "Hola"}])
    return to_request(ChatCompletionRequest(model="anything", **fields))


def test_system_messages_frame_the_answer_and_earlier_turns_are_the_history():
    parsed, given = request(
        messages=[
            {"role": "system", "content": "Eres breve."},
            {"role": "developer", "content": "Responde en español."},
            {"role": "user", "content": "Hola"},
            {"role": "assistant", "content": [{"type": "text", "text": "¡Hola!"}]},
            {"role": "user", "content": "¿Qué tal?"},
        ]
    )
    assert parsed.system_prompt == "Eres breve.\n\nResponde en español."
    assert parsed.pregunta == "¿Qué tal?"
    assert [(m.role.value, m.content) for m in parsed.history] == [("user", "Hola"), ("assistant", "¡Hola!")]
    assert given is False


def test_openai_defaults_and_names_become_the_engines_settings():
    parsed, given = request(max_tokens=7, stop=["a,b", "\n\n"], seed=3, top_p=0)
    assert (parsed.max_new_tokens, parsed.seed, given) == (7, 3, True)
    assert parsed.stop_sequences == ("a,b", "\n\n")  # commas and newlines survive the Cog input's syntax
    assert (parsed.temperature, parsed.top_k, parsed.repetition_penalty) == (1.0, 0, 1.0)
    assert parsed.top_p == 0.01  # top_p=0: the most likely token alone, as 0.01 keeps it
    assert request(max_completion_tokens=9)[0].max_new_tokens == 9


@pytest.mark.parametrize(
    ("response_format", "schema"),
    [
        (None, ""),
        ({"type": "text"}, ""),
        ({"type": "json_object"}, {"type": "object"}),
        ({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "array"}}}, {"type": "array"}),
    ],
)
def test_response_format_becomes_the_json_schema(response_format, schema):
    parsed, _ = request(response_format=response_format)
    assert (json.loads(parsed.json_schema) if parsed.json_schema else "") == schema


def test_an_error_in_the_history_names_the_message_as_the_client_counted_it():
    with pytest.raises(APIError) as caught:
        request(
            messages=[
                {"role": "system", "content": "s"},
                {"role": "user", "content": "a"},
                {"role": "assistant", "content": "  "},
                {"role": "user", "content": "b"},
            ]
        )
    assert (caught.value.status, caught.value.param, caught.value.code) == (400, "messages[2].content", "BadMessages")


def test_an_out_of_range_value_is_named_as_openai_names_it():
    with pytest.raises(APIError) as caught:
        request(max_tokens=0)
    assert caught.value.param == "max_tokens" and "max_tokens=0" in caught.value.message
    assert "max_new_tokens" not in caught.value.message


@pytest.fixture
def service(make_engine, tiny_model_dir, closing):
    engine = make_engine(tiny_model_dir, slots=1)
    return closing(Service(Answerer(engine, model_name="tiny"), api_key=None))


def test_an_engine_that_admits_no_more_gets_503_and_is_counted(service):
    scheduler = service.answerer.engine.scheduler
    long = SamplingParams.plain_greedy(200, min_new_tokens=200)
    # One running and one waiting: all that one slot admits (2 x slots).
    held = [scheduler.submit([5, 6, 7], long, lambda event: None) for _ in range(2)]
    try:
        client = TestClient(create_app(service))
        answer = client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "Hola"}]})
        assert answer.status_code == 503
        assert answer.json()["error"]["code"] == "overloaded"
        assert 'llmserve_requests_total{outcome="overloaded"} 1.0' in client.get("/metrics").text
    finally:
        for job in held:
            scheduler.cancel(job)
