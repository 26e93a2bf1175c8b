"""Where scripts/evaluate gets its answers: predict.Predictor in process, a Cog server, or a Replicate model."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Protocol
from urllib.parse import urlparse

import httpx

from ...config import ReplicateSettings
from ...errors import LLMServeError
from ..cogserver import BROKEN, Backoff, send_while_busy
from ..replicate.api import error_text, make_client, parse_ref
from .errors import EvalCode, EvalError

logger = logging.getLogger(__name__)

# While every slot is busy, ask again this often (a slot frees a moment after a prediction's last event).
_BUSY = Backoff(first=0.1, most=0.1)
# Replicate answers for the whole run rather than for one question: stop at the first of these.
_REPLICATE_FATAL = (401, 402, 403, 404)


class AnswerFailed(Exception):
    """One question's prediction failed (bad input, failed status); the evaluation records it and goes on."""


class Target(Protocol):
    description: str

    def answer(self, inputs: dict[str, Any]) -> str:
        """The whole answer to one set of predictor inputs."""
        ...

    def close(self) -> None: ...


@dataclass(frozen=True)
class TargetSpec:
    kind: str  # "local", "server" or "replicate"
    location: str = ""  # the server's URL or the Replicate reference


def parse_target(text: str) -> TargetSpec:
    """`local`, `http(s)://host:port`, or `replicate:OWNER/MODEL[:VERSION]`."""
    if text == "local":
        return TargetSpec("local")
    if text.startswith("replicate:"):
        ref = text.removeprefix("replicate:")
        if parse_ref(ref) is None:
            raise EvalError(
                EvalCode.BadEvalTarget,
                "--target",
                f"{ref!r} is not a Replicate model.",
                "Write replicate:OWNER/MODEL or replicate:OWNER/MODEL:VERSION (the version id is hex).",
            )
        return TargetSpec("replicate", ref)
    url = urlparse(text)
    if url.scheme in ("http", "https") and url.hostname:
        return TargetSpec("server", text.rstrip("/"))
    raise EvalError(
        EvalCode.BadEvalTarget,
        "--target",
        f"{text!r} is neither local, a server URL nor replicate:OWNER/MODEL.",
        "Use local, a URL such as http://127.0.0.1:5000, or replicate:OWNER/MODEL[:VERSION].",
    )


def join_output(output: Any) -> str:
    """A Cog prediction's output as one text: the chunks of a streamed answer joined, or the text itself."""
    if output is None:
        return ""
    if isinstance(output, str):
        return output
    if isinstance(output, list):
        return "".join(str(chunk) for chunk in output)
    return str(output)


class LocalTarget:
    """predict.Predictor in this process, on MODEL_ID: run() is a coroutine that returns the text stream."""

    def __init__(self, predictor: Any = None) -> None:
        """Set up `predictor`, by default a new predict.Predictor."""
        if predictor is None:
            from predict import Predictor

            predictor = Predictor()
        self.description = f"local {type(predictor).__module__}.{type(predictor).__name__}"
        self._predictor = predictor
        predictor.setup()

    def answer(self, inputs: dict[str, Any]) -> str:
        try:
            return join_output(list(asyncio.run(self._predictor.run(**inputs))))
        except LLMServeError as e:  # bad input, a blocked answer, a broken engine: that question failed
            raise AnswerFailed(str(e)) from e
        except Exception as e:  # anything else the model raised: the run goes on, the row says what
            raise AnswerFailed(f"{type(e).__name__}: {e}") from e

    def close(self) -> None:
        """Nothing to release: the predictor lives as long as the process."""


