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
from tests.helpers.schemas import BOOK, BOOK_QUESTION


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
        books = [pool.submit(answer, predictor, pregunta=BOOK_QUESTION, **ask) for ask in asks]
        frees = [pool.submit(answer, predictor, **free, seed=i) for i in range(2)]
        texts = [f.result() for f in books]
        assert all(f.result().strip() for f in frees)
    for text in texts:
        jsonschema.validate(json.loads(text), BOOK)


def test_a_book_cut_by_max_new_tokens_fails_naming_it(real_predictor):
    with pytest.raises(IncompleteAnswer) as caught:
        answer(real_predictor, pregunta=BOOK_QUESTION, json_schema=json.dumps(BOOK), max_new_tokens=6, temperature=0)
    assert caught.value.code is ErrorCode.IncompleteJson and caught.value.field == "max_new_tokens"
