"""A level's statistics: percentiles, successes, errors and tokens."""

from __future__ import annotations

import pytest

from llmserve.tools.loadtest.stats import level_stats, percentile
from llmserve.tools.loadtest.stream import (
    AT_CAPACITY,
    OK,
    TIMEOUT,
    RequestResult,
)


def test_percentile_interpolates_like_numpy():
    values = [4.0, 1.0, 3.0, 2.0]
    assert percentile(values, 50) == pytest.approx(2.5)
    assert percentile(values, 95) == pytest.approx(3.85)  # rank 2.85: 3 + 0.85 * (4 - 3)
    assert percentile(values, 99) == pytest.approx(3.97)
    assert percentile(values, 0) == 1.0 and percentile(values, 100) == 4.0
    assert percentile([5.0], 99) == 5.0
    assert percentile([], 50) is None
    for q in (12.5, 101, -1):
        with pytest.raises(ValueError, match="whole number from 0 to 100"):
            percentile(values, q)


def result(status: str = OK, latency: float = 1.0, ttft: float | None = 0.2, tokens: int = 10, **kw):
    fields = dict(users=2, user=0, index=0, started_s=0.0, chunks=tokens, tokens_from="metric", input_tokens=30)
    fields.update(server_tokens_per_second=50.0, busy_retries=0, error="")
    fields.update(kw)
    return RequestResult(status=status, latency_s=latency, ttft_s=ttft, output_tokens=tokens, **fields)


def test_level_stats_count_successes_errors_and_tokens():
    results = [
        result(latency=1.0, ttft=0.1, tokens=10),
        result(latency=3.0, ttft=0.3, tokens=30, tokens_from="chunks", input_tokens=None),
        result(status=AT_CAPACITY, latency=0.01, ttft=None, tokens=0),
        result(status=AT_CAPACITY, latency=0.01, ttft=None, tokens=0),
        result(status=TIMEOUT, latency=9.0, ttft=None, tokens=0),
    ]
    stats = level_stats(2, results, wall_s=4.0)
    assert (stats.requests, stats.ok, stats.errors) == (5, 2, {AT_CAPACITY: 2, TIMEOUT: 1})
    assert stats.requests_per_second == pytest.approx(0.5)
    assert (stats.latency_s.p50, stats.ttft_s.p50) == (pytest.approx(2.0), pytest.approx(0.2))  # errors left out
    assert (stats.output_tokens, stats.output_tokens_per_second) == (40, pytest.approx(10.0))
    assert (stats.input_tokens_per_request, stats.output_tokens_per_request) == (30.0, 20.0)
    assert stats.tokens_from_chunks == 1
