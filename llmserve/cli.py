"""The commands behind scripts/: predict, serve, download_weights, make_tiny_model, openapi_schema, push, deploy."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from .config import PROJECT_ROOT, ServerSettings, Settings
from .errors import LLMServeError


def predict(argv: list[str]) -> int:
    """Answer one question through predict.Predictor, streaming to the terminal."""
    parser = argparse.ArgumentParser(prog="scripts/predict", description=predict.__doc__)
    parser.add_argument("pregunta", help="the question")
    parser.add_argument(
        "-i", "--input", action="append", default=[], metavar="NAME=VALUE", help="any other input of the predictor"
    )
    args = parser.parse_args(argv)
    from predict import Predictor

    from .openapi import input_defaults, predictor_inputs

    fields = predictor_inputs()
    inputs = input_defaults(fields)
    inputs["pregunta"] = args.pregunta
    for item in args.input:
        name, sep, raw = item.partition("=")
        if not sep or name not in fields:
            parser.error(f"--input {item!r}: expected NAME=VALUE with NAME one of {', '.join(fields)}")
        inputs[name] = _coerce(fields[name], raw, parser)
    predictor = Predictor()
    try:
        predictor.setup()
        # run() is a coroutine (so that Cog can serve several at once) that returns the text stream.
        for chunk in asyncio.run(predictor.run(**inputs)):
            print(chunk, end="", flush=True)
    except LLMServeError as e:
        print(f"\nerror: {e}", file=sys.stderr)
        return 2
    print()
    return 0


def _coerce(field, raw: str, parser: argparse.ArgumentParser):
    kind = field.type.json_type().get("type")
    try:
        if kind == "integer":
            return int(raw)
        if kind == "number":
            return float(raw)
    except ValueError:
        parser.error(f"--input {field.name}={raw!r}: expected {'an integer' if kind == 'integer' else 'a number'}")
    return raw


def serve(argv: list[str]) -> int:
    """Run the real Cog HTTP server (coglet) on this predictor, as the built image does."""
    parser = argparse.ArgumentParser(prog="scripts/serve", description=serve.__doc__)
    parser.add_argument("--port", type=int, help="default: PORT, else 5000")
    parser.add_argument("--host", default="127.0.0.1", help="default 127.0.0.1: only this machine can connect")
    args = parser.parse_args(argv)
    server = ServerSettings.from_env()
    settings = Settings.from_env()
    env = dict(os.environ)  # the server and its worker inherit the whole configuration
    if settings.is_local:
        env["MODEL_ID"] = str(Path(settings.model_id).expanduser().resolve())  # the server runs from the project root
    port = args.port or server.port
    os.chdir(PROJECT_ROOT)
    from .openapi import is_schema_current, write_schema

    # coglet reads .cog/openapi_schema.json from its working directory; without it there is no
    # input validation, no SSE and no /openapi.json.
    if not is_schema_current():
        print(f"updated {write_schema()} from predict.py: commit it", flush=True)
    env.update(
        PORT=str(port),
        COG_MAX_CONCURRENCY=str(settings.max_concurrency),
        COG_PREDICT_TYPE_STUB="predict.py:Predictor",
        # coglet starts its worker with the `python` found first on PATH: make it this interpreter.
        PATH=os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")]),
        PYTHONPATH=os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p),
    )
    print(
        f"serving predict.py:Predictor on http://{args.host}:{port} (COG_MAX_CONCURRENCY={settings.max_concurrency})",
        flush=True,
    )
    os.execve(sys.executable, [sys.executable, "-m", "cog.server.http", "--host", args.host], env)
    return 0  # not reached


def download_weights(argv: list[str]) -> int:
    """Fetch MODEL_ID at MODEL_REVISION (and MODERATION_MODEL, if set) into WEIGHTS_DIR."""
    parser = argparse.ArgumentParser(prog="scripts/download_weights", description=download_weights.__doc__)
    parser.parse_args(argv)
    from .weights import download, local_model_path

    settings = Settings.from_env()
    wanted = [settings]
    if settings.moderation_model:
        from .guard_model import guard_settings

        wanted.append(guard_settings(settings))
    for model in wanted:
        print(local_model_path(model) or download(model))  # main() reports an LLMServeError
    return 0


def make_tiny_model(argv: list[str]) -> int:
    """Write a tiny random Falcon-RW (ALiBi) model and tokenizer to DIR, for tests and offline runs."""
    parser = argparse.ArgumentParser(prog="scripts/make_tiny_model", description=make_tiny_model.__doc__)
    parser.add_argument("dir", type=Path)
    args = parser.parse_args(argv)
    from .tiny import make_tiny_model as build

    print(build(args.dir))
    return 0


def openapi_schema(argv: list[str]) -> int:
    """Write .cog/openapi_schema.json from predict.py's signature (what `cog build` generates)."""
    parser = argparse.ArgumentParser(prog="scripts/openapi_schema", description=openapi_schema.__doc__)
    parser.parse_args(argv)
    os.chdir(PROJECT_ROOT)
    from .openapi import write_schema

    print(write_schema())
    return 0


