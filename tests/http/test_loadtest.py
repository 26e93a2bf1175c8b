"""scripts/loadtest against the real Cog server on the tiny model: the report, the chart, and 409s counted."""

from __future__ import annotations

import csv
import json
import subprocess

import pytest

from tests.helpers import ROOT

pytestmark = pytest.mark.http


def loadtest(server, out, *args: str) -> subprocess.CompletedProcess:
    command = [str(ROOT / "scripts" / "loadtest"), "--url", server.url, "--requests", "4", "--out", str(out)]
    try:
        return subprocess.run(
            [*command, "--input", "max_new_tokens=8", "--timeout", "120", *args],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        server.wait_idle()  # the server is shared: leave it READY for the next test


def test_loadtest_reports_latency_cost_and_chart(server, tmp_path):
    out = tmp_path / "report"
    done = loadtest(
        server, out, "--users", "2", "--gpu-price-per-hour", "gpu-t4", "--api-price-per-million-tokens", "1"
    )
    assert done.returncode == 0, done.stderr
    results = json.loads((out / "results.json").read_text())
    levels = results["levels"]
    assert [lv["users"] for lv in levels] == [1, 2]
    for lv in levels:
        # A user may get a 409 in the moment after `completed` before Cog frees its slot: counted, never fatal.
        assert lv["requests"] == 4 and lv["ok"] + sum(lv["errors"].values()) == 4
        assert set(lv["errors"]) <= {"at_capacity"}
    one = levels[0]
    assert one["ok"] >= 1 and one["requests_per_second"] > 0
    assert 0 < one["ttft_s"]["p50"] <= one["latency_s"]["p50"] <= one["latency_s"]["p99"]
    assert one["tokens_from_chunks"] == 0 and 0 < one["output_tokens_per_request"] <= 8  # the server's metric
    assert results["inputs"]["max_new_tokens"] == 8
    cost = results["cost"]
    assert cost["gpu_price_per_hour"] == 0.81 and cost["gpu"]["per_1k_requests"] > 0 and cost["api"]["per_request"] > 0
    assert (out / "latency.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with (out / "requests.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 8
    lines = done.stdout.rstrip().splitlines()
    assert "per 1,000 requests" in done.stdout and "Break-even utilisation" in done.stdout
    assert lines[-3].split()[:4] == ["users", "sent", "ok", "errors"]  # the summary table comes last
    assert lines[-2].split()[:2] == ["1", "4"] and lines[-1].split()[:2] == ["2", "4"]


def test_retry_busy_turns_409s_into_waiting(server, tmp_path):
    # The fixture has SLOTS=2 slots: without --retry-busy, 3 users get 409s.
    done = loadtest(server, tmp_path, "--users", "1,3", "--retry-busy")
    assert done.returncode == 0, done.stderr
    levels = json.loads((tmp_path / "results.json").read_text())["levels"]
    assert [(lv["users"], lv["ok"], lv["errors"]) for lv in levels] == [(1, 4, {}), (3, 4, {})]
    with (tmp_path / "requests.csv").open() as f:
        assert {row["status"] for row in csv.DictReader(f)} == {"ok"}
