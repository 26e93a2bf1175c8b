"""Many requests at once: same greedy tokens as alone, joins between steps, cancel frees the slot."""

from __future__ import annotations

import threading

import pytest
import torch

from llmserve.engine.batched import BatchedSlots
from llmserve.engine.falcon import FalconRWStatic
from llmserve.engine.generic import TransformersSlots
from llmserve.engine.model import Engine, decode_step_mode
from llmserve.engine.scheduler import bucket
from llmserve.errors import SetupError
from tests.helpers.engine import Recorder, finished, has_tokens, params, reference_greedy


@pytest.fixture(scope="module", params=["falcon", "llama", "llama-per-request"])
def model(request, tiny_model_dir, tiny_chat_model_dir):
    path = tiny_model_dir if request.param == "falcon" else tiny_chat_model_dir
    kind = "transformers" if request.param == "llama-per-request" else "auto"
    engine = Engine.load(path, device=torch.device("cpu"), dtype=torch.float32, slots=4, kind=kind)
    yield path, engine
    engine.close()


def test_each_architecture_gets_its_path(tiny_model_dir, tiny_chat_model_dir, make_engine):
    cpu = torch.device("cpu")
    fast = make_engine(tiny_model_dir, slots=2)
    generic = make_engine(tiny_model_dir, kind="transformers")
    llama = make_engine(tiny_chat_model_dir)
    per_request = make_engine(tiny_chat_model_dir, kind="transformers")
    assert isinstance(fast.backend, FalconRWStatic) and fast.backend.slots == 2
    assert isinstance(generic.backend, TransformersSlots)
    assert isinstance(llama.backend, BatchedSlots)
    assert isinstance(per_request.backend, TransformersSlots)
    with pytest.raises(SetupError) as info:
        Engine.load(tiny_chat_model_dir, device=cpu, dtype=torch.float32, kind="fast")
    assert info.value.field == "ENGINE" and "ENGINE=transformers" in str(info.value)


def test_compile_on_a_model_without_the_fast_path_says_it_runs_uncompiled(tiny_chat_model_dir, caplog, make_engine):
    engine = make_engine(tiny_chat_model_dir, compile="on")
    engine.close()
    assert isinstance(engine.backend, BatchedSlots)
    assert "COMPILE=on applies to the fast Falcon-RW path only" in caplog.text


def test_cuda_graphs_without_a_gpu_is_a_setup_error_naming_compile(tiny_model_dir):
    with pytest.raises(SetupError) as info:
        Engine.load(tiny_model_dir, device=torch.device("cpu"), dtype=torch.float32, compile="cudagraphs")
    assert info.value.field == "COMPILE" and "need a CUDA GPU" in str(info.value) and "COMPILE=on" in str(info.value)


@pytest.mark.parametrize(
    ("compile", "device", "step"),
    [
        ("auto", "cuda", "cudagraphs"),  # no compiler at setup: tracing alone exceeds the 15 s setup target
        ("auto", "cpu", "eager"),  # compiling did not pay on 2 cores (docs/benchmarks.md)
        ("on", "cuda", "compiled"),
        ("on", "cpu", "compiled"),
        ("off", "cuda", "eager"),
        ("cudagraphs", "cuda", "cudagraphs"),
    ],
)
def test_compile_picks_the_decode_step(compile, device, step):
    assert decode_step_mode(compile, torch.device(device)) == step


def test_requests_joining_at_different_steps_get_their_solo_greedy_tokens(model):
    path, engine = model
    texts = ["Question: What is the capital of France?\nAnswer:", "Hola", "¿Qué es el aprendizaje automático? Dime."]
    lengths = [20, 9, 14]
    prompts = [engine.encode(t) for t in texts]
    recorders = [Recorder() for _ in texts]
    submit = [
        lambda i=i: engine.scheduler.submit(
            prompts[i], params(max_new_tokens=lengths[i], min_new_tokens=lengths[i]), recorders[i]
        )
        for i in range(3)
    ]
    submit[0]()
    recorders[0].wait(has_tokens(3))  # the second joins a batch already 3 steps in
    submit[1]()
    recorders[1].wait(has_tokens(2))
    submit[2]()
    for r in recorders:
        r.wait(finished)
    for prompt, n, r in zip(prompts, lengths, recorders, strict=True):
        assert r.outcome is None
        assert r.tokens == reference_greedy(path, prompt, n)


def test_more_requests_than_slots_wait_for_a_free_slot(model):
    path, engine = model
    prompts = [engine.encode(f"Pregunta número {i}: ¿qué hora es?") for i in range(6)]
    recorders = [Recorder() for _ in prompts]
    for prompt, r in zip(prompts, recorders, strict=True):
        engine.scheduler.submit(prompt, params(max_new_tokens=6, min_new_tokens=6), r)
    for r in recorders:
        r.wait(finished)
    assert [r.tokens for r in recorders] == [reference_greedy(path, p, 6) for p in prompts]
    assert engine.scheduler.active() == 0


