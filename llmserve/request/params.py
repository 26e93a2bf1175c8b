"""Prediction inputs: their limits (declared once), parsing and validation. No torch here."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import Any

from ..errors import ErrorCode, InputError
from .prompts import DEFAULT_SYSTEM_PROMPT, ChatMessage, Role, check_template

# Character caps keep absurd payloads from reaching the tokenizer; the real bound is the
# model's context, checked in tokens once the prompt is built.
MAX_TEXT_CHARS = 100_000
MAX_STOP_SEQUENCES = 16
MAX_STOP_SEQUENCE_CHARS = 100
MAX_SEED = 2**32 - 1
GREEDY_BELOW = 0.01  # temperatures under this decode greedily


@dataclass(frozen=True)
class Range:
    """An inclusive numeric range with its default, as declared in predict.py's inputs."""

    ge: float
    le: float
    default: float
    description: str = ""
    integer: bool = False

    def cast(self, x: float) -> int | float:
        return int(x) if self.integer else float(x)


# transformers' names and meanings; predict.py repeats these as literals and a test keeps them equal.
LIMITS: dict[str, Range] = {
    "max_new_tokens": Range(
        1, 4096, 128, "Most tokens to generate; the prompt plus this must fit the model's context", integer=True
    ),
    "min_new_tokens": Range(
        0, 4096, 0, "Fewest tokens to generate before the end-of-text token is allowed", integer=True
    ),
    "temperature": Range(
        0.0,
        2.0,
        0.7,
        "Sampling temperature: 0 = greedy (below 0.01 too), < 1 = less random, > 1 = more random",
    ),
    "top_p": Range(
        0.01,
        1.0,
        0.9,
        "Nucleus sampling: draw from the most likely tokens whose probabilities add up to top_p; 1 = off",
    ),
    "top_k": Range(0, 1000, 50, "Draw only from the k most likely tokens; 0 = off", integer=True),
    "repetition_penalty": Range(
        1.0, 2.0, 1.15, "Penalty on tokens already in the prompt or the answer: 1 = none, > 1 = fewer repeats"
    ),
}


@dataclass(frozen=True)
class SamplingParams:
    """How to decode; transformers' parameter names."""

    max_new_tokens: int
    min_new_tokens: int
    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    seed: int
    json_schema: str = ""  # a JSON Schema object as text that the answer must follow (engine/grammar.py); "": free

    @property
    def greedy(self) -> bool:
        # Dividing logits by a temperature this close to 0 overflows to inf; the limit is greedy anyway.
        return self.temperature < GREEDY_BELOW

    @classmethod
    def plain_greedy(cls, max_new_tokens: int, *, min_new_tokens: int = 0) -> SamplingParams:
        """Greedy with no penalty or filters: warm-ups, the moderation classifier, benchmarks."""
        return cls(
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            temperature=0.0,
            top_p=1.0,
            top_k=0,
            repetition_penalty=1.0,
            seed=0,
        )


@dataclass(frozen=True)
class Request:
    """A validated prediction request; `seed` is None when the caller left it random."""

    pregunta: str
    system_prompt: str
    prompt_template: str
    history: tuple[ChatMessage, ...]
    stop_sequences: tuple[str, ...]
    max_new_tokens: int
    min_new_tokens: int
    temperature: float
    top_p: float
    top_k: int
    repetition_penalty: float
    seed: int | None
    json_schema: str = ""  # canonical JSON text of the schema; "" for free text

    def sampling(self, seed: int) -> SamplingParams:
        return SamplingParams(
            max_new_tokens=self.max_new_tokens,
            min_new_tokens=self.min_new_tokens,
            temperature=self.temperature,
            top_p=self.top_p,
            top_k=self.top_k,
            repetition_penalty=self.repetition_penalty,
            seed=seed,
            json_schema=self.json_schema,
        )


