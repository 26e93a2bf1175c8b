"""Backends put together and a stream filtered: the rules before the classifier, moderate_stream()."""

from __future__ import annotations

import pytest

from llmserve.errors import ErrorCode, ModerationError
from llmserve.moderation.llamaguard import LlamaGuardModerator
from llmserve.moderation.pipeline import ChainedFilter, CombinedModerator, moderate_stream
from llmserve.moderation.policy import Decision
from llmserve.moderation.rules import RulesModerator, RulesOutputFilter
from tests.helpers.moderation import SAFE_ANSWER, UNSAFE_ANSWER, Source, chunked, keyword_guard, stream

# Putting backends together ----------------------------------------------------------------------


def test_rules_run_first_and_a_rule_block_skips_the_classifier(rules):
    engine = keyword_guard("veneno")
    both = CombinedModerator([RulesModerator(rules), LlamaGuardModerator(engine)])
    blocked = both.check_input({"pregunta": "¿Cómo fabrico una bomba casera?"})
    assert (blocked.allowed, blocked.backend, blocked.categories) == (False, "rules", ("S9",))
    assert engine.prompts == []
    by_classifier = both.check_input({"pregunta": "Dame veneno"})
    assert (by_classifier.allowed, by_classifier.backend) == (False, "llama_guard") and by_classifier.seconds > 0
    assert both.check_input({"pregunta": "Hola"}) == Decision(True, (), "rules+llama_guard", pytest.approx(0, abs=1))


def test_the_chained_filter_passes_text_through_both_and_stops_at_the_first_block(rules):
    engine = keyword_guard("veneno")
    guard = LlamaGuardModerator(engine)
    filt = CombinedModerator([RulesModerator(rules), guard]).output_filter("Hola")
    assert isinstance(filt, ChainedFilter) and filt.backend == "rules+llama_guard"
    text = "Primera frase sin nada. Segunda frase también limpia. Tercera."
    assert stream(filt, chunked(text, 4)) == text and filt.blocked is None
    filt = CombinedModerator([RulesModerator(rules), guard]).output_filter("Hola")
    sent = stream(filt, chunked("Todo bien aquí. " + UNSAFE_ANSWER, 4))
    assert filt.blocked is not None and filt.blocked.backend == "rules" and "fuel oil" not in sent


def test_moderate_stream_passes_a_safe_answer_and_records_metrics(rules):
    source, recorded = Source(chunked(SAFE_ANSWER, 3)), []
    allowed = Decision(True, (), "rules", 0.001)
    out = moderate_stream(iter(source), RulesOutputFilter(rules), input_decision=allowed, on_metrics=recorded.append)
    assert "".join(out) == SAFE_ANSWER and source.closed
    assert recorded[0]["moderation_input_blocked"] == 0 and recorded[0]["moderation_output_blocked"] == 0


def test_moderate_stream_stops_generation_and_raises_when_blocked(rules):
    source, recorded = Source(chunked(UNSAFE_ANSWER + " And more words after it.", 3)), []
    sent = []
    with pytest.raises(ModerationError) as info:
        for chunk in moderate_stream(iter(source), RulesOutputFilter(rules), on_metrics=recorded.append):
            sent.append(chunk)
    assert info.value.code is ErrorCode.OutputBlocked and "S9 Indiscriminate Weapons" in str(info.value)
    assert source.closed and source.taken < len(source.chunks) and "fuel oil" not in "".join(sent)
    assert len(recorded) == 1 and recorded[0]["moderation_output_blocked"] == 1
    assert recorded[0]["moderation_seconds"] > 0 and "moderation_input_blocked" not in recorded[0]
