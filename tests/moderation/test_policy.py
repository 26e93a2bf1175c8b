"""What the caller of the moderation stage raises and records: refusals, blocked answers, metrics, input texts."""

from __future__ import annotations

import json

import pytest

from llmserve.config import DEFAULT_MODERATION_RULES
from llmserve.errors import ErrorCode, InputError, ModerationError
from llmserve.moderation.pipeline import PassThroughFilter
from llmserve.moderation.policy import Decision, input_texts, moderation_metrics, output_blocked, refusal
from llmserve.moderation.rules import RulesOutputFilter, load_rules
from llmserve.request.params import validate_request
from tests.helpers.moderation import UNSAFE_ANSWER, chunked, stream


def test_a_refusal_names_the_field_and_the_category():
    error = refusal(Decision(False, ("S9",), "rules", 0.001, field="pregunta"))
    assert isinstance(error, InputError) and error.code is ErrorCode.ContentBlocked
    assert str(error).startswith(
        "E1010 ContentBlocked: pregunta: is refused by the moderation policy: S9 Indiscriminate Weapons. Rephrase"
    )
    self_harm = refusal(Decision(False, ("S11",), "rules", field="messages"))
    assert self_harm.field == "messages" and "S11 Suicide & Self-Harm" in str(self_harm) and "024" in str(self_harm)
    assert "unreadable verdict" in str(refusal(Decision(False, (), "llama_guard", field="pregunta", detail="x")))


def test_a_blocked_answer_raises_a_coded_error():
    error = output_blocked(Decision(False, ("S1", "S10"), "llama_guard", field="output"))
    assert isinstance(error, ModerationError) and isinstance(error, RuntimeError)
    assert error.code is ErrorCode.OutputBlocked and error.code.value == "E5001" and error.field == "output"
    assert "S1 Violent Crimes, S10 Hate" in str(error)


def test_metrics_for_each_stage():
    blocked_in = Decision(False, ("S9",), "rules", 0.25, field="pregunta")
    assert moderation_metrics(blocked_in) == {"moderation_input_blocked": 1, "moderation_seconds": 0.25}
    filt = RulesOutputFilter(load_rules(DEFAULT_MODERATION_RULES))
    stream(filt, chunked(UNSAFE_ANSWER, 5))
    metrics = moderation_metrics(Decision(True, (), "rules", 0.5), filt)
    assert metrics["moderation_input_blocked"] == 0 and metrics["moderation_output_blocked"] == 1
    assert metrics["moderation_seconds"] == pytest.approx(0.5 + filt.seconds)
    assert moderation_metrics(Decision(True, (), "off"), PassThroughFilter()) == {}


def test_input_texts_gathers_every_text_field():
    request = validate_request(
        pregunta="¿Y ahora?",
        messages=json.dumps([{"role": "user", "content": "Hola"}, {"role": "assistant", "content": "¡Hola!"}]),
        prompt_template="",
    )
    texts = input_texts(request)
    assert texts["pregunta"] == "¿Y ahora?" and texts["messages"] == "Hola\n¡Hola!"
    assert "system_prompt" in texts and "prompt_template" not in texts
