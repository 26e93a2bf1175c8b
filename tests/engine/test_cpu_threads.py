"""On the CPU only the decode thread computes with torch's threads; Scheduler.call runs work on that thread."""

from __future__ import annotations

import threading

import pytest
import torch

from llmserve.engine import threads


@pytest.fixture
def two_threads(monkeypatch):
    """As if torch had 2 intra-op threads before the first engine (so on any machine); restored after."""
    before = torch.get_num_threads()
    monkeypatch.setattr(threads, "_threads", 2)
    yield 2
    torch.set_num_threads(before)


def _in_new_thread(fn):
    out = []
    thread = threading.Thread(target=lambda: out.append(fn()))
    thread.start()
    thread.join()
    return out[0]


def test_the_decode_thread_has_torchs_threads_and_every_other_thread_one(tiny_chat_model_dir, make_engine, two_threads):
    engine = make_engine(tiny_chat_model_dir)
    assert engine.scheduler.threads == 2
    assert engine.scheduler.call(torch.get_num_threads) == 2
    # The thread that built it, and a thread started after (Cog's, a request's), compute with one: no second pool.
    assert torch.get_num_threads() == 1
    assert _in_new_thread(torch.get_num_threads) == 1


def test_a_second_engine_computes_with_one_thread_until_the_first_is_closed(
    tiny_chat_model_dir, make_engine, two_threads
):
    first = make_engine(tiny_chat_model_dir)
    second = make_engine(tiny_chat_model_dir)
    assert (first.scheduler.threads, second.scheduler.threads) == (2, 1)
    assert second.scheduler.call(torch.get_num_threads) == 1
    first.close()
    second.close()
    third = make_engine(tiny_chat_model_dir)
    assert third.scheduler.call(torch.get_num_threads) == 2


def test_the_classifiers_torch_work_beside_an_engine_gets_one_thread(tiny_chat_model_dir, make_engine, two_threads):
    engine = make_engine(tiny_chat_model_dir)
    torch.set_num_threads(2)  # as a thread that had its own setting
    assert _in_new_thread(lambda: (torch.set_num_threads(2), threads.share(), torch.get_num_threads())[-1]) == 1
    engine.close()
    # With no decode thread alive, share() leaves a thread's setting alone (the training script's features).
    assert _in_new_thread(lambda: (torch.set_num_threads(2), threads.share(), torch.get_num_threads())[-1]) == 2


def test_call_runs_on_the_decode_thread_returns_and_raises(tiny_chat_model_dir, make_engine):
    engine = make_engine(tiny_chat_model_dir)
    assert engine.scheduler.call(lambda: threading.current_thread().name) == "llmserve-decode"
    with pytest.raises(ZeroDivisionError):
        engine.scheduler.call(lambda: 1 / 0)
    assert engine.healthy
    with pytest.raises(RuntimeError, match="cannot be called from it"):
        engine.scheduler.call(lambda: engine.scheduler.call(int))
    engine.close()
    with pytest.raises(RuntimeError, match="closed"):
        engine.scheduler.call(int)


def test_the_engine_on_a_gpu_leaves_the_threads_alone(monkeypatch):
    from llmserve.engine import scheduler

    class Backend:  # no forward is run: only the thread's start matters here
        device, slots, vocab_size = torch.device("meta"), 1, 8

    claimed = []
    monkeypatch.setattr(threads, "claim", lambda: claimed.append(True) or 2)
    s = scheduler.Scheduler(Backend(), eos_token_ids=frozenset())
    s.close()
    assert claimed == [] and s.threads == torch.get_num_threads()
