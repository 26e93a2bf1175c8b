"""Moderation of the question and of the streamed answer, against Llama Guard 3's hazard categories. No torch.

One interface, `Moderator`: `check_input(texts)` returns a `Decision`; `output_filter(user_text)` returns an
`OutputFilter` whose `push(chunk)` gives back only text that has been checked. Two backends: the rules in
data/moderation_rules.yaml (here) and a Llama Guard classifier (llamaguard.py, loaded by guard_model.py).
`build_moderator(settings)` puts together what MODERATION, MODERATION_RULES and MODERATION_MODEL ask for.
"""

from __future__ import annotations

import logging
import re
import time
import unicodedata
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from .errors import ErrorCode, InputError, ModerationError, SetupError

if TYPE_CHECKING:
    from .config import Settings
    from .params import Request

logger = logging.getLogger(__name__)

# Llama Guard 3's categories, the MLCommons hazard taxonomy.
CATEGORIES: dict[str, str] = {
    "S1": "Violent Crimes",
    "S2": "Non-Violent Crimes",
    "S3": "Sex-Related Crimes",
    "S4": "Child Sexual Exploitation",
    "S5": "Defamation",
    "S6": "Specialized Advice",
    "S7": "Privacy",
    "S8": "Intellectual Property",
    "S9": "Indiscriminate Weapons",
    "S10": "Hate",
    "S11": "Suicide & Self-Harm",
    "S12": "Sexual Content",
    "S13": "Elections",
    "S14": "Code Interpreter Abuse",
}
# MODERATION's values and the stages each one checks.
STAGES: dict[str, frozenset[str]] = {
    "off": frozenset(),
    "input": frozenset({"input"}),
    "output": frozenset({"output"}),
    "both": frozenset({"input", "output"}),
}

_QUOTES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u201c": '"', "\u201d": '"', "\u2013": "-", "\u2014": "-"})
_SPACES = re.compile(r"\s+")


# Combining marks that NFKD splits off letters: "é" becomes "e" + U+0301.
_COMBINING = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")


def _strip_accents(text: str) -> str:
    return text if text.isascii() else _COMBINING.sub("", unicodedata.normalize("NFKD", text))


def _fold(text: str) -> str:
    """normalize() without trimming the ends, so that pieces of a stream fold the same as the whole."""
    return _SPACES.sub(" ", _strip_accents(text).casefold().translate(_QUOTES))


def normalize(text: str) -> str:
    """What the rules see: no accents, case folded, straight quotes, single spaces."""
    return _fold(text).strip()


# Decisions -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    """One moderation verdict, for the caller to act on, log and record as metrics."""

    allowed: bool
    categories: tuple[str, ...] = ()  # Llama Guard codes, "S9"; empty when allowed, or for an unreadable verdict
    backend: str = "rules"  # "rules", "llama_guard", "rules+llama_guard", or "off" when the stage is disabled
    seconds: float = 0.0  # time spent deciding
    field: str | None = None  # the input field that was refused, or "output"
    detail: str = ""  # for logs: why, when the categories do not say it (an unreadable verdict)

    @property
    def label(self) -> str:
        """The categories by code and name: "S9 Indiscriminate Weapons"."""
        if self.categories:
            return ", ".join(f"{code} {CATEGORIES.get(code, 'Unknown category')}" for code in self.categories)
        return "an unreadable verdict from the moderation classifier" if self.detail else "an unnamed category"


class OutputFilter(Protocol):
    """Checks an answer as it streams; nothing leaves `push` or `finish` before it has been checked."""

    backend: str
    blocked: Decision | None  # None until the answer is stopped
    seconds: float  # time spent checking so far

    def push(self, chunk: str) -> str: ...
    def finish(self) -> str: ...


