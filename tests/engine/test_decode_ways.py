"""warm_up on a CPU: each batch size's decode step runs the way it timed fastest (batched and Falcon-RW paths)."""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModelForCausalLM

from llmserve.engine import steptiming
from llmserve.engine.batched import BatchedSlots
from llmserve.engine.falcon import FalconRWStatic


@pytest.fixture(scope="module")
def bf16_model(tiny_chat_model_dir):
    return AutoModelForCausalLM.from_pretrained(tiny_chat_model_dir, dtype=torch.bfloat16).eval()


class _Clock:
    """time.perf_counter for steptiming.py: each decode step advances it by what `costs` says for its way and size."""

    def __init__(self, costs):
        self.now, self.costs, self.timed = 0.0, costs, []

    def perf_counter(self) -> float:
        return self.now

    def step(self, backend, model, onednn, rows):
        way = "float32 copy" if model is not backend.model else "oneDNN" if onednn else "ATen"
        self.timed.append((rows, way))
        self.now += self.costs[way](rows)


def _timed(backend, monkeypatch, costs):
    clock = _Clock(costs)
    decode = backend._decode

    def timed_decode(model, onednn, tokens, live):
        clock.step(backend, model, onednn, len(live))
        return decode(model, onednn, tokens, live)

    monkeypatch.setattr(steptiming, "time", clock)
    monkeypatch.setattr(backend, "_decode", timed_decode)
    return clock


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN")
def test_each_size_gets_the_way_it_timed_fastest_and_aten_is_not_timed_after_it_lost(bf16_model, monkeypatch):
    prefill = AutoModelForCausalLM.from_pretrained(bf16_model.name_or_path, dtype=torch.float32).eval()
    backend = BatchedSlots(bf16_model, slots=8, max_length=256, prefill_model=prefill)
    # As measured on 2 cores of an AVX2 EPYC (docs/engine.md): ATen wins alone, oneDNN from 4 rows, float32 at 8.
    costs = {"ATen": lambda r: 10.0 * r, "oneDNN": lambda r: 20.0 + 2.0 * r, "float32 copy": lambda r: 30.0}
    clock = _timed(backend, monkeypatch, costs)
    backend.warm_up([1, 2, 4, 8])
    assert {rows: backend._ways[rows] for rows in (1, 2, 4, 8)} == {
        1: (bf16_model, False),
        2: (bf16_model, False),
        4: (bf16_model, True),
        8: (prefill, True),
    }
    assert (8, "ATen") not in clock.timed and (4, "ATen") in clock.timed
    assert backend._lengths == [0] * 8 and torch.backends.mkldnn.enabled
    # A step then runs as chosen, and leaves oneDNN as it found it.
    clock.timed.clear()
    backend.prefill([(0, [5, 6, 7])])
    backend.decode(torch.zeros(8, dtype=torch.int64), [True])
    assert clock.timed == [(1, "ATen")] and torch.backends.mkldnn.enabled


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN")
def test_without_a_float32_copy_nothing_is_timed_once_aten_lost(bf16_model, monkeypatch):
    backend = BatchedSlots(bf16_model, slots=8, max_length=256)
    costs = {"ATen": lambda r: 10.0 * r, "oneDNN": lambda r: 15.0 + 2.0 * r}  # ATen wins at 1 row, loses at 2
    clock = _timed(backend, monkeypatch, costs)
    backend.warm_up([1, 2, 4, 8])
    assert {rows for rows, _ in clock.timed} == {1, 2}
    onednn, aten = (bf16_model, True), (bf16_model, False)
    assert backend._ways == {1: aten, 2: onednn, 4: onednn, 8: onednn}


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN")
def test_aten_and_onednn_steps_give_the_same_logits_within_bf16_rounding(bf16_model):
    backend = BatchedSlots(bf16_model, slots=2, max_length=256)
    out = {}
    for onednn in (True, False):
        backend.prefill([(0, [3, 14, 15, 92, 65])])
        with torch.inference_mode():
            out[onednn] = backend._decode(backend.model, onednn, torch.tensor([35, 0]), [True])[0]
        backend.release(0)
    scale = out[True].abs().max()
    assert (out[True] - out[False]).abs().max() <= 6e-2 * scale


def test_float32_weights_and_gpus_have_nothing_to_choose(tiny_chat_model_dir, monkeypatch):
    model = AutoModelForCausalLM.from_pretrained(tiny_chat_model_dir, dtype=torch.float32).eval()
    backend = BatchedSlots(model, slots=2, max_length=256)
    clock = _timed(backend, monkeypatch, {})
    backend.warm_up([1, 2])
    assert clock.timed == [] and backend._ways == {}


def test_a_step_that_fails_with_onednn_off_turns_it_back_on():
    with pytest.raises(ZeroDivisionError), steptiming.onednn(False):
        assert not torch.backends.mkldnn.enabled
        raise ZeroDivisionError
    assert torch.backends.mkldnn.enabled


@pytest.mark.skipif(not torch.backends.mkldnn.is_available(), reason="this torch has no oneDNN")
def test_the_falcon_path_runs_aten_kernels_for_the_sizes_they_won(tiny_model_dir, monkeypatch):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).eval()
    backend = FalconRWStatic(model, slots=4, max_length=256)
    clock, seen = _Clock({}), []
    step = backend._decode

    def timed_step(tokens, rows, span):
        seen.append((rows, torch.backends.mkldnn.enabled))
        # As on 2 cores of the AVX512-BF16 EPYC (docs/engine.md): ATen's kernels win for one row only.
        clock.now += {(1, True): 177, (1, False): 84, (2, True): 127, (2, False): 186}[rows, seen[-1][1]]
        return step(tokens, rows, span)

    monkeypatch.setattr(steptiming, "time", clock)
    monkeypatch.setattr(backend, "_decode", timed_step)
    backend.warm_up([1, 2, 4])
    assert backend._aten_rows == {1}
    assert {rows for rows, _ in seen} == {1, 2}  # not timed past the size where oneDNN won
    assert backend._lengths == [0] * 4 and torch.backends.mkldnn.enabled
    seen.clear()
    for rows in (1, 2):
        backend.prefill([(0, [5, 6, 7])])
        backend.decode(torch.zeros(rows, dtype=torch.int64), [True] + [False] * (rows - 1))
        backend.release(0)
    assert seen == [(1, False), (2, True)] and torch.backends.mkldnn.enabled


def test_two_threads_steps_with_onednn_off_leave_it_on_only_when_both_are_done():
    first, second = steptiming.onednn(False), steptiming.onednn(False)
    first.__enter__()
    second.__enter__()
    first.__exit__(None, None, None)
    assert not torch.backends.mkldnn.enabled  # the other step still runs
    second.__exit__(None, None, None)
    assert torch.backends.mkldnn.enabled


def test_onednn_switched_off_by_the_user_stays_off(monkeypatch):
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    with steptiming.onednn(True):
        assert not torch.backends.mkldnn.enabled
    with steptiming.onednn(False):
        pass
    assert not torch.backends.mkldnn.enabled
