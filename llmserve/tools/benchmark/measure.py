"""The measurements of scripts/benchmark: eager generate() and the engine, alone, batched, with a json_schema, and
through Cog."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import statistics
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ...request.params import SamplingParams
from ..cogserver import serving
from .results import SINGLE_STREAM_RUNS, Agreement, Concurrent, Constrained, SingleStream


def build_random_model(out: Path, *, dtype_name: str) -> Path:
    """falcon-rw-1b's architecture with random weights and the tiny offline tokenizer, saved (or reused) at `out`."""
    # Embedding rows beyond the tokenizer's vocabulary are zeroed (the head is tied), so greedy tokens decode to
    # text, while every step still reads the whole 50304-row head.
    if (out / "config.json").is_file():
        return out
    import torch
    from transformers import FalconForCausalLM

    from ..tiny import build_tokenizer, falcon_rw_1b_config

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


def single_stream_pair(engine, ids: list[int], new_tokens: int, device: str) -> tuple[SingleStream, SingleStream]:
    """transformers' generate() on the engine's own weights (greedy, sdpa, dynamic cache: the baseline) and the
    engine, in alternating runs, so that a shared machine's drifting speed falls on both alike; medians of the runs."""
    # Both sides stamp each token as it arrives (generate() through a streamer), so that time to first token and the
    # decode rate come from one call, not from the difference of two runs, which noise can make negative.
    import torch

    model = engine.model
    inputs = torch.tensor([ids], device=engine.device)

    def eager(n: int) -> list[float]:
        return engine.scheduler.call(lambda: _eager(n))  # on the decode thread: the same CPU threads as the engine's

    def _eager(n: int) -> list[float]:
        stamps = _Stamps(device)
        start = time.perf_counter()
        with torch.inference_mode():
            model.generate(inputs, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=0, streamer=stamps)
        return [t - start for t in stamps.times]

    def ours(n: int) -> list[float]:
        start = time.perf_counter()
        return [
            time.perf_counter() - start for _ in engine.generate(ids, SamplingParams.plain_greedy(n, min_new_tokens=n))
        ]

    runs: dict[str, dict[str, list[float]]] = {
        "eager": {"first": [], "decode": []},
        "engine": {"first": [], "decode": []},
    }
    for side in (eager, ours):
        side(2)  # warm-up: kernels, allocator
    for _ in range(SINGLE_STREAM_RUNS):
        for name, side in (("eager", eager), ("engine", ours)):
            runs[name]["first"].append(side(1)[0])
            runs[name]["decode"].append(_rate(side(new_tokens)))
    return tuple(
        SingleStream(label, len(ids), new_tokens, statistics.median(runs[name]["first"]),
                     statistics.median(runs[name]["decode"]))
        for name, label in (("eager", "transformers eager"), ("engine", engine.backend_name))
    )  # fmt: skip


def _rate(stamps: Sequence[float]) -> float:
    """Tokens after the first over their time, from each token's arrival time."""
    return (len(stamps) - 1) / (stamps[-1] - stamps[0])


def eager_serial_prefill(engine, ids: list[int], arrivals: int, device: str) -> float:
    """The p50 time to first token of `arrivals` requests that arrive together and are prefilled one after another
    by generate(), as a server without batched prefill would: the baseline of the engine's time to first token."""
    return engine.scheduler.call(lambda: _serial_prefill(engine.model, ids, arrivals, device))


def _serial_prefill(model, ids: list[int], arrivals: int, device: str) -> float:
    import torch

    inputs = torch.tensor([ids], device=device)
    done = []
    start = time.perf_counter()
    with torch.inference_mode():
        for _ in range(arrivals):
            model.generate(inputs, max_new_tokens=1, do_sample=False, pad_token_id=0)
            _sync(device)
            done.append(time.perf_counter() - start)
    return statistics.median(done)


