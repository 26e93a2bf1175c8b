"""Validation of every input: each error names the field, the limit and the fix, with a stable code."""

from __future__ import annotations

import json

import pytest

from llmserve.errors import ErrorCode, InputError
from llmserve.request.params import (
    LIMITS,
    MAX_SEED,
    MAX_TEXT_CHARS,
    parse_messages,
    parse_stop_sequences,
    validate_request,
)
from llmserve.request.prompts import Role


def error_of(**kwargs) -> InputError:
    kwargs.setdefault("pregunta", "¿Qué hora es?")
    with pytest.raises(InputError) as info:
        validate_request(**kwargs)
    return info.value


def test_defaults_validate():
    request = validate_request(pregunta="¿Cuál es la capital de Francia?")
    assert request.max_new_tokens == LIMITS["max_new_tokens"].default
    assert request.seed is None and request.history == () and request.stop_sequences == ()


@pytest.mark.parametrize("pregunta", ["", "   ", "\n\t", None])
def test_empty_pregunta(pregunta):
    err = error_of(pregunta=pregunta)
    assert err.code is ErrorCode.EmptyPregunta and err.field == "pregunta"
    assert str(err).startswith("E1001 EmptyPregunta: pregunta:")


@pytest.mark.parametrize(
    "field, value",
    [
        ("max_new_tokens", 0),
        ("max_new_tokens", 4097),
        ("min_new_tokens", -1),
        ("temperature", -0.1),
        ("temperature", 2.5),
        ("temperature", float("nan")),
        ("top_p", 0.0),
        ("top_p", 1.5),
        ("top_k", -1),
        ("top_k", 1001),
        ("top_k", 2.5),
        ("repetition_penalty", 0.9),
        ("repetition_penalty", "1.1"),
        ("max_new_tokens", True),
    ],
)
def test_out_of_range_names_field_limit_and_fix(field, value):
    err = error_of(**{field: value})
    limit = LIMITS[field]
    assert err.code is ErrorCode.OutOfRange and err.field == field
    message = str(err)
    assert field in message
    assert f"[{limit.ge:g}, {limit.le:g}]" in message
    assert "Use " in err.fix and "default" in err.fix


def test_integer_valued_float_is_accepted_for_integer_fields():
    # The Cog server passes 64.0 through for an integer field; it means 64.
    request = validate_request(pregunta="x", max_new_tokens=64.0, seed=7.0)
    assert (request.max_new_tokens, request.seed) == (64, 7)
    assert isinstance(request.seed, int)


def test_min_above_max():
    err = error_of(min_new_tokens=50, max_new_tokens=10)
    assert err.code is ErrorCode.MinAboveMax and "min_new_tokens=50" in str(err) and "max_new_tokens=10" in str(err)


@pytest.mark.parametrize("seed", [-1, MAX_SEED + 1, 1.5, True])
def test_bad_seed(seed):
    err = error_of(seed=seed)
    assert err.code is ErrorCode.OutOfRange and err.field == "seed" and str(MAX_SEED) in str(err)


def test_text_too_long():
    err = error_of(system_prompt="x" * (MAX_TEXT_CHARS + 1))
    assert err.code is ErrorCode.TextTooLong and err.field == "system_prompt" and f"{MAX_TEXT_CHARS:,}" in str(err)


@pytest.mark.parametrize(
    "template, problem",
    [
        ("Answer this:", "does not include {pregunta}"),
        ("Q: {question}\nA:", "{question}"),
        ("Q: {pregunta!r}", "{pregunta}"),
        ("Q: {pregunta:>10}", "{pregunta}"),
        ("Q: {pregunta", "cannot be parsed"),
        ("{0} {pregunta}", "{0}"),
    ],
)
def test_bad_template(template, problem):
    err = error_of(prompt_template=template)
    assert err.code is ErrorCode.BadPromptTemplate and err.field == "prompt_template"
    assert problem in str(err)


