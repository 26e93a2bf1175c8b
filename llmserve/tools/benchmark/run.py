"""scripts/benchmark: transformers' eager generate() and this project's engine, side by side, in one run."""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ...config import COMPILE_MODES, PROJECT_ROOT
from .measure import (
    batch_agreement,
    build_random_model,
    constraint_cost,
    eager_serial_prefill,
    http_streams,
    median_run,
    peak_memory,
    predictor_streams,
    prompt_ids,
    single_stream_pair,
)
from .report import environment, format_table, write_chart
from .results import STREAM_ROUNDS, WORKLOADS, Concurrent, Report, Workload

# Single-stream decode speed and time to first token, concurrent streams through the Predictor's async run() (and,
# with --http, through the real Cog server), setup() time with the weights on local disk, and peak memory.
_DESCRIPTION = "transformers' eager generate() and this project's engine, side by side, in one run."


def run(args: argparse.Namespace, log: Callable[[str], None]) -> Report:
    """Every measurement in turn: eager first, then the engine through predict.Predictor, then (--http) Cog."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device = args.device
    workload = WORKLOADS[device]
    workload = Workload(
        prompt_tokens=tuple(args.prompt_tokens or workload.prompt_tokens),
        new_tokens=args.new_tokens or workload.new_tokens,
        streams=tuple(args.streams or workload.streams),
        stream_prompt_tokens=args.stream_prompt_tokens or workload.stream_prompt_tokens,
    )
    from ...engine import threads
    from ...engine.device import pick_device_and_dtype, pick_prefill_dtype

    # DTYPE=auto's choice for the engine; the eager baseline runs in the same weights' dtype.
    weights_dtype = pick_device_and_dtype(device=device, dtype=args.dtype)[1]
    prefill_dtype = pick_prefill_dtype(torch.device(device), weights_dtype, setting=args.dtype)
    dtype_name = str(weights_dtype).removeprefix("torch.")
    if args.random_weights:
        model_dir = build_random_model(Path(args.model_dir or tempfile.mkdtemp(prefix="frw-")), dtype_name=dtype_name)
    else:
        from ...config import EMBEDDED_MODEL_ID, Settings
        from ...serving.weights import resolve_model_path

        os.environ.setdefault("MODEL_ID", EMBEDDED_MODEL_ID)  # the model every machine has
        model_dir = resolve_model_path(Settings.from_env(), allow_download=False)
    report = Report(
        environment=environment(device, dtype_name, torch, transformers, args.argv), workload=asdict(workload)
    )
    report.environment["model"] = str(model_dir)
    report.environment["engine_prefill_dtype"] = str(prefill_dtype or weights_dtype).removeprefix("torch.")
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    vocab, eos = len(tokenizer), tokenizer.eos_token_id

    if device == "cuda":
        from ...engine.device import keep_cudnn_out_of_attention

        keep_cudnn_out_of_attention()  # as the engine does, for both: the same attention kernels on both sides
        report.environment["sdpa_cudnn"] = torch.backends.cuda.cudnn_sdp_enabled()
    if device == "cpu":  # this thread must hold no CPU thread pool beside the engine's (engine/threads.py)
        threads.confine()
    log(f"baseline: transformers eager generate() on {device}, {dtype_name}: its memory alone")
    with peak_memory(device, report.peak_memory_gb, "transformers eager"):
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=weights_dtype).to(device).eval()
        context = model.config.max_position_embeddings
        with torch.inference_mode():
            ids = prompt_ids(min(max(workload.prompt_tokens), context - workload.new_tokens), vocab, eos)
            model.generate(torch.tensor([ids], device=device), max_new_tokens=2, do_sample=False, pad_token_id=0)
        del model
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()

    log("engine: predict.Predictor.setup() with the weights on local disk")
    os.environ.update(
        MODEL_ID=str(model_dir),
        DEVICE=device,
        DTYPE=args.dtype,
        COG_MAX_CONCURRENCY=str(max(workload.streams)),
        COMPILE=args.compile,
        MODERATION="off",  # the engine's speed; the rules add well under a millisecond per chunk
    )
    from torch._dynamo.utils import counters

    from predict import Predictor

    with peak_memory(device, report.peak_memory_gb, "engine"):
        predictor = Predictor()
        start = time.perf_counter()
        predictor.setup()
        report.setup_s = time.perf_counter() - start
        engine = predictor.answerer.engine
        report.environment["engine"] = _describe(engine)
        report.compile_cache_hits = counters["inductor"]["fxgraph_cache_hit"]
        report.compile_cache_misses = counters["inductor"]["fxgraph_cache_miss"]
        log(f"  setup() {report.setup_s:.1f} s; {report.environment['engine']}; compile cache: "
            f"{report.compile_cache_hits} hits, {report.compile_cache_misses} misses")  # fmt: skip
        log("  single stream: generate() on the engine's own weights and the engine, in alternating runs")
        for length in workload.prompt_tokens:
            ids = prompt_ids(min(length, context - workload.new_tokens), vocab, eos)
            report.single_stream += single_stream_pair(engine, ids, workload.new_tokens, device)
            log(f"  {report.single_stream[-2]}\n  {report.single_stream[-1]}")
        batch = max(workload.streams)
        prompts = [prompt_ids(16 + 8 * i, vocab, eos)[i:] for i in range(batch)]  # different lengths and texts
        report.agreement = batch_agreement(engine, prompts, workload.new_tokens)
        log(f"  {report.agreement}")
        for streams in sorted({1, batch}):
            report.constrained.append(constraint_cost(engine, prompts[0], workload.new_tokens, streams))
            log(f"  {report.constrained[-1]}")
        inputs, stream_prompt = _stream_inputs(tokenizer, workload)
        stream_ids = engine.encode(inputs["pregunta"])
        runs: dict[int, list[Concurrent]] = {streams: [] for streams in workload.streams}
        serial = []
        for _ in range(STREAM_ROUNDS):  # the levels in turn, again: a drifting machine's speed falls on all
            serial.append(eager_serial_prefill(engine, stream_ids, batch, device))
            for streams in workload.streams:
                runs[streams].append(predictor_streams(predictor, inputs, stream_prompt, streams, workload.new_tokens))
                log(f"  {runs[streams][-1]}")
        report.serial_prefill_ttft_p50_s = statistics.median(serial)
        log(f"  {batch} arrivals prefilled one after another by generate(): time to first token p50 "
            f"{report.serial_prefill_ttft_p50_s:.3f} s")  # fmt: skip
        report.concurrent += [median_run(level) for level in runs.values()]
        engine.close()
    if getattr(engine.backend, "compiled", False):
        log("engine: setup() again in a new process, with the compile cache the first one filled")
        report.setup_new_process_s = setup_in_new_process()
        log(f"  setup() {report.setup_new_process_s:.1f} s")
    if args.http:
        log("engine through the Cog server (scripts/serve)")
        report.concurrent += http_streams(model_dir, inputs, stream_prompt, workload.streams, workload.new_tokens)
    return report


def setup_in_new_process() -> float:
    """predict.Predictor.setup() in a fresh interpreter, under this process's environment: (seconds)."""
    code = (
        "import time\nfrom predict import Predictor\np = Predictor()\nt = time.perf_counter()\np.setup()\n"
        "print(time.perf_counter() - t)\np.answerer.engine.close()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=1800, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"setup() in a new process failed:\n{done.stderr[-3000:]}")
    return float(done.stdout.strip().splitlines()[-1])


def _describe(engine) -> str:
    backend = engine.backend
    text = f"{type(backend).__name__}, {backend.slots} slots"
    step = getattr(backend, "step", "eager")
    if step != "eager":
        spans = backend.spans()
        text += f", {'compiled' if step == 'compiled' else 'CUDA-graphed'} decode step, {len(spans)} spans"
        text += f" ({spans[0]} to {spans[-1]} positions)"
    return text


def _stream_inputs(tokenizer, workload: Workload) -> tuple[dict[str, Any], int]:
    """Predictor inputs whose prompt is about `stream_prompt_tokens` long, greedy, forced to new_tokens (so
    that random weights cannot end early on EOS); and the prompt's length in tokens."""
    from ..inputs import input_defaults

    words = tokenizer.decode(prompt_ids(workload.stream_prompt_tokens, len(tokenizer), tokenizer.eos_token_id))
    ids = tokenizer.encode(words, add_special_tokens=False)[: workload.stream_prompt_tokens]
    pregunta = tokenizer.decode(ids)
    inputs = {
        **input_defaults(),
        "pregunta": pregunta,
        "prompt_template": "{pregunta}",  # no label, so no implicit stop sequence ends an answer early
        "system_prompt": "",
        "max_new_tokens": workload.new_tokens,
        "min_new_tokens": workload.new_tokens,
        "temperature": 0.0,
        "repetition_penalty": 1.0,
    }
    return inputs, len(tokenizer.encode(pregunta))


def main(argv: list[str]) -> int:
    """Parse the options, run the measurements, write results.json and chart.png, print the table last."""
    parser = argparse.ArgumentParser(prog="scripts/benchmark", description=_DESCRIPTION)
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json and chart.png")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    parser.add_argument(
        "--dtype",
        choices=("auto", "bfloat16", "float16", "float32"),
        default="auto",
        help="DTYPE for the engine; eager runs in the same weights' dtype (auto: the engine's choice for this device)",
    )
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="build falcon-rw-1b's architecture with random weights (no download); default: MODEL_ID's weights, "
        "the embedded model when MODEL_ID is not set",
    )
    parser.add_argument("--model-dir", help="with --random-weights: where to save (and reuse) that model")
    parser.add_argument("--http", action="store_true", help="also drive the streams through the Cog HTTP server")
    parser.add_argument(
        "--compile",
        choices=COMPILE_MODES,
        default="auto",
        help="COMPILE for the engine (auto: CUDA graphs of the uncompiled step on CUDA; on: torch.compile)",
    )
    parser.add_argument("--prompt-tokens", type=int, nargs="+", help="single-stream prompt lengths")
    parser.add_argument("--new-tokens", type=int, help="tokens per answer (forced)")
    parser.add_argument("--streams", type=int, nargs="+", help="concurrency levels")
    parser.add_argument("--stream-prompt-tokens", type=int, help="prompt length of each concurrent stream")
    args = parser.parse_args(argv)
    args.argv = list(argv)
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    report = run(args, log=lambda line: print(line, flush=True))
    (args.out / "results.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    write_chart(report, args.out / "chart.png")
    env = report.environment
    print(f"\nwrote {args.out / 'results.json'} and {args.out / 'chart.png'}")
    print(f"{env['device_name']} ({env['device']}, {env['cpu_capability']}), {env['dtype']} weights, prefill in "
          f"{env['engine_prefill_dtype']}, torch {env['torch']}, "
          f"transformers {env['transformers']}, {env['torch_threads']} threads")  # fmt: skip
    print(format_table(report))
    return 0
