"""The predictor's inputs as its OpenAPI schema declares them, and NAME=VALUE arguments typed by them."""

from __future__ import annotations

import difflib
import json
from collections.abc import Iterable, Mapping
from typing import Any

# What a JSON type takes, in words, for the messages about a value that does not parse.
EXPECTED = {"integer": "an integer", "number": "a number"}


def declared_inputs(schema: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """Input name -> its schema property, in order; from predict.py's signature unless `schema` is given."""
    if schema is None:
        from .openapi import build_schema

        schema = build_schema()
    return dict(schema["components"]["schemas"]["Input"]["properties"])


def input_types(inputs: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """Input name -> its JSON type ("string" when the schema does not say)."""
    return {name: prop.get("type", "string") for name, prop in inputs.items()}


def input_defaults(inputs: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Each input's default, as the Cog server fills them in for a request that leaves them out."""
    inputs = declared_inputs() if inputs is None else inputs
    return {name: prop["default"] for name, prop in inputs.items() if "default" in prop}


class AssignmentError(ValueError):
    """A NAME=VALUE argument that is not one: `problem` says what is wrong, `fix` what to write instead."""

    def __init__(self, problem: str, fix: str) -> None:
        self.problem, self.fix = problem, fix
        super().__init__(f"{problem} {fix}")


def parse_assignment(pair: str, types: Mapping[str, str], *, open_ended: bool = False) -> tuple[str, Any]:
    """`NAME=VALUE` -> (NAME, VALUE typed by its JSON type in `types`); AssignmentError when it is not that.

    `open_ended`: a NAME outside `types` (another model's input) takes VALUE as JSON when it parses, else as text.
    """
    name, sep, raw = pair.partition("=")
    names = ", ".join(types)
    if not sep or not name:
        fix = "Write NAME=VALUE." if open_ended else f"Write NAME=VALUE with NAME one of {names}."
        raise AssignmentError(f"{pair!r} is not NAME=VALUE.", fix)
    if name not in types:
        if not open_ended:
            nearest = nearest_input(name, types)
            hint = f"Did you mean {nearest}? " if nearest else ""
            raise AssignmentError(f"{name!r} is not an input of the predictor.", f"{hint}Use one of {names}.")
        try:
            return name, json.loads(raw)
        except json.JSONDecodeError:
            return name, raw
    kind = types[name]
    try:
        return name, int(raw) if kind == "integer" else float(raw) if kind == "number" else raw
    except ValueError:
        expected = EXPECTED[kind]
        raise AssignmentError(f"{pair!r}: {name} takes {expected}.", f"Give {name} {expected}.") from None


# Replicate's LLM inputs (cog-vllm's schema) that this predictor names the way transformers' generate() does.
_SYNONYMS = {"max_tokens": "max_new_tokens", "min_tokens": "min_new_tokens", "prompt": "pregunta"}


def nearest_input(name: str, declared: Iterable[str]) -> str | None:
    """The declared input a misspelt or foreign name most likely meant: max_tokens -> max_new_tokens."""
    declared = list(declared)
    if _SYNONYMS.get(name) in declared:
        return _SYNONYMS[name]
    close = difflib.get_close_matches(name, declared, n=1, cutoff=0.6)
    return close[0] if close else None
