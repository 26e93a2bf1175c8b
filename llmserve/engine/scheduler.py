"""Continuous batching in fixed slots: requests join the running batch between decode steps, on one thread.

Each loop: free slots for arrivals, one prefill forward (prefill.plan), one decode step for every slot past its prompt.
"""

from __future__ import annotations

import atexit
import logging
import threading
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from ..errors import EngineBroken
from ..request.params import SamplingParams
from . import prefill, threads
from .grammar import Grammars
from .prefill import batch_sizes, bucket
from .sampling import SlotSampler

logger = logging.getLogger(__name__)

# What a sink receives: a token id, None when the request is over, or the exception that ended it.
Event = int | BaseException | None
Sink = Callable[[Event], None]


class QueueFull(RuntimeError):
    """As many requests run and wait as the engine admits (2 x slots): try again once one has ended."""


class Backend(Protocol):
    """A model that decodes in fixed slots (batched.BatchedSlots, falcon.FalconRWStatic, generic.TransformersSlots)."""

    # prefill: for each (slot, ids), run ids after what the slot holds; (chunks, vocab) float32 logits of each last id.
    # decode: one token for each live row among the first len(live) slots; (len(live), vocab) float32 logits.

    slots: int
    vocab_size: int
    device: torch.device
    chunked_prefill: bool  # whether a prompt may be prefilled a chunk at a time
    batched_prefill: bool  # whether prefill runs its rows in one forward (else one after another)

    def prefill(self, chunks: Sequence[tuple[int, Sequence[int]]]) -> torch.Tensor: ...
    def decode(self, tokens: torch.Tensor, live: Sequence[bool]) -> torch.Tensor: ...
    def release(self, slot: int) -> None: ...
    def warm_up(self, batch_sizes: Sequence[int]) -> None: ...


@dataclass(eq=False)
class Job:
    """One request's place in the scheduler."""

    prompt_ids: list[int]
    params: SamplingParams
    sink: Sink
    generated: int = 0
    prefilled: int = 0  # prompt tokens in the slot's cache
    slot: int | None = None
    done: bool = False
    cancelled: bool = field(default=False, repr=False)

    @property
    def prefilling(self) -> bool:
        return self.prefilled < len(self.prompt_ids)


@dataclass
class _Step:
    """A launched decode step whose tokens have not been handed out yet."""

    tokens: torch.Tensor  # on the CPU once `ready` has fired
    ready: torch.cuda.Event | None
    jobs: list[Job]


