"""scripts/loadtest: simulated users streaming answers over SSE from the local Cog server or from Replicate.

Each level runs its users at once; a user sends its next request as soon as the last one ends, until the level is done.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import httpx

from ...config import ReplicateSettings
from ..cogserver import NotReady, wait_until_ready
from ..replicate.api import make_client
from .cost import EXAMPLE_GPU_PRICES_PER_HOUR
from .errors import LoadTestCode, LoadTestError
from .plan import (
    DEFAULT_MAX_NEW_TOKENS,
    DEFAULT_PREGUNTA,
    DEPLOYMENT_PREFIX,
    MODEL_PREFIX,
    Target,
    bad_option,
    build_inputs,
    concurrency_levels,
    gpu_price,
    load_input_types,
    parse_target,
)
from .report import cost_report, format_cost_report, format_table, write_chart, write_results
from .stats import LevelStats, level_stats
from .stream import (
    AT_CAPACITY,
    CLIENT_ERROR,
    LocalSender,
    ReplicateSender,
    RequestResult,
    Sender,
    StreamTracker,
    request_result,
)

logger = logging.getLogger(__name__)


async def run_level(
    send: Sender, *, users: int, requests: int, duration_s: float, think_time_s: float = 0.0
) -> tuple[list[RequestResult], float]:
    """Run `users` at once until `requests` have been sent or `duration_s` has passed; return results and wall time."""
    level_start = time.perf_counter()
    deadline = level_start + duration_s
    issued = 0
    results: list[RequestResult] = []

    async def user_loop(user: int) -> None:
        nonlocal issued
        while issued < requests and time.perf_counter() < deadline:
            index = issued
            issued += 1
            tracker = StreamTracker(started_at=time.perf_counter())
            try:
                await send(tracker)
            except Exception as e:  # a client bug must not end the run: record it and go on
                logger.exception("request %d failed in the client", index)
                tracker.fail(CLIENT_ERROR, f"{type(e).__name__}: {e}", time.perf_counter())
            results.append(request_result(tracker, users=users, user=user, index=index, level_start=level_start))
            if think_time_s:
                await asyncio.sleep(think_time_s)  # the simulated user reading the answer

    await asyncio.gather(*(user_loop(u) for u in range(users)))
    return sorted(results, key=lambda r: r.index), time.perf_counter() - level_start


def server_ready(target: Target, timeout: float) -> None:
    """Wait until the local server is READY (a slot free); E6003 if it does not get there."""
    try:
        wait_until_ready(target.address, timeout=timeout)
    except NotReady as e:
        if not e.answered:
            problem = e.detail + "."
            fix = "Start the server first (e.g. MODEL_ID=/tmp/tiny scripts/serve --port 5000) and pass its URL."
        else:
            problem = f"{target.address} is {e.status}, not READY ({e.detail})."
            fix = "Read the server's log; wait for the prediction it is running, or restart it."
        raise LoadTestError(LoadTestCode.ServerNotReady, "--url", problem, fix) from e


class SweepStopped(Exception):
    """The server broke between levels: `levels` holds the ones that finished, `cause` why no more ran."""

    def __init__(self, levels: list[tuple[LevelStats, list[RequestResult]]], cause: LoadTestError) -> None:
        super().__init__(str(cause))
        self.levels = levels
        self.cause = cause


async def run_sweep(
    target: Target,
    inputs: dict[str, Any],
    levels: Sequence[int],
    *,
    requests: int,
    duration_s: float,
    timeout: float,
    retry_busy: bool = False,
    think_time_s: float = 0.0,
    replicate_client: Any = None,
) -> list[tuple[LevelStats, list[RequestResult]]]:
    """Every concurrency level in turn; a local server is left idle (READY) between levels and at the end.

    SweepStopped, with the finished levels, when the server is not READY again between levels.
    """
    out: list[tuple[LevelStats, list[RequestResult]]] = []
    limits = httpx.Limits(max_connections=max(levels) + 4, max_keepalive_connections=max(levels) + 4)
    async with httpx.AsyncClient(timeout=httpx.Timeout(timeout, connect=10), limits=limits, trust_env=False) as http:
        if target.is_local:
            send: Sender = LocalSender(http, target.address, inputs, timeout=timeout, retry_busy=retry_busy)
        else:
            send = ReplicateSender(replicate_client, target, inputs, timeout=timeout)
        for users in levels:
            if target.is_local:
                await _ready_or_stop(target, timeout, out)
            results, wall = await run_level(
                send, users=users, requests=requests, duration_s=duration_s, think_time_s=think_time_s
            )
            stats = level_stats(users, results, wall)
            logger.info(
                "%d users: %d/%d ok in %.1f s, %.3g req/s, errors %s",
                users, stats.ok, stats.requests, wall, stats.requests_per_second, stats.errors or "none",
            )  # fmt: skip
            out.append((stats, results))
        if target.is_local:
            await _ready_or_stop(target, timeout, out)
    return out


async def _ready_or_stop(target: Target, timeout: float, done: list[tuple[LevelStats, list[RequestResult]]]) -> None:
    try:
        await asyncio.to_thread(server_ready, target, timeout)
    except LoadTestError as e:
        if not done:
            raise  # nothing measured yet: the plain error, before any file is written
        raise SweepStopped(done, e) from e


def main(argv: list[str]) -> int:
    """Parse the options, run every level, write the files, print the cost and the table last."""
    examples = ", ".join(f"{name} = ${price}/h" for name, price in EXAMPLE_GPU_PRICES_PER_HOUR.items())
    parser = argparse.ArgumentParser(
        prog="scripts/loadtest",
        description="Load the local Cog server (loopback only) or a Replicate deployment with concurrent streamed "
        "predictions; report latency, time to first token, throughput, errors and cost.",
    )
    parser.add_argument(
        "--url",
        required=True,
        help=f"http://127.0.0.1:PORT, {DEPLOYMENT_PREFIX}OWNER/NAME or {MODEL_PREFIX}OWNER/MODEL[:VERSION]",
    )
    parser.add_argument(
        "--users", default="1", metavar="N", help="N: levels 1, 2, 4, ... N; or a list such as 1,4,8 (default 1)"
    )
    parser.add_argument("--requests", type=int, default=20, metavar="M", help="requests per level (default 20)")
    parser.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="directory for results.json, requests.csv, latency.png"
    )
    parser.add_argument(
        "--duration",
        type=float,
        default=120,
        metavar="S",
        help="seconds per level after which no request starts (default 120)",
    )
    parser.add_argument(
        "--timeout", type=float, default=120, metavar="S", help="seconds one request may take (default 120)"
    )
    parser.add_argument("--pregunta", default=DEFAULT_PREGUNTA, help=f"the question (default {DEFAULT_PREGUNTA!r})")
    parser.add_argument(
        "-i", "--input", action="append", default=[], metavar="NAME=VALUE",
        help=f"any other input of the predictor; max_new_tokens defaults to {DEFAULT_MAX_NEW_TOKENS} here",
    )  # fmt: skip
    parser.add_argument(
        "--retry-busy", action="store_true", help="retry HTTP 409 (all slots busy) with backoff instead of counting it"
    )
    parser.add_argument(
        "--think-time", type=float, default=0.0, metavar="S", help="seconds a user waits between requests (default 0)"
    )
    parser.add_argument(
        "--gpu-price-per-hour",
        default="gpu-t4",
        metavar="P",
        help=f"dollars per hour, or an example: {examples} (default gpu-t4)",
    )
    parser.add_argument(
        "--calls-per-user-per-day", type=float, default=20, metavar="N", help="for the cost per user (default 20)"
    )
    parser.add_argument(
        "--api-price-per-million-tokens",
        type=float,
        metavar="P",
        help="a pay-per-token API's output price, to compare with",
    )
    parser.add_argument(
        "--api-input-price-per-million-tokens",
        type=float,
        metavar="P",
        help="its input price (default: the output price)",
    )
    args = parser.parse_args(argv)
    target = parse_target(args.url)
    levels = concurrency_levels(args.users)
    price = gpu_price(args.gpu_price_per_hour)
    inputs = build_inputs(args.pregunta, args.input, load_input_types())
    for name in ("requests", "duration", "timeout", "calls_per_user_per_day"):
        if not getattr(args, name) > 0:
            option = "--" + name.replace("_", "-")
            raise bad_option(option, f"is {getattr(args, name)}.", "Give a number above 0.")
    # E4004 MissingApiToken before any request when REPLICATE_API_TOKEN is not set.
    client = None if target.is_local else make_client(ReplicateSettings.from_env())
    stopped: LoadTestError | None = None
    try:
        sweep = asyncio.run(
            run_sweep(
                target, inputs, levels, requests=args.requests, duration_s=args.duration, timeout=args.timeout,
                retry_busy=args.retry_busy, think_time_s=args.think_time, replicate_client=client,
            )
        )  # fmt: skip
    except SweepStopped as e:  # write the finished levels, then say why the rest did not run
        sweep, stopped = e.levels, e.cause
    stats = [s for s, _ in sweep]
    results = [r for _, rs in sweep for r in rs]
    report = cost_report(
        stats,
        gpu_price_per_hour=price,
        gpu_name=args.gpu_price_per_hour if args.gpu_price_per_hour in EXAMPLE_GPU_PRICES_PER_HOUR else "",
        calls_per_user_per_day=args.calls_per_user_per_day,
        api_output_price_per_million=args.api_price_per_million_tokens,
        api_input_price_per_million=args.api_input_price_per_million_tokens,
    )
    title = f"{target.address}: max_new_tokens={inputs['max_new_tokens']}, {args.requests} requests per level"
    payload = {
        "target": asdict(target),
        "inputs": inputs,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "levels": [asdict(s) for s in stats],
        "cost": None if report is None else asdict(report),
        "stopped": None if stopped is None else str(stopped),
    }
    files = write_results(args.out, payload, results) + [write_chart(stats, args.out / "latency.png", title)]
    print("wrote " + ", ".join(str(p) for p in files))
    busy = sum(s.errors.get(AT_CAPACITY, 0) for s in stats)
    if busy:
        print(
            f"{busy} requests got HTTP 409 At capacity: more users than prediction slots, and Cog does not queue. "
            "Start the server with COG_MAX_CONCURRENCY of at least the number of users, or pass --retry-busy."
        )
    if any(s.tokens_from_chunks for s in stats):
        print("Some answers had no output_token_count metric: their tokens were counted as streamed chunks.")
    print()
    print(format_cost_report(report) if report else "No successful request: no cost to report.")
    print()
    print(format_table(stats))
    if stopped is not None:
        raise stopped  # cli.main prints it and exits with 2, once the finished levels are on disk
    return 0 if any(s.ok for s in stats) else 1
