"""Cog entry point: declares the inputs, loads the model once, streams answers.

`cog build` reads these Input(...) declarations statically, without running Python, so ranges and
defaults are literals here; tests check they equal llmserve.request.params.LIMITS and the prompt defaults.
"""

import asyncio
import logging

import cog
from cog import BaseRunner, ConcatenateIterator, Input

from llmserve.config import Settings
from llmserve.moderation.pipeline import moderate_stream
from llmserve.moderation.policy import input_texts, moderation_metrics, refusal
from llmserve.request.cancel import Cancel
from llmserve.request.params import validate_request
from llmserve.serving.cogcancel import cancellable, install
from llmserve.serving.moderator import build_moderator


class Predictor(BaseRunner):
    def setup(self) -> None:
        from llmserve.serving.loader import load_answerer  # torch is imported here, not at schema time

        install()  # cancel (and a dropped client) stops the generation: llmserve/serving/cogcancel.py
        logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
        settings = Settings.from_env()
        self.answerer = load_answerer(settings)
        self.moderator = build_moderator(settings)  # None when MODERATION=off

    def healthcheck(self) -> bool:
        """Cog's health check: False (GET /health-check says UNHEALTHY) once the engine's device has failed."""
        engine = self.answerer.engine
        if not engine.healthy:
            logging.getLogger(__name__).error("unhealthy: %s", engine.fault)
        return engine.healthy

    # Up to 32 predictions share the engine's batch; COG_MAX_CONCURRENCY (baked from this by `cog build`)
    # overrides it at run time and also sets the engine's slots.
    @cog.concurrent(max=32)
    @cog.streaming
    async def run(
        self,
        pregunta: str = Input(description="The question to answer."),
        system_prompt: str = Input(
            default="You are a helpful assistant. Answer the question briefly and accurately, in the language it was asked in.",
            description="Instructions that frame the answer: the chat template's system turn, or the top of the prompt.",
        ),
        prompt_template: str = Input(
            default="",
            description="Optional template with {pregunta} and {system_prompt}, applied to each turn. Empty: the model's chat template, or a Question/Answer transcript for base models.",
        ),
        messages: str = Input(
            default="",
            description='Earlier turns as a JSON array, e.g. [{"role": "user", "content": "Hola"}, {"role": "assistant", "content": "¡Hola!"}]: user first, alternating, ending with assistant. `pregunta` is the new user turn.',
        ),
        max_new_tokens: int = Input(
            default=128,
            ge=1,
            le=4096,
            description="Most tokens to generate; the prompt plus this must fit the model's context.",
        ),
        min_new_tokens: int = Input(
            default=0,
            ge=0,
            le=4096,
            description="Fewest tokens to generate before the end-of-text token is allowed.",
        ),
        temperature: float = Input(
            default=0.7,
            ge=0.0,
            le=2.0,
            description="Sampling temperature: 0 = greedy (below 0.01 too), < 1 = less random, > 1 = more random.",
        ),
        top_p: float = Input(
            default=0.9,
            ge=0.01,
            le=1.0,
            description="Nucleus sampling: draw from the most likely tokens whose probabilities add up to top_p; 1 = off.",
        ),
        top_k: int = Input(
            default=50,
            ge=0,
            le=1000,
            description="Draw only from the k most likely tokens; 0 = off.",
        ),
        repetition_penalty: float = Input(
            default=1.15,
            ge=1.0,
            le=2.0,
            description="Penalty on tokens already in the prompt or the answer: 1 = none, > 1 = fewer repeats.",
        ),
        stop_sequences: str = Input(
            default="",
            description=r"Comma-separated texts that end the answer (not included in it); write \n for a newline and \, for a comma.",
        ),
        seed: int | None = Input(
            default=None,
            ge=0,
            le=4294967295,
            description="Random seed for reproducible sampling; empty picks one and reports it in the logs and the `seed` metric.",
        ),
        json_schema: str = Input(
            default="",
            description='A JSON Schema (as text) that the answer must follow, e.g. {"type": "object", "properties": {"titulo": {"type": "string"}}, "required": ["titulo"]}: decoding is constrained so that the answer parses and validates. Empty: free text.',
        ),
    ) -> ConcatenateIterator[str]:
        request = validate_request(
            pregunta=pregunta,
            system_prompt=system_prompt,
            prompt_template=prompt_template,
            messages=messages,
            stop_sequences=stop_sequences,
            max_new_tokens=max_new_tokens,
            min_new_tokens=min_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            repetition_penalty=repetition_penalty,
            seed=seed,
            json_schema=json_schema,
        )
        prepared = self.answerer.prepare(request)
        record = _recorder(cog.current_scope())
        cancel = Cancel()
        # A plain iterator, not an async generator: coglet 0.23.1 collects an async generator's items and sends
        # them only when it ends, but streams what an async run() returns, item by item.
        if self.moderator is None:
            answer = self.answerer.stream(prepared, on_finish=lambda stats: record(stats.metrics()), cancel=cancel)
            return cancellable(answer, cancel)
        # A classifier check is a model call: keep it off the event loop that serves the other predictions.
        decision = await asyncio.to_thread(self.moderator.check_input, input_texts(request))
        if not decision.allowed:
            record(moderation_metrics(decision, None))
            raise refusal(decision)
        answer = moderate_stream(
            self.answerer.stream(prepared, on_finish=lambda stats: record(stats.metrics()), cancel=cancel),
            self.moderator.output_filter(request.pregunta),
            input_decision=decision,
            on_metrics=record,
        )
        return cancellable(answer, cancel)


def _recorder(scope):
    """Record metrics into this prediction's scope, which the generator's thread cannot look up itself."""

    def record(metrics: dict) -> None:
        for name, value in metrics.items():
            scope.record_metric(name, value)

    return record
