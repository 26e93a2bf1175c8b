"""What the tests share, in one place: engine.py, moderation.py, server.py (a real Cog server), and fakes of the
Hugging Face hub, Replicate and an OpenAI-compatible judge, served by localserver.py."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping

from llmserve.config import PROJECT_ROOT as ROOT

__all__ = ["ROOT", "run_script"]


def run_script(name: str, *args: str, env: Mapping[str, str] | None = None, timeout: float = 300):
    """scripts/NAME ARGS as a person runs it, under `env` (default: this process's); its CompletedProcess."""
    return subprocess.run(
        [str(ROOT / "scripts" / name), *args],
        env=dict(os.environ if env is None else env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
