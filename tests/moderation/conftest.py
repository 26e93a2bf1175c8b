"""The shipped rules, compiled once for the moderation tests."""

from __future__ import annotations

import pytest

from llmserve.config import DEFAULT_MODERATION_RULES
from llmserve.moderation.rules import RulesModerator, load_rules


@pytest.fixture(scope="module")
def rules():
    return load_rules(DEFAULT_MODERATION_RULES)


@pytest.fixture(scope="module")
def moderator(rules) -> RulesModerator:
    return RulesModerator(rules)
