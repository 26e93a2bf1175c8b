"""A decode step captured as it is, uncompiled, in one CUDA graph per (rows, span), replayed every step."""

from __future__ import annotations

import logging
from collections.abc import Sequence

import torch

logger = logging.getLogger(__name__)


class CapturedSteps:
    """What torch.compile's reduce-overhead mode does, without the compiler: the step's kernels recorded once.

    Tokens are copied into a static input; the logits come back in a static output that the next replay overwrites.
    """

    # A caller reads the logits before any graph is replayed again (the scheduler samples at once, on the same
    # stream). Every graph draws its scratch memory from one pool, as vLLM does: a replay may overwrite what another
    # graph returned last, which is why the logits must be read first, and it is safe in any replay order because no
    # graph reads another's output (pytorch/pytorch#166975).

    def __init__(self, step, *, slots: int, device: torch.device, restore: Sequence[torch.Tensor] = ()) -> None:
        """`restore`: what the step updates in place that a capture must leave as it found it (the positions)."""
        self._step = step
        self._restore = tuple(restore)
        self._tokens = torch.zeros(slots, dtype=torch.int64, device=device)
        # One side stream for every capture and its warm-up runs: cuBLAS keeps a workspace per stream it runs on.
        self._side = torch.cuda.Stream(device)
        self._graphs: dict[tuple[int, int], tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}
        self._pool = None

    def __len__(self) -> int:
        return len(self._graphs)

    def __contains__(self, shape: tuple[int, int]) -> bool:
        return shape in self._graphs

    @torch.inference_mode()
    def capture(self, rows: int, span: int) -> None:
        """Record the step for `rows` rows and `span` positions, after two runs that set its kernels up."""
        tokens = self._tokens[:rows]
        saved = [t.clone() for t in self._restore]
        try:
            # A few runs outside the graph first, on a side stream as PyTorch asks: cuBLAS and sdpa pick and set up
            # their kernels, and the allocator has seen the step's memory, before anything is recorded.
            self._side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(self._side):
                for _ in range(2):
                    self._step(tokens, rows, span)
            torch.cuda.current_stream().wait_stream(self._side)
            graph = torch.cuda.CUDAGraph()
            # thread_local: another thread's CUDA work (a moderation model, say) does not break the capture.
            with torch.cuda.graph(graph, pool=self._pool, stream=self._side, capture_error_mode="thread_local"):
                logits = self._step(tokens, rows, span)
            self._pool = graph.pool()
            self._graphs[rows, span] = (graph, logits)
        finally:  # also when a capture fails mid-serving: the running rows keep their places
            for tensor, value in zip(self._restore, saved, strict=True):
                tensor.copy_(value)

    def __call__(self, tokens: torch.Tensor, rows: int, span: int) -> torch.Tensor:
        if (rows, span) not in self._graphs:
            logger.warning("capturing the decode step for %d rows and span %d while serving (no warm_up)", rows, span)
            self.capture(rows, span)
        graph, logits = self._graphs[rows, span]
        self._tokens[:rows].copy_(tokens)
        graph.replay()
        return logits
