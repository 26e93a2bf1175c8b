"""The one entry point of scripts/: pick the command, set up logging, turn a coded error into exit status 2."""

from __future__ import annotations

import importlib
import logging
import sys
from collections.abc import Sequence

from ..config import read_env_file
from ..errors import LLMServeError

# Command -> "module:function", a function of argv that returns the exit status. Imported only when asked for,
# so that each command loads only what it needs.
COMMANDS = {
    "predict": "llmserve.tools.local:predict",
    "serve": "llmserve.tools.local:serve",
    "download_weights": "llmserve.tools.local:download_weights",
    "make_tiny_model": "llmserve.tools.local:make_tiny_model",
    "openapi_schema": "llmserve.tools.local:openapi_schema",
    "evaluate": "llmserve.tools.evaluate.run:main",
    "loadtest": "llmserve.tools.loadtest.run:main",
    "benchmark": "llmserve.tools.benchmark.run:main",
    "measure_cpu_dtype": "llmserve.tools.benchmark.dtype:main",
    "push": "llmserve.tools.replicate.push:main",
    "deploy": "llmserve.tools.replicate.deploy:main",
    "moderation_report": "llmserve.tools.moderation.report:main",
    "train_moderation": "llmserve.tools.moderation.train:main",
}
# One log line per HTTP request (huggingface_hub, replicate, the load test) or font cache note: not worth showing.
_QUIET = ("httpx", "httpx2", "urllib3", "matplotlib")


def main(argv: Sequence[str] | None = None) -> int:
    """Run `argv[0]` with the rest of `argv`; its exit status, or 2 for a coded error (printed as `error: ...`)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m llmserve.tools {{{','.join(COMMANDS)}}} ...", file=sys.stderr)
        return 2
    name, rest = argv[0], argv[1:]
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    for noisy in _QUIET:
        logging.getLogger(noisy).setLevel(logging.WARNING)
    read_env_file()  # tokens and settings kept in .env (HF_TOKEN or HUGGINGFACE_HUB_TOKEN, REPLICATE_API_TOKEN)
    module, function = COMMANDS[name].split(":")
    command = getattr(importlib.import_module(module), function)
    try:
        return command(rest)
    except LLMServeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
