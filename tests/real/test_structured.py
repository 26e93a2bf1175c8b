"""json_schema through predict.Predictor on the embedded model, guardrails on: answers that parse and validate,
greedy and sampled, decoded in one batch with free answers."""

from __future__ import annotations

import asyncio
import json
from concurrent.futures import ThreadPoolExecutor

import jsonschema
import pytest

from llmserve.config import Settings
from llmserve.errors import ErrorCode, IncompleteAnswer
from llmserve.tools.inputs import input_defaults

# The seed's book, bounded so that every answer ends within max_new_tokens whatever the model writes.
BOOK = {
    "type": "object",
    "properties": {
        "libro_id": {"type": "integer", "minimum": 1, "maximum": 99999},
        "titulo": {"type": "string", "maxLength": 60},
        "autor": {"type": "string", "maxLength": 40},
        "año": {"type": "integer", "minimum": 1000, "maximum": 2100},
    },
    "required": ["libro_id", "titulo", "autor", "año"],
    "additionalProperties": False,
}
QUESTION = "Provee una salida en formato JSON con las siguientes claves: libro_id, titulo, autor, año."


def answer(predictor, **inputs) -> str:
    return "".join(asyncio.run(predictor.run(**{**input_defaults(), "max_new_tokens": 200, **inputs})))


@pytest.fixture
def predictor(embedded_dir, make_predictor):
    """Four slots, as a Cog server with COG_MAX_CONCURRENCY=4 has: the answers share the engine's batch."""
    return make_predictor(
        MODEL_ID="embedded", WEIGHTS_DIR=str(Settings().weights_dir), DTYPE="float32", COG_MAX_CONCURRENCY="4"
    )


def test_book_answers_validate_greedy_and_sampled_beside_free_answers(predictor):
    asks = [{"json_schema": json.dumps(BOOK), "temperature": t, "seed": s} for t, s in [(0, 0), (0.7, 1), (0.7, 2)]]
    free = {"pregunta": "Write a haiku about the sea.", "max_new_tokens": 40}
    with ThreadPoolExecutor(4) as pool:  # as Cog's four slots would: they join and leave one batch
        books = [pool.submit(answer, predictor, pregunta=QUESTION, **ask) for ask in asks]
        frees = [pool.submit(answer, predictor, **free, seed=i) for i in range(2)]
        texts = [f.result() for f in books]
        assert all(f.result().strip() for f in frees)
    for text in texts:
        jsonschema.validate(json.loads(text), BOOK)


def test_a_book_cut_by_max_new_tokens_fails_naming_it(real_predictor):
    with pytest.raises(IncompleteAnswer) as caught:
        answer(real_predictor, pregunta=QUESTION, json_schema=json.dumps(BOOK), max_new_tokens=6, temperature=0)
    assert caught.value.code is ErrorCode.IncompleteJson and caught.value.field == "max_new_tokens"
