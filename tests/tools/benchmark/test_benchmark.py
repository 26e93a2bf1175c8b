"""scripts/benchmark runs end to end on the tiny model: both engines, both tables, its files. No timing asserted.

It runs with the decode step compiled, as on CUDA (on CPU, inductor without CUDA graphs), so that the GPU
session's first run of this script is not also its first run of that path.
"""

from __future__ import annotations

import json
import os
import subprocess

import pytest
import torch

from tests.helpers import ROOT


def test_benchmark_writes_results_and_chart_and_prints_the_table_last(tiny_model_dir, tmp_path):
    out = tmp_path / "bench"
    env = {**os.environ, "MODEL_ID": str(tiny_model_dir), "COMPILE_CACHE_DIR": str(tmp_path / "compiled")}
    args = ["--out", str(out), "--device", "cpu", "--dtype", "float32", "--compile", "on"]
    args += ["--prompt-tokens", "16", "40"]
    args += ["--new-tokens", "6"]
    args += ["--streams", "1", "3", "--stream-prompt-tokens", "16"]
    done = subprocess.run(
        [str(ROOT / "scripts" / "benchmark"), *args], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr
    report = json.loads((out / "results.json").read_text())
    engines = [(r["engine"], r["prompt_tokens"]) for r in report["single_stream"]]
    assert engines == [
        ("transformers eager", 16),
        ("FalconRWStatic", 16),
        ("transformers eager", 40),
        ("FalconRWStatic", 40),
    ]
    assert [(c["via"], c["streams"], c["errors"]) for c in report["concurrent"]] == [
        ("Predictor.run", 1, 0),
        ("Predictor.run", 3, 0),
    ]
    # float32 on CPU (the tiny model's dtype): batched greedy answers equal the answers alone.
    assert report["agreement"]["identical_answers"] == report["agreement"]["requests"] == 3
    assert all(r["decode_tokens_per_s"] > 0 for r in report["single_stream"]) and report["setup_s"] > 0
    # The json_schema constraint's cost, alone and at the largest level.
    assert [(c["streams"], c["new_tokens"]) for c in report["constrained"]] == [(1, 6), (3, 6)]
    for c in report["constrained"]:
        assert min(c["free_ms_per_token"], c["constrained_ms_per_token"], c["free_choice_ms"]) > 0
        assert c["constrained_choice_ms"] > 0
    assert "token choice, per step" in done.stdout
    assert (
        report["environment"]["engine"]
        == "FalconRWStatic, 3 slots, compiled decode step, 2 spans (128 to 256 positions)"
    )
    # A fresh cache: the first setup compiles; the second, in a new process, reads it back.
    assert report["compile_cache_misses"] > 0 and report["setup_new_process_s"] > 0
    assert "setup() in a new process, compile cache filled" in done.stdout
    assert set(report["peak_memory_gb"]) == {"transformers eager", "engine"}
    # The targets as ratios within the run, against a baseline that cannot go negative.
    assert report["serial_prefill_ttft_p50_s"] > 0 and report["environment"]["cpu_capability"]
    for row in ("single-stream decode, engine / eager", "Predictor.run 1 stream decode rate / eager",
                "aggregate, 3 streams / 1", "TTFT p50, 3 arrivals: serial eager prefill / engine"):  # fmt: skip
        assert row in done.stdout
    assert report["environment"]["torch"] and report["environment"]["device"] == "cpu"
    assert (out / "chart.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert done.stdout.rstrip().splitlines()[-1].startswith("peak RSS, engine phase")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_gpu_check_names_its_arguments_and_refuses_without_a_gpu(tmp_path):
    script = str(ROOT / "scripts" / "gpu-check")
    wrong = subprocess.run([script, str(tmp_path), "fast"], capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and "unknown argument fast" in wrong.stderr and "usage:" in wrong.stderr
    done = subprocess.run([script, str(tmp_path), "cudagraphs"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "no CUDA GPU is visible" in done.stderr
    assert not any(tmp_path.iterdir()), "it wrote results without a GPU"


def test_the_table_is_left_aligned_column_by_column():
    from llmserve.tools.benchmark.report import format_table
    from llmserve.tools.benchmark.results import Report, SingleStream

    report = Report(environment={"device": "cpu", "dtype": "bfloat16"}, workload={}, setup_s=2.3)
    report.single_stream = [
        SingleStream("transformers eager", 128, 16, 1.0, 3.3),
        SingleStream("FalconRWStatic", 128, 16, 0.9, 4.4),
    ]
    header, decode, _ = format_table(report).splitlines()[:3]
    assert decode.index("128") == header.index("prompt") and decode.index("3.3") == header.index("transformers")
