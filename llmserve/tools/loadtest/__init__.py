"""scripts/loadtest: latency, throughput, errors and cost of concurrent streamed predictions."""
