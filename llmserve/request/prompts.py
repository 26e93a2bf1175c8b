"""Turn a question, a system prompt and earlier turns into the text the model continues. No torch."""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum

from jinja2 import TemplateError

from ..errors import ErrorCode, InputError

DEFAULT_SYSTEM_PROMPT = (
    "You are a helpful assistant. Answer the question briefly and accurately, in the language it was asked in."
)

# For base models without a chat template (falcon-rw-1b is one, trained on English web text):
# a plain transcript the model has seen many times. The question may be in any language.
COMPLETION_TEMPLATE = "{system_prompt}\n\nQuestion: {pregunta}\nAnswer:"

PLACEHOLDERS = ("pregunta", "system_prompt")


class Role(StrEnum):
    user = "user"
    assistant = "assistant"


@dataclass(frozen=True)
class ChatMessage:
    role: Role
    content: str


@dataclass(frozen=True)
class Prompt:
    """The text to tokenize and what ends the answer besides EOS."""

    text: str
    stop_sequences: tuple[str, ...]
    # Chat templates write their own BOS; plain text gets the tokenizer's usual special tokens.
    add_special_tokens: bool


# Applies the tokenizer's chat template to chat messages ([{"role", "content"}, ...]); raises jinja2's TemplateError.
ChatRenderer = Callable[[list[dict[str, str]]], str]


def check_template(template: str) -> None:
    """Raise InputError unless `template` uses {pregunta} and only the known placeholders."""
    fix = (
        "Write a template such as 'Pregunta: {pregunta}\\nRespuesta:', with {pregunta} and optionally "
        "{system_prompt}; write literal braces as {{ and }}."
    )
    try:
        fields = [(name, spec, conv) for _, name, spec, conv in string.Formatter().parse(template) if name is not None]
    except ValueError as e:
        raise InputError(ErrorCode.BadPromptTemplate, "prompt_template", f"cannot be parsed ({e}).", fix) from e
    for name, spec, conv in fields:
        if name not in PLACEHOLDERS or spec or conv:
            raise InputError(
                ErrorCode.BadPromptTemplate,
                "prompt_template",
                f"has the placeholder {{{name}}}; only {{pregunta}} and {{system_prompt}} are allowed.",
                fix,
            )
    if "pregunta" not in [name for name, _, _ in fields]:
        raise InputError(ErrorCode.BadPromptTemplate, "prompt_template", "does not include {pregunta}.", fix)


def turn_stop_sequence(template: str) -> str | None:
    """The label that starts a new question in a template ('\\nQuestion:'), so a base model stops there."""
    before = template.split("{pregunta}", 1)[0].rsplit("\n", 1)[-1].strip()
    if "{" in before or len(before) < 2:
        return None
    return "\n" + before


def render_completion(template: str, *, pregunta: str, system_prompt: str, history: Sequence[ChatMessage]) -> str:
    """Apply `template` to each earlier turn, answered, then to the new question, left open."""
    questions = [m.content for m in history if m.role is Role.user] + [pregunta]
    answers = [m.content for m in history if m.role is Role.assistant]
    turns = []
    for i, question in enumerate(questions):
        text = template.format(pregunta=question.strip(), system_prompt=system_prompt.strip() if i == 0 else "")
        # A template that opens with {system_prompt} leaves only its separator behind when it is empty.
        text = text.lstrip()
        if i < len(answers):
            text += " " + answers[i].strip()
        turns.append(text)
    return "\n\n".join(turns)


def chat_messages(*, pregunta: str, system_prompt: str, history: Sequence[ChatMessage]) -> list[dict[str, str]]:
    """The conversation as the role/content dicts that chat templates take."""
    messages = [{"role": "system", "content": system_prompt.strip()}] if system_prompt.strip() else []
    messages += [{"role": m.role.value, "content": m.content} for m in history]
    messages.append({"role": "user", "content": pregunta})
    return messages


def fold_system_turn(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """For chat templates that refuse a system role: put its text at the top of the first user turn."""
    if not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0]["content"], [dict(m) for m in messages[1:]]
    rest[0]["content"] = f"{system}\n\n{rest[0]['content']}"
    return rest


def render_chat(apply: ChatRenderer, messages: list[dict[str, str]]) -> str:
    """The chat template on `messages`, retried with the system turn folded in; InputError if it still refuses."""
    try:
        return apply(messages)
    except TemplateError as e:
        error = e
    folded = fold_system_turn(messages)
    if folded is not messages:
        # Some templates (Gemma's, older Mistral's) raise on a system turn rather than ignore it.
        try:
            return apply(folded)
        except TemplateError as e:
            error = e
    raise InputError(
        ErrorCode.BadMessages,
        "messages",
        f"the model's chat template refused this conversation: {error}",
        "Check the turns in `messages`, or set `prompt_template` to format the prompt yourself.",
    ) from error


def build_prompt(
    *,
    pregunta: str,
    system_prompt: str,
    prompt_template: str,
    history: Sequence[ChatMessage],
    chat_renderer: ChatRenderer | None,
) -> Prompt:
    """Pick the prompt format: the caller's template, else the model's chat template, else a transcript."""
    if not prompt_template and chat_renderer is not None:
        messages = chat_messages(pregunta=pregunta, system_prompt=system_prompt, history=history)
        return Prompt(render_chat(chat_renderer, messages), (), add_special_tokens=False)
    template = prompt_template or COMPLETION_TEMPLATE
    text = render_completion(template, pregunta=pregunta, system_prompt=system_prompt, history=history)
    stop = turn_stop_sequence(template)
    return Prompt(text, (stop,) if stop else (), add_special_tokens=True)
