"""build_moderator(): the stages MODERATION asks for, and the Llama Guard backend loaded on the tiny model.

The tiny model cannot say "safe": its greedy answer is noise. That is what these tests use: they show the
prompt goes through encode -> generate -> decode -> parse_verdict, and that an unreadable verdict blocks
(fail closed) and fails the boot self-check.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from llmserve.config import DEFAULT_MODERATION_RULES, Settings
from llmserve.errors import ErrorCode, SetupError
from llmserve.moderation.llamaguard import _GREEDY, LlamaGuardModerator, guard_prompt, parse_verdict
from llmserve.moderation.pipeline import CombinedModerator, PassThroughFilter
from llmserve.moderation.policy import Decision
from llmserve.moderation.rules import RulesModerator, RulesOutputFilter, load_rules
from llmserve.serving.moderator import build_moderator, guard_settings, load_guard


def settings_for(model_dir: Path, **env: str) -> Settings:
    return Settings.from_env({"MODERATION_MODEL": str(model_dir), "DTYPE": "float32", "DEVICE": "cpu", **env})


@pytest.fixture(scope="module")
def guard(tiny_model_dir):
    moderator = load_guard(settings_for(tiny_model_dir), self_check=False)
    yield moderator
    moderator.close()


def test_the_classifier_is_the_configured_model_on_the_main_models_device(guard, tiny_model_dir):
    settings = guard_settings(settings_for(tiny_model_dir, MODEL_ID="tiiuae/falcon-rw-1b", ENGINE="fast"))
    assert settings.model_id == str(tiny_model_dir) and settings.engine == "transformers"
    assert (settings.dtype, settings.device) == ("float32", "cpu")
    assert isinstance(guard, LlamaGuardModerator) and guard.model_name == str(tiny_model_dir)
    assert str(guard.engine.device) == "cpu"


def test_a_check_runs_the_guard_prompt_through_the_model_and_reads_its_answer(guard):
    decision = guard.check_input({"pregunta": "¿Qué es el aprendizaje automático?"})
    # The same greedy generation, by hand: the verdict the moderator read is this model's answer.
    prompt_ids = guard.engine.encode(
        guard_prompt([("user", "¿Qué es el aprendizaje automático?")]), add_special_tokens=False
    )
    raw = guard.engine.decode(list(guard.engine.generate(prompt_ids, _GREEDY)))
    assert raw and parse_verdict(raw).safe is None
    assert repr(raw[:80]) in decision.detail
    # Unreadable: blocked, no category, the documented fail-closed behaviour.
    assert (decision.allowed, decision.categories, decision.backend, decision.field) == (
        False,
        (),
        "llama_guard",
        "pregunta",
    )
    assert "failing closed" in decision.detail and decision.seconds > 0


def test_the_output_filter_holds_the_sentence_and_sends_nothing_unchecked(guard):
    filt = guard.output_filter("Hola")
    assert filt.push("Una frase entera") == ""  # no sentence end yet: held, no check
    assert filt.checks == 0
    assert filt.push(". Y otra") == ""  # the classifier read the first sentence and could not vouch for it
    assert filt.checks == 1 and filt.blocked is not None and filt.blocked.field == "output"
    assert filt.finish() == ""


def test_rules_answer_first_and_the_classifier_only_sees_what_they_let_through(guard):
    both = CombinedModerator([RulesModerator(load_rules(DEFAULT_MODERATION_RULES)), guard])
    by_rules = both.check_input({"pregunta": "¿Cómo fabrico una bomba casera?"})
    assert (by_rules.backend, by_rules.categories) == ("rules", ("S9",))
    by_classifier = both.check_input({"pregunta": "Hola, ¿qué tal?"})
    assert (by_classifier.allowed, by_classifier.backend) == (False, "llama_guard")


def test_a_model_that_does_not_answer_like_llama_guard_fails_at_boot(tiny_model_dir):
    with pytest.raises(SetupError) as info:
        build_moderator(settings_for(tiny_model_dir))
    error = info.value
    assert (error.code, error.field) == (ErrorCode.WarmupFailed, "MODERATION_MODEL")
    assert "instead of 'safe' or 'unsafe'" in str(error) and "Llama-Guard-3-1B" in str(error)


def test_a_missing_classifier_fails_setup_naming_moderation_model(tmp_path: Path):
    settings = Settings.from_env({"MODERATION_MODEL": "org/no-such-guard", "WEIGHTS_DIR": str(tmp_path)})
    with pytest.raises(SetupError) as info:
        load_guard(settings, allow_download=False)
    error = info.value
    assert (error.code, error.field) == (ErrorCode.WeightsNotFound, "MODERATION_MODEL")
    assert "org/no-such-guard" in str(error) and "HF_TOKEN" in str(error)


def test_a_directory_that_is_not_a_model_fails_setup(tmp_path: Path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(SetupError) as info:
        load_guard(settings_for(tmp_path))
    assert info.value.field == "MODERATION_MODEL" and info.value.code in (
        ErrorCode.ModelLoadFailed,
        ErrorCode.WeightsNotFound,
    )


@pytest.fixture(scope="module")
def answerer(tiny_model_dir):
    from llmserve.serving.loader import load_answerer

    answerer = load_answerer(Settings.from_env({"MODEL_ID": str(tiny_model_dir), "DTYPE": "float32"}))
    yield answerer
    answerer.close()


def test_a_real_answer_stream_is_cut_before_a_blocked_word(answerer, tmp_path: Path):
    """moderate_stream() around Answerer.stream(), as predict.py would use it, with a rule made to hit."""
    import re

    from llmserve.errors import ModerationError
    from llmserve.moderation.pipeline import moderate_stream
    from llmserve.moderation.rules import normalize
    from llmserve.request.params import validate_request

    request = validate_request(pregunta="¿Qué es el aprendizaje automático?", temperature=0.0, max_new_tokens=60)
    full = "".join(answerer.stream(answerer.prepare(request)))
    words = [w for w in re.findall(r"[A-Za-z]{4,}", full) if normalize(w) == w.lower()]
    assert len(words) > 2, f"the tiny model's answer has too few words to test with: {full!r}"
    target = words[len(words) // 2].lower()
    rules = tmp_path / "rules.yaml"
    rules.write_text(f"categories:\n  S1:\n    patterns:\n      en: ['{target}']\n", encoding="utf-8")
    moderator = build_moderator(Settings.from_env({"MODERATION_RULES": str(rules), "MODERATION": "output"}))

    sent, recorded = [], []
    stream = moderate_stream(
        answerer.stream(answerer.prepare(request)),
        moderator.output_filter(request.pregunta),
        on_metrics=recorded.append,
    )
    with pytest.raises(ModerationError):
        for chunk in stream:
            sent.append(chunk)
    text = "".join(sent)
    assert full.startswith(text) and not re.search(rf"(?<![\w-]){target}(?![\w-])", normalize(text))
    assert recorded and recorded[0]["moderation_output_blocked"] == 1


# Rules only: no model ---------------------------------------------------------------------------

RULES_ONLY = {"MODERATION_CLASSIFIER": "off"}


def test_build_moderator_follows_the_stages(tmp_path: Path):
    assert build_moderator(Settings.from_env({**RULES_ONLY, "MODERATION": "off"})) is None
    harmful = {"pregunta": "¿Cómo fabrico una bomba casera?"}
    both = build_moderator(Settings.from_env(RULES_ONLY))
    assert not both.check_input(harmful).allowed and isinstance(both.output_filter("x"), RulesOutputFilter)
    only_input = build_moderator(Settings.from_env({**RULES_ONLY, "MODERATION": "input"}))
    assert not only_input.check_input(harmful).allowed and isinstance(only_input.output_filter(), PassThroughFilter)
    only_output = build_moderator(Settings.from_env({**RULES_ONLY, "MODERATION": "output"}))
    assert only_output.check_input(harmful) == Decision(True, (), "off")
    assert isinstance(only_output.output_filter(), RulesOutputFilter)


def test_build_moderator_reads_the_users_rules_file(tmp_path: Path):
    own = tmp_path / "rules.yaml"
    own.write_text("categories:\n  S8:\n    patterns:\n      en: ['pirated (?:movies|films)']\n", encoding="utf-8")
    moderator = build_moderator(Settings.from_env({**RULES_ONLY, "MODERATION_RULES": str(own)}))
    assert moderator.check_input({"pregunta": "Where can I download PIRATED movies?"}).categories == ("S8",)
    assert moderator.check_input({"pregunta": "¿Cómo fabrico una bomba casera?"}).allowed
    with pytest.raises(SetupError, match="MODERATION_RULES"):
        build_moderator(Settings.from_env({**RULES_ONLY, "MODERATION_RULES": str(tmp_path / "none.yaml")}))


def test_a_classifier_directory_without_a_card_fails_setup_naming_moderation_classifier(tmp_path: Path):
    settings = replace(Settings(weights_dir=tmp_path), moderation_classifier=str(tmp_path))
    with pytest.raises(SetupError) as info:
        build_moderator(settings)
    assert info.value.code is ErrorCode.BadConfig and info.value.field == "MODERATION_CLASSIFIER"
    assert "card.json is missing" in str(info.value) and "scripts/train_moderation" in str(info.value)


def test_a_card_naming_an_unknown_base_model_fails_setup_naming_the_bases_there_are(tmp_path: Path):
    (tmp_path / "card.json").write_text(
        json.dumps({"labels": ["S1", "safe"], "layers": [1], "threshold": 0.9, "base": "gpt-9"}), encoding="utf-8"
    )
    settings = replace(Settings(weights_dir=tmp_path), moderation_classifier=str(tmp_path))
    with pytest.raises(SetupError) as info:
        build_moderator(settings)
    assert info.value.code is ErrorCode.BadConfig and info.value.field == "MODERATION_CLASSIFIER"
    assert "'gpt-9'" in str(info.value) and "gemma-3-270m" in str(info.value) and "--base" in str(info.value)
