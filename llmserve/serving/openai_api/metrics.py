"""The server's Prometheus metrics (prometheus_client), in a registry of its own: GET /metrics serves it."""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# Seconds: from a fast CPU answer to a long GPU one.
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
_TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
# How a request ended: finish reasons, and the refusals and failures that have none.
OUTCOMES = ("stop", "length", "content_filter", "invalid", "blocked", "overloaded", "error", "canceled")


class Metrics:
    """Requests by outcome, tokens, latency and time to first token, the engine's load, moderation blocks."""

    def __init__(self, *, slots: int, slots_in_use: Callable[[], int], queue_depth: Callable[[], int]) -> None:
        self.registry = registry = CollectorRegistry()
        self.requests = Counter(
            "llmserve_requests", "Chat completion requests, by outcome", ["outcome"], registry=registry
        )
        for outcome in OUTCOMES:
            self.requests.labels(outcome)
        self.input_tokens = Counter("llmserve_input_tokens", "Prompt tokens of answered requests", registry=registry)
        self.output_tokens = Counter("llmserve_output_tokens", "Generated tokens", registry=registry)
        self.latency = Histogram(
            "llmserve_request_duration_seconds",
            "From the request's arrival to its last token",
            buckets=_LATENCY_BUCKETS,
            registry=registry,
        )
        self.ttft = Histogram(
            "llmserve_time_to_first_token_seconds",
            "From handing the prompt to the engine to its first token",
            buckets=_TTFT_BUCKETS,
            registry=registry,
        )
        Gauge("llmserve_slots", "The engine's decode slots", registry=registry).set(slots)
        Gauge("llmserve_slots_in_use", "Requests holding a decode slot", registry=registry).set_function(slots_in_use)
        Gauge("llmserve_queue_depth", "Requests waiting for a slot", registry=registry).set_function(queue_depth)
        self.moderation_blocks = Counter(
            "llmserve_moderation_blocks", "Requests and answers stopped by moderation", ["stage"], registry=registry
        )
        for stage in ("input", "output"):
            self.moderation_blocks.labels(stage)

    def render(self) -> bytes:
        return generate_latest(self.registry)
