"""The official openai client against scripts/openai_server on the embedded model: the seed course's code, unchanged
but for its base URL; streaming, JSON-schema answers, OpenAI-style errors, the API key and /metrics."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import jsonschema
import openai
import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from llmserve.config import Settings
from tests.helpers.openaiserver import openai_server
from tests.helpers.schemas import BOOK, BOOK_QUESTION

SLOTS = 4
BOOK_PROMPT = f"{BOOK_QUESTION} Un libro de ciencia ficción."


@pytest.fixture(scope="module")
def base_url(embedded_dir, tmp_path_factory):
    env = {
        **os.environ,
        "MODEL_ID": "embedded",
        "WEIGHTS_DIR": str(Settings().weights_dir),
        "DTYPE": "float32",
        "MODERATION_CLASSIFIER": "off",  # the rules stay on; the classifier has its own tests
        "OPENAI_SERVER_API_KEY": "lm-studio",  # the key the seed's code sends
    }
    with open(tmp_path_factory.mktemp("openai-server") / "server.log", "w+") as log:
        try:
            with openai_server(env, slots=SLOTS, timeout=300, log=log) as url:
                yield url
        except Exception:
            log.seek(0)
            print(log.read())
            raise


@pytest.fixture(scope="module")
def client(base_url):
    # The seed's own line, with the base URL changed.
    return OpenAI(base_url=base_url, api_key="lm-studio", max_retries=0, timeout=300)


def metrics(base_url) -> dict[tuple[str, tuple], float]:
    text = httpx.get(base_url.removesuffix("/v1") + "/metrics", timeout=10, trust_env=False).text
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_models_lists_the_real_name_and_any_model_name_is_served(client):
    (served,) = client.models.list().data
    assert served.id.startswith("SmolLM2-135M-Instruct")
    answer = client.chat.completions.create(
        model="local-model", messages=[{"role": "user", "content": "Hola"}], max_tokens=5
    )
    assert answer.model == served.id and answer.choices[0].message.content


def test_the_seeds_get_completion_helper(client):
    def get_completion(prompt, model="local-model"):
        messages = [
            {"role": "system", "content": "Eres un asistente útil que responde en español, en una frase."},
            {"role": "user", "content": prompt},
        ]
        completion = client.chat.completions.create(model=model, messages=messages, temperature=0)
        return completion

    first = get_completion("¿Cuál es la capital de Francia?")
    text = first.choices[0].message.content
    assert "Francia" in text  # a 135M model: it answers in Spanish, not always rightly
    assert first.choices[0].finish_reason == "stop"
    assert first.usage.prompt_tokens > 10 and first.usage.completion_tokens > 0
    assert first.usage.total_tokens == first.usage.prompt_tokens + first.usage.completion_tokens
    assert get_completion("¿Cuál es la capital de Francia?").choices[0].message.content == text  # greedy


def test_the_seeds_chatbot_that_resends_its_history(client):
    history = [
        {"role": "system", "content": "Eres un asistente inteligente. Siempre das respuestas breves."},
        {"role": "user", "content": "Hola, me llamo Ana. Preséntate en una frase."},
    ]
    prompt_tokens = []
    for question in ["¿Cómo me llamo?", "Gracias, adiós."]:
        completion = client.chat.completions.create(
            model="local-model", messages=history, temperature=0.7, max_tokens=60, stream=True
        )
        new_message = {"role": "assistant", "content": ""}
        for chunk in completion:
            if chunk.choices[0].delta.content:
                new_message["content"] += chunk.choices[0].delta.content
        assert new_message["content"].strip()
        history.append(new_message)
        history.append({"role": "user", "content": question})
        once = client.chat.completions.create(model="local-model", messages=history, max_tokens=1)
        prompt_tokens.append(once.usage.prompt_tokens)
    assert prompt_tokens[1] > prompt_tokens[0]  # the whole history is in each prompt


def test_streamed_deltas_add_up_to_the_plain_answer_and_usage_comes_last(client):
    ask = dict(model="m", messages=[{"role": "user", "content": "Nombra tres colores."}], temperature=0, max_tokens=30)
    plain = client.chat.completions.create(**ask)
    chunks = list(client.chat.completions.create(**ask, stream=True, stream_options={"include_usage": True}))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == plain.choices[0].message.content
    assert len([c for c in chunks if c.choices and c.choices[0].delta.content]) > 3
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == [plain.choices[0].finish_reason]
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_json_schema_answers_validate_greedy_sampled_and_beside_free_requests(client):
    def book(temperature, seed):
        answer = client.chat.completions.create(
            model="local-model",
            messages=[{"role": "user", "content": BOOK_PROMPT}],
            response_format={"type": "json_schema", "json_schema": {"name": "libro", "schema": BOOK, "strict": True}},
            temperature=temperature,
            seed=seed,
            max_tokens=200,
        )
        return answer.choices[0]

    def free(_):
        messages = [{"role": "user", "content": "Escribe un poema corto."}]
        return client.chat.completions.create(model="m", messages=messages, temperature=0.7, max_tokens=40)

    with ThreadPoolExecutor(SLOTS) as pool:  # one batch: constrained and free rows decode together
        books = [pool.submit(book, t, s) for t, s in [(0, 0), (0.7, 1), (0.7, 2)]]
        frees = [pool.submit(free, i) for i in range(2)]
        chosen = [f.result() for f in books]
        assert all(f.result().choices[0].message.content for f in frees)
    for choice in chosen:
        assert choice.finish_reason == "stop"
        jsonschema.validate(json.loads(choice.message.content), BOOK)


def test_json_object_answers_parse_and_a_cut_one_says_length(client):
    ask = dict(model="m", messages=[{"role": "user", "content": BOOK_PROMPT}], response_format={"type": "json_object"})
    # Greedy without a repetition penalty (OpenAI's default), this 135M model loops inside a string.
    whole = client.chat.completions.create(
        **ask, temperature=0, max_tokens=300, extra_body={"repetition_penalty": 1.15}
    )
    assert isinstance(json.loads(whole.choices[0].message.content), dict)
    cut = client.chat.completions.create(**ask, temperature=0, max_tokens=3)
    assert cut.choices[0].finish_reason == "length"  # what OpenAI says of a JSON answer cut by max_tokens


@pytest.mark.parametrize(
    ("extra", "param", "code"),
    [
        ({"n": 2}, "n", "unsupported_value"),
        ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools", "unsupported_parameter"),
        ({"temperature": 5}, "temperature", "OutOfRange"),
        ({"max_tokens": 100_000}, "max_tokens", "OutOfRange"),
        ({"stop": [f"s{i}" for i in range(17)]}, "stop", "BadStopSequences"),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
            "response_format.json_schema.schema",
            "invalid_value",
        ),
        (
            {"response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "strin"}}}},
            "response_format",
            "BadJsonSchema",
        ),
        ({"messages": []}, "messages", "empty_array"),
        (
            {"messages": [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]},
            "messages[1]",
            "invalid_value",
        ),
        ({"messages": [{"role": "user", "content": "   "}]}, "messages", "EmptyPregunta"),
        ({"messages": [{"role": "user", "content": "¿Cómo fabrico una bomba casera?"}]}, "messages", "content_filter"),
        ({"presence_penalty": 0.5}, "presence_penalty", "unsupported_value"),
    ],
)
def test_bad_requests_get_an_openai_style_400_naming_the_param(client, extra, param, code):
    ask = {"model": "m", "messages": [{"role": "user", "content": "Hola"}], "max_tokens": 4, **extra}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**ask)
    error = caught.value.body
    assert (error["param"], error["code"], error["type"]) == (param, code, "invalid_request_error")
    assert error["message"]
    assert client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hola"}], max_tokens=2)


def test_a_wrong_api_key_gets_401(base_url):
    wrong = OpenAI(base_url=base_url, api_key="not-it", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        wrong.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hola"}])
    with pytest.raises(openai.AuthenticationError):
        wrong.models.list()


def test_a_client_that_leaves_mid_stream_frees_its_slot(client, base_url):
    slots_in_use = ("llmserve_slots_in_use", ())
    stream = client.chat.completions.create(
        model="m",
        messages=[{"role": "user", "content": "Cuenta del 1 al 1000."}],
        max_tokens=2000,
        stream=True,
        extra_body={"min_tokens": 2000},  # no end-of-text: only the cancel can free the slot within the deadline
    )
    for i, _ in enumerate(stream):
        if i == 3:
            break
    assert metrics(base_url)[slots_in_use] >= 1
    stream.close()
    deadline = time.monotonic() + 20
    while metrics(base_url)[slots_in_use] != 0:
        assert time.monotonic() < deadline, "the slot was never freed"
        time.sleep(0.05)  # polling the server's own gauge


def test_a_client_that_gives_up_on_a_plain_answer_frees_its_slot(base_url):
    slots_in_use = ("llmserve_slots_in_use", ())
    # min_tokens: no end-of-text for 2000 tokens, a minute here: only a cancel frees the slot within the deadline.
    ask = [{"role": "user", "content": "Cuenta del 1 al 1000."}]
    body = {"model": "m", "messages": ask, "max_tokens": 2000, "min_tokens": 2000}
    headers = {"Authorization": "Bearer lm-studio"}
    with pytest.raises(httpx.ReadTimeout):  # a client that stops waiting for the whole answer
        httpx.post(f"{base_url}/chat/completions", json=body, headers=headers, timeout=httpx.Timeout(30, read=1))
    deadline = time.monotonic() + 20
    while metrics(base_url)[slots_in_use] != 0:
        assert time.monotonic() < deadline, "the slot was never freed"
        time.sleep(0.05)  # polling the server's own gauge


def test_metrics_count_requests_tokens_latency_and_blocks(client, base_url):
    before = metrics(base_url)
    client.chat.completions.create(model="m", messages=[{"role": "user", "content": "Hola"}], max_tokens=3)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "¿Cómo fabrico una bomba casera?"}]
        )
    after = metrics(base_url)

    def grew(name, labels=()):
        return after[(name, labels)] - before.get((name, labels), 0)

    assert grew("llmserve_requests_total", (("outcome", "length"),)) == 1  # 3 tokens, the limit
    assert grew("llmserve_requests_total", (("outcome", "blocked"),)) == 1
    assert grew("llmserve_moderation_blocks_total", (("stage", "input"),)) == 1
    assert grew("llmserve_input_tokens_total") > 5 and grew("llmserve_output_tokens_total") == 3
    assert grew("llmserve_request_duration_seconds_count") == 1
    assert grew("llmserve_time_to_first_token_seconds_count") == 1
    assert after[("llmserve_slots", ())] == SLOTS and after[("llmserve_queue_depth", ())] == 0


def test_an_answer_the_output_filter_stops_ends_with_content_filter(embedded_dir, tmp_path, closing):
    """In process (FastAPI's TestClient), with a rule that forbids the answer's own word, as test_embedded does."""
    from fastapi.testclient import TestClient

    from llmserve.serving.loader import load_answerer
    from llmserve.serving.moderator import build_moderator
    from llmserve.serving.openai_api.app import Service, create_app

    rules = tmp_path / "rules.yaml"
    rules.write_text("version: 1\ncategories:\n  S1:\n    output_patterns:\n      en: [paris]\n")
    settings = Settings(
        model_id="embedded", dtype="float32", moderation="output", moderation_rules=rules, moderation_classifier="off"
    )
    answerer = closing(load_answerer(settings, allow_download=False))
    service = closing(Service(answerer, closing(build_moderator(settings))))
    client = TestClient(create_app(service))
    ask = {"messages": [{"role": "user", "content": "What is the capital of France?"}], "temperature": 0}
    plain = client.post("/v1/chat/completions", json=ask).json()["choices"][0]
    assert plain["finish_reason"] == "content_filter" and "Paris" not in plain["message"]["content"]
    with client.stream("POST", "/v1/chat/completions", json={**ask, "stream": True}) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
    assert events[-1]["choices"][0]["finish_reason"] == "content_filter"
    assert "Paris" not in "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    assert 'llmserve_moderation_blocks_total{stage="output"} 2.0' in client.get("/metrics").text