def test_a_cancelled_request_frees_its_slot_at_once(tiny_model_dir, make_engine):
    engine = make_engine(tiny_model_dir, slots=1)
    long, other = Recorder(), Recorder()
    job = engine.scheduler.submit(engine.encode("Hola"), params(max_new_tokens=200, min_new_tokens=200), long)
    long.wait(has_tokens(2))
    engine.scheduler.cancel(job)
    long.wait(finished)
    stopped_at = len(long.tokens)
    # With one slot, this request can only run once the cancelled one has left it.
    engine.scheduler.submit(engine.encode("Adiós"), params(max_new_tokens=5, min_new_tokens=5), other)
    other.wait(finished)
    assert len(other.tokens) == 5 and other.outcome is None
    assert stopped_at < 200 and len(long.tokens) == stopped_at and long.outcome is None
    assert engine.scheduler.active() == 0


def test_closing_a_generate_iterator_cancels_its_request(tiny_model_dir, make_engine):
    engine = make_engine(tiny_model_dir, slots=1)
    tokens = engine.generate(engine.encode("Hola"), params(max_new_tokens=200, min_new_tokens=200))
    assert len([next(tokens) for _ in range(3)]) == 3
    tokens.close()
    after = Recorder()
    engine.scheduler.submit(engine.encode("Hola"), params(max_new_tokens=3, min_new_tokens=3), after)
    after.wait(finished)
    assert len(after.tokens) == 3


def test_a_seeded_sample_does_not_depend_on_the_batch(model):
    _, engine = model
    sampled = params(temperature=1.0, top_p=0.95, top_k=40, repetition_penalty=1.1, seed=1234)
    sampled = params(**{**sampled.__dict__, "max_new_tokens": 12, "min_new_tokens": 12})
    prompt = engine.encode("Cuéntame algo")
    alone = list(engine.generate(prompt, sampled))
    neighbours = [Recorder() for _ in range(2)]
    for i, r in enumerate(neighbours):
        engine.scheduler.submit(
            engine.encode("Otra pregunta" * (i + 1)), params(max_new_tokens=30, min_new_tokens=30), r
        )
    in_batch = list(engine.generate(prompt, sampled))
    for r in neighbours:
        r.wait(finished)
    assert in_batch == alone
    other_seed = list(engine.generate(prompt, params(**{**sampled.__dict__, "seed": 99})))
    assert other_seed != alone


def test_batch_sizes_are_powers_of_two_up_to_the_slots():
    assert [bucket(n, 32) for n in (1, 2, 3, 5, 8, 9, 17, 32)] == [1, 2, 4, 8, 8, 16, 32, 32]
    assert bucket(5, 6) == 6


def test_bfloat16_on_cpu_matches_transformers_greedy(tiny_model_dir, make_engine):
    """The bf16 CPU path (matrix-vector kernels for one row) still picks transformers' greedy tokens."""
    from transformers import AutoModelForCausalLM

    engine = make_engine(tiny_model_dir, dtype=torch.bfloat16, slots=2)
    assert engine.backend._gemv
    prompt = engine.encode("Question: What is the capital of France?\nAnswer:")
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.bfloat16).eval()
    with torch.inference_mode():
        out = model.generate(torch.tensor([prompt]), max_new_tokens=16, min_new_tokens=16, do_sample=False)
    assert list(engine.generate(prompt, params(max_new_tokens=16, min_new_tokens=16))) == out[0, len(prompt) :].tolist()


def test_the_pipelined_loop_gives_the_same_tokens_and_frees_slots(tiny_model_dir, make_engine):
    """The CUDA loop (hand out step n after launching step n+1), run on the CPU: late finishes, slot reuse."""
    from llmserve.engine.scheduler import Scheduler

    engine = make_engine(tiny_model_dir, slots=2)
    engine.scheduler.close()
    scheduler = Scheduler(engine.backend, eos_token_ids=engine.eos_token_ids, pipelined=True)
    try:
        texts = ["Hola", "Question: What is the capital of France?\nAnswer:", "¿Qué es el aprendizaje automático?"]
        lengths = [5, 12, 9]  # the first ends early; the third waits for its slot
        prompts = [engine.encode(t) for t in texts]
        recorders = [Recorder() for _ in texts]
        for prompt, n, r in zip(prompts, lengths, recorders, strict=True):
            scheduler.submit(prompt, params(max_new_tokens=n, min_new_tokens=n), r)
        for r in recorders:
            r.wait(finished)
        for prompt, n, r in zip(prompts, lengths, recorders, strict=True):
            assert r.outcome is None and r.tokens == reference_greedy(tiny_model_dir, prompt, n)
        cancelled = Recorder()
        job = scheduler.submit(prompts[0], params(max_new_tokens=200, min_new_tokens=200), cancelled)
        cancelled.wait(has_tokens(2))
        scheduler.cancel(job)
        cancelled.wait(finished)
        assert len(cancelled.tokens) < 200 and scheduler.active() == 0
    finally:
        scheduler.close()


