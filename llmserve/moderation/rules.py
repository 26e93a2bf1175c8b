"""The rules backend: per-category regular expressions in Spanish and English, matched on normalised text."""

from __future__ import annotations

import re
import time
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, StrictStr, ValidationError

from ..errors import ErrorCode, SetupError
from .policy import CATEGORIES, Decision, log_decision

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


# YAML reads some bare keys as other types (`no:` as False, `1:` as 1): a key is whatever it reads as, as text.
Key = Annotated[str, BeforeValidator(str)]
Patterns = dict[Key, list[StrictStr]]  # language (en, es, fr, ...) -> patterns


def _none_if_empty(value: Any) -> Any:
    return value or None


class _CategorySpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    allow: Patterns | None = None
    patterns: Patterns | None = None
    output_patterns: Patterns | None = None


class _RulesFile(BaseModel):
    """The rules file's shape; what its patterns mean (macros, categories, cover) is checked in parse_rules."""

    covers: list[Key] | None = None
    macros: Annotated[dict[Key, StrictStr | list[StrictStr]] | None, BeforeValidator(_none_if_empty)] = None
    categories: dict[Key, _CategorySpec]


def parse_rules(data: Any, *, source: str = "<rules>") -> RuleSet:
    """Compile rules from their YAML/JSON structure (see rules.yaml beside this module for the format)."""
    try:
        spec = _RulesFile.model_validate(data)
    except ValidationError as e:
        raise _bad_rules(source, _shape_problem(e.errors()[0])) from e
    expand = _Expander(spec.macros or {}, source)
    categories = []
    all_input: list[str] = []
    all_output: list[str] = []
    for code, rules in spec.categories.items():
        if code not in CATEGORIES:
            raise _bad_rules(source, f"names category {code!r}; the categories are {', '.join(CATEGORIES)}.")
        raw = {key: [p for items in (getattr(rules, key) or {}).values() for p in items] for key in _KEYS}
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
    with_patterns = [c.code for c in categories]
    if spec.covers is not None and sorted(spec.covers) != sorted(with_patterns):
        raise _bad_rules(
            source, f"says it covers {spec.covers} but has patterns for {', '.join(with_patterns) or 'no category'}."
        )
    return RuleSet(
        source=source,
        categories=tuple(categories),
        any_input=_compile(all_input, expand, where="patterns") if all_input else None,
        any_output=_compile(all_output, expand, where="patterns") if all_output else None,
    )


def _shape_problem(error: Mapping[str, Any]) -> str:
    """pydantic's first complaint about the file's shape, in the file's own terms."""
    loc = error["loc"]
    if len(loc) < 2 and loc[:1] in ((), ("categories",)):
        return "has no `categories` mapping."
    if loc[0] == "covers":
        return "`covers` must be a list of category codes."
    if loc[0] == "macros" and len(loc) > 1:
        return f"macro {loc[1]!r} must be a pattern or a list of patterns (strings)."
    if loc[0] == "macros":
        return "`macros` must map names to a pattern or a list of patterns (strings)."
    where = ".".join(str(part) for part in loc[1:4]) + "".join(f"[{part}]" for part in loc[4:])
    if len(loc) == 2 or error["type"] == "extra_forbidden":
        return f"{loc[1]} must be a mapping with keys among {', '.join(_KEYS)}."
    if len(loc) == 3:
        return f"{where} must map a language (en, es, ...) to a list of patterns."
    if len(loc) == 4:
        return f"{where} must be a list of patterns."
    return (
        f"{where} is a {type(error['input']).__name__}, not a string "
        "(YAML reads an unquoted ': ' as a mapping: quote the pattern)."
    )


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
        if not items:  # the file's schema has checked that they are strings
            raise _bad_rules(self.source, f"macro {name!r} is an empty list; give it at least one pattern.")
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
        "Fix the file (its format is described at the top of llmserve/moderation/rules.yaml), "
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

    Each check reads the new text with the last `window_chars` of what was already sent.
    """

    # The trailing partial word waits for its end, so a pattern split across chunks is caught whole. A few complete
    # words wait too, because an allowed phrase can complete after its trigger word ("bomba" then "de agua").

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
