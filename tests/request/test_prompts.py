"""Prompt building: chat template when the model has one, a transcript otherwise, the caller's template first."""

from __future__ import annotations

from llmserve.request.prompts import (
    COMPLETION_TEMPLATE,
    ChatMessage,
    Role,
    build_prompt,
    chat_messages,
    fold_system_turn,
    render_completion,
    turn_stop_sequence,
)

HISTORY = (ChatMessage(Role.user, "¿Cuánto es 2+2?"), ChatMessage(Role.assistant, "4"))


def fake_chat_template(messages):
    return "".join(f"<|{m['role']}|>{m['content']}\n" for m in messages) + "<|assistant|>"


def test_base_model_gets_a_question_answer_transcript():
    prompt = build_prompt(
        pregunta="¿Cuál es la capital de España?",
        system_prompt="Sé breve.",
        prompt_template="",
        history=(),
        chat_renderer=None,
    )
    assert prompt.text == "Sé breve.\n\nQuestion: ¿Cuál es la capital de España?\nAnswer:"
    assert prompt.stop_sequences == ("\nQuestion:",)
    assert prompt.add_special_tokens


def test_transcript_keeps_history_in_order():
    text = render_completion(COMPLETION_TEMPLATE, pregunta="¿Y 3+3?", system_prompt="", history=HISTORY)
    assert text == "Question: ¿Cuánto es 2+2?\nAnswer: 4\n\nQuestion: ¿Y 3+3?\nAnswer:"


def test_system_prompt_appears_once_at_the_top():
    text = render_completion(COMPLETION_TEMPLATE, pregunta="¿Y 3+3?", system_prompt="Sé breve.", history=HISTORY)
    assert text.startswith("Sé breve.\n\nQuestion: ¿Cuánto es 2+2?")
    assert text.count("Sé breve.") == 1


def test_chat_template_is_used_when_the_model_has_one():
    prompt = build_prompt(
        pregunta="¿Y 3+3?",
        system_prompt="Sé breve.",
        prompt_template="",
        history=HISTORY,
        chat_renderer=fake_chat_template,
    )
    assert prompt.text == "<|system|>Sé breve.\n<|user|>¿Cuánto es 2+2?\n<|assistant|>4\n<|user|>¿Y 3+3?\n<|assistant|>"
    assert prompt.stop_sequences == () and not prompt.add_special_tokens


def test_empty_system_prompt_adds_no_system_turn():
    assert chat_messages(pregunta="hola", system_prompt="  ", history=()) == [{"role": "user", "content": "hola"}]


def test_callers_template_wins_over_the_chat_template():
    prompt = build_prompt(
        pregunta="¿Qué es un tensor?",
        system_prompt="Responde en español.",
        prompt_template="{system_prompt}\nPregunta: {pregunta}\nRespuesta:",
        history=(),
        chat_renderer=fake_chat_template,
    )
    assert prompt.text == "Responde en español.\nPregunta: ¿Qué es un tensor?\nRespuesta:"
    assert prompt.stop_sequences == ("\nPregunta:",)


def test_turn_stop_sequence():
    assert turn_stop_sequence("Q: {pregunta}\nA:") == "\nQ:"
    assert turn_stop_sequence("{pregunta}") is None
    assert turn_stop_sequence("{system_prompt} {pregunta}") is None


def test_fold_system_turn_for_templates_without_a_system_role():
    messages = chat_messages(pregunta="¿Y 3+3?", system_prompt="Sé breve.", history=HISTORY)
    folded = fold_system_turn(messages)
    assert folded[0] == {"role": "user", "content": "Sé breve.\n\n¿Cuánto es 2+2?"}
    assert [m["role"] for m in folded] == ["user", "assistant", "user"]
    assert messages[1]["content"] == "¿Cuánto es 2+2?"  # the input is left as it was
    no_system = chat_messages(pregunta="hola", system_prompt="", history=())
    assert fold_system_turn(no_system) is no_system