def validate_request(
    *,
    pregunta: str | None,
    system_prompt: str = DEFAULT_SYSTEM_PROMPT,
    prompt_template: str = "",
    messages: str = "",
    stop_sequences: str = "",
    max_new_tokens: int = LIMITS["max_new_tokens"].cast(LIMITS["max_new_tokens"].default),
    min_new_tokens: int = LIMITS["min_new_tokens"].cast(LIMITS["min_new_tokens"].default),
    temperature: float = LIMITS["temperature"].default,
    top_p: float = LIMITS["top_p"].default,
    top_k: int = LIMITS["top_k"].cast(LIMITS["top_k"].default),
    repetition_penalty: float = LIMITS["repetition_penalty"].default,
    seed: int | None = None,
    json_schema: str = "",
) -> Request:
    """Check every input against its limit and return the parsed request, or raise InputError."""
    if pregunta is None or not str(pregunta).strip():
        raise InputError(ErrorCode.EmptyPregunta, "pregunta", "is empty.", "Pass the question to answer as `pregunta`.")
    for field, text in (
        ("pregunta", pregunta),
        ("system_prompt", system_prompt),
        ("prompt_template", prompt_template),
        ("messages", messages),
        ("stop_sequences", stop_sequences),
        ("json_schema", json_schema),
    ):
        _check_text(field, text)
    numbers = {
        "max_new_tokens": _check_number("max_new_tokens", max_new_tokens),
        "min_new_tokens": _check_number("min_new_tokens", min_new_tokens),
        "temperature": _check_number("temperature", temperature),
        "top_p": _check_number("top_p", top_p),
        "top_k": _check_number("top_k", top_k),
        "repetition_penalty": _check_number("repetition_penalty", repetition_penalty),
    }
    if numbers["min_new_tokens"] > numbers["max_new_tokens"]:
        raise InputError(
            ErrorCode.MinAboveMax,
            "min_new_tokens",
            f"min_new_tokens={numbers['min_new_tokens']} is above max_new_tokens={numbers['max_new_tokens']}.",
            "Lower min_new_tokens or raise max_new_tokens so that min_new_tokens <= max_new_tokens.",
        )
    if isinstance(seed, float) and seed.is_integer():
        seed = int(seed)  # the Cog server passes 7.0 through for an integer field
    if seed is not None:
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
            raise InputError(
                ErrorCode.OutOfRange,
                "seed",
                f"seed={seed!r} is not an integer in [0, {MAX_SEED}].",
                "Pass a whole number in that range, or leave it empty for a random seed.",
            )
    if prompt_template:
        check_template(prompt_template)
    return Request(
        pregunta=pregunta,
        system_prompt=system_prompt or "",
        prompt_template=prompt_template or "",
        history=parse_messages(messages),
        stop_sequences=parse_stop_sequences(stop_sequences),
        seed=seed,
        json_schema=parse_json_schema(json_schema),
        **numbers,
    )


def _check_text(field: str, text: Any) -> None:
    if text is None:
        return
    if not isinstance(text, str):
        raise InputError(
            ErrorCode.OutOfRange, field, f"must be a string, got {type(text).__name__}.", f"Pass {field} as text."
        )
    if len(text) > MAX_TEXT_CHARS:
        raise InputError(
            ErrorCode.TextTooLong,
            field,
            f"is {len(text):,} characters long; the limit is {MAX_TEXT_CHARS:,}.",
            f"Shorten {field}.",
        )


def _check_number(field: str, value: Any) -> Any:
    limit = LIMITS[field]
    integer = limit.integer
    is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
    if integer and is_number and isinstance(value, float) and value.is_integer():
        value = int(value)
    ok = is_number and (isinstance(value, int) or not integer) and math.isfinite(value)
    kind = "an integer" if integer else "a number"
    if not ok or not limit.ge <= value <= limit.le:
        lo, hi = _fmt(limit.ge), _fmt(limit.le)
        raise InputError(
            ErrorCode.OutOfRange,
            field,
            f"{field}={value!r} is not {kind} in [{lo}, {hi}].",
            f"Use {kind} from {lo} to {hi}; the default is {_fmt(limit.default)}. ({limit.description}.)",
        )
    return value