class Moderator(Protocol):
    name: str

    def check_input(self, texts: Mapping[str, str]) -> Decision:
        """Check each field's text (field name -> text); never raises for a refusal, the caller does."""
        ...

    def output_filter(self, user_text: str = "") -> OutputFilter:
        """A filter for one answer; `user_text` is the question, which a classifier reads as context."""
        ...


def log_decision(decision: Decision, stage: str) -> None:
    """One log line per decision: stage, verdict, field, categories, backend, time."""
    logger.info(
        "moderation: %s %s field=%s categories=%s backend=%s %.1fms%s",
        stage,
        "allowed" if decision.allowed else "blocked",
        decision.field or "-",
        ",".join(decision.categories) or "-",
        decision.backend,
        decision.seconds * 1000,
        f" ({decision.detail})" if decision.detail else "",
    )


# Rules -----------------------------------------------------------------------------------------

_MACRO = re.compile(r"\{([a-z_][a-z0-9_]*)\}")
# A pattern's leading macro (and the gap after it), shared by many patterns: compiled once per group.
_LEADING = re.compile(r"^\{[a-z_][a-z0-9_]*\}(?: \{gap6?\})?")
_KEYS = ("allow", "patterns", "output_patterns")


@dataclass(frozen=True)
class CategoryRules:
    code: str
    allow: re.Pattern[str] | None  # phrases masked before this category's patterns run
    input_regex: re.Pattern[str] | None  # `patterns`
    output_regex: re.Pattern[str] | None  # `patterns` and `output_patterns`
    count: int  # patterns and output patterns, for logs


@dataclass(frozen=True)
class RuleSet:
    source: str
    categories: tuple[CategoryRules, ...]
    # Every category's patterns in one regex: most text matches none, and one pass over it is cheaper
    # than one per category. Masking only removes matches, so no match here means no match at all.
    any_input: re.Pattern[str] | None = None
    any_output: re.Pattern[str] | None = None

    @property
    def covers(self) -> tuple[str, ...]:
        return tuple(c.code for c in self.categories)

    @property
    def pattern_count(self) -> int:
        return sum(c.count for c in self.categories)

    def match(self, text: str, *, output: bool = False, end: int | None = None) -> tuple[str, ...]:
        """Categories whose patterns match normalised `text`, counting only matches that end by `end`."""
        end = len(text) if end is None else end
        fast = self.any_output if output else self.any_input
        if fast is None or not fast.search(text, 0, end):
            return ()
        found = []
        for category in self.categories:
            regex = category.output_regex if output else category.input_regex
            if regex is None:
                continue
            masked = text if category.allow is None else category.allow.sub(_mask, text)
            if regex.search(masked, 0, end):
                found.append(category.code)
        return tuple(found)

    def check(self, text: str, *, output: bool = False) -> tuple[str, ...]:
        return self.match(normalize(text), output=output)


def _mask(match: re.Match[str]) -> str:
    # One unbroken token of the same length: positions stay put and no pattern can read through it.
    return "_" * len(match.group())


def load_rules(path: Path) -> RuleSet:
    """Read and compile a rules file; SetupError naming MODERATION_RULES if it is missing or malformed."""
    import yaml

    try:
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except OSError as e:
        raise _bad_rules(path, f"cannot be read: {e}") from e
    except yaml.YAMLError as e:
        raise _bad_rules(path, f"is not valid YAML: {e}") from e
    return parse_rules(data, source=str(path))