def test_a_failing_step_ends_the_running_requests_and_the_engine_goes_on(tiny_model_dir, monkeypatch, make_engine):
    engine = make_engine(tiny_model_dir, slots=2)
    decode = engine.backend.decode
    calls = {"n": 0}

    def fails_once(tokens, live):
        calls["n"] += 1
        if calls["n"] == 3:
            raise RuntimeError("CUDA error: an illegal memory access was encountered")
        return decode(tokens, live)

    monkeypatch.setattr(engine.backend, "decode", fails_once)
    hit = Recorder()
    engine.scheduler.submit(engine.encode("Hola"), params(max_new_tokens=20, min_new_tokens=20), hit)
    hit.wait(finished)
    assert isinstance(hit.outcome, RuntimeError) and "illegal memory access" in str(hit.outcome)
    after = Recorder()
    engine.scheduler.submit(engine.encode("Hola"), params(max_new_tokens=5, min_new_tokens=5), after)
    after.wait(finished)
    assert after.outcome is None and len(after.tokens) == 5 and engine.scheduler.active() == 0


def test_the_backend_does_all_its_work_on_the_decode_thread(tiny_model_dir, monkeypatch, make_engine):
    """Warm-up included: torch.compile's CUDA graphs belong to the thread that recorded them (pytorch#123177)."""
    engine = make_engine(tiny_model_dir, slots=2)
    threads: dict[str, set[str]] = {}
    for name in ("warm_up", "prefill", "decode", "release"):
        method = getattr(engine.backend, name)

        def on_thread(*args, _name=name, _method=method):
            threads.setdefault(_name, set()).add(threading.current_thread().name)
            return _method(*args)

        monkeypatch.setattr(engine.backend, name, on_thread)
    engine.warm_up()
    assert list(engine.generate(engine.encode("Hola"), params(max_new_tokens=3, min_new_tokens=3)))
    assert threads == dict.fromkeys(("warm_up", "prefill", "decode", "release"), {"llmserve-decode"})


def test_warm_up_waits_for_running_requests_in_the_pipelined_loop(tiny_model_dir, monkeypatch, make_engine):
    """A warm-up runs only when no request holds a slot: requests already running finish first, uninterrupted.

    The pipelined (CUDA) loop, run on the CPU, still has the running requests' last step in flight when they end.
    """
    from llmserve.engine.scheduler import Scheduler

    engine = make_engine(tiny_model_dir, slots=2)
    engine.scheduler.close()
    scheduler = Scheduler(engine.backend, eos_token_ids=engine.eos_token_ids, pipelined=True)
    running = Recorder()
    seen: list[tuple[int, bool]] = []  # (requests holding a slot, whether the running one has ended) at warm-up
    warm_up = engine.backend.warm_up

    def noting_warm_up(batch_sizes):
        seen.append((scheduler.active(), running.done))
        warm_up(batch_sizes)

    monkeypatch.setattr(engine.backend, "warm_up", noting_warm_up)
    try:
        scheduler.submit(engine.encode("Hola"), params(max_new_tokens=60, min_new_tokens=60), running)
        running.wait(has_tokens(1))
        scheduler.warm_up()
        assert seen == [(0, True)]
        assert running.outcome is None and len(running.tokens) == 60
        after = Recorder()  # right after a request ends, its last step may still be in flight
        scheduler.submit(engine.encode("Hola"), params(max_new_tokens=3, min_new_tokens=3), after)
        after.wait(finished)
        scheduler.warm_up()
        assert seen[-1] == (0, True) and after.outcome is None and len(after.tokens) == 3
    finally:
        scheduler.close()


def test_a_warm_up_failure_reaches_the_caller_and_the_engine_goes_on(tiny_model_dir, monkeypatch, make_engine):
    engine = make_engine(tiny_model_dir, slots=2)

    def broken(batch_sizes):
        raise RuntimeError("CUDA error: out of memory")

    monkeypatch.setattr(engine.backend, "warm_up", broken)
    with pytest.raises(RuntimeError, match="out of memory"):
        engine.warm_up()
    assert len(list(engine.generate(engine.encode("Hola"), params(max_new_tokens=4, min_new_tokens=4)))) == 4
    # From the decode thread itself (a sink), warm_up() would wait for itself.
    errors: list[BaseException] = []

    def sink(event):
        try:
            engine.warm_up()
        except RuntimeError as e:
            errors.append(e)

    done = Recorder()
    engine.scheduler.submit(engine.encode("Hola"), params(max_new_tokens=1, min_new_tokens=1), sink)
    engine.scheduler.submit(engine.encode("Hola"), params(max_new_tokens=1, min_new_tokens=1), done)
    done.wait(finished)
    assert errors and all("cannot be called from it" in str(e) for e in errors)
    engine.close()
    with pytest.raises(RuntimeError, match="closed"):
        engine.warm_up()
