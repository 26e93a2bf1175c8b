"""scripts/benchmark: transformers' eager generate() and this project's engine, side by side, in one run.

Measures single-stream decode speed and time to first token, concurrent streams through the Predictor's async
run() (and, with --http, through the real Cog server), setup() time with the weights on local disk, and peak
memory. Writes results.json and chart.png to --out and prints the table last.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .config import COMPILE_MODES, PROJECT_ROOT
from .params import SamplingParams


@dataclass(frozen=True)
class Workload:
    prompt_tokens: tuple[int, ...]  # single-stream prompts
    new_tokens: int  # every answer is forced to this length
    streams: tuple[int, ...]  # concurrency levels
    stream_prompt_tokens: int  # the prompt of each concurrent stream


TTFT_RUNS = 3  # time to first token: the median of this many runs, for eager and engine alike

# The targets on an H100; on 2 CPU cores the same shape would take an hour, so the CPU default is smaller.
WORKLOADS = {
    "cuda": Workload(prompt_tokens=(128, 2048), new_tokens=256, streams=(1, 8, 32), stream_prompt_tokens=512),
    "cpu": Workload(prompt_tokens=(128, 512), new_tokens=16, streams=(1, 4, 8), stream_prompt_tokens=128),
}


@dataclass
class SingleStream:
    engine: str  # "transformers eager" or the backend's name
    prompt_tokens: int
    new_tokens: int
    time_to_first_token_s: float
    decode_tokens_per_s: float  # tokens after the first, over their time


@dataclass
class Concurrent:
    via: str  # "Predictor.run" or "HTTP"
    streams: int
    prompt_tokens: int
    new_tokens: int
    aggregate_tokens_per_s: float  # all streams' tokens over the wall time from first request to last answer
    time_per_output_token_s: float  # per stream, median of (last chunk - first chunk) / (new_tokens - 1)
    time_to_first_token_p50_s: float
    errors: int = 0


@dataclass
class Agreement:
    """Greedy answers decoded together in one batch against the same prompts decoded alone."""

    requests: int
    new_tokens: int
    identical_answers: int  # answers equal token for token
    agreeing_prefix: float  # mean share of each answer before its first differing token


@dataclass
class Report:
    environment: dict[str, Any]
    workload: dict[str, Any]
    single_stream: list[SingleStream] = field(default_factory=list)
    concurrent: list[Concurrent] = field(default_factory=list)
    agreement: Agreement | None = None
    setup_s: float | None = None
    # Compiled code found in / missing from COMPILE_CACHE_DIR during that setup (inductor's FX graph cache).
    compile_cache_hits: int = 0
    compile_cache_misses: int = 0
    # When the decode step is compiled: setup() again in a new process, reading what the first one cached.
    setup_new_process_s: float | None = None
    peak_memory_gb: dict[str, float] = field(default_factory=dict)


# ------------------------------------------------------------------------------ the model


def build_random_model(out: Path, *, dtype_name: str) -> Path:
    """falcon-rw-1b's architecture with random weights, saved like a checkpoint (reused if already there).

    The tokenizer is the tiny offline one; embedding rows beyond its vocabulary are zeroed (the head is tied),
    so greedy tokens decode to text, while every step still reads the whole 50304-row head.
    """
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import FalconForCausalLM

    from .tiny import build_tokenizer, falcon_rw_1b_config

    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    model = FalconForCausalLM(falcon_rw_1b_config(eos_token_id=tokenizer.eos_token_id)).to(getattr(torch, dtype_name))
    with torch.no_grad():
        model.transformer.word_embeddings.weight[len(tokenizer) :] = 0
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def prompt_ids(length: int, vocab: int, eos: int) -> list[int]:
    """A deterministic prompt of `length` ids from the tokenizer's vocabulary, without EOS."""
    usable = [i for i in range(vocab) if i != eos]
    return [usable[(7 * i) % len(usable)] for i in range(length)]


# ------------------------------------------------------------------------------ measuring


@contextmanager
def peak_memory(device: str, into: dict[str, float], name: str) -> Iterator[None]:
    """Peak GPU memory allocated (CUDA) or peak resident set size (CPU) while the block runs, in GB."""
    import torch

    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    else:
        _reset_peak_rss()
    try:
        yield
    finally:
        if device == "cuda":
            into[name] = torch.cuda.max_memory_allocated() / 1e9
        else:
            into[name] = _peak_rss_bytes() / 1e9


def _reset_peak_rss() -> None:
    try:
        Path("/proc/self/clear_refs").write_text("5")  # Linux: resets VmHWM to the current RSS
    except OSError:
        pass


