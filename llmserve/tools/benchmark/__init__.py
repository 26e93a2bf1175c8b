"""scripts/benchmark and scripts/measure_cpu_dtype: speed and memory, measured against a baseline in the same run."""
