"""scripts/loadtest's report: the cost of the measured throughput, the summary table, results.json, CSV, chart."""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from ..tables import align
from .cost import Costs, Throughput, api_costs, break_even_utilisation, gpu_costs
from .cost import users_per_instance as instance_users
from .stats import LevelStats
from .stream import RequestResult


@dataclass(frozen=True)
class CostReport:
    users: int  # the level whose throughput was priced
    level_had_errors: bool  # every level with answers had errors: the throughput is less certain
    throughput: Throughput
    gpu_price_per_hour: float
    gpu_label: str  # "gpu-t4 $0.81/h" for an example's name, else "$2.5/h"
    calls_per_user_per_day: float
    gpu: Costs
    users_per_instance: float
    api_input_price_per_million: float | None = None
    api_output_price_per_million: float | None = None
    api: Costs | None = None
    break_even_utilisation: float | None = None


def cost_report(
    levels: Sequence[LevelStats],
    *,
    gpu_price_per_hour: float,
    calls_per_user_per_day: float,
    gpu_name: str = "",
    api_output_price_per_million: float | None = None,
    api_input_price_per_million: float | None = None,
) -> CostReport | None:
    """Price the fastest level (req/s) among those without errors, else among all; None if nothing succeeded."""
    answered = [s for s in levels if s.ok and s.output_tokens]
    # A level cut short by errors (409s come back in milliseconds) has too few answers to measure a throughput.
    best = max([s for s in answered if not s.errors] or answered, key=lambda s: s.requests_per_second, default=None)
    if best is None:
        return None
    throughput = best.throughput()
    gpu = gpu_costs(
        price_per_hour=gpu_price_per_hour, throughput=throughput, calls_per_user_per_day=calls_per_user_per_day
    )
    report = CostReport(
        users=best.users,
        level_had_errors=bool(best.errors),
        throughput=throughput,
        gpu_price_per_hour=gpu_price_per_hour,
        gpu_label=f"{gpu_name} ${gpu_price_per_hour:g}/h".lstrip(),
        calls_per_user_per_day=calls_per_user_per_day,
        gpu=gpu,
        users_per_instance=instance_users(throughput, calls_per_user_per_day),
    )
    if api_output_price_per_million is None:
        return report
    # One API price given: a blended price for every token.
    input_price = api_output_price_per_million if api_input_price_per_million is None else api_input_price_per_million
    api = api_costs(
        input_price_per_million=input_price,
        output_price_per_million=api_output_price_per_million,
        throughput=throughput,
        calls_per_user_per_day=calls_per_user_per_day,
    )
    return replace(
        report,
        api_input_price_per_million=input_price,
        api_output_price_per_million=api_output_price_per_million,
        api=api,
        break_even_utilisation=break_even_utilisation(gpu, api) if api.per_request > 0 else None,
    )


def money(value: float) -> str:
    """Dollars with three significant digits below $1, cents above, no cents from $100."""
    if value == 0:
        return "$0"
    if value >= 100:
        return f"${value:,.0f}"
    if value >= 1:
        return f"${value:,.2f}"
    decimals = 2 - math.floor(math.log10(value))
    return f"${value:.{decimals}f}"


def format_cost_report(report: CostReport) -> str:
    t = report.throughput
    which = "every level had errors: a rough guide" if report.level_had_errors else "the fastest level without errors"
    lines = [
        f"Cost at {report.users} user{'s' if report.users != 1 else ''} ({which}): {t.requests_per_second:.3g} req/s, "
        f"{t.output_tokens_per_second:.3g} output tok/s, {t.input_tokens_per_request:.0f} input + "
        f"{t.output_tokens_per_request:.1f} output tokens per request.",
        "Assumes one instance billed by the hour and kept busy at this throughput (full utilisation).",
    ]
    header = ["", f"GPU {report.gpu_label}"]
    if report.api is not None:
        in_price, out_price = report.api_input_price_per_million, report.api_output_price_per_million
        header.append(f"API ${in_price:g} in / ${out_price:g} out per 1M tokens")
    rows = [header]
    for label, key in (
        ("per request", "per_request"),
        ("per 1,000 requests", "per_1k_requests"),
        ("per 1M output tokens", "per_million_output_tokens"),
        (f"per user per day ({report.calls_per_user_per_day:g} calls)", "per_user_per_day"),
    ):
        rows.append([label] + [money(getattr(c, key)) for c in (report.gpu, report.api) if c is not None])
    lines.append(align(rows))
    lines.append(
        f"One instance serves {report.users_per_instance:,.0f} users a day at {report.calls_per_user_per_day:g} calls "
        "each, spread evenly over 24 hours."
    )
    share = report.break_even_utilisation
    if share is not None and share <= 1:
        lines.append(f"Break-even utilisation {share:.1%}: the GPU is cheaper than the API when busy more than that.")
    elif share is not None:
        lines.append(f"Break-even utilisation {share:.1%}: the GPU costs more than the API even when always busy.")
    return "\n".join(lines)


