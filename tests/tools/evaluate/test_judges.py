"""The judges on their real clients (httpx, replicate), against fakes of an OpenAI-compatible API and Replicate."""

from __future__ import annotations

import pytest

import tests.helpers.fakereplicate as fakereplicate
from llmserve.config import JudgeSettings, ReplicateSettings
from llmserve.errors import LLMServeError
from llmserve.tools.evaluate.errors import EvalError
from llmserve.tools.evaluate.judges import JudgeFailed, JudgeSpec, OpenAIJudge, ReplicateJudge, open_judge
from llmserve.tools.evaluate.scoring import JudgeVerdict
from llmserve.tools.evaluate.targets import ReplicateTarget
from tests.helpers.fakeopenai import FakeOpenAI, Reply, serve_fake_openai
from tests.helpers.fakereplicate import TOKEN, FakeReplicate, serve_fake_replicate
from tests.helpers.localserver import closed_port_url


def test_openai_judge_posts_one_chat_completion_and_parses_the_verdict():
    fake = FakeOpenAI([Reply('```json\n{"score": 0.9, "explanation": "Dice París, como la referencia."}\n```')])
    with serve_fake_openai(fake):
        judge = OpenAIJudge("judge-model", base_url=fake.url + "/", api_key="sk-test")
        verdict = judge.judge("¿Capital de Francia?", "París", "Es París.")
    assert verdict == JudgeVerdict(0.9, "Dice París, como la referencia.")
    (path, headers, body), *rest = fake.requests
    assert rest == [] and path == "/v1/chat/completions"
    assert headers["Authorization"] == "Bearer sk-test"
    assert body["model"] == "judge-model" and body["temperature"] == 0
    assert [m["role"] for m in body["messages"]] == ["system", "user"]
    assert "¿Capital de Francia?" in body["messages"][1]["content"] and "Es París." in body["messages"][1]["content"]


def test_openai_judge_sends_no_authorization_without_a_key():
    fake = FakeOpenAI()
    with serve_fake_openai(fake):
        assert OpenAIJudge("m", base_url=fake.url, api_key=None).judge("¿a?", "b", "b").score == 1.0
    assert "Authorization" not in fake.requests[0][1]


@pytest.mark.parametrize(
    "reply, message",
    [
        (Reply("Me parece bien."), "no JSON object with a score"),
        (Reply("overloaded", status=503), "HTTP 503"),
        (Reply('{"score": "mucho"}'), "is not a number"),
    ],
)
def test_openai_judge_failures_are_judge_failed(reply, message):
    with serve_fake_openai(FakeOpenAI([reply])) as fake:
        with pytest.raises(JudgeFailed, match=message):
            OpenAIJudge("m", base_url=fake.url, api_key=None).judge("¿a?", "b", "c")


def test_openai_judge_unreachable_is_judge_failed():
    judge = OpenAIJudge("m", base_url=closed_port_url() + "/v1", api_key=None, timeout=5)
    with pytest.raises(JudgeFailed, match="no reply from"):
        judge.judge("¿a?", "b", "c")


def test_openai_judge_needs_a_key_for_api_openai_com_before_any_request():
    settings = JudgeSettings.from_env({})
    assert settings.openai_base_url == "https://api.openai.com/v1"
    with pytest.raises(EvalError, match="E3003 BadJudge: OPENAI_API_KEY: is not set"):
        open_judge(
            JudgeSpec("openai", "gpt-4o-mini"),
            base_url=None,
            judge_settings=settings,
            replicate_settings=ReplicateSettings(),
        )


def test_judge_settings_read_openai_variables():
    settings = JudgeSettings.from_env({"OPENAI_API_KEY": "sk-x", "OPENAI_BASE_URL": "http://127.0.0.1:11434/v1"})
    assert (settings.openai_api_key, settings.openai_base_url) == ("sk-x", "http://127.0.0.1:11434/v1")


@pytest.fixture
def llm_on_replicate(monkeypatch):
    """The fake API serving an official language model whose only input is `prompt`."""

    def prompt_only(value: dict) -> list[str]:
        ok = isinstance(value.get("prompt"), str) and value["prompt"].strip()
        return [] if ok and set(value) == {"prompt"} else [f"- input: expected only a prompt, got {sorted(value)}"]

    monkeypatch.setattr(fakereplicate, "_validate_input", prompt_only)
    api = FakeReplicate(models={"meta/llm": ["v9"]}, official={"meta/llm"})
    api.output = ['{"score": 0', '.5, "explanation": "Parcialmente', ' correcta."}']
    with serve_fake_replicate(api):
        yield api


def test_replicate_judge_runs_the_model_by_name_with_the_whole_prompt(llm_on_replicate):
    api = llm_on_replicate
    judge = ReplicateJudge("meta/llm", ReplicateSettings(api_token=TOKEN, base_url=api.url))
    assert judge.judge("¿7 por 8?", "56", "54") == JudgeVerdict(0.5, "Parcialmente correcta.")
    (create,) = api.writes()
    assert create.path == "/v1/models/meta/llm/predictions" and create.headers["Prefer"] == "wait"
    prompt = create.body["input"]["prompt"]
    assert "¿7 por 8?" in prompt and "56" in prompt and "54" in prompt and '"score"' in prompt


def test_replicate_judge_failures_are_judge_failed(llm_on_replicate):
    api = llm_on_replicate
    api.error = "CUDA out of memory"
    judge = ReplicateJudge("meta/llm", ReplicateSettings(api_token=TOKEN, base_url=api.url))
    with pytest.raises(JudgeFailed, match="failed: CUDA out of memory"):
        judge.judge("¿a?", "b", "c")
    refused = ReplicateJudge("meta/llm", ReplicateSettings(api_token="r8_wrong", base_url=api.url))
    with pytest.raises(JudgeFailed, match="401"):
        refused.judge("¿a?", "b", "c")


def test_replicate_needs_a_token_before_any_request():
    with pytest.raises(LLMServeError, match="REPLICATE_API_TOKEN"):
        ReplicateTarget("alice/pregunta:0a1b", ReplicateSettings(api_token=None))
    with pytest.raises(LLMServeError, match="REPLICATE_API_TOKEN"):
        ReplicateJudge("meta/llm", ReplicateSettings(api_token=None))
