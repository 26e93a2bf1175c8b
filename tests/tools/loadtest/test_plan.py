"""What scripts/loadtest loads and with what: targets, concurrency levels, inputs, the GPU's price."""

from __future__ import annotations

import pytest

from llmserve.tools.loadtest.errors import LoadTestError
from llmserve.tools.loadtest.plan import (
    DEFAULT_MAX_NEW_TOKENS,
    build_inputs,
    concurrency_levels,
    gpu_price,
    load_input_types,
    parse_target,
)


@pytest.mark.parametrize(
    "url, base",
    [
        ("http://127.0.0.1:5000", "http://127.0.0.1:5000"),
        ("http://localhost:5000/", "http://localhost:5000"),
        ("http://[::1]:8080", "http://[::1]:8080"),
        ("https://127.0.0.2:443", "https://127.0.0.2:443"),
    ],
)
def test_loopback_urls_are_accepted(url, base):
    target = parse_target(url)
    assert (target.kind, target.address, target.is_local) == ("local", base, True)


@pytest.mark.parametrize(
    "url, message",
    [
        ("http://10.0.0.5:5000", "E6001 BadLoadTarget: --url: 10.0.0.5 is not this machine"),
        ("http://0.0.0.0:5000", "0.0.0.0 is not this machine"),
        ("https://api.replicate.com", "api.replicate.com is not this machine"),
        ("http://localhost.example.com:5000", "is not this machine"),
        ("http://127.0.0.1:5000/predictions", "has a path. Give the server's base URL (http://127.0.0.1:5000)"),
        ("127.0.0.1:5000", "Pass the local server's base URL"),
        ("ftp://127.0.0.1", "Pass the local server's base URL"),
        ("replicate-deployment:just-a-name", "Write replicate-deployment:OWNER/NAME"),
        ("replicate:owner/model:not-a-version", "Write replicate:OWNER/MODEL:VERSION"),
    ],
)
def test_other_urls_are_refused_with_the_fix(url, message):
    with pytest.raises(LoadTestError, match=message.replace("(", r"\(").replace(")", r"\)")):
        parse_target(url)


def test_replicate_targets_map_to_the_library_keywords():
    deployment = parse_target("replicate-deployment:acme/pregunta-prod")
    assert (deployment.kind, deployment.is_local) == ("replicate-deployment", False)
    assert deployment.prediction_ref() == {"deployment": "acme/pregunta-prod"}
    assert parse_target("replicate:acme/pregunta:5c7d5dc6dd8b").prediction_ref() == {"version": "5c7d5dc6dd8b"}
    assert parse_target("replicate:meta/llama").prediction_ref() == {"model": "meta/llama"}


@pytest.mark.parametrize(
    "spec, levels", [("1", [1]), ("2", [1, 2]), ("8", [1, 2, 4, 8]), ("6", [1, 2, 4, 6]), ("8,1,4,4", [1, 4, 8])]
)
def test_concurrency_levels(spec, levels):
    assert concurrency_levels(spec) == levels


@pytest.mark.parametrize("spec", ["0", "two", "1,-2", ""])
def test_bad_concurrency_levels_are_refused(spec):
    with pytest.raises(LoadTestError, match="E6002 BadLoadOption: --users"):
        concurrency_levels(spec)


def test_inputs_are_typed_by_the_committed_schema():
    types = load_input_types()
    assert types["max_new_tokens"] == "integer" and types["temperature"] == "number" and types["pregunta"] == "string"
    inputs = build_inputs("¿Hola?", ["temperature=0", "max_new_tokens=16", "stop_sequences=\\n", "seed=7"], types)
    assert inputs == {
        "pregunta": "¿Hola?",
        "max_new_tokens": 16,
        "temperature": 0.0,
        "stop_sequences": "\\n",
        "seed": 7,
    }
    assert build_inputs("x", [], types)["max_new_tokens"] == DEFAULT_MAX_NEW_TOKENS


@pytest.mark.parametrize(
    "pair, message",
    [("colour=red", "Use one of pregunta, system_prompt"), ("top_k=many", "top_k takes an integer"), ("x", "NAME")],
)
def test_bad_inputs_are_refused(pair, message):
    with pytest.raises(LoadTestError, match=message):
        build_inputs("x", [pair], load_input_types())


def test_gpu_price_takes_dollars_or_an_example_name():
    assert gpu_price("gpu-t4") == 0.81
    assert gpu_price("2.5") == 2.5
    for bad in ("free", "-1", "nan"):
        with pytest.raises(LoadTestError, match="gpu-h100"):
            gpu_price(bad)