def _peak_rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _sync(device: str) -> None:
    import torch

    if device == "cuda":
        torch.cuda.synchronize()


def eager_single_stream(model, ids: list[int], new_tokens: int, device: str) -> SingleStream:
    """transformers' generate(), greedy, default (sdpa) attention and dynamic cache: the baseline."""
    import torch

    inputs = torch.tensor([ids], device=device)

    def generate(n: int) -> float:
        _sync(device)
        start = time.perf_counter()
        with torch.inference_mode():
            model.generate(inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0)
        _sync(device)
        return time.perf_counter() - start

    generate(2)  # warm-up: kernels, allocator
    first = statistics.median(generate(1) for _ in range(TTFT_RUNS))
    total = generate(new_tokens)
    return SingleStream("transformers eager", len(ids), new_tokens, first, (new_tokens - 1) / (total - first))


def engine_single_stream(engine, ids: list[int], new_tokens: int) -> SingleStream:
    params = SamplingParams.plain_greedy(new_tokens, min_new_tokens=new_tokens)
    # Warm-up, as for eager: the same prompt, so the same kernel shapes.
    list(engine.generate(ids, SamplingParams.plain_greedy(2)))

    def first_token() -> float:
        start = time.perf_counter()
        stamps = [time.perf_counter() for _ in engine.generate(ids, SamplingParams.plain_greedy(1, min_new_tokens=1))]
        return stamps[0] - start

    first = statistics.median(first_token() for _ in range(TTFT_RUNS))
    stamps = [time.perf_counter() for _ in engine.generate(ids, params)]
    decode = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    return SingleStream(engine.backend_name, len(ids), new_tokens, first, decode)


def batch_agreement(engine, prompts: Sequence[list[int]], new_tokens: int) -> Agreement:
    """Does a greedy answer depend on its batch? Exactly not in float32; in bf16 kernels may round differently."""
    params = SamplingParams.plain_greedy(new_tokens, min_new_tokens=new_tokens)
    alone = [list(engine.generate(p, params)) for p in prompts]
    together: list[list[int]] = [[] for _ in prompts]
    ready = threading.Barrier(len(prompts))

    def one(i: int) -> None:
        ready.wait()
        together[i] = list(engine.generate(prompts[i], params))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(prompts))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    prefixes = [
        next((k for k, (a, b) in enumerate(zip(x, y, strict=True)) if a != b), new_tokens) / new_tokens
        for x, y in zip(alone, together, strict=True)
    ]
    return Agreement(
        requests=len(prompts),
        new_tokens=new_tokens,
        identical_answers=sum(x == y for x, y in zip(alone, together, strict=True)),
        agreeing_prefix=sum(prefixes) / len(prefixes),
    )


def predictor_streams(
    predictor, inputs: dict[str, Any], prompt_tokens: int, streams: int, new_tokens: int
) -> Concurrent:
    """`streams` predictions at once, each iterated on its own thread as coglet's slots do."""
    ready = threading.Barrier(streams)
    results: list[tuple[float, float | None, float | None]] = [(0.0, None, None)] * streams

    def one(i: int) -> None:
        ready.wait()
        start = time.perf_counter()
        first = last = None
        for _chunk in asyncio.run(predictor.run(**inputs)):
            last = time.perf_counter()
            first = first or last
        results[i] = (start, first, last)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    begin = min(r[0] for r in results)
    end = max(r[2] for r in results if r[2] is not None)
    per_token = [(last - first) / (new_tokens - 1) for _, first, last in results if first and last]
    ttft = [first - start for start, first, _ in results if first]
    return Concurrent(
        via="Predictor.run",
        streams=streams,
        prompt_tokens=prompt_tokens,
        new_tokens=new_tokens,
        aggregate_tokens_per_s=streams * new_tokens / (end - begin),
        time_per_output_token_s=_median(per_token),
        time_to_first_token_p50_s=_median(ttft),
        errors=streams - len(per_token),
    )


