"""What serving costs, from a load test's measured throughput and an hourly GPU price (no torch, no I/O).

The instance is assumed billed by the hour and kept busy at the measured throughput (full utilisation).
"""

from __future__ import annotations

from dataclasses import dataclass

# An instance that idles half the time costs twice as much per request; `break_even_utilisation` says how busy it
# must be to cost no more than a pay-per-token API.

SECONDS_PER_HOUR = 3600
SECONDS_PER_DAY = 86_400
TOKENS_PER_PRICE_UNIT = 1_000_000  # API prices are quoted per million tokens

# Examples only, not defaults: Replicate's per-second hardware prices times 3600, as listed on
# replicate.com/pricing (read 2026-11 from a stored copy of that page; a third-party snapshot dated
# 2026-03-09 shows the same T4 and A100 prices). Prices change: check the page before use.
EXAMPLE_GPU_PRICES_PER_HOUR = {
    "gpu-t4": 0.81,  # Nvidia T4 16 GB, $0.000225/s
    "gpu-l40s": 3.51,  # Nvidia L40S 48 GB, $0.000975/s
    "gpu-a100-large": 5.04,  # Nvidia A100 80 GB, $0.001400/s
    "gpu-h100": 5.49,  # Nvidia H100 80 GB, $0.001525/s
}


@dataclass(frozen=True)
class Throughput:
    """What one instance sustained in a load test."""

    requests_per_second: float  # successful requests over the test's wall time
    output_tokens_per_second: float  # their generated tokens over the same wall time
    input_tokens_per_request: float  # mean prompt tokens of a successful request
    output_tokens_per_request: float  # mean generated tokens of a successful request


@dataclass(frozen=True)
class Costs:
    """Dollars, by the units the report compares."""

    per_request: float
    per_1k_requests: float
    per_million_output_tokens: float  # everything a request costs (prompt included) over its output tokens
    per_user_per_day: float


def gpu_costs(*, price_per_hour: float, throughput: Throughput, calls_per_user_per_day: float) -> Costs:
    """An hourly-billed instance at full utilisation: price per second over what it serves per second."""
    _check_non_negative("price_per_hour", price_per_hour)
    _check_non_negative("calls_per_user_per_day", calls_per_user_per_day)
    for name in ("requests_per_second", "output_tokens_per_second"):
        if getattr(throughput, name) <= 0:
            raise ValueError(f"{name} is {getattr(throughput, name)}: a cost needs a measured throughput above 0.")
    price_per_second = price_per_hour / SECONDS_PER_HOUR
    per_request = price_per_second / throughput.requests_per_second
    return Costs(
        per_request=per_request,
        per_1k_requests=1000 * per_request,
        per_million_output_tokens=TOKENS_PER_PRICE_UNIT * price_per_second / throughput.output_tokens_per_second,
        per_user_per_day=calls_per_user_per_day * per_request,
    )


def api_costs(
    *,
    input_price_per_million: float,
    output_price_per_million: float,
    throughput: Throughput,
    calls_per_user_per_day: float,
) -> Costs:
    """A pay-per-token API answering the same requests (same prompt and answer lengths)."""
    _check_non_negative("input_price_per_million", input_price_per_million)
    _check_non_negative("output_price_per_million", output_price_per_million)
    _check_non_negative("calls_per_user_per_day", calls_per_user_per_day)
    if throughput.output_tokens_per_request <= 0:
        raise ValueError("output_tokens_per_request is 0: a cost per output token needs answers with tokens.")
    per_request = (
        throughput.input_tokens_per_request * input_price_per_million
        + throughput.output_tokens_per_request * output_price_per_million
    ) / TOKENS_PER_PRICE_UNIT
    return Costs(
        per_request=per_request,
        per_1k_requests=1000 * per_request,
        per_million_output_tokens=TOKENS_PER_PRICE_UNIT * per_request / throughput.output_tokens_per_request,
        per_user_per_day=calls_per_user_per_day * per_request,
    )


def break_even_utilisation(gpu: Costs, api: Costs) -> float:
    """The fraction of the time the instance must be busy to cost what the API costs (above 1: never)."""
    if api.per_request <= 0:
        raise ValueError("the API price is 0 per request: no utilisation breaks even with a free API.")
    return gpu.per_request / api.per_request


def users_per_instance(throughput: Throughput, calls_per_user_per_day: float) -> float:
    """Users one instance serves a day if their calls were spread evenly over the 24 hours."""
    if calls_per_user_per_day <= 0:
        raise ValueError(f"calls_per_user_per_day is {calls_per_user_per_day}: it must be above 0.")
    return throughput.requests_per_second * SECONDS_PER_DAY / calls_per_user_per_day


def _check_non_negative(name: str, value: float) -> None:
    if value < 0:
        raise ValueError(f"{name} is {value}: it must be 0 or more.")