def format_table(levels: Sequence[LevelStats]) -> str:
    """The summary: one row per concurrency level."""
    header = (
        "users", "sent", "ok", "errors", "req/s", "p50 s", "p95 s", "p99 s",
        "TTFT p50", "TTFT p95", "TTFT p99", "out tok/s", "decode tok/s",
    )  # fmt: skip
    rows = [header]
    for s in levels:
        errors = ", ".join(f"{kind} {n}" for kind, n in s.errors.items()) or "0"
        rows.append(
            (
                str(s.users),
                str(s.requests),
                str(s.ok),
                errors,
                f"{s.requests_per_second:.3g}",
                *(_seconds(v) for v in (s.latency_s.p50, s.latency_s.p95, s.latency_s.p99)),
                *(_seconds(v) for v in (s.ttft_s.p50, s.ttft_s.p95, s.ttft_s.p99)),
                f"{s.output_tokens_per_second:.3g}",
                "-" if s.server_tokens_per_second_p50 is None else f"{s.server_tokens_per_second_p50:.3g}",
            )
        )
    return align(rows)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def write_results(out: Path, payload: dict[str, Any], results: Sequence[RequestResult]) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    json_path, csv_path = out / "results.json", out / "requests.csv"
    json_path.write_text(json.dumps(payload, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    names = [f.name for f in fields(RequestResult)]
    with csv_path.open("w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=names)
        writer.writeheader()
        writer.writerows(asdict(r) for r in results)
    return [json_path, csv_path]


def write_chart(levels: Sequence[LevelStats], path: Path, title: str) -> Path:
    """Latency and time to first token against users (left), throughput against users (right)."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    users = [s.users for s in levels]

    def series(values: Sequence[float | None]) -> list[float]:
        return [math.nan if v is None else v for v in values]

    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, values, style in (
        ("latency p50", [s.latency_s.p50 for s in levels], "o-"),
        ("latency p95", [s.latency_s.p95 for s in levels], "o--"),
        ("TTFT p50", [s.ttft_s.p50 for s in levels], "s-"),
        ("TTFT p95", [s.ttft_s.p95 for s in levels], "s--"),
    ):
        left.plot(users, series(values), style, label=label)
    for s in levels:
        if s.errors and s.latency_s.p50 is not None:  # few answers behind this point: say why
            left.annotate(f"{sum(s.errors.values())}/{s.requests} errors", (s.users, s.latency_s.p50), fontsize=8,
                          xytext=(-4, -14), textcoords="offset points", ha="right")  # fmt: skip
    left.set(xlabel="concurrent users", ylabel="seconds", title="Latency against concurrency", xticks=users)
    left.set_ylim(bottom=0)
    left.grid(alpha=0.3)
    left.legend()
    right.plot(users, [s.requests_per_second for s in levels], "o-", color="tab:green", label="req/s")
    right.set(xlabel="concurrent users", ylabel="successful requests per second", title="Throughput", xticks=users)
    right.set_ylim(bottom=0)
    tokens = right.twinx()
    tokens.plot(users, [s.output_tokens_per_second for s in levels], "s--", color="tab:purple", label="output tok/s")
    tokens.set_ylabel("output tokens per second")
    tokens.set_ylim(bottom=0)
    right.legend(handles=right.get_lines() + tokens.get_lines(), loc="lower right")
    right.grid(alpha=0.3)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
