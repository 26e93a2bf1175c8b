"""Faults inside the decode loop: every request ends with an error, none waits forever, a broken engine says so."""

from __future__ import annotations

import pytest

from llmserve.errors import EngineBroken
from tests.helpers.engine import Recorder, finished, has_tokens, params


def test_a_device_error_while_freeing_a_slot_ends_every_request_and_breaks_the_engine(tiny_model_dir, make_engine):
    engine = make_engine(tiny_model_dir, slots=2)
    prompt = engine.encode("Hola")
    release = engine.backend.release

    def lost(slot):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    engine.backend.release = lost
    short, long = Recorder(), Recorder()
    engine.scheduler.submit(prompt, params(max_new_tokens=2, min_new_tokens=2), short)  # ends first, in release()
    engine.scheduler.submit(prompt, params(max_new_tokens=500, min_new_tokens=500), long)
    short.wait(finished, timeout=60)
    long.wait(finished, timeout=60)
    assert isinstance(short.outcome, EngineBroken) and "illegal memory access" in str(short.outcome)
    assert isinstance(long.outcome, EngineBroken)
    assert not engine.healthy and "illegal memory access" in engine.fault
    # Work it cannot do is refused at once, not queued.
    with pytest.raises(EngineBroken, match="illegal memory access"):
        list(engine.generate(prompt, params(max_new_tokens=2)))
    engine.backend.release = release


def test_admission_matches_the_slots(tiny_model_dir, make_engine):
    engine = make_engine(tiny_model_dir, slots=2)
    prompt = engine.encode("Hola")
    running = [Recorder() for _ in range(2)]
    for r in running:
        engine.scheduler.submit(prompt, params(max_new_tokens=400, min_new_tokens=400), r)
    for r in running:
        r.wait(has_tokens(1))
    waiting = [Recorder() for _ in range(2)]
    for r in waiting:
        engine.scheduler.submit(prompt, params(max_new_tokens=2), r)  # as many again may wait
    refused = Recorder()
    with pytest.raises(RuntimeError, match="queue is full"):
        engine.scheduler.submit(prompt, params(max_new_tokens=2), refused)
    for r in running + waiting:
        r.wait(finished)


def test_the_predictor_reports_itself_unhealthy_once_its_engine_broke(tiny_model_dir, make_predictor):
    predictor = make_predictor(MODEL_ID=str(tiny_model_dir), DTYPE="float32", MODERATION="off")
    assert predictor.healthcheck() is True
    scheduler = predictor.answerer.engine.scheduler
    scheduler._break(RuntimeError("device lost"))  # what a failed release() does
    assert predictor.healthcheck() is False


def test_padding_rows_of_a_falcon_batch_do_not_widen_the_attention_span(tiny_model_dir, make_engine):
    """Rows added to reach a power of two hold no request: their length must not grow, or every step reads more."""
    engine = make_engine(tiny_model_dir, slots=4)  # the fast Falcon-RW path; context 256, spans of 128
    backend = engine.backend
    spans: list[tuple[int, int]] = []
    step = backend._decode
    backend._decode = lambda tokens, rows, span: spans.append((rows, span)) or step(tokens, rows, span)
    prompt = engine.encode("Hola")
    first = [Recorder() for _ in range(4)]
    for n, r in zip([150, 150, 150, 1], first, strict=True):  # slot 3 ends at once and is padding from then on
        engine.scheduler.submit(prompt, params(max_new_tokens=n, min_new_tokens=n), r)
    for r in first:
        r.wait(finished)
    spans.clear()
    second = [Recorder() for _ in range(3)]  # slots 0-2 again, short: 4 rows, one of them padding
    for r in second:
        engine.scheduler.submit(prompt, params(max_new_tokens=8, min_new_tokens=8), r)
    for r in second:
        r.wait(finished)
    assert spans and all(span == 128 for _, span in spans), spans