def _fmt(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else str(x)


def _load_json(raw: str, code: ErrorCode, field: str, fix: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError as e:
        raise InputError(code, field, f"is not valid JSON ({e.msg} at character {e.pos}).", fix) from e
    except RecursionError as e:
        raise InputError(code, field, "is nested too deeply to parse.", fix) from e


def parse_messages(raw: str | None) -> tuple[ChatMessage, ...]:
    """Parse `messages`: a JSON array of earlier turns, user first, alternating, ending with assistant."""
    if raw is None or not raw.strip():
        return ()
    fix = 'Pass a JSON array such as [{"role": "user", "content": "Hola"}, {"role": "assistant", "content": "¡Hola!"}].'
    data = _load_json(raw, ErrorCode.BadMessages, "messages", fix)
    if not isinstance(data, list):
        raise InputError(ErrorCode.BadMessages, "messages", f"must be a JSON array, got {type(data).__name__}.", fix)
    turns: list[ChatMessage] = []
    roles = [r.value for r in Role]
    for i, item in enumerate(data):
        where = f"messages[{i}]"
        if not isinstance(item, dict) or set(item) != {"role", "content"}:
            raise InputError(
                ErrorCode.BadMessages, where, 'must be an object with exactly the keys "role" and "content".', fix
            )
        role, content = item["role"], item["content"]
        if role not in roles:
            hint = " Put system instructions in `system_prompt`." if role == "system" else ""
            raise InputError(
                ErrorCode.UnknownRole,
                f"{where}.role",
                f"{role!r} is not one of {roles}.",
                f'Use "user" or "assistant".{hint}',
            )
        if not isinstance(content, str) or not content.strip():
            raise InputError(ErrorCode.BadMessages, f"{where}.content", "must be a non-empty string.", fix)
        expected = Role.user if i % 2 == 0 else Role.assistant
        if role != expected.value:
            raise InputError(
                ErrorCode.BadMessages,
                f"{where}.role",
                f'is "{role}" but turns must alternate user, assistant, ... starting with user.',
                "Reorder the turns; the new question goes in `pregunta`, not in `messages`.",
            )
        turns.append(ChatMessage(Role(role), content))
    if turns and turns[-1].role is not Role.assistant:
        raise InputError(
            ErrorCode.BadMessages,
            f"messages[{len(turns) - 1}]",
            "the history ends with a user turn that has no answer.",
            "End `messages` with the assistant's reply; the new question goes in `pregunta`.",
        )
    return tuple(turns)


def parse_json_schema(raw: str | None) -> str:
    """`json_schema` as canonical JSON text (its keys in the order given: the answer's order), or "" for free text."""
    if raw is None or not raw.strip():
        return ""
    fix = 'Pass a JSON Schema object, e.g. {"type": "object", "properties": {"titulo": {"type": "string"}}}.'
    data = _load_json(raw, ErrorCode.BadJsonSchema, "json_schema", fix)
    if not isinstance(data, dict):
        problem = f"must be a JSON object (a schema), got {type(data).__name__}."
        raise InputError(ErrorCode.BadJsonSchema, "json_schema", problem, fix)
    return json.dumps(data, ensure_ascii=False)


def parse_stop_sequences(raw: str | None) -> tuple[str, ...]:
    r"""Split comma-separated stop sequences; `\,` is a literal comma, `\n` and `\t` are escapes."""
    if raw is None or raw == "":
        return ()
    escapes = {"n": "\n", "t": "\t", ",": ",", "\\": "\\"}
    parts: list[str] = []
    current: list[str] = []
    chars = iter(raw)
    for ch in chars:
        if ch == "\\":
            nxt = next(chars, "")
            current.append(escapes.get(nxt, "\\" + nxt))
        elif ch == ",":
            parts.append("".join(current))
            current = []
        else:
            current.append(ch)
    parts.append("".join(current))
    # Spaces around commas are separators' padding; newlines and tabs come from escapes and stay.
    stops = tuple(dict.fromkeys(s for s in (p.strip(" ") for p in parts) if s))
    fix = (
        f"Give at most {MAX_STOP_SEQUENCES} sequences of at most {MAX_STOP_SEQUENCE_CHARS} characters, "
        "separated by commas."
    )
    if len(stops) > MAX_STOP_SEQUENCES:
        raise InputError(ErrorCode.BadStopSequences, "stop_sequences", f"has {len(stops)} sequences.", fix)
    for s in stops:
        if len(s) > MAX_STOP_SEQUENCE_CHARS:
            raise InputError(
                ErrorCode.BadStopSequences, "stop_sequences", f"{s[:20]!r}... is {len(s)} characters long.", fix
            )
    return stops
