"""What a CUDA graph needs of the decode step, checked without a GPU, on falcon-rw-1b's full-size architecture.

A CUDA graph replays the kernels it recorded. It cannot record a copy from host memory or a read of a value
back to the host, and the pipelined loop relies on neither happening in a step. CI has no GPU, so the step runs
here on PyTorch's `meta` device (shapes and dtypes, no data, no memory) with a dispatch mode that sees every
operator it calls: none may take or make a CPU tensor, or need a value on the host. This is the step that both
graph modes record (COMPILE=on compiles it, COMPILE=cudagraphs captures it as it is), and the sampler that runs
after it every step.
"""

from __future__ import annotations

import pytest
import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from transformers import FalconForCausalLM

from llmserve.engine.falcon import FalconRWStatic
from llmserve.engine.sampling import SlotSampler
from llmserve.request.params import SamplingParams
from llmserve.tools.tiny import falcon_rw_1b_config

SLOTS = 8
# Tags of the operators whose output depends on the data (item, nonzero, boolean masks): they wait for the device.
HOST_READS = (torch.Tag.data_dependent_output, torch.Tag.dynamic_output_shape)


def reads_the_host(func, args) -> bool:
    if func is torch.ops.aten.index.Tensor:  # tagged for boolean masks; integer indices have a known size
        return any(i is not None and i.dtype in (torch.bool, torch.uint8) for i in args[1])
    return any(tag in func.tags for tag in HOST_READS)


# Tensors made from Python data: they start on the host and are copied over, and no operator shows it.
FROM_HOST_DATA = {torch.tensor, torch.as_tensor, torch.Tensor.new_tensor}


class HostData(TorchFunctionMode):
    def __init__(self, cpu_ops: list[str]) -> None:
        super().__init__()
        self.cpu_ops = cpu_ops

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func in FROM_HOST_DATA:
            self.cpu_ops.append(f"{func.__name__} from Python data, copied from the host")
        return func(*args, **(kwargs or {}))


class HostTraffic(TorchDispatchMode):
    """Notes every operator that touches a CPU tensor or every tensor made from host data; stops any operator that
    needs a value on the host."""

    def __init__(self) -> None:
        super().__init__()
        self.cpu_ops: list[str] = []
        self._host_data = HostData(self.cpu_ops)

    def __enter__(self):
        self._host_data.__enter__()
        return super().__enter__()

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            self._host_data.__exit__(*exc)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if reads_the_host(func, args):
            raise AssertionError(f"{func} needs a value on the host: a CUDA graph cannot record it")
        out = func(*args, **kwargs)
        for leaf in tree_leaves((args, kwargs, out)):
            if isinstance(leaf, torch.Tensor) and leaf.device.type == "cpu":
                self.cpu_ops.append(f"{func} on a CPU tensor of shape {tuple(leaf.shape)}")
        return out


@pytest.fixture(scope="module")
def backend():
    with torch.device("meta"):
        model = FalconForCausalLM(falcon_rw_1b_config()).to(torch.bfloat16).eval()
    return FalconRWStatic(model, slots=SLOTS, max_length=2048, step="eager")


def sampler_for(backend) -> SlotSampler:
    """Greedy rows and sampled rows (temperature, top-k, top-p, repetition penalty, min_new_tokens) side by side."""
    sampler = SlotSampler(SLOTS, backend.vocab_size, {50256}, backend.device)
    for slot in range(SLOTS):
        sampled = slot % 2 == 1
        params = SamplingParams(
            max_new_tokens=64,
            min_new_tokens=4,
            temperature=0.7 if sampled else 0.0,
            top_p=0.9,
            top_k=50 if sampled else 0,
            repetition_penalty=1.1,
            seed=slot,
        )
        sampler.assign(slot, params, [1, 2, 3])
    return sampler


def test_the_decode_step_and_the_sampler_stay_on_the_device(backend):
    assert backend.device.type == "meta" and backend.dtype == torch.bfloat16
    for slot in range(SLOTS):
        backend.prefill([(slot, list(range(1, 100 + 150 * slot)))])  # up to 1150 tokens: spans up to 1280
    sampler = sampler_for(backend)
    tokens = torch.zeros(SLOTS, dtype=torch.int64, device=backend.device)
    with HostTraffic() as traffic:
        for rows in (1, 2, 8):
            logits = backend.decode(tokens[:rows], [True] * rows)
            assert logits.shape == (rows, 50304) and logits.dtype == torch.float32
            tokens[:rows] = sampler.sample(logits, slice(0, rows))
    assert traffic.cpu_ops == []


def test_the_check_sees_a_host_copy_and_a_host_read():
    """The dispatch mode above would fail the step for either mistake."""
    x = torch.zeros(4, device="meta")
    with HostTraffic() as traffic:
        x[torch.tensor([1, 2])]  # indices from the host: a host-to-device copy in the step
    assert any(op.startswith("aten.index.Tensor on a CPU tensor") for op in traffic.cpu_ops)
    with HostTraffic() as traffic:
        x + torch.tensor([1.0, 2.0, 3.0, 4.0], device=x.device)  # made on the device, from host data
    assert traffic.cpu_ops == ["tensor from Python data, copied from the host"]
    with pytest.raises(AssertionError, match="needs a value on the host"), HostTraffic():
        x.sum().item()
    with pytest.raises(AssertionError, match="needs a value on the host"), HostTraffic():
        x[x > 0]  # a boolean mask: its size is known only on the device
