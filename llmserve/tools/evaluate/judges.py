"""LLM judges for scripts/evaluate: an OpenAI-compatible chat endpoint, or a model on Replicate.

Each call returns a JudgeVerdict or raises JudgeFailed, which the evaluation records for that row only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlparse

import httpx

from ...config import JudgeSettings, ReplicateSettings
from ..replicate.api import error_text, make_client, parse_ref
from .errors import EvalCode, EvalError
from .scoring import JUDGE_SYSTEM_PROMPT, JudgeVerdict, judge_prompt, parse_judge_reply
from .targets import AnswerFailed, replicate_text


class JudgeFailed(Exception):
    """One judge call failed: no answer, an HTTP error, or a reply without a usable score."""


class Judge(Protocol):
    description: str

    def judge(self, pregunta: str, reference: str, answer: str) -> JudgeVerdict: ...


@dataclass(frozen=True)
class JudgeSpec:
    kind: str  # "openai" or "replicate"
    model: str


def parse_judge(text: str) -> JudgeSpec:
    """`openai:MODEL` (any OpenAI-compatible endpoint) or `replicate:OWNER/MODEL[:VERSION]`."""
    kind, sep, model = text.partition(":")
    if sep and model and (kind == "openai" or (kind == "replicate" and parse_ref(model) is not None)):
        return JudgeSpec(kind, model)
    raise EvalError(
        EvalCode.BadJudge,
        "--judge",
        f"{text!r} is not openai:MODEL or replicate:OWNER/MODEL[:VERSION].",
        "For example --judge openai:gpt-4o-mini, or --judge replicate:meta/meta-llama-3-70b-instruct.",
    )


class OpenAIJudge:
    """POST {base_url}/chat/completions, as OpenAI, vLLM, Ollama and llama.cpp's server all accept."""

    def __init__(self, model: str, *, base_url: str, api_key: str | None, timeout: float = 120.0) -> None:
        self.model = model
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        if urlparse(self.base_url).hostname == "api.openai.com" and not api_key:
            raise EvalError(
                EvalCode.BadJudge,
                "OPENAI_API_KEY",
                "is not set, and api.openai.com refuses requests without it.",
                "export OPENAI_API_KEY=..., or point --judge-base-url at a local OpenAI-compatible server.",
            )
        self.description = f"{model} at {self.base_url}"
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        # As requests did before: proxies and certificates from the environment, redirects followed.
        self._client = httpx.Client(headers=headers, follow_redirects=True)

    def judge(self, pregunta: str, reference: str, answer: str) -> JudgeVerdict:
        body = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": JUDGE_SYSTEM_PROMPT},
                {"role": "user", "content": judge_prompt(pregunta, reference, answer)},
            ],
            "temperature": 0,
        }
        try:
            response = self._client.post(f"{self.base_url}/chat/completions", json=body, timeout=self.timeout)
            if response.status_code != 200:
                raise JudgeFailed(f"HTTP {response.status_code} from {self.base_url}: {response.text[:200]}")
            content = response.json()["choices"][0]["message"]["content"]
            return parse_judge_reply(content or "")
        except (httpx.HTTPError, httpx.InvalidURL) as e:
            raise JudgeFailed(f"no reply from {self.base_url}: {e}") from e
        except (ValueError, KeyError, IndexError, TypeError) as e:
            raise JudgeFailed(str(e) or type(e).__name__) from e


class ReplicateJudge:
    """A language model on Replicate, given the whole judge prompt as its `prompt` input."""

    def __init__(self, ref: str, settings: ReplicateSettings) -> None:
        self.ref = ref
        self.description = f"Replicate model {ref}"
        self._client = make_client(settings)

    def judge(self, pregunta: str, reference: str, answer: str) -> JudgeVerdict:
        from replicate.exceptions import ReplicateError

        prompt = f"{JUDGE_SYSTEM_PROMPT}\n\n{judge_prompt(pregunta, reference, answer)}"
        try:
            return parse_judge_reply(replicate_text(self._client, self.ref, {"prompt": prompt}))
        except ReplicateError as e:
            raise JudgeFailed(error_text(e)) from e
        except (AnswerFailed, httpx.HTTPError, ValueError) as e:
            raise JudgeFailed(str(e)) from e


def open_judge(
    spec: JudgeSpec, *, base_url: str | None, judge_settings: JudgeSettings, replicate_settings: ReplicateSettings
) -> Judge:
    if spec.kind == "openai":
        return OpenAIJudge(
            spec.model, base_url=base_url or judge_settings.openai_base_url, api_key=judge_settings.openai_api_key
        )
    return ReplicateJudge(spec.model, replicate_settings)