class Scheduler:
    """Owns the backend on its decode thread; on CUDA it launches step n+1 before it reads step n's tokens back."""

    # The warm-up runs on the decode thread too: torch.compile keeps the CUDA graphs it records per host thread (in
    # torch 2.11 a step that recorded them in one thread fails in another: pytorch/pytorch#123177; 2.13 re-records).

    def __init__(
        self,
        backend: Backend,
        *,
        eos_token_ids: frozenset[int],
        pipelined: bool | None = None,
        prefill_tokens: int | None = None,
        grammars: Grammars | None = None,
    ) -> None:
        """`pipelined` (default: on CUDA) hands out step n's tokens after launching step n+1. `prefill_tokens` (default:
        prefill.PREFILL_TOKENS for the device) bounds one prefill forward. `grammars`: for json_schema requests."""
        self.backend = backend
        self.prefill_tokens = prefill_tokens or prefill.PREFILL_TOKENS[backend.device.type == "cuda"]
        self.eos_token_ids = eos_token_ids
        self.sampler = SlotSampler(backend.slots, backend.vocab_size, eos_token_ids, backend.device, grammars)
        self._last_tokens = torch.zeros(backend.slots, dtype=torch.int64, device=backend.device)
        self._pipelined = backend.device.type == "cuda" if pipelined is None else pipelined
        self._slots: list[Job | None] = [None] * backend.slots
        self._pending: deque[Job] = deque()
        self._prefilling: deque[Job] = deque()  # holding a slot, prompt not all in the cache yet: arrival order
        # Admission matches the slots: as many requests may wait as may run (Cog gives each slot one prediction;
        # a slot just freed on Cog's side may not be free here for one more step).
        self.max_admitted = 2 * backend.slots
        self.fault: EngineBroken | None = None  # set once the device failed: nothing more is admitted
        self._calls: deque[tuple[Callable[[], Any], Future[Any]]] = deque()  # call(): run on this thread, idle
        self._wake = threading.Condition()
        self._closing = False
        self._on_cpu = backend.device.type == "cpu"
        self.threads = 0  # torch's intra-op threads the decode thread computes with (CPU; threads.claim)
        started = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(started,), name="llmserve-decode", daemon=True)
        self._thread.start()
        started.wait()
        if self._on_cpu:  # after the claim, which set torch's default for new threads back to all of them
            threads.confine()
        # A daemon thread killed inside a torch kernel at interpreter exit aborts the process.
        atexit.register(self.close)

    @property
    def slots(self) -> int:
        return self.backend.slots

    def submit(self, prompt_ids: Sequence[int], params: SamplingParams, sink: Sink) -> Job:
        """Queue a request; its tokens, then None (or an exception), arrive through `sink` on the decode thread."""
        job = Job(prompt_ids=list(prompt_ids), params=params, sink=sink)
        with self._wake:
            if self.fault is not None:
                raise self.fault
            if self._closing:
                raise RuntimeError("the scheduler is closed")
            if len(self._pending) + self.active() >= self.max_admitted:
                raise QueueFull(
                    f"the engine's queue is full: {self.active()} requests run and {len(self._pending)} wait "
                    f"for {self.slots} slots"
                )
            self._pending.append(job)
            self._wake.notify()
        return job

    def warm_up(self) -> None:
        """Compile or capture the backend's decode step on the decode thread, the one that replays it; wait for it.

        Meant for setup: requests already running finish first, new ones wait (its steps write only free slots).
        """
        self.call(lambda: self.backend.warm_up(batch_sizes(self.slots)))

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run `fn` on the decode thread, once no request runs (new ones wait), and return what it returns: the
        backend's warm-up, and torch work that should share the decode thread's CPU threads (the benchmark's eager)."""
        if threading.current_thread() is self._thread:
            raise RuntimeError("call() waits for the decode thread, so it cannot be called from it (from a sink)")
        done: Future[Any] = Future()
        with self._wake:
            if self._closing:
                raise RuntimeError("the scheduler is closed")
            self._calls.append((fn, done))
            self._wake.notify()
        return done.result()

    def cancel(self, job: Job) -> None:
        """Stop a request: it gets no more tokens and its slot is freed before the next step."""
        with self._wake:
            job.cancelled = True
            self._wake.notify()

    def close(self) -> None:
        with self._wake:
            self._closing = True
            self._wake.notify()
        self._thread.join()
        atexit.unregister(self.close)

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def active(self) -> int:
        """Requests holding a slot now."""
        return sum(job is not None for job in self._slots)

    def waiting(self) -> int:
        """Requests queued for a slot now."""
        return len(self._pending)

    # The decode thread ---------------------------------------------------------------------

    def _loop(self, started: threading.Event) -> None:
        try:
            self.threads = threads.claim() if self._on_cpu else torch.get_num_threads()
            started.set()
            self._serve()
        finally:  # closed, or the thread itself failed: nobody may wait forever on it
            started.set()
            threads.release()
            with self._wake:
                self._closing = True
                jobs = [*self._pending, *filter(None, self._slots)]
                calls = [*self._calls]
                self._calls.clear()
            for job in jobs:
                self._finish(job, self.fault or RuntimeError("the model server is shutting down"))
            for _, done in calls:
                done.set_exception(RuntimeError("the scheduler is closed"))

    def _serve(self) -> None:
        inflight: _Step | None = None
        while True:
            with self._wake:
                while not (self._closing or self._calls or self._pending or inflight or any(self._slots)):
                    self._wake.wait()
                if self._closing:
                    return
                # A call waits for the running requests to finish, and holds new ones back until it is done.
                call = self._calls.popleft() if self._calls and not any(self._slots) else None
                arrivals = [] if self._calls or call is not None else self._take_arrivals()
            if call is not None:
                if inflight is not None:  # the last step of requests that have all ended: only wait for it
                    self._hand_out(inflight)
                    inflight = None
                self._run(*call)
                continue
            try:
                inflight = self._iterate(arrivals, inflight)
            except Exception as e:  # a bug or a device error: end the requests in flight, keep serving
                logger.exception("decode loop failed; ending the %d running requests", self.active())
                for job in filter(None, self._slots):
                    self._finish(job, e)
                inflight = None

    @staticmethod
    def _run(fn: Callable[[], Any], done: Future[Any]) -> None:
        try:
            done.set_result(fn())
        except Exception as e:  # the caller gets it; the decode thread goes on
            done.set_exception(e)

    def _iterate(self, arrivals: list[Job], inflight: _Step | None) -> _Step | None:
        """Prefill (a chunk of) the waiting prompts, launch one step, hand out the previous one; return the step
        still in flight."""
        self._prefilling.extend(arrivals)
        self._free_cancelled()
        if self._prefilling:
            self._prefill()
        launched = self._launch()
        if not self._pipelined and launched is not None:
            self._hand_out(launched)
            launched = None
        if inflight is not None:
            self._hand_out(inflight)
        return launched

    def _take_arrivals(self) -> list[Job]:
        """Pending requests that fit in the free slots, lowest slots first; cancelled ones are dropped."""
        free = [i for i, job in enumerate(self._slots) if job is None]
        arrivals = []
        while self._pending and len(arrivals) < len(free):
            job = self._pending.popleft()
            if job.cancelled:
                self._emit(job, None)
                continue
            job.slot = free[len(arrivals)]
            self._slots[job.slot] = job
            arrivals.append(job)
        return arrivals

    def _prefill(self) -> None:
        """One forward over the waiting prompts, in arrival order, up to `prefill_tokens` (padding counted); a prompt
        that is then all in the cache gets its first token at once (time to first token)."""
        waiting = [job for job in self._prefilling if not job.done]
        self._prefilling = deque(waiting)
        decoding = any(job is not None and not job.prefilling for job in self._slots)
        sizes = prefill.plan(
            [len(job.prompt_ids) - job.prefilled for job in waiting],
            budget=self.prefill_tokens,
            decoding=decoding,
            chunked=self.backend.chunked_prefill,
        )
        batch = list(zip(waiting, sizes, strict=False))
        if not batch:  # every waiting prompt was cancelled
            return
        # A backend that runs the rows one after another anyway: each prompt's first token as soon as it is in.
        for group in [batch] if self.backend.batched_prefill else [[item] for item in batch]:
            self._prefill_rows(group)

    def _prefill_rows(self, batch: list[tuple[Job, int]]) -> None:
        """One backend.prefill of (job, next n prompt tokens) rows; first tokens for the prompts it completes."""
        try:
            logits = self.backend.prefill(
                [(job.slot, job.prompt_ids[job.prefilled : job.prefilled + n]) for job, n in batch]
            )
        except Exception as e:  # these requests fail; the server and the other requests go on
            logger.exception("prefill failed for %d prompts", len(batch))
            for job, _ in batch:
                self._finish(job, e)
            return
        for row, (job, n) in enumerate(batch):
            job.prefilled += n
            if not job.prefilling:
                self._prefilling.remove(job)
                self._first_token(job, logits[row : row + 1])

    def _first_token(self, job: Job, logits: torch.Tensor) -> None:
        slot = job.slot
        try:
            self.sampler.assign(slot, job.params, job.prompt_ids)
            token = self.sampler.sample(logits, slice(slot, slot + 1))
            self._last_tokens[slot] = token[0]
            self._accept(job, int(token[0]))
        except Exception as e:
            logger.exception("choosing the first token failed")
            self._finish(job, e)

    def _launch(self) -> _Step | None:
        """One decode step for every slot past its prompt; returns before the GPU is done."""
        jobs = [job for job in self._slots if job is not None and not job.prefilling]
        if not jobs:
            return None
        rows = bucket(max(job.slot for job in jobs) + 1, self.slots)
        live = [False] * rows
        for job in jobs:
            live[job.slot] = True
        try:
            logits = self.backend.decode(self._last_tokens[:rows], live)
            tokens = self.sampler.sample(logits, slice(0, rows))
        except Exception as e:
            logger.exception("decode step failed for %d requests", len(jobs))
            for job in jobs:
                self._finish(job, e)
            return None
        self._last_tokens[:rows] = tokens
        ready = None
        if tokens.is_cuda:
            tokens = tokens.to("cpu", non_blocking=True)
            ready = torch.cuda.Event()
            ready.record()
        return _Step(tokens=tokens, ready=ready, jobs=jobs)

    def _hand_out(self, step: _Step) -> None:
        if step.ready is not None:
            step.ready.synchronize()
        tokens = step.tokens.tolist()
        for job in step.jobs:
            # A job may have ended (EOS, cancel) after this step was launched: its row is ignored.
            if not job.done and self._slots[job.slot] is job:
                self._accept(job, tokens[job.slot])

    def _accept(self, job: Job, token: int) -> None:
        if job.cancelled:
            self._finish(job, None)
            return
        if token in self.eos_token_ids:
            self._finish(job, None)
            return
        job.generated += 1
        self._emit(job, token)
        if job.generated >= job.params.max_new_tokens:
            self._finish(job, None)

    def _free_cancelled(self) -> None:
        for job in self._slots:
            if job is not None and job.cancelled:
                self._finish(job, None)

    def _finish(self, job: Job, outcome: BaseException | None) -> None:
        if job.done:
            return
        job.done = True
        try:
            if job.slot is not None and self._slots[job.slot] is job:
                self._slots[job.slot] = None
                self.sampler.release(job.slot)
                if self.fault is None:
                    self.backend.release(job.slot)  # writes to the device: the fault a GPU reports late
        except Exception as e:
            logger.exception("freeing slot %d failed: the engine is broken", job.slot)
            self._break(e)
        finally:  # the request is always told, or its reader would wait forever
            self._emit(job, self.fault or outcome)

    def _break(self, cause: BaseException) -> None:
        """The device failed: refuse new work, and let the loop end every request with the fault."""
        with self._wake:
            self.fault = self.fault or EngineBroken(cause)
            self._closing = True
            self._wake.notify()

    def _emit(self, job: Job, event: Event) -> None:
        try:
            job.sink(event)
        except Exception:  # e.g. the caller's event loop is gone: drop the request, keep the decode thread
            logger.warning("could not hand a token to a request; cancelling it", exc_info=True)
            job.cancelled = True
