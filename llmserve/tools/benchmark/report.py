"""scripts/benchmark's output: the environment it ran in, the table printed last, the chart."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

from ..tables import align
from .results import Report, SingleStream


def environment(device: str, dtype_name: str, torch, transformers, argv: list[str]) -> dict[str, Any]:
    """Device, versions, threads and the command line: what every figure is reported with."""
    from ...engine.device import cpu_capability

    name = torch.cuda.get_device_name() if device == "cuda" else _cpu_name()
    return {
        "device": device,
        "device_name": name,
        "cpu_capability": cpu_capability(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "dtype": dtype_name,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
        "command": " ".join(["scripts/benchmark", *argv]),
    }


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
    constrained = [("json_schema", "streams", "free ms", "constrained ms", "cost")]
    for c in report.constrained:
        for what, free, with_schema in (
            ("decode, per token", c.free_ms_per_token, c.constrained_ms_per_token),
            ("token choice, per step", c.free_choice_ms, c.constrained_choice_ms),
        ):
            cost = f"{with_schema - free:+.2f} ms ({with_schema / free:.2f}x)"
            constrained.append((what, str(c.streams), f"{free:.2f}", f"{with_schema:.2f}", cost))
    ratios = [("ratio", "measured", "of")]
    ratios += _ratios(report, by_length)
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
    tables = (single, streams, constrained, ratios, other) if report.constrained else (single, streams, ratios, other)
    return "\n\n".join(align(rows, numbers_right=False) for rows in tables)


def _ratios(report: Report, by_length: dict[int, dict[str, SingleStream]]) -> list[tuple[str, str, str]]:
    """The issue's targets as ratios within this run: engine against eager, many streams against one."""
    rows = []

    def ratio(name: str, ours: float, baseline: float, unit: str = "tok/s") -> None:
        scale = 1000 if unit == "ms" else 1
        rows.append((name, f"{ours / baseline:.2f}x", f"{ours * scale:.1f} / {baseline * scale:.1f} {unit}"))

    pairs = [pair for pair in by_length.values() if "eager" in pair and "engine" in pair]
    runs = {c.streams: c for c in report.concurrent if c.via == "Predictor.run"}
    if pairs:
        eager, engine = pairs[0]["eager"].decode_tokens_per_s, pairs[0]["engine"].decode_tokens_per_s
        ratio("single-stream decode, engine / eager", engine, eager)
        if 1 in runs:
            ratio("Predictor.run 1 stream decode rate / eager", 1 / runs[1].time_per_output_token_s, eager)
    if len(runs) > 1 and 1 in runs:
        most = runs[max(runs)]
        ratio(f"aggregate, {most.streams} streams / 1", most.aggregate_tokens_per_s, runs[1].aggregate_tokens_per_s)
        if report.serial_prefill_ttft_p50_s:
            name = f"TTFT p50, {most.streams} arrivals: serial eager prefill / engine"
            ratio(name, report.serial_prefill_ttft_p50_s, most.time_to_first_token_p50_s, "ms")
    return rows


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
