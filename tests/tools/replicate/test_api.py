"""Replicate's names as scripts/push and scripts/deploy read them, and the client refusing to start without a token."""

from __future__ import annotations

import pytest

from llmserve.config import ReplicateSettings
from llmserve.tools.replicate.api import make_client, parse_model_ref
from llmserve.tools.replicate.errors import PublishCode, PublishError
from tests.helpers.fakereplicate import TOKEN


@pytest.fixture
def client(api):
    return make_client(ReplicateSettings(api_token=TOKEN, base_url=api.url))


@pytest.mark.parametrize("ref", ["r8.im/alice/pregunta", "alice/pregunta"])
def test_parse_model_ref_accepts_the_image_and_the_short_form(ref):
    assert parse_model_ref(ref) == ("alice", "pregunta")


@pytest.mark.parametrize("ref", ["alice", "Alice/Pregunta", "r8.im/alice/pregunta:latest", "docker.io/a/b/c", "a//b"])
def test_parse_model_ref_refuses_what_cog_push_cannot_use(ref):
    with pytest.raises(PublishError) as err:
        parse_model_ref(ref, field_name="image")
    assert err.value.code is PublishCode.BadModelRef and str(err.value).startswith("E4003 BadModelRef: image:")
    assert "r8.im/alice/pregunta" in err.value.fix


def test_no_token_is_refused_before_any_request(api):
    with pytest.raises(PublishError) as err:
        make_client(ReplicateSettings(api_token=None, base_url=api.url))
    assert str(err.value).startswith("E4004 MissingApiToken: REPLICATE_API_TOKEN:")
    assert "https://replicate.com/account/api-tokens" in str(err.value)
    assert api.requests == []


def test_the_fake_refuses_a_wrong_token(api):
    client = make_client(ReplicateSettings(api_token="r8_wrong", base_url=api.url))
    from replicate.exceptions import ReplicateError

    with pytest.raises(ReplicateError) as err:
        client.accounts.current()
    assert err.value.status == 401
