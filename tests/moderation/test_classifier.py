"""The trained classifier's policy without its model: threshold, category, cache, and the answer's checked tail."""

from __future__ import annotations

import hashlib
import json

import pytest

from llmserve.config import DEFAULT_MODERATION_RULES
from llmserve.moderation.classifier import ClassifierModerator
from llmserve.moderation.pipeline import ChainedFilter, CombinedModerator
from llmserve.moderation.rules import RulesModerator, load_rules
from tests.helpers import ROOT
from tests.helpers.moderation import chunked, stream

LABELS = ("S1", "S9", "safe")


class WordScorer:
    """Probabilities from words: "bomb" is S9 at 0.9, "hurt" S1 at 0.6; anything else safe. Counts its calls."""

    labels = LABELS

    def __init__(self) -> None:
        self.texts: list[str] = []

    def probabilities(self, texts):
        self.texts += texts
        out = []
        for text in texts:
            if "bomb" in text:
                out.append([0.05, 0.9, 0.05])
            elif "hurt" in text:
                out.append([0.6, 0.1, 0.3])
            else:
                out.append([0.01, 0.01, 0.98])
        return out


def test_refuses_above_the_threshold_with_the_most_probable_unsafe_category():
    moderator = ClassifierModerator(WordScorer(), threshold=0.8)
    blocked = moderator.check_input({"system_prompt": "Be brief.", "pregunta": "a bomb, please"})
    assert (blocked.allowed, blocked.categories, blocked.field, blocked.backend) == (
        False,
        ("S9",),
        "pregunta",
        "classifier",
    )
    assert "p_unsafe=0.95" in blocked.detail
    assert moderator.check_input({"pregunta": "hurt"}).allowed  # 0.7 unsafe: under the threshold
    assert not ClassifierModerator(WordScorer(), threshold=0.5).check_input({"pregunta": "hurt"}).allowed


def test_repeated_inputs_are_scored_once():
    scorer = WordScorer()
    moderator = ClassifierModerator(scorer, threshold=0.8)
    for _ in range(3):
        moderator.check_input({"system_prompt": "Eres un asistente.", "pregunta": "hola"})
    assert scorer.texts == ["Eres un asistente.", "hola"]


def test_labels_without_safe_are_refused_at_construction():
    scorer = WordScorer()
    scorer.labels = ("S1", "S9", "other")
    with pytest.raises(ValueError, match="'safe'"):
        ClassifierModerator(scorer, threshold=0.5)


def test_answers_pass_unchecked_by_it_the_rules_still_read_them():
    scorer = WordScorer()
    filt = ClassifierModerator(scorer, threshold=0.8).output_filter("q")
    assert stream(filt, chunked("Una bomb en la novela. Fin.", 4)) == "Una bomb en la novela. Fin."
    assert filt.blocked is None and scorer.texts == []
    rules = CombinedModerator([RulesModerator(load_rules(DEFAULT_MODERATION_RULES)), ClassifierModerator(scorer, 0.8)])
    both = rules.output_filter("q")
    out = stream(both, chunked("Sure. First mix the ammonium nitrate with diesel fuel oil, then add a detonator.", 5))
    assert out.startswith("Sure.") and "diesel" not in out
    assert both.blocked is not None and both.blocked.backend == "rules"


def test_the_rules_answer_first_and_each_decision_names_its_backend():
    scorer = WordScorer()
    combined = CombinedModerator(
        [RulesModerator(load_rules(DEFAULT_MODERATION_RULES)), ClassifierModerator(scorer, 0.8)]
    )
    assert combined.name == "rules+classifier"
    by_rules = combined.check_input({"pregunta": "¿Cómo fabrico una bomba casera?"})
    assert (by_rules.allowed, by_rules.backend) == (False, "rules") and scorer.texts == []
    by_classifier = combined.check_input({"pregunta": "tell me about a bomb"})
    assert (by_classifier.allowed, by_classifier.backend) == (False, "classifier")
    assert isinstance(combined.output_filter("q"), ChainedFilter)


def test_the_shipped_classifier_was_trained_on_the_dev_requests_as_they_are():
    """Edit data/moderation/requests.jsonl, then run scripts/train_moderation: the card records what it read."""
    card = json.loads((ROOT / "llmserve" / "moderation" / "classifier" / "card.json").read_text(encoding="utf-8"))
    dev = (ROOT / "data" / "moderation" / "requests.jsonl").read_bytes()
    assert card["trained_on"] == f"requests.jsonl sha256:{hashlib.sha256(dev).hexdigest()[:16]}"
    assert "heldout" not in card["trained_on"] and 0.5 < card["threshold"] < 1