class ServerTarget:
    """A Cog server: POST /predictions with {"input": ...}, waiting for a free slot on 409."""

    def __init__(self, url: str, *, timeout: float = 600.0) -> None:
        self.description = f"Cog server at {url}"
        self.url = url
        self.timeout = timeout
        # As requests did before: proxies and certificates from the environment, redirects followed.
        self._client = httpx.Client(follow_redirects=True)
        try:
            status = self._client.get(f"{url}/health-check", timeout=10).json().get("status")
        except (httpx.HTTPError, ValueError) as e:
            raise EvalError(
                EvalCode.BadEvalTarget,
                "--target",
                f"no Cog server answers at {url}/health-check ({e}).",
                "Start one with scripts/serve, or fix the URL.",
            ) from e
        if status in BROKEN:
            raise EvalError(
                EvalCode.BadEvalTarget,
                "--target",
                f"the server at {url} is {status}.",
                "Read its logs and restart it.",
            )

    def answer(self, inputs: dict[str, Any]) -> str:
        try:
            response = send_while_busy(
                lambda: self._client.post(f"{self.url}/predictions", json={"input": inputs}, timeout=self.timeout),
                _BUSY,
                until=time.monotonic() + self.timeout,
                on_busy=lambda: logger.info(
                    "%s: every prediction slot is busy (409); retrying until one frees", self.url
                ),
            )
        except (httpx.NetworkError, httpx.RemoteProtocolError, httpx.ConnectTimeout) as e:
            raise EvalError(
                EvalCode.BadEvalTarget, "--target", f"lost the server at {self.url} ({e}).", "Is it still running?"
            ) from e
        except httpx.TimeoutException as e:  # it took the request but gave no answer in time: this question fails
            raise AnswerFailed(f"no answer within {self.timeout:g} s ({type(e).__name__})") from e
        try:
            body = response.json()
        except ValueError:
            body = {}
        if response.status_code != 200:
            raise AnswerFailed(f"HTTP {response.status_code}: {body.get('detail') or response.text[:300]}")
        if body.get("status") != "succeeded":
            raise AnswerFailed(f"prediction {body.get('status')}: {body.get('error')}")
        return join_output(body.get("output"))

    def close(self) -> None:
        self._client.close()


def replicate_text(client, ref: str, inputs: Mapping[str, Any]) -> str:
    """Run OWNER/MODEL[:VERSION] with the real replicate client, wait for it, and join its output.

    Raises AnswerFailed when the prediction fails or is canceled; replicate's own errors pass through.
    """
    model = parse_ref(ref)
    if model.version:
        prediction = client.predictions.create(version=model.version, input=dict(inputs), wait=True)
    else:
        prediction = client.models.predictions.create(model=model.model, input=dict(inputs), wait=True)
    prediction.wait()  # returns at once when the blocking create already finished it; polls otherwise
    if prediction.status != "succeeded":
        raise AnswerFailed(f"Replicate prediction {prediction.id} {prediction.status}: {prediction.error}")
    return join_output(prediction.output)


class ReplicateTarget:
    """A model on Replicate, e.g. this project after `cog push`."""

    def __init__(self, ref: str, settings: ReplicateSettings) -> None:
        self.description = f"Replicate model {ref}"
        self.ref = ref
        self._client = make_client(settings)  # E4004 MissingApiToken without REPLICATE_API_TOKEN

    def answer(self, inputs: dict[str, Any]) -> str:
        from replicate.exceptions import ReplicateError

        try:
            return replicate_text(self._client, self.ref, inputs)
        except ReplicateError as e:
            if e.status in _REPLICATE_FATAL:
                raise EvalError(
                    EvalCode.BadEvalTarget,
                    "--target",
                    f"Replicate refused {self.ref}: {error_text(e)}.",
                    "Check REPLICATE_API_TOKEN, the model name and the version.",
                ) from e
            raise AnswerFailed(error_text(e)) from e
        except httpx.TransportError as e:
            raise EvalError(
                EvalCode.BadEvalTarget, "--target", f"cannot reach Replicate ({e}).", "Check the network."
            ) from e

    def close(self) -> None:
        """The replicate client holds no resources to release."""


def open_target(spec: TargetSpec, replicate_settings: ReplicateSettings) -> Target:
    if spec.kind == "local":
        return LocalTarget()
    if spec.kind == "server":
        return ServerTarget(spec.location)
    return ReplicateTarget(spec.location, replicate_settings)
