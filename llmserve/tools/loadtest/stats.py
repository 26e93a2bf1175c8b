"""A concurrency level's statistics: percentiles of latency and time to first token, throughput, errors by kind."""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from .cost import Throughput
from .stream import OK, RequestResult


def percentile(values: Sequence[float], q: int) -> float | None:
    """The q-th percentile (q a whole number, 0 to 100), linear between closest ranks as numpy's; None if empty."""
    if not (isinstance(q, int) and 0 <= q <= 100):
        raise ValueError(f"q={q!r}: the percentile must be a whole number from 0 to 100")
    if len(values) < 2:
        return values[0] if values else None
    if q in (0, 100):  # quantiles() gives the 99 cut points between them
        return min(values) if q == 0 else max(values)
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


@dataclass(frozen=True)
class Percentiles:
    p50: float | None
    p95: float | None
    p99: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Percentiles:
        return cls(percentile(values, 50), percentile(values, 95), percentile(values, 99))


@dataclass(frozen=True)
class LevelStats:
    users: int
    requests: int  # sent
    ok: int
    errors: dict[str, int]  # error kind -> count
    wall_s: float
    requests_per_second: float  # successful requests over wall time
    latency_s: Percentiles  # successful requests, send to completed
    ttft_s: Percentiles  # successful requests, send to first chunk with text
    output_tokens: int  # of successful requests
    output_tokens_per_second: float  # over wall time: the instance's throughput
    input_tokens_per_request: float
    output_tokens_per_request: float
    server_tokens_per_second_p50: float | None  # median decode speed of one prediction, as the server measured it
    tokens_from_chunks: int  # successful requests without an output_token_count metric: their chunks were counted
    busy_retries: int

    def throughput(self) -> Throughput:
        return Throughput(
            requests_per_second=self.requests_per_second,
            output_tokens_per_second=self.output_tokens_per_second,
            input_tokens_per_request=self.input_tokens_per_request,
            output_tokens_per_request=self.output_tokens_per_request,
        )


def level_stats(users: int, results: Sequence[RequestResult], wall_s: float) -> LevelStats:
    ok = [r for r in results if r.status == OK]
    output_tokens = sum(r.output_tokens for r in ok)
    input_counts = [r.input_tokens for r in ok if r.input_tokens is not None]
    speeds = [r.server_tokens_per_second for r in ok if r.server_tokens_per_second]
    return LevelStats(
        users=users,
        requests=len(results),
        ok=len(ok),
        errors=dict(sorted(Counter(r.status for r in results if r.status != OK).items())),
        wall_s=wall_s,
        requests_per_second=len(ok) / wall_s if wall_s > 0 else 0.0,
        latency_s=Percentiles.of([r.latency_s for r in ok]),
        ttft_s=Percentiles.of([r.ttft_s for r in ok if r.ttft_s is not None]),
        output_tokens=output_tokens,
        output_tokens_per_second=output_tokens / wall_s if wall_s > 0 else 0.0,
        input_tokens_per_request=sum(input_counts) / len(input_counts) if input_counts else 0.0,
        output_tokens_per_request=output_tokens / len(ok) if ok else 0.0,
        server_tokens_per_second_p50=percentile(speeds, 50),
        tokens_from_chunks=sum(r.tokens_from == "chunks" for r in ok),
        busy_retries=sum(r.busy_retries for r in results),
    )
