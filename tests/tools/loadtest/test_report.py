"""The report: the cost of the fastest level without errors, the table, dollars."""

from __future__ import annotations

import pytest

from llmserve.tools.loadtest.report import cost_report, format_cost_report, format_table, money
from llmserve.tools.loadtest.stats import LevelStats, Percentiles
from llmserve.tools.loadtest.stream import (
    AT_CAPACITY,
    TIMEOUT,
)


def level(users: int, rps: float, errors: dict | None = None, ok: int = 10):
    return LevelStats(
        users=users, requests=10, ok=ok, errors=errors or {}, wall_s=10.0, requests_per_second=rps,
        latency_s=Percentiles(1.0, 2.0, 2.5), ttft_s=Percentiles(0.1, 0.2, None),
        output_tokens=50 * ok, output_tokens_per_second=50 * rps, input_tokens_per_request=80,
        output_tokens_per_request=50, server_tokens_per_second_p50=60.0, tokens_from_chunks=0, busy_retries=0,
    )  # fmt: skip


def test_cost_report_prices_the_fastest_level_without_errors():
    levels = [level(1, 1.0), level(2, 1.8), level(4, 5.0, {AT_CAPACITY: 9}, ok=1)]
    report = cost_report(levels, gpu_price_per_hour=3.6, calls_per_user_per_day=10, api_output_price_per_million=2.0)
    assert (report.users, report.level_had_errors) == (2, False)
    assert report.gpu.per_1k_requests == pytest.approx(0.001 / 1.8 * 1000)
    assert report.api_input_price_per_million == 2.0  # one API price: blended, for every token
    assert report.api.per_request == pytest.approx((80 + 50) * 2.0 / 1e6)
    text = format_cost_report(report)
    assert "Cost at 2 users (the fastest level without errors)" in text
    assert "per 1,000 requests" in text and "$0.556" in text and "Break-even utilisation" in text


def test_no_successful_level_means_no_cost():
    assert cost_report([level(1, 0.0, {TIMEOUT: 10}, ok=0)], gpu_price_per_hour=1, calls_per_user_per_day=1) is None


def test_table_has_one_row_per_level_with_errors_by_kind():
    lines = format_table([level(1, 1.0), level(2, 1.5, {AT_CAPACITY: 3, TIMEOUT: 1})]).splitlines()
    assert lines[0].split()[:4] == ["users", "sent", "ok", "errors"]
    assert lines[1].split()[:4] == ["1", "10", "10", "0"]
    assert "at_capacity 3, timeout 1" in lines[2] and lines[2].rstrip().endswith("60")


@pytest.mark.parametrize(
    "value, text", [(0, "$0"), (1234.5, "$1,234"), (5.049, "$5.05"), (0.0504, "$0.0504"), (0.0000350, "$0.0000350")]
)
def test_money(value, text):
    assert money(value) == text
