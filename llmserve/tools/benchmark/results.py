"""What scripts/benchmark measures: the workload and each result, as dataclasses that become results.json."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Workload:
    prompt_tokens: tuple[int, ...]  # single-stream prompts
    new_tokens: int  # every answer is forced to this length
    streams: tuple[int, ...]  # concurrency levels
    stream_prompt_tokens: int  # the prompt of each concurrent stream


# Single stream: time to first token and decode rate, each the median of this many alternating runs per side.
SINGLE_STREAM_RUNS = 3
STREAM_ROUNDS = 2  # each concurrency level is run this many times, in turn with the others; the median run is kept

# The GPU targets' workload (docs/benchmarks.md); on 2 CPU cores that shape would take an hour: a smaller one.
WORKLOADS = {
    "cuda": Workload(prompt_tokens=(128, 2048), new_tokens=256, streams=(1, 8, 32), stream_prompt_tokens=512),
    # Short prompts for the streams: on 2 cores prefill is compute-bound, so what batching gains shows in decode.
    "cpu": Workload(prompt_tokens=(128,), new_tokens=64, streams=(1, 8), stream_prompt_tokens=16),
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
class Constrained:
    """The same greedy streams decoded with a json_schema and without: what the grammar's mask costs per token."""

    streams: int
    new_tokens: int
    free_ms_per_token: float  # per stream: (last token - first) / (tokens - 1), median over streams and runs
    constrained_ms_per_token: float
    free_choice_ms: float  # the next-token choice alone for `streams` rows, per step (measure._choice_ms)
    constrained_choice_ms: float


@dataclass
class Report:
    environment: dict[str, Any]
    workload: dict[str, Any]
    single_stream: list[SingleStream] = field(default_factory=list)
    concurrent: list[Concurrent] = field(default_factory=list)
    agreement: Agreement | None = None
    constrained: list[Constrained] = field(default_factory=list)
    # The p50 time to first token of max(streams) requests prefilled one after another by eager generate().
    serial_prefill_ttft_p50_s: float | None = None
    setup_s: float | None = None
    # Compiled code found in / missing from COMPILE_CACHE_DIR during that setup (inductor's FX graph cache).
    compile_cache_hits: int = 0
    compile_cache_misses: int = 0
    # When the decode step is compiled: setup() again in a new process, reading what the first one cached.
    setup_new_process_s: float | None = None
    peak_memory_gb: dict[str, float] = field(default_factory=dict)
