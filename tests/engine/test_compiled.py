"""The compiled decode step (what runs on CUDA), traced and run on the CPU with the tiny model in float32.

On CPU, torch.compile(mode="reduce-overhead") compiles with inductor but skips the CUDA graphs; the shapes,
the span buckets and the warm-up are the ones the GPU uses. tests/gpu repeats this on CUDA at full size.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pytest
import torch
from torch._dynamo.utils import counters

from llmserve.tools.tiny import make_tiny_model
from tests.helpers import ROOT
from tests.helpers.engine import joining, reference_greedy

CONTEXT = 512  # four spans: 128, 256, 384, 512
# (prompt length, new tokens): the first crosses from the 128 span to 256 while the others run.
REQUESTS = [(100, 60), (20, 12), (300, 8)]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return make_tiny_model(tmp_path_factory.mktemp("tiny-512"), context_length=CONTEXT)


@pytest.fixture(scope="module")
def compile_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("compile-cache")


def prompt(i: int, length: int) -> list[int]:
    return [(37 * i + 11 * k) % 200 + 1 for k in range(length)]


def requests() -> list[tuple[list[int], int]]:
    return [(prompt(i, length), n) for i, (length, n) in enumerate(REQUESTS)]


def test_spans_are_few_and_cover_every_length(model_dir, make_engine):
    engine = make_engine(model_dir, slots=2, compile="on")
    backend = engine.backend
    assert backend.spans() == [128, 256, 384, 512]
    for longest in range(1, CONTEXT + 1):
        assert longest <= backend.span(longest) in backend.spans()


def test_compiled_step_gives_transformers_greedy_tokens_and_compiles_nothing_after_warm_up(
    model_dir, compile_cache, make_engine
):
    expected = [reference_greedy(model_dir, prompt(i, length), n) for i, (length, n) in enumerate(REQUESTS)]
    engine = make_engine(model_dir, slots=4, compile="on", compile_cache=compile_cache)
    assert engine.backend.compiled
    engine.warm_up()
    graphs = counters["stats"]["unique_graphs"]
    assert joining(engine, requests()) == expected
    # Every (batch size, span) was traced at warm-up: serving never waits for the compiler.
    assert counters["stats"]["unique_graphs"] == graphs
    assert any(compile_cache.rglob("*")), "the compile cache directory stayed empty"


SECOND_SETUP = """
import json, sys
from pathlib import Path
from torch._dynamo.utils import counters
from llmserve.config import Settings
from llmserve.engine.model import Engine
settings = Settings.from_env()
engine = Engine.from_settings(settings, Path(settings.model_id))
engine.warm_up()
engine.close()
print(json.dumps(dict(counters["inductor"])))
"""


def test_a_second_setup_reads_the_compiled_code_back(model_dir, compile_cache, monkeypatch):
    """What the test above compiled, a new process finds in COMPILE_CACHE_DIR instead of compiling again."""
    if not any(compile_cache.rglob("*")):
        pytest.skip("needs the compile cache written by the test above")
    env = {
        "MODEL_ID": str(model_dir),
        "DTYPE": "float32",
        "COMPILE": "on",
        "COMPILE_CACHE_DIR": str(compile_cache),
        "COG_MAX_CONCURRENCY": "4",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    done = subprocess.run(
        [sys.executable, "-c", SECOND_SETUP], cwd=ROOT, capture_output=True, text=True, timeout=600, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    inductor = json.loads(done.stdout.strip().splitlines()[-1])
    assert inductor.get("fxgraph_cache_hit", 0) >= 1, inductor
    assert inductor.get("fxgraph_cache_miss", 0) == 0, inductor


def test_the_step_mutates_only_static_inputs_so_cuda_graph_trees_keep_it(model_dir, make_engine):
    """Inductor skips CUDA graphs for a graph that writes into an input whose address may change ("skipping
    cudagraphs due to mutated inputs"), silently: the step would run, graph-less and slow. The step writes into the
    KV cache and the positions, so those must be static inputs (module buffers), which aot_autograd reports here
    the way inductor reads it."""
    from torch._dynamo.backends.common import aot_autograd

    graphs = []

    def record(gm, example_inputs):
        metadata = torch._guards.TracingContext.try_get().fw_metadata
        names = [node.name for node in gm.graph.find_nodes(op="placeholder")]
        mutated = {i for i, info in enumerate(metadata.input_info) if info.mutates_data}
        graphs.append(
            ([names[i] for i in sorted(mutated)], [names[i] for i in mutated - set(metadata.static_input_indices)])
        )
        return gm

    engine = make_engine(model_dir, slots=2, compile="off")
    backend = engine.backend
    step = torch.compile(
        backend._decode_step,
        backend=aot_autograd(fw_compiler=record, keep_inference_input_mutations=True),
        fullgraph=True,
        dynamic=True,
    )
    with torch.inference_mode():
        for rows in (1, 2):
            step(torch.zeros(rows, dtype=torch.int64), rows, 128)
    assert len(graphs) == 2  # one row, and many
    for mutated, not_static in graphs:
        assert len(mutated) == 3, mutated  # the positions, the keys and the values
        assert not_static == []


def test_the_compiled_step_writes_the_cache_in_place(model_dir, make_engine):
    """A write through a view of the cache compiles into a copy of a whole layer's cache every step (12.9 GB a step
    at 32 slots on the GPU); the step must compile into in-place writes, with no temporary of a layer's size."""
    from torch._inductor.utils import run_and_get_code

    engine = make_engine(model_dir, slots=2, compile="off")
    backend = engine.backend
    step = torch.compile(backend._decode_step, fullgraph=True, dynamic=True)
    with torch.inference_mode():
        _, code = run_and_get_code(step, torch.zeros(2, dtype=torch.int64), 2, 128)
    layer = backend.slots * backend.num_heads * (backend.max_length + 1) * backend.head_dim
    code = "".join(code)
    shapes = [
        tuple(int(n) for n in dims.split(",") if n.strip())
        for dims in re.findall(r"empty_strided\w*\(\(([\d, ]+)\)", code)
    ]
    assert "index_put" in code and shapes, "the generated code no longer looks as this test expects"
    assert [shape for shape in shapes if math.prod(shape) >= layer] == []
