"""Cost arithmetic against values worked out by hand."""

from __future__ import annotations

import pytest

from llmserve.tools.loadtest.cost import (
    EXAMPLE_GPU_PRICES_PER_HOUR,
    Throughput,
    api_costs,
    break_even_utilisation,
    gpu_costs,
    users_per_instance,
)

# 2 req/s, 100 output tok/s: 50 output tokens and 100 prompt tokens per request.
MEASURED = Throughput(
    requests_per_second=2.0, output_tokens_per_second=100.0, input_tokens_per_request=100, output_tokens_per_request=50
)


def test_gpu_costs_at_full_utilisation():
    # $3.60/h = $0.001/s; at 2 req/s one request costs $0.0005.
    costs = gpu_costs(price_per_hour=3.6, throughput=MEASURED, calls_per_user_per_day=20)
    assert costs.per_request == pytest.approx(0.0005)
    assert costs.per_1k_requests == pytest.approx(0.5)
    assert costs.per_million_output_tokens == pytest.approx(10.0)  # 1e6 tokens at 100 tok/s = 10,000 s * $0.001
    assert costs.per_user_per_day == pytest.approx(0.01)  # 20 calls * $0.0005


def test_gpu_costs_of_a_t4_example():
    # $0.81/h at 2 req/s: 0.81 / 7200 per request.
    costs = gpu_costs(
        price_per_hour=EXAMPLE_GPU_PRICES_PER_HOUR["gpu-t4"], throughput=MEASURED, calls_per_user_per_day=1
    )
    assert costs.per_1k_requests == pytest.approx(0.1125)
    assert costs.per_million_output_tokens == pytest.approx(2.25)


def test_api_costs_count_input_and_output_tokens():
    # 100 input tokens at $1/M + 50 output tokens at $2/M = $0.0002 per request.
    costs = api_costs(
        input_price_per_million=1.0, output_price_per_million=2.0, throughput=MEASURED, calls_per_user_per_day=20
    )
    assert costs.per_request == pytest.approx(0.0002)
    assert costs.per_1k_requests == pytest.approx(0.2)
    assert costs.per_million_output_tokens == pytest.approx(4.0)  # $0.0002 per 50 output tokens
    assert costs.per_user_per_day == pytest.approx(0.004)


def test_break_even_and_users_per_instance():
    gpu = gpu_costs(price_per_hour=3.6, throughput=MEASURED, calls_per_user_per_day=20)
    api = api_costs(
        input_price_per_million=1.0, output_price_per_million=2.0, throughput=MEASURED, calls_per_user_per_day=20
    )
    assert break_even_utilisation(gpu, api) == pytest.approx(2.5)  # $0.0005 against $0.0002: dearer even when busy
    assert users_per_instance(MEASURED, 20) == pytest.approx(8640)  # 2 req/s * 86,400 s / 20 calls


@pytest.mark.parametrize(
    "throughput, price, message",
    [
        (Throughput(0.0, 100.0, 10, 10), 1.0, "requests_per_second is 0.0"),
        (Throughput(1.0, 0.0, 10, 10), 1.0, "output_tokens_per_second is 0.0"),
        (MEASURED, -1.0, "price_per_hour is -1.0"),
    ],
)
def test_gpu_costs_refuse_what_cannot_be_priced(throughput, price, message):
    with pytest.raises(ValueError, match=message):
        gpu_costs(price_per_hour=price, throughput=throughput, calls_per_user_per_day=1)


def test_a_free_api_has_no_break_even():
    gpu = gpu_costs(price_per_hour=1.0, throughput=MEASURED, calls_per_user_per_day=1)
    free = api_costs(
        input_price_per_million=0, output_price_per_million=0, throughput=MEASURED, calls_per_user_per_day=1
    )
    with pytest.raises(ValueError, match="free API"):
        break_even_utilisation(gpu, free)
