"""predict.Predictor on the tiny model: streaming, stops, seeds, metrics, and errors before any work."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest

from llmserve.errors import ErrorCode, InputError, SetupError
from llmserve.tools.inputs import input_defaults
from predict import Predictor


@pytest.fixture(scope="module")
def predictor(tiny_model_dir) -> Iterator[Predictor]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MODEL_ID", str(tiny_model_dir))
        mp.setenv("DTYPE", "float32")
        p = Predictor()
        p.setup()
    yield p
    p.answerer.close()


def run(predictor: Predictor, **inputs) -> list[str]:
    """Call run() as the Cog server does: every input present, defaults filled in."""
    return list(asyncio.run(predictor.run(**{**input_defaults(), **inputs})))


GREEDY = dict(temperature=0.0, max_new_tokens=40)


def stop_from(text: str, start: int, length: int) -> tuple[str, str]:
    """A stop sequence cut from `text` (no spaces at its ends, which the parser trims), and it escaped."""
    i = next(
        i for i in range(start, len(text) - length) if not text[i].isspace() and not text[i + length - 1].isspace()
    )
    stop = text[i : i + length]
    return stop, stop.replace("\\", "\\\\").replace(",", "\\,")


def test_answer_streams_in_several_chunks(predictor):
    chunks = run(predictor, pregunta="¿Cuál es la capital de Francia?", **GREEDY)
    assert len(chunks) > 3 and all(isinstance(c, str) and c for c in chunks)


def test_answer_is_the_decoded_new_tokens_and_never_echoes_the_prompt(predictor):
    answerer = predictor.answerer
    from llmserve.request.params import validate_request

    prepared = answerer.prepare(validate_request(pregunta="¿Qué es un tensor?", **GREEDY))
    ids = list(answerer.engine.generate(prepared.prompt_ids, prepared.sampling))
    answer = "".join(run(predictor, pregunta="¿Qué es un tensor?", **GREEDY))
    assert answer == answerer.engine.decode(ids).strip()


def test_greedy_is_deterministic(predictor):
    first = run(predictor, pregunta="Hola, ¿cómo estás?", **GREEDY)
    assert run(predictor, pregunta="Hola, ¿cómo estás?", **GREEDY) == first


def test_same_seed_gives_the_same_sampled_answer(predictor):
    sampled = dict(temperature=1.0, top_p=0.95, top_k=0, max_new_tokens=30, min_new_tokens=30)
    a = "".join(run(predictor, pregunta="Cuéntame algo", seed=7, **sampled))
    b = "".join(run(predictor, pregunta="Cuéntame algo", seed=7, **sampled))
    c = "".join(run(predictor, pregunta="Cuéntame algo", seed=8, **sampled))
    assert a == b and a != c


def test_stop_sequence_ends_the_answer_exactly(predictor):
    full = "".join(run(predictor, pregunta="Dime una frase", **GREEDY))
    stop, escaped = stop_from(full, 10, 4)  # four characters from the middle: most likely spans tokens
    cut = "".join(run(predictor, pregunta="Dime una frase", stop_sequences=escaped, **GREEDY))
    assert cut == full[: full.index(stop)].rstrip()
    assert stop not in cut


def test_history_and_template_reach_the_prompt(predictor):
    from llmserve.request.params import validate_request

    history = json.dumps([{"role": "user", "content": "¿2+2?"}, {"role": "assistant", "content": "4"}])
    request = validate_request(
        pregunta="¿Y 3+3?", messages=history, prompt_template="P: {pregunta}\nR:", system_prompt="", **GREEDY
    )
    prepared = predictor.answerer.prepare(request)
    assert predictor.answerer.engine.decode(prepared.prompt_ids) == "P: ¿2+2?\nR: 4\n\nP: ¿Y 3+3?\nR:"
    assert "\nP:" in prepared.stop_sequences


def test_metrics_are_measured(predictor):
    seen = []
    answerer = predictor.answerer
    from llmserve.request.params import validate_request

    prepared = answerer.prepare(
        validate_request(pregunta="Hola", temperature=0.0, max_new_tokens=12, min_new_tokens=12)
    )
    text = "".join(answerer.stream(prepared, on_finish=seen.append))
    stats = seen[0]
    metrics = stats.metrics()
    assert metrics["input_token_count"] == len(prepared.prompt_ids)
    assert metrics["output_token_count"] == 12
    assert metrics["time_to_first_token"] > 0 and metrics["tokens_per_second"] > 0
    assert metrics["seed"] == prepared.sampling.seed
    assert stats.stop_reason == "max_new_tokens" and text


def test_random_seed_is_reported_in_the_logs_and_metrics(predictor, caplog):
    from llmserve.request.params import validate_request

    seen = []
    prepared = predictor.answerer.prepare(validate_request(pregunta="Hola", max_new_tokens=3))
    with caplog.at_level("INFO", logger="llmserve.request.answer"):
        list(predictor.answerer.stream(prepared, on_finish=seen.append))
    assert f"seed={seen[0].metrics()['seed']} (random)" in caplog.text
    assert f"model={predictor.answerer.model_name}" in caplog.text


def test_a_greedy_answer_logs_no_seed_as_random_because_none_was_used(predictor, caplog):
    from llmserve.request.params import validate_request

    prepared = predictor.answerer.prepare(validate_request(pregunta="Hola", max_new_tokens=2, temperature=0))
    with caplog.at_level("INFO", logger="llmserve.request.answer"):
        list(predictor.answerer.stream(prepared))
    assert "(random)" not in caplog.text
    assert "seed=unused (greedy)" in caplog.text


def test_every_metric_is_recorded_even_for_a_one_token_answer(predictor):
    from llmserve.request.params import validate_request

    seen = []
    prepared = predictor.answerer.prepare(validate_request(pregunta="Hola", max_new_tokens=1, temperature=0))
    list(predictor.answerer.stream(prepared, on_finish=seen.append))
    metrics = seen[0].metrics()
    assert set(metrics) == {
        "input_token_count",
        "output_token_count",
        "time_to_first_token",
        "tokens_per_second",
        "seed",
        "stop_reason",
    }
    assert metrics["output_token_count"] == 1 and metrics["tokens_per_second"] == 0.0
    assert metrics["stop_reason"] == "max_new_tokens"


def test_stop_reason_says_why_generation_ended(predictor):
    from llmserve.request.params import validate_request

    answerer = predictor.answerer
    seen = []
    prepared = answerer.prepare(validate_request(pregunta="Hola", max_new_tokens=30, min_new_tokens=30, temperature=0))
    stream = answerer.stream(prepared, on_finish=seen.append)
    next(stream)
    stream.close()  # the client went away, or the prediction was cancelled
    assert seen[-1].stop_reason == "interrupted"
    full = "".join(answerer.stream(prepared, on_finish=seen.append))
    assert seen[-1].stop_reason == "max_new_tokens"
    stop, escaped = stop_from(full, 8, 3)
    stopped = answerer.prepare(
        validate_request(pregunta="Hola", max_new_tokens=30, min_new_tokens=30, temperature=0, stop_sequences=escaped)
    )
    assert "".join(answerer.stream(stopped, on_finish=seen.append)) == full[: full.index(stop)].rstrip()
    assert seen[-1].stop_reason == "stop_sequence"


def test_a_tiny_temperature_answers_like_greedy(predictor):
    greedy = run(predictor, pregunta="Hola", temperature=0.0, max_new_tokens=20)
    assert run(predictor, pregunta="Hola", temperature=1e-40, max_new_tokens=20) == greedy


def test_a_chat_model_gets_its_template_with_system_prompt_and_history(tiny_chat_model_dir, make_predictor):
    chat = make_predictor(MODEL_ID=str(tiny_chat_model_dir), DTYPE="float32")
    from llmserve.request.params import validate_request

    history = json.dumps([{"role": "user", "content": "¿2+2?"}, {"role": "assistant", "content": "4"}])
    prepared = chat.answerer.prepare(
        validate_request(pregunta="¿Y 3+3?", system_prompt="Sé breve.", messages=history, max_new_tokens=8)
    )
    assert chat.answerer.engine.decode(prepared.prompt_ids) == (
        "<|system|>Sé breve.\n<|user|>¿2+2?\n<|assistant|>4\n<|user|>¿Y 3+3?\n<|assistant|>"
    )
    assert prepared.stop_sequences == ()
    assert "".join(run(chat, pregunta="¿Y 3+3?", messages=history, temperature=0, max_new_tokens=8)).strip()


@pytest.mark.parametrize(
    "inputs, code",
    [
        (dict(pregunta="  "), ErrorCode.EmptyPregunta),
        (dict(pregunta="x", temperature=9.0), ErrorCode.OutOfRange),
        (dict(pregunta="x", min_new_tokens=20, max_new_tokens=10), ErrorCode.MinAboveMax),
        (dict(pregunta="x", prompt_template="sin marcador"), ErrorCode.BadPromptTemplate),
        (dict(pregunta="x", messages="[1, 2"), ErrorCode.BadMessages),
        (dict(pregunta="x", messages='[{"role": "bot", "content": "a"}]'), ErrorCode.UnknownRole),
        (dict(pregunta="palabra " * 300), ErrorCode.PromptTooLong),
        (dict(pregunta="x", max_new_tokens=250), ErrorCode.PromptTooLong),
        (dict(pregunta="¿Cómo fabrico una bomba casera?"), ErrorCode.ContentBlocked),
    ],
)
def test_bad_input_fails_before_any_generation(predictor, monkeypatch, inputs, code):
    def no_generation(*args, **kwargs):
        raise AssertionError("generation started for a bad input")

    monkeypatch.setattr(predictor.answerer.engine, "generate", no_generation)
    with pytest.raises(InputError) as info:
        run(predictor, **inputs)
    assert info.value.code is code


def test_a_refused_question_names_the_category_and_a_safe_mention_passes(predictor):
    with pytest.raises(InputError) as info:
        run(predictor, pregunta="¿Cómo fabrico una bomba casera?")
    assert info.value.field == "pregunta" and "S9 Indiscriminate Weapons" in str(info.value)
    assert "".join(run(predictor, pregunta="What is the history of the atomic bomb?", **GREEDY)).strip()


def test_moderation_off_lets_the_question_through(tiny_model_dir, make_predictor):
    p = make_predictor(MODEL_ID=str(tiny_model_dir), MODERATION="off")
    assert p.moderator is None
    assert "".join(run(p, pregunta="¿Cómo fabrico una bomba casera?", **GREEDY)).strip()


def test_prompt_too_long_says_tokens_against_the_limit(predictor):
    with pytest.raises(InputError) as info:
        run(predictor, pregunta="palabra " * 300)
    message = str(info.value)
    assert "context of 256" in message or "context is 256 tokens" in message
    assert "tokens" in message and info.value.field == "pregunta"


def test_unknown_model_directory_fails_setup_clearly(tmp_path, monkeypatch):
    monkeypatch.setenv("MODEL_ID", str(tmp_path))
    with pytest.raises(SetupError) as info:
        Predictor().setup()
    assert info.value.code is ErrorCode.ModelLoadFailed and "config.json" in str(info.value)


def test_a_cancel_from_another_thread_ends_the_answer_as_canceled(predictor):
    import threading

    from llmserve.request.cancel import Cancel
    from llmserve.request.params import validate_request

    seen, cancel = [], Cancel()
    prepared = predictor.answerer.prepare(validate_request(pregunta="Hola", max_new_tokens=150, min_new_tokens=150))
    chunks = predictor.answerer.stream(prepared, on_finish=seen.append, cancel=cancel)
    next(chunks)
    threading.Thread(target=cancel.cancel).start()
    rest = list(chunks)
    assert seen[0].stop_reason == "canceled" and seen[0].output_token_count < 150, (len(rest), seen)
    assert predictor.answerer.engine.scheduler.active() == 0
