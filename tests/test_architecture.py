"""The package's shape: layers that import only downward, no import cycle, serving that never needs the tools."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from enum import StrEnum
from pathlib import Path

import pytest

from tests.helpers import ROOT

PACKAGE = ROOT / "llmserve"
# What each layer may import from the package (its own layer included). The pure core (request, moderation)
# imports no torch; the engine is the only torch code; serving wires them; the tools sit on top of everything.
ALLOWED = {
    "foundation": {"foundation"},
    "request": {"foundation", "request"},
    "moderation": {"foundation", "request", "moderation"},
    "engine": {"foundation", "request", "engine"},
    "serving": {"foundation", "request", "moderation", "engine", "serving"},
    "tools": {"foundation", "request", "moderation", "engine", "serving", "tools"},
    "predict.py": {"foundation", "request", "moderation", "serving"},
}
MAX_MODULE_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def layer(module: str) -> str:
    parts = module.split(".")
    if module == "predict":
        return "predict.py"
    return parts[1] if len(parts) > 1 and parts[1] in ALLOWED else "foundation"


def imports(path: Path, module: str) -> set[str]:
    """Every llmserve module that `path` imports, at the top or inside a function, resolved to a module."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([node.module] if node.module else []))
            found.add(base)
            found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES)
    return {name for name in found if name in MODULES and name != "llmserve"}


GRAPH = {name: imports(path, name) for name, path in MODULES.items()}


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_module_imports_only_its_own_layer_or_those_below(module):
    wrong = {name for name in GRAPH[module] if layer(name) not in ALLOWED[layer(module)]}
    assert not wrong, f"{module} ({layer(module)}) imports {sorted(wrong)}"


def test_predict_py_imports_only_what_serving_needs():
    wrong = {name for name in imports(ROOT / "predict.py", "predict") if layer(name) not in ALLOWED["predict.py"]}
    assert not wrong, f"predict.py imports {sorted(wrong)}"


def test_no_module_imports_itself_through_others():
    def cycle_from(start: str) -> list[str] | None:
        stack = [(start, [start])]
        while stack:
            name, path = stack.pop()
            for nxt in GRAPH[name]:
                if nxt == start:
                    return [*path, start]
                if nxt not in path:
                    stack.append((nxt, [*path, nxt]))
        return None

    cycles = [cycle for name in MODULES if (cycle := cycle_from(name))]
    assert not cycles, " ; ".join(" -> ".join(c) for c in cycles)


def test_importing_predict_loads_no_tool_module_and_no_torch():
    loaded = "sorted(m for m in sys.modules if m.startswith('llmserve.tools') or m == 'torch')"
    code = f"import sys, predict; print({loaded})"
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_pure_layers_import_no_torch():
    pure = [name for name in MODULES if layer(name) in ("foundation", "request", "moderation")]
    pure += ["llmserve.serving.weights", "llmserve.serving.moderator", "llmserve.tools.openapi", "predict"]
    code = f"import sys; import {', '.join(pure)}; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT).returncode == 0


def test_setup_and_run_need_no_tool_module(tiny_model_dir):
    """What the image runs, with llmserve.tools made unimportable (.dockerignore leaves it out of the image)."""
    code = (
        "import asyncio, importlib.abc, sys\n"
        "class Refuse(importlib.abc.MetaPathFinder):\n"
        "    def find_spec(self, name, path, target=None):\n"
        "        if name.startswith('llmserve.tools'):\n"
        "            raise ImportError(f'{name} is not in the image')\n"
        "sys.meta_path.insert(0, Refuse())\n"
        "from predict import Predictor\n"
        "p = Predictor()\n"
        "p.setup()\n"
        "inputs = dict(pregunta='Hola', system_prompt='', prompt_template='', messages='', max_new_tokens=4,\n"
        "    min_new_tokens=4, temperature=0.0, top_p=1.0, top_k=0, repetition_penalty=1.0, stop_sequences='',\n"
        "    seed=None, json_schema='')\n"
        "print(len(''.join(asyncio.run(p.run(**inputs)))) > 0)\n"
        "p.answerer.close()\n"
    )
    env = {"PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1", "MODEL_ID": str(tiny_model_dir), "DTYPE": "float32"}
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "True"


def docstrings(path: Path):
    tree = ast.parse(path.read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            text = ast.get_docstring(node, clean=True)
            if text:
                yield getattr(node, "name", path.name), text


@pytest.mark.parametrize("module", sorted(MODULES))
def test_docstrings_say_what_in_one_to_three_lines(module):
    long = [name for name, text in docstrings(MODULES[module]) if len(text.splitlines()) > 3]
    assert not long, f"{module}: docstrings over 3 lines in {long} (the why goes in comments, history in docs/)"


@pytest.mark.parametrize("module", sorted(MODULES))
def test_a_module_holds_one_job_in_a_few_hundred_lines(module):
    lines = len(MODULES[module].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_MODULE_LINES, f"{module} has {lines} lines: split it along the seams its job has"


def test_only_the_config_module_reads_the_environment():
    readers = []
    for name, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            call = isinstance(node, ast.Call) and ast.unparse(node.func) in ("os.environ.get", "os.getenv")
            item = isinstance(node, ast.Subscript) and ast.unparse(node.value) == "os.environ"
            if (call or (item and isinstance(node.ctx, ast.Load))) and name != "llmserve.config":
                readers.append(f"{name}:{node.lineno}")
    assert not readers, readers


def test_error_codes_are_unique_and_each_tools_codes_live_with_it():
    from llmserve.errors import ErrorCode
    from llmserve.tools.evaluate.errors import EvalCode
    from llmserve.tools.loadtest.errors import LoadTestCode
    from llmserve.tools.replicate.errors import PublishCode

    enums: dict[type[StrEnum], str] = {ErrorCode: "E[125]", EvalCode: "E3", PublishCode: "E4", LoadTestCode: "E6"}
    values = [code.value for enum in enums for code in enum]
    assert len(values) == len(set(values)), "two errors share a code"
    for enum, prefix in enums.items():
        assert all(re.match(prefix, code.value) for code in enum), enum.__name__