def parse_rules(data: Any, *, source: str = "<rules>") -> RuleSet:
    """Compile rules from their YAML/JSON structure (see data/moderation_rules.yaml for the format)."""
    if not isinstance(data, Mapping) or not isinstance(data.get("categories"), Mapping):
        raise _bad_rules(source, "has no `categories` mapping.")
    macros = data.get("macros") or {}
    if not isinstance(macros, Mapping):
        raise _bad_rules(source, "`macros` must map names to a pattern or a list of patterns.")
    expand = _Expander(macros, source)
    categories = []
    all_input: list[str] = []
    all_output: list[str] = []
    for code, spec in data["categories"].items():
        if code not in CATEGORIES:
            raise _bad_rules(source, f"names category {code!r}; the categories are {', '.join(CATEGORIES)}.")
        if not isinstance(spec, Mapping) or set(spec) - set(_KEYS):
            raise _bad_rules(source, f"{code} must be a mapping with keys among {', '.join(_KEYS)}.")
        raw = {key: _patterns_by_language(spec.get(key), source=source, where=f"{code}.{key}") for key in _KEYS}
        inputs, outputs = raw["patterns"], raw["patterns"] + raw["output_patterns"]
        if not outputs:
            continue
        categories.append(
            CategoryRules(
                code,
                _compile(raw["allow"], expand, where=f"{code}.allow") if raw["allow"] else None,
                _compile(inputs, expand, where=f"{code}.patterns") if inputs else None,
                _compile(outputs, expand, where=f"{code}.output_patterns"),
                len(outputs),
            )
        )
        all_input += inputs
        all_output += outputs
    covers = data.get("covers")
    with_patterns = [c.code for c in categories]
    if covers is not None and (not isinstance(covers, list) or sorted(map(str, covers)) != sorted(with_patterns)):
        raise _bad_rules(
            source, f"says it covers {covers} but has patterns for {', '.join(with_patterns) or 'no category'}."
        )
    return RuleSet(
        source=source,
        categories=tuple(categories),
        any_input=_compile(all_input, expand, where="patterns") if all_input else None,
        any_output=_compile(all_output, expand, where="patterns") if all_output else None,
    )


def _patterns_by_language(value: Any, *, source: str, where: str) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, Mapping):
        raise _bad_rules(source, f"{where} must map a language (en, es, ...) to a list of patterns.")
    out = []
    for lang, items in value.items():
        if not isinstance(items, list):
            raise _bad_rules(source, f"{where}.{lang} must be a list of patterns.")
        for i, item in enumerate(items):
            if not isinstance(item, str):
                raise _bad_rules(
                    source,
                    f"{where}.{lang}[{i}] is a {type(item).__name__}, not a string "
                    "(YAML reads an unquoted ': ' as a mapping: quote the pattern).",
                )
            out.append(item)
    return out


class _Expander:
    """Replaces {name} by its macro, recursively; strips accents so patterns match normalised text."""

    def __init__(self, macros: Mapping[str, Any], source: str) -> None:
        self.macros = macros
        self.source = source
        self._done: dict[str, str] = {}

    def __call__(self, pattern: str, *, where: str) -> str:
        return self._expand(pattern, where=where, seen=())

    def _expand(self, pattern: str, *, where: str, seen: tuple[str, ...]) -> str:
        return _MACRO.sub(lambda m: self._macro(m.group(1), where=where, seen=seen), _strip_accents(pattern))

    def _macro(self, name: str, *, where: str, seen: tuple[str, ...]) -> str:
        if name in self._done:
            return self._done[name]
        if name not in self.macros:
            raise _bad_rules(self.source, f"{where} uses {{{name}}}, which is not a macro.")
        if name in seen:
            raise _bad_rules(self.source, f"macro {name!r} refers to itself through {' -> '.join((*seen, name))}.")
        value = self.macros[name]
        items = value if isinstance(value, list) else [value]
        if not items or not all(isinstance(v, str) for v in items):
            raise _bad_rules(self.source, f"macro {name!r} must be a pattern or a list of patterns (strings).")
        parts = [self._expand(v, where=f"macro {name}", seen=(*seen, name)) for v in items]
        self._done[name] = "(?:" + "|".join(parts) + ")"
        return self._done[name]


