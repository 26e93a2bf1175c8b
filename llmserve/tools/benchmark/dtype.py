"""scripts/measure_cpu_dtype: float32 against bfloat16 on this CPU, the measurement behind DTYPE=auto's choice."""

from __future__ import annotations

import argparse
import time


def main(argv: list[str]) -> int:
    """Measure fp32 against bf16 on this CPU: falcon-rw-1b's shape, random weights, greedy, forced length."""
    parser = argparse.ArgumentParser(prog="scripts/measure_cpu_dtype", description=main.__doc__)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    args = parser.parse_args(argv)
    import torch
    import transformers
    from transformers import FalconForCausalLM

    from ...engine.model import Engine
    from ...request.params import SamplingParams
    from ..tiny import build_tokenizer, falcon_rw_1b_config

    torch.manual_seed(0)
    model = FalconForCausalLM(falcon_rw_1b_config()).eval()
    prompt = [100 + i % 50000 for i in range(args.prompt_tokens)]
    n = args.new_tokens
    params = SamplingParams.plain_greedy(n, min_new_tokens=n)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads")
    print(f"falcon-rw-1b shape, random weights, {args.prompt_tokens}-token prompt, {n} new tokens, greedy")
    tokenizer = build_tokenizer()  # only for the Engine's interface: the prompt is ids already
    tokens = {}
    for dtype in (torch.float32, torch.bfloat16):
        # Random weights hit EOS anywhere: no EOS, to force the length.
        engine = Engine(model.to(dtype), tokenizer, eos_token_ids=frozenset())
        start = time.perf_counter()
        stamps, out = [], []
        for token in engine.generate(prompt, params):
            stamps.append(time.perf_counter())
            out.append(token)
        tokens[dtype] = out
        engine.close()
        decode = (len(stamps) - 1) / (stamps[-1] - stamps[0])
        name = str(dtype).removeprefix("torch.")
        print(f"{name:>9}: first token {stamps[0] - start:.2f} s, decode {decode:.2f} tok/s")
    a, b = tokens.values()
    same = next((i for i, (x, y) in enumerate(zip(a, b, strict=True)) if x != y), n)
    print(f"greedy tokens identical for the first {same} of {n}")
    return 0
