"""OpenAI's chat completion request, checked and turned into the project's Request; OpenAI-style errors."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import BaseModel, ConfigDict

from ...errors import InputError
from ...request.params import LIMITS, Request, validate_request

# OpenAI's defaults where they differ from the Cog inputs': no top-k and no repetition penalty unless asked for
# (top_k and repetition_penalty may be sent as extras, as vLLM accepts them).
DEFAULTS = {"temperature": 1.0, "top_p": 1.0, "top_k": 0, "repetition_penalty": 1.0}
# The Cog input each OpenAI field becomes, for the `param` of an error raised by validate_request.
_PARAM = {
    "pregunta": "messages",
    "system_prompt": "messages",
    "max_new_tokens": "max_tokens",
    "min_new_tokens": "min_tokens",
    "stop_sequences": "stop",
    "json_schema": "response_format",
}
_UNSUPPORTED = ("tools", "tool_choice", "functions", "function_call", "audio", "modalities", "prediction")


class APIError(Exception):
    """An OpenAI-style error: HTTP status, and the body's message, type, param and code."""

    def __init__(self, status: int, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = "invalid_request_error" if status < 500 else "server_error"

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    @classmethod
    def from_input_error(cls, error: InputError, *, offset: int = 0) -> APIError:
        """A 400 for a project InputError, its field named as the OpenAI request names it."""
        field = error.field
        if field.startswith("messages["):  # history turns are counted after the system messages
            field = re.sub(r"^messages\[(\d+)\]", lambda m: f"messages[{int(m.group(1)) + offset}]", field)
        param = _PARAM.get(field, field)
        message = re.sub(r"; the default is [\d.]+\.", ".", f"{error.problem} {error.fix}")  # the Cog input's default
        for cog, ours in _PARAM.items():
            if ours != "messages":
                message = message.replace(cog, ours)
        return cls(400, message, param=param, code=error.code.name)


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[dict[str, Any]] | None = None


class ChatCompletionRequest(BaseModel):
    """The fields of POST /v1/chat/completions this server reads; unknown ones are ignored, as LM Studio does."""

    model_config = ConfigDict(extra="allow")

    model: str = ""
    messages: list[Message]
    temperature: float | None = None
    top_p: float | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    min_tokens: int | None = None
    stop: str | list[str] | None = None
    seed: int | None = None
    n: int | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    response_format: dict[str, Any] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: bool | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None


def to_request(body: ChatCompletionRequest) -> tuple[Request, bool]:
    """The validated Request, and whether max_tokens was given (else the server fills the context's remainder)."""
    _refuse_unsupported(body)
    system, turns = _split(body.messages)
    history = [{"role": m.role, "content": text} for m, text in turns[:-1]]
    max_tokens = body.max_completion_tokens if body.max_tokens is None else body.max_tokens
    top_p = DEFAULTS["top_p"] if body.top_p is None else max(body.top_p, LIMITS["top_p"].ge)  # 0: the top token
    try:
        request = validate_request(
            pregunta=turns[-1][1],
            system_prompt=system,
            messages=json.dumps(history) if history else "",
            stop_sequences=",".join(_escape(s) for s in _stops(body.stop)),
            max_new_tokens=int(LIMITS["max_new_tokens"].le) if max_tokens is None else max_tokens,
            min_new_tokens=body.min_tokens or 0,
            temperature=DEFAULTS["temperature"] if body.temperature is None else body.temperature,
            top_p=top_p,
            top_k=DEFAULTS["top_k"] if body.top_k is None else body.top_k,
            repetition_penalty=body.repetition_penalty or DEFAULTS["repetition_penalty"],
            seed=body.seed,
            json_schema=_schema(body.response_format),
        )
    except InputError as e:
        raise APIError.from_input_error(e, offset=len(body.messages) - len(turns)) from e
    return request, max_tokens is not None


def _refuse_unsupported(body: ChatCompletionRequest) -> None:
    extra = body.model_extra or {}
    for name in _UNSUPPORTED:
        if extra.get(name):
            raise APIError(400, f"`{name}` is not supported by this server.", param=name, code="unsupported_parameter")
    if body.n not in (None, 1):
        raise APIError(
            400, f"n={body.n}: this server returns one choice; send n=1.", param="n", code="unsupported_value"
        )
    if body.logprobs:
        raise APIError(400, "logprobs are not returned by this server.", param="logprobs", code="unsupported_value")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(body, name):
            message = f"{name} is not supported; use repetition_penalty (1 to 2) for fewer repeats."
            raise APIError(400, message, param=name, code="unsupported_value")


def _split(messages: list[Message]) -> tuple[str, list[tuple[Message, str]]]:
    """The system messages (at the start) joined, and the user/assistant turns with their text; the last is a user's."""
    if not messages:
        raise APIError(400, "messages is empty: send at least one user message.", param="messages", code="empty_array")
    system: list[str] = []
    turns: list[tuple[Message, str]] = []
    for i, message in enumerate(messages):
        text = _text(message, i)
        if message.role in ("system", "developer"):
            if turns:
                raise APIError(
                    400,
                    f"messages[{i}] is a {message.role} message after the conversation began; put it first.",
                    param=f"messages[{i}].role",
                    code="invalid_value",
                )
            system.append(text)
        elif message.role in ("user", "assistant"):
            turns.append((message, text))
        else:
            raise APIError(
                400,
                f"messages[{i}].role {message.role!r} is not supported: use system, user or assistant.",
                param=f"messages[{i}].role",
                code="invalid_value",
            )
    if not turns or turns[-1][0].role != "user":
        raise APIError(
            400, "the last message must be the user's.", param=f"messages[{len(messages) - 1}]", code="invalid_value"
        )
    return "\n\n".join(system), turns


def _text(message: Message, index: int) -> str:
    """A message's text: a string, or its text parts joined (OpenAI's content parts)."""
    content = message.content
    if isinstance(content, str):
        return content
    parts = content or []
    if any(part.get("type") != "text" or not isinstance(part.get("text"), str) for part in parts):
        raise APIError(
            400,
            f"messages[{index}].content: only text parts are supported.",
            param=f"messages[{index}].content",
            code="unsupported_value",
        )
    return "".join(part["text"] for part in parts)


def _stops(stop: str | list[str] | None) -> list[str]:
    if stop is None:
        return []
    return [stop] if isinstance(stop, str) else list(stop)


def _escape(stop: str) -> str:
    """One stop sequence in the Cog input's comma-separated syntax (params.parse_stop_sequences)."""
    return stop.replace("\\", "\\\\").replace(",", "\\,").replace("\n", "\\n").replace("\t", "\\t")


def _schema(response_format: dict[str, Any] | None) -> str:
    """The json_schema for OpenAI's response_format: text, json_object (any object) or json_schema."""
    kind = (response_format or {}).get("type", "text")
    if kind == "text":
        return ""
    if kind == "json_object":
        return json.dumps({"type": "object"})
    if kind == "json_schema":
        schema = ((response_format or {}).get("json_schema") or {}).get("schema")
        if not isinstance(schema, dict):
            raise APIError(
                400,
                'response_format.json_schema.schema must be a JSON Schema object: {"type": "json_schema", '
                '"json_schema": {"name": "...", "schema": {...}}}.',
                param="response_format.json_schema.schema",
                code="invalid_value",
            )
        return json.dumps(schema, ensure_ascii=False)
    raise APIError(
        400,
        f"response_format type {kind!r} is not one of text, json_object, json_schema.",
        param="response_format.type",
        code="invalid_value",
    )