def test_template_with_literal_braces_is_fine():
    assert validate_request(pregunta="x", prompt_template='{{"q": "{pregunta}"}}').prompt_template


def test_messages_parse_into_turns():
    raw = json.dumps(
        [{"role": "user", "content": "Hola"}, {"role": "assistant", "content": "¡Hola! ¿En qué te ayudo?"}],
        ensure_ascii=False,
    )
    turns = parse_messages(raw)
    assert [t.role for t in turns] == [Role.user, Role.assistant]
    assert turns[1].content == "¡Hola! ¿En qué te ayudo?"


@pytest.mark.parametrize(
    "raw, code, where",
    [
        ("[{", ErrorCode.BadMessages, "messages"),
        ("[" * 50_000, ErrorCode.BadMessages, "messages"),
        ('{"role": "user"}', ErrorCode.BadMessages, "messages"),
        ('["hola"]', ErrorCode.BadMessages, "messages[0]"),
        ('[{"role": "user"}]', ErrorCode.BadMessages, "messages[0]"),
        ('[{"role": "user", "content": "a", "extra": 1}]', ErrorCode.BadMessages, "messages[0]"),
        ('[{"role": "user", "content": 5}]', ErrorCode.BadMessages, "messages[0].content"),
        ('[{"role": "user", "content": "  "}]', ErrorCode.BadMessages, "messages[0].content"),
        ('[{"role": "robot", "content": "a"}]', ErrorCode.UnknownRole, "messages[0].role"),
        ('[{"role": "system", "content": "a"}]', ErrorCode.UnknownRole, "messages[0].role"),
        ('[{"role": "assistant", "content": "a"}]', ErrorCode.BadMessages, "messages[0].role"),
        ('[{"role": "user", "content": "a"}]', ErrorCode.BadMessages, "messages[0]"),
        (
            '[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}]',
            ErrorCode.BadMessages,
            "messages[1].role",
        ),
    ],
)
def test_bad_messages(raw, code, where):
    err = error_of(messages=raw)
    assert err.code is code and err.field == where
    assert err.fix


def test_system_role_points_to_system_prompt():
    err = error_of(messages='[{"role": "system", "content": "a"}]')
    assert "system_prompt" in err.fix


def test_stop_sequences_split_and_unescape():
    assert parse_stop_sequences(r"Question:, \n\n,User\,Bot, ,\tX") == ("Question:", "\n\n", "User,Bot", "\tX")
    assert parse_stop_sequences("") == ()
    assert parse_stop_sequences("a,a") == ("a",)


def test_too_many_or_too_long_stop_sequences():
    err = error_of(stop_sequences=",".join(str(i) for i in range(17)))
    assert err.code is ErrorCode.BadStopSequences and "16" in str(err)
    err = error_of(stop_sequences="x" * 101)
    assert err.code is ErrorCode.BadStopSequences and "101 characters" in str(err)


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ('{"type": "object",', "is not valid JSON"),
        ("[1, 2]", "must be a JSON object (a schema), got list"),
        ('"string"', "got str"),
    ],
)
def test_json_schema_that_is_not_a_schema_object_is_refused_with_its_field(raw, problem):
    with pytest.raises(InputError) as caught:
        validate_request(pregunta="x", json_schema=raw)
    assert caught.value.code is ErrorCode.BadJsonSchema and caught.value.field == "json_schema"
    assert problem in caught.value.problem and "JSON Schema object" in caught.value.fix


def test_json_schema_keeps_its_key_order_and_empty_means_free_text():
    assert validate_request(pregunta="x", json_schema="  ").json_schema == ""
    request = validate_request(pregunta="x", json_schema='{"properties": {"b": {}, "a": {}}, "type": "object"}')
    assert request.json_schema == '{"properties": {"b": {}, "a": {}}, "type": "object"}'
    assert request.sampling(seed=1).json_schema == request.json_schema