def _compile(patterns: Sequence[str], expand: _Expander, *, where: str) -> re.Pattern[str]:
    """One regex for `patterns`, whole words only; patterns sharing a leading macro share its work."""
    groups: dict[str, list[str]] = {}
    for p in patterns:
        lead = _LEADING.match(p)
        prefix = lead.group() if lead else ""
        groups.setdefault(prefix, []).append(p[len(prefix) :])
    parts = []
    for prefix, rests in groups.items():
        body = "|".join(f"(?:{expand(r, where=where)})" for r in rests)
        parts.append(f"{expand(prefix, where=where)}(?:{body})")
    # No letter, digit or hyphen right before or after a match: "bomb-proof" is not "bomb".
    pattern = r"(?<![\w-])(?:" + "|".join(parts) + r")(?![\w-])"
    try:
        return re.compile(pattern)
    except re.error as e:
        for p in patterns:  # name the pattern that does not compile
            try:
                re.compile(expand(p, where=where))
            except re.error as e1:
                raise _bad_rules(
                    expand.source, f"{where} has a pattern that does not compile ({e1}): {p[:200]!r}"
                ) from e1
        raise _bad_rules(expand.source, f"{where} does not compile ({e}).") from e


def _bad_rules(source: object, problem: str) -> SetupError:
    return SetupError(
        ErrorCode.BadConfig,
        "MODERATION_RULES",
        f"the rules file {source} {problem}",
        "Fix the file (its format is described at the top of llmserve/data/moderation_rules.yaml), "
        "or unset MODERATION_RULES to use the shipped rules.",
    )


class RulesModerator:
    """The rules backend: fast, no model; good on the categories its file covers."""

    name = "rules"

    def __init__(self, rules: RuleSet) -> None:
        self.rules = rules

    def check_input(self, texts: Mapping[str, str]) -> Decision:
        start = time.perf_counter()
        for name, text in texts.items():
            categories = self.rules.check(text)
            if categories:
                return Decision(False, categories, self.name, time.perf_counter() - start, field=name)
        return Decision(True, (), self.name, time.perf_counter() - start)

    def output_filter(self, user_text: str = "") -> RulesOutputFilter:
        return RulesOutputFilter(self.rules)


class RulesOutputFilter:
    """Holds back the last few words of the answer until the rules have read past them.

    The trailing partial word waits for its end, so a pattern split across chunks is caught whole. A few
    complete words wait too, because an allowed phrase can complete after its trigger word ("bomba" then
    "de agua"). Each check reads the new text with the last `window_chars` of what was already sent.
    """

    backend = "rules"

    def __init__(self, rules: RuleSet, *, lookahead_words: int = 3, window_chars: int = 200) -> None:
        self.rules = rules
        self.lookahead_words = lookahead_words
        self.window_chars = window_chars
        self.blocked: Decision | None = None
        self.seconds = 0.0
        self._sent_tail = ""  # the end of what was emitted, as context for patterns that span it
        self._pending = ""  # received, not yet emitted

    def push(self, chunk: str) -> str:
        if self.blocked is not None or not chunk:
            return ""
        self._pending += chunk
        cut = _emit_boundary(self._pending, self.lookahead_words)
        if not cut and len(self._pending) > 5 * self.window_chars:
            # Text without spaces (code, a script without them): keep a window back rather than all of it.
            cut = len(self._pending) - self.window_chars
        return self._release(cut) if cut else ""

    def finish(self) -> str:
        if self.blocked is not None or not self._pending:
            return ""
        return self._release(len(self._pending))

    def _release(self, cut: int) -> str:
        """Emit pending[:cut] unless a pattern match ends inside what would be emitted."""
        start = time.perf_counter()
        head = _fold(self._sent_tail + self._pending[:cut])
        categories = self.rules.match(head + _fold(self._pending[cut:]), output=True, end=len(head))
        self.seconds += time.perf_counter() - start
        if categories:
            self.blocked = Decision(False, categories, self.backend, self.seconds, field="output")
            self._pending = ""
            log_decision(self.blocked, "output")
            return ""
        out, self._pending = self._pending[:cut], self._pending[cut:]
        self._sent_tail = _tail(self._sent_tail + out, self.window_chars)
        return out


