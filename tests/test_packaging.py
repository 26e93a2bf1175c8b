"""cog.yaml, predict.py's declared inputs and .cog/openapi_schema.json agree with each other and with Cog."""

from __future__ import annotations

import ast
import io
import json
import sys
import tokenize

import pytest
import yaml

from llmserve.request.params import LIMITS, MAX_SEED
from llmserve.request.prompts import DEFAULT_SYSTEM_PROMPT
from llmserve.tools.openapi import SCHEMA_PATH, build_schema
from tests.helpers import ROOT

COG_SCHEMA = ROOT.parent / "shared" / "cog" / "config_schema_v1.0.json"
# Read at collection, before any test runs: scripts/serve (HTTP tests) rewrites a stale file.
COMMITTED_SCHEMA = json.loads((ROOT / SCHEMA_PATH).read_text())


def test_cog_yaml_validates_against_cogs_own_schema():
    if not COG_SCHEMA.is_file():
        pytest.skip(f"Cog's cog.yaml schema is not at {COG_SCHEMA} on this machine")
    import jsonschema

    config = yaml.safe_load((ROOT / "cog.yaml").read_text())
    jsonschema.validate(config, json.loads(COG_SCHEMA.read_text()))
    assert config["run"] == "predict.py:Predictor"
    assert config["build"]["sdk_version"] == "0.23.1" and config["build"]["gpu"] is True
    assert config["build"]["python_version"] == f"{sys.version_info.major}.{sys.version_info.minor}"


def test_the_sdk_pinned_in_cog_yaml_is_the_one_tested():
    import cog

    config = yaml.safe_load((ROOT / "cog.yaml").read_text())
    assert cog.__version__ == config["build"]["sdk_version"]
    assert f"cog=={cog.__version__}" in (ROOT / "requirements-dev.txt").read_text()


def test_committed_openapi_schema_matches_predict_py():
    """Fails when predict.py's inputs change and scripts/openapi_schema was not rerun."""
    assert COMMITTED_SCHEMA == build_schema(), "run scripts/openapi_schema and commit .cog/openapi_schema.json"


def test_schema_declares_streaming_and_every_input():
    schema = build_schema()
    assert schema["paths"]["/predictions"]["post"]["x-cog-streaming"] is True
    props = schema["components"]["schemas"]["Input"]["properties"]
    assert list(props) == [
        "pregunta",
        "system_prompt",
        "prompt_template",
        "messages",
        "max_new_tokens",
        "min_new_tokens",
        "temperature",
        "top_p",
        "top_k",
        "repetition_penalty",
        "stop_sequences",
        "seed",
        "json_schema",
    ]
    assert schema["components"]["schemas"]["Input"]["required"] == ["pregunta"]
    assert all(p.get("description") for p in props.values())
    assert schema["components"]["schemas"]["Output"]["x-cog-array-display"] == "concatenate"


def test_predict_inputs_equal_the_limits_the_validator_enforces():
    props = build_schema()["components"]["schemas"]["Input"]["properties"]
    for name, limit in LIMITS.items():
        assert (props[name]["minimum"], props[name]["maximum"], props[name]["default"]) == (
            limit.ge,
            limit.le,
            limit.default,
        ), name
        assert props[name]["type"] == ("integer" if limit.integer else "number")
        assert props[name]["description"] == limit.description + "."
    assert props["system_prompt"]["default"] == DEFAULT_SYSTEM_PROMPT
    assert (props["seed"]["minimum"], props["seed"]["maximum"]) == (0, MAX_SEED)


def test_predict_py_inputs_are_plain_literals_for_cogs_static_parser():
    """`cog build` reads Input(...) without running Python: it takes no names, calls or joined strings."""
    source = (ROOT / "predict.py").read_text()
    functions = (ast.FunctionDef, ast.AsyncFunctionDef)
    run = next(n for n in ast.walk(ast.parse(source)) if isinstance(n, functions) and n.name == "run")
    for default in run.args.defaults:
        assert isinstance(default, ast.Call) and ast.unparse(default.func) == "Input"
        for kw in default.keywords:
            value = kw.value
            if isinstance(value, ast.UnaryOp):
                value = value.operand
            assert isinstance(value, ast.Constant), f"{kw.arg}={ast.unparse(kw.value)} is not a literal"
    # Implicitly joined strings ("a" "b") come out mangled from Cog's parser.
    toks = [
        t
        for t in tokenize.generate_tokens(io.StringIO(source).readline)
        if t.type not in (tokenize.NL, tokenize.COMMENT)
    ]
    joined = [a.start[0] for a, b in zip(toks, toks[1:], strict=False) if a.type == b.type == tokenize.STRING]
    assert joined == [], f"implicitly joined strings at lines {joined}"


def test_the_image_gets_the_code_and_the_baked_weights():
    """`cog build` copies the project minus .dockerignore: weights/ must go in, the venv must not."""
    ignored = {line.strip().rstrip("/") for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert ".venv" in ignored
    assert not ignored & {"weights", "predict.py", "llmserve", "requirements.txt", "cog.yaml"}
    # The moderation classifier reads its base model's layers at setup: without them a container fetches it.
    assert not ignored & {"weights/embedded", "llmserve/moderation/classifier"}
    # The tools never run in the image (tests/test_architecture.py shows that serving does not need them).
    assert {"llmserve/tools", "tests"} <= ignored