class _Stamps:
    """A generate() streamer that notes when each new token arrives (the first put() is the prompt)."""

    def __init__(self, device: str) -> None:
        self.device = device
        self.times: list[float] = []
        self._prompt_seen = False

    def put(self, value) -> None:
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        _sync(self.device)
        self.times.append(time.perf_counter())

    def end(self) -> None:
        pass


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
    from ..loadtest.plan import parse_target
    from ..loadtest.run import run_sweep

    env = {**os.environ, "MODEL_ID": str(model_dir), "COG_MAX_CONCURRENCY": str(max(levels)), "MODERATION": "off"}
    inputs = {k: v for k, v in inputs.items() if v is not None}  # Cog refuses an explicit null (seed)
    with serving(env, timeout=900) as url:
        target = parse_target(url)
        out = []
        for streams in levels:
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


# A string of at least this many characters: an answer that cannot end within the benchmark's tokens, so that both
# sides decode exactly as many.
LONG_STRING_SCHEMA = '{"type": "object", "properties": {"texto": {"type": "string", "minLength": 20000}}}'


def constraint_cost(engine, ids: list[int], new_tokens: int, streams: int, runs: int = 5) -> Constrained:
    """`streams` greedy answers of `new_tokens` at once, each with LONG_STRING_SCHEMA or none, in alternating runs."""
    free = SamplingParams.plain_greedy(new_tokens, min_new_tokens=new_tokens)
    constrained = dataclasses.replace(free, json_schema=LONG_STRING_SCHEMA)
    engine.check_json_schema(LONG_STRING_SCHEMA)  # compiled once, outside the timing

    def per_token(params: SamplingParams) -> list[float]:
        stamps: list[list[float]] = [[] for _ in range(streams)]

        def one(i: int) -> None:
            stamps[i] = [time.perf_counter() for _ in engine.generate(ids, params)]

        workers = [threading.Thread(target=one, args=(i,)) for i in range(streams)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()
        return [(s[-1] - s[0]) / (len(s) - 1) for s in stamps if len(s) > 1]

    per_token(free), per_token(constrained)  # warm-up
    times: dict[str, list[float]] = {"free": [], "constrained": []}
    for _ in range(runs):
        times["free"] += per_token(free)
        times["constrained"] += per_token(constrained)
    return Constrained(
        streams,
        new_tokens,
        free_ms_per_token=1000 * statistics.median(times["free"]),
        constrained_ms_per_token=1000 * statistics.median(times["constrained"]),
        free_choice_ms=_choice_ms(engine, streams, free),
        constrained_choice_ms=_choice_ms(engine, streams, constrained),
    )


def _choice_ms(engine, rows: int, params: SamplingParams, steps: int = 200) -> float:
    """The next-token choice alone for `rows` rows (SlotSampler.sample on fixed logits, the mask included), per step;
    free of the decode step's noise, which is larger than this on a shared CPU."""
    import torch

    from ...engine.sampling import SlotSampler

    vocab = engine.backend.vocab_size
    sampler = SlotSampler(rows, vocab, engine.eos_token_ids, engine.device, engine.grammars)
    for row in range(rows):
        sampler.assign(row, dataclasses.replace(params, max_new_tokens=10**6), [1])
    logits = torch.randn(rows, vocab, generator=torch.Generator().manual_seed(0)).to(engine.device)
    for _ in range(5):
        sampler.sample(logits, slice(0, rows))
    _sync(engine.device.type)
    start = time.perf_counter()
    for _ in range(steps):
        sampler.sample(logits, slice(0, rows))
    _sync(engine.device.type)
    return 1000 * (time.perf_counter() - start) / steps


def median_run(runs: Sequence[Concurrent]) -> Concurrent:
    """The run of median aggregate speed among runs of one level (its own figures kept together)."""
    ordered = sorted(runs, key=lambda c: c.aggregate_tokens_per_s)
    return ordered[(len(ordered) - 1) // 2]


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")