def _emit_boundary(text: str, lookahead_words: int) -> int:
    """Where `text` may be cut: before its partial last word and the `lookahead_words` complete words before it."""
    runs = [m.start() for m in _SPACES.finditer(text)]
    i = len(runs) - lookahead_words - 1
    return runs[i] if i >= 0 else 0


def _tail(text: str, limit: int) -> str:
    """About the last `limit` characters of `text`, starting at a whitespace so no word is cut."""
    if len(text) <= limit:
        return text
    space = _SPACES.search(text, len(text) - limit)
    return text[space.start() :] if space else ""


# Putting backends together -------------------------------------------------------------------


class PassThroughFilter:
    """The output stage when it is off: everything passes, nothing is checked."""

    backend = "off"
    blocked: Decision | None = None
    seconds = 0.0

    def push(self, chunk: str) -> str:
        return chunk

    def finish(self) -> str:
        return ""


class ChainedFilter:
    """Text goes through each filter in turn (rules, then the classifier); the first block wins."""

    def __init__(self, filters: Sequence[OutputFilter]) -> None:
        self.filters = list(filters)
        self.backend = "+".join(f.backend for f in self.filters)

    @property
    def blocked(self) -> Decision | None:
        return next((f.blocked for f in self.filters if f.blocked is not None), None)

    @property
    def seconds(self) -> float:
        return sum(f.seconds for f in self.filters)

    def push(self, chunk: str) -> str:
        for f in self.filters:
            chunk = f.push(chunk)
            if self.blocked is not None:
                return ""
        return chunk

    def finish(self) -> str:
        text = ""
        for f in self.filters:
            text = f.finish() if not text else f.push(text) + f.finish()
            if self.blocked is not None:
                return ""
        return text


class CombinedModerator:
    """Rules first (cheap; a rule block skips the classifier), then the classifier."""

    def __init__(self, backends: Sequence[Moderator]) -> None:
        self.backends = list(backends)
        self.name = "+".join(b.name for b in self.backends)

    def check_input(self, texts: Mapping[str, str]) -> Decision:
        seconds = 0.0
        for backend in self.backends:
            decision = backend.check_input(texts)
            seconds += decision.seconds
            if not decision.allowed:
                return Decision(False, decision.categories, decision.backend, seconds, decision.field, decision.detail)
        return Decision(True, (), self.name, seconds)

    def output_filter(self, user_text: str = "") -> OutputFilter:
        return ChainedFilter([b.output_filter(user_text) for b in self.backends])


class StagedModerator:
    """What build_moderator returns: MODERATION's stages in front of the configured backend(s)."""

    def __init__(self, backend: Moderator, stages: frozenset[str]) -> None:
        self.backend = backend
        self.stages = stages
        self.name = backend.name

    def check_input(self, texts: Mapping[str, str]) -> Decision:
        if "input" not in self.stages:
            return Decision(True, (), "off")
        decision = self.backend.check_input({k: v for k, v in texts.items() if v and v.strip()})
        log_decision(decision, "input")
        return decision

    def output_filter(self, user_text: str = "") -> OutputFilter:
        if "output" not in self.stages:
            return PassThroughFilter()
        return self.backend.output_filter(user_text)

    def close(self) -> None:
        for backend in getattr(self.backend, "backends", [self.backend]):
            close = getattr(backend, "close", None)
            if close is not None:
                close()