def measure_cpu_dtype(argv: list[str]) -> int:
    """Measure fp32 against bf16 on this CPU: falcon-rw-1b's shape, random weights, greedy, forced length."""
    parser = argparse.ArgumentParser(prog="scripts/measure_cpu_dtype", description=measure_cpu_dtype.__doc__)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    import time

    import torch
    import transformers
    from transformers import FalconForCausalLM

    from .engine import Engine
    from .params import SamplingParams
    from .tiny import build_tokenizer, falcon_rw_1b_config

    torch.manual_seed(0)
    model = FalconForCausalLM(falcon_rw_1b_config()).eval()
    prompt = [100 + i % 50000 for i in range(args.prompt_tokens)]
    n = args.new_tokens
    params = SamplingParams.plain_greedy(n, min_new_tokens=n)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads")
    print(f"falcon-rw-1b shape, random weights, {args.prompt_tokens}-token prompt, {n} new tokens, greedy")
    tokenizer = build_tokenizer()  # only for the Engine's interface: the prompt is ids already
    tokens = {}
    for dtype in (torch.float32, torch.bfloat16):
        # Random weights hit EOS anywhere: no EOS, to force the length.
        engine = Engine(model.to(dtype), tokenizer, eos_token_ids=frozenset())
        start = time.perf_counter()
        stamps, out = [], []
        for token in engine.generate(prompt, params):
            stamps.append(time.perf_counter())
            out.append(token)
        tokens[dtype] = out
        engine.close()
        decode = (len(stamps) - 1) / (stamps[-1] - stamps[0])
        name = str(dtype).removeprefix("torch.")
        print(f"{name:>9}: first token {stamps[0] - start:.2f} s, decode {decode:.2f} tok/s")
    a, b = tokens.values()
    same = next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), n)
    print(f"greedy tokens identical for the first {same} of {n}")
    return 0


def push(argv: list[str]) -> int:
    """scripts/push: check cog, Docker and the r8.im login, then `cog push` (llmserve.replicate_ops)."""
    from . import replicate_ops

    return replicate_ops.push(argv)


def deploy(argv: list[str]) -> int:
    """scripts/deploy: create or update a Replicate Deployment (llmserve.replicate_ops)."""
    from . import replicate_ops

    return replicate_ops.deploy(argv)


COMMANDS = {
    f.__name__: f
    for f in (predict, serve, download_weights, make_tiny_model, openapi_schema, measure_cpu_dtype, push, deploy)
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m llmserve.cli {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in ("httpx", "httpx2"):  # one line per HTTP request of huggingface_hub
        logging.getLogger(noisy).setLevel(logging.WARNING)
    try:
        return COMMANDS[argv[0]](argv[1:])
    except LLMServeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