def http_streams(
    model_dir: Path, inputs: dict[str, Any], prompt_tokens: int, levels: Sequence[int], new_tokens: int
) -> list[Concurrent]:
    """The same through the real Cog server (scripts/serve) and scripts/loadtest's SSE client."""
    from .loadtest import parse_target, run_sweep

    port = _free_port()
    env = {**os.environ, "MODEL_ID": str(model_dir), "COG_MAX_CONCURRENCY": str(max(levels)), "MODERATION": "off"}
    server = subprocess.Popen(
        [str(PROJECT_ROOT / "scripts" / "serve"), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    inputs = {k: v for k, v in inputs.items() if v is not None}  # Cog refuses an explicit null (seed)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    try:
        _wait_until_serving(f"http://127.0.0.1:{port}", server)
        out = []
        for streams in levels:
            target = parse_target(f"http://127.0.0.1:{port}")
            [(stats, results)] = asyncio.run(
                run_sweep(target, inputs, [streams], requests=streams, duration_s=3600, timeout=1800, retry_busy=True)
            )
            ok = [r for r in results if r.status == "ok" and r.ttft_s is not None]
            out.append(
                Concurrent(
                    via="HTTP",
                    streams=streams,
                    prompt_tokens=prompt_tokens,
                    new_tokens=new_tokens,
                    aggregate_tokens_per_s=stats.output_tokens_per_second,
                    time_per_output_token_s=_median([(r.latency_s - r.ttft_s) / (new_tokens - 1) for r in ok]),
                    time_to_first_token_p50_s=stats.ttft_s.p50 or float("nan"),
                    errors=stats.requests - stats.ok,
                )
            )
        return out
    finally:
        server.terminate()
        server.wait(timeout=60)


def _wait_until_serving(url: str, server: subprocess.Popen, timeout: float = 900) -> None:
    """Poll /health-check through the server's setup (connection refused until it listens)."""
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"scripts/serve exited with {server.returncode} before it was ready")
        try:
            if httpx.get(f"{url}/health-check", timeout=5).json().get("status") == "READY":
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise TimeoutError(f"{url} not READY after {timeout:g} s")


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------------ the run


def run(args: argparse.Namespace, log: Callable[[str], None]) -> Report:
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
    dtype_name = args.dtype
    if args.random_weights:
        model_dir = build_random_model(Path(args.model_dir or tempfile.mkdtemp(prefix="frw-")), dtype_name=dtype_name)
    else:
        from .config import Settings
        from .weights import resolve_model_path

        model_dir = resolve_model_path(Settings.from_env(), allow_download=False)
    report = Report(environment=_environment(device, dtype_name, torch, transformers), workload=asdict(workload))
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    vocab, eos = len(tokenizer), tokenizer.eos_token_id

    if device == "cuda":
        from .engine import keep_cudnn_out_of_attention

        keep_cudnn_out_of_attention()  # as the engine does, for both: the same attention kernels on both sides
        report.environment["sdpa_cudnn"] = torch.backends.cuda.cudnn_sdp_enabled()
    log(f"baseline: transformers eager generate() on {device}, {dtype_name}")
    with peak_memory(device, report.peak_memory_gb, "transformers eager"):
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=getattr(torch, dtype_name)).to(device).eval()
        context = model.config.max_position_embeddings
        for length in workload.prompt_tokens:
            ids = prompt_ids(min(length, context - workload.new_tokens), vocab, eos)
            report.single_stream.append(eager_single_stream(model, ids, workload.new_tokens, device))
            log(f"  {report.single_stream[-1]}")
        del model
        gc.collect()
        if device == "cuda":
            torch.cuda.empty_cache()

    log("engine: predict.Predictor.setup() with the weights on local disk")
    os.environ.update(
        MODEL_ID=str(model_dir),
        DEVICE=device,
        DTYPE=dtype_name,
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
        for length in workload.prompt_tokens:
            ids = prompt_ids(min(length, context - workload.new_tokens), vocab, eos)
            report.single_stream.append(engine_single_stream(engine, ids, workload.new_tokens))
            log(f"  {report.single_stream[-1]}")
        batch = max(workload.streams)
        prompts = [prompt_ids(16 + 8 * i, vocab, eos)[i:] for i in range(batch)]  # different lengths and texts
        report.agreement = batch_agreement(engine, prompts, workload.new_tokens)
        log(f"  {report.agreement}")
        inputs, stream_prompt = _stream_inputs(tokenizer, workload)
        for streams in workload.streams:
            report.concurrent.append(predictor_streams(predictor, inputs, stream_prompt, streams, workload.new_tokens))
            log(f"  {report.concurrent[-1]}")
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
    from .openapi import input_defaults

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


def _environment(device: str, dtype_name: str, torch, transformers) -> dict[str, Any]:
    name = torch.cuda.get_device_name() if device == "cuda" else _cpu_name()
    return {
        "device": device,
        "device_name": name,
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "dtype": dtype_name,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "command": " ".join(["scripts/benchmark", *sys.argv[1:]]),
    }


# ------------------------------------------------------------------------------ output


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def format_table(report: Report) -> str:
    """Single-stream rows (eager against engine), then concurrent streams, setup and memory."""
    single = [("single stream", "prompt", "transformers eager", "engine", "speed-up")]
    by_length: dict[int, dict[str, SingleStream]] = {}
    for r in report.single_stream:
        by_length.setdefault(r.prompt_tokens, {})["eager" if r.engine == "transformers eager" else "engine"] = r
    for length, pair in by_length.items():
        eager, engine = pair.get("eager"), pair.get("engine")
        if not (eager and engine):
            continue
        single.append(
            (
                "decode tok/s",
                str(length),
                f"{eager.decode_tokens_per_s:.1f}",
                f"{engine.decode_tokens_per_s:.1f}",
                f"{engine.decode_tokens_per_s / eager.decode_tokens_per_s:.2f}x",
            )
        )
        single.append(
            (
                "time to first token",
                str(length),
                f"{eager.time_to_first_token_s * 1000:.1f} ms",
                f"{engine.time_to_first_token_s * 1000:.1f} ms",
                f"{eager.time_to_first_token_s / engine.time_to_first_token_s:.2f}x",
            )
        )
    streams = [("streams", "via", "prompt", "aggregate tok/s", "ms/token per stream", "TTFT p50", "errors")]
    for c in report.concurrent:
        streams.append(
            (
                str(c.streams),
                c.via,
                str(c.prompt_tokens),
                f"{c.aggregate_tokens_per_s:.1f}",
                f"{c.time_per_output_token_s * 1000:.1f}",
                f"{c.time_to_first_token_p50_s * 1000:.0f} ms",
                str(c.errors),
            )
        )
    unit = "peak GPU memory allocated" if report.environment["device"] == "cuda" else "peak RSS"
    setup = f"{report.setup_s:.1f} s"
    if report.compile_cache_hits or report.compile_cache_misses:
        setup += f" (compile cache: {report.compile_cache_hits} hits, {report.compile_cache_misses} misses)"
    other = [("setup() with local weights", setup)]
    if report.setup_new_process_s is not None:
        other.append(("setup() in a new process, compile cache filled", f"{report.setup_new_process_s:.1f} s"))
    if (a := report.agreement) is not None:
        other.append(
            (
                f"greedy answers in a batch of {a.requests} equal to alone ({report.environment['dtype']})",
                f"{a.identical_answers}/{a.requests}, {a.agreeing_prefix:.0%} of tokens before a difference",
            )
        )
    other += [(f"{unit}, {name} phase", f"{gb:.2f} GB") for name, gb in report.peak_memory_gb.items()]
    return "\n\n".join(_align(rows) for rows in (single, streams, other))


def _align(rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip() for r in rows)


def write_chart(report: Report, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    lengths = sorted({r.prompt_tokens for r in report.single_stream})
    for offset, (name, label) in enumerate((("transformers eager", "transformers eager"), (None, "engine"))):
        values = [
            next(
                (r.decode_tokens_per_s for r in report.single_stream if r.prompt_tokens == n and
                 ((r.engine == name) if name else r.engine != "transformers eager")),
                0.0,
            )
            for n in lengths
        ]  # fmt: skip
        left.bar([i + offset * 0.4 for i in range(len(lengths))], values, width=0.4, label=label)
    left.set_xticks([i + 0.2 for i in range(len(lengths))], [f"{n}-token prompt" for n in lengths])
    left.set_ylabel("single-stream decode, tokens/s")
    left.legend()
    for via in sorted({c.via for c in report.concurrent}):
        points = [c for c in report.concurrent if c.via == via]
        right.plot([c.streams for c in points], [c.aggregate_tokens_per_s for c in points], marker="o", label=via)
    right.set_xlabel("concurrent streams")
    right.set_ylabel("aggregate tokens/s")
    right.legend()
    env = report.environment
    fig.suptitle(f"{env['device_name']} ({env['device']}), {env['dtype']}, torch {env['torch']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/benchmark", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json and chart.png")
    parser.add_argument("--device", choices=("cpu", "cuda"), help="default: cuda when available")
    parser.add_argument("--dtype", choices=("bfloat16", "float16", "float32"), default="bfloat16")
    parser.add_argument(
        "--random-weights",
        action="store_true",
        help="build falcon-rw-1b's architecture with random weights (no download); default: MODEL_ID's weights",
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
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.out.mkdir(parents=True, exist_ok=True)
    report = run(args, log=lambda line: print(line, flush=True))
    (args.out / "results.json").write_text(json.dumps(asdict(report), indent=2) + "\n")
    write_chart(report, args.out / "chart.png")
    env = report.environment
    print(f"\nwrote {args.out / 'results.json'} and {args.out / 'chart.png'}")
    print(f"{env['device_name']} ({env['device']}), {env['dtype']}, torch {env['torch']}, "
          f"transformers {env['transformers']}, {env['torch_threads']} threads")  # fmt: skip
    print(format_table(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