def build_moderator(settings: Settings, *, allow_download: bool = True) -> StagedModerator | None:
    """The moderation stage MODERATION, MODERATION_RULES and MODERATION_MODEL ask for; None when it is off.

    Loading the classifier (guard_model, which imports torch) happens only when MODERATION_MODEL is set.
    """
    stages = STAGES[settings.moderation]
    if not stages:
        logger.info("moderation: off")
        return None
    rules = load_rules(settings.moderation_rules)
    backends: list[Moderator] = [RulesModerator(rules)]
    if settings.moderation_model:
        from .guard_model import load_guard

        backends.append(load_guard(settings, allow_download=allow_download))
    backend = backends[0] if len(backends) == 1 else CombinedModerator(backends)
    logger.info(
        "moderation: %s on %s; rules %s (%d patterns, categories %s)%s",
        "+".join(sorted(stages)),
        "the question and the answer" if len(stages) == 2 else f"the {'question' if 'input' in stages else 'answer'}",
        rules.source,
        rules.pattern_count,
        ",".join(rules.covers),
        f"; classifier {settings.moderation_model}@{settings.moderation_model_revision}"
        if settings.moderation_model
        else "",
    )
    return StagedModerator(backend, stages)


# For the caller: what to check, what to raise, what to record ----------------------------------

_FIX = (
    "Rephrase the question without asking for help to cause harm. If this is a mistake, the operator can "
    "extend the rules (MODERATION_RULES) or change MODERATION (README, Guardrails)."
)
_FIX_SELF_HARM = (
    "If you are thinking about suicide or hurting yourself, please talk to someone now: your local emergency "
    "number, or a crisis line (024 in Spain, 988 in the US)."
)


def input_texts(request: Request) -> dict[str, str]:
    """The texts of a validated request to check, by input field; `messages` joins the earlier turns."""
    texts = {
        "pregunta": request.pregunta,
        "system_prompt": request.system_prompt,
        "prompt_template": request.prompt_template,
        "messages": "\n".join(m.content for m in request.history),
    }
    return {name: text for name, text in texts.items() if text and text.strip()}


def refusal(decision: Decision) -> InputError:
    """The InputError for a refused question: E1010 ContentBlocked, naming the field and the category."""
    return InputError(
        ErrorCode.ContentBlocked,
        decision.field or "pregunta",
        f"is refused by the moderation policy: {decision.label}.",
        _FIX_SELF_HARM if "S11" in decision.categories else _FIX,
    )


def output_blocked(decision: Decision) -> ModerationError:
    """The error to raise when the output filter stops an answer: E5001 OutputBlocked, naming the category."""
    return ModerationError(
        ErrorCode.OutputBlocked,
        "output",
        f"was stopped by the moderation policy: {decision.label}. The text already streamed had been checked; "
        "nothing after it was sent.",
        _FIX_SELF_HARM if "S11" in decision.categories else _FIX,
    )


def moderation_metrics(
    input_decision: Decision | None = None, output: OutputFilter | None = None
) -> dict[str, float | int]:
    """Cog metrics for one prediction; a stage that is off records nothing."""
    metrics: dict[str, float | int] = {}
    seconds = 0.0
    if input_decision is not None and input_decision.backend != "off":
        metrics["moderation_input_blocked"] = int(not input_decision.allowed)
        seconds += input_decision.seconds
    if output is not None and output.backend != "off":
        metrics["moderation_output_blocked"] = int(output.blocked is not None)
        seconds += output.seconds
    if metrics:
        metrics["moderation_seconds"] = seconds
    return metrics


def moderate_stream(
    chunks: Iterator[str],
    filt: OutputFilter,
    *,
    input_decision: Decision | None = None,
    on_metrics: Callable[[dict[str, float | int]], None] | None = None,
) -> Iterator[str]:
    """Yield only the text `filt` has checked; when it blocks, close `chunks` and raise output_blocked().

    `on_metrics` gets moderation_metrics(input_decision, filt) at the end, however the stream ends.
    """
    try:
        for chunk in chunks:
            out = filt.push(chunk)
            if out:
                yield out
            if filt.blocked is not None:
                break
        tail = filt.finish() if filt.blocked is None else ""
        if tail:
            yield tail
        if filt.blocked is not None:
            raise output_blocked(filt.blocked)
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # stops generation: the engine frees the request's slot
        if on_metrics is not None:
            on_metrics(moderation_metrics(input_decision, filt))
