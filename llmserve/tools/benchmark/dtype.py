"""scripts/measure_cpu_dtype: float32 against bfloat16 on this CPU, the measurement behind DTYPE=auto's choice."""

from __future__ import annotations

import argparse
import time


def main(argv: list[str]) -> int:
    """Measure fp32 against bf16 on this CPU: falcon-rw-1b's shape, random weights, greedy, forced length."""
    parser = argparse.ArgumentParser(prog="scripts/measure_cpu_dtype", description=main.__doc__)
    parser.add_argument("--prompt-tokens", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--layers", type=int, default=24, help="fewer than falcon-rw-1b's 24, for a quicker look")
    args = parser.parse_args(argv)
    import torch
    import transformers
    from transformers import FalconForCausalLM

    from ...engine.model import Engine
    from ...request.params import SamplingParams
    from ..tiny import build_tokenizer, falcon_rw_1b_config

    torch.manual_seed(0)
    model = FalconForCausalLM(falcon_rw_1b_config(num_hidden_layers=args.layers)).eval()
    prompt = [100 + i % 50000 for i in range(args.prompt_tokens)]
    n = args.new_tokens
    params = SamplingParams.plain_greedy(n, min_new_tokens=n)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.get_num_threads()} threads")
    print(f"falcon-rw-1b shape, random weights, {args.prompt_tokens}-token prompt, {n} new tokens, greedy")
    tokenizer = build_tokenizer()  # only for the Engine's interface: the prompt is ids already
    from ...engine.device import cpu_capability

    print(f"CPU capability: {cpu_capability()}")
    tokens = {}
    # float32; bf16; bf16 weights with the prompt prefilled in a float32 copy (DTYPE=auto on an AVX2-only CPU).
    for dtype, prefill in ((torch.float32, None), (torch.bfloat16, None), (torch.bfloat16, torch.float32)):
        # Random weights hit EOS anywhere: no EOS, to force the length.
        engine = Engine(model.to(dtype), tokenizer, eos_token_ids=frozenset(), prefill_dtype=prefill)
        start = time.perf_counter()
        stamps, out = [], []
        for token in engine.generate(prompt, params):
            stamps.append(time.perf_counter())
            out.append(token)
        engine.close()
        decode = (len(stamps) - 1) / (stamps[-1] - stamps[0])
        name = str(dtype).removeprefix("torch.") + (" weights, float32 prefill" if prefill else "")
        tokens[name] = out
        print(f"{name:>9}: first token {stamps[0] - start:.2f} s, decode {decode:.2f} tok/s")
    reference = tokens.pop("float32")
    for name, out in tokens.items():
        same = next((i for i, (x, y) in enumerate(zip(reference, out, strict=True)) if x != y), n)
        print(f"{name}: greedy tokens identical to float32's for the first {same} of {n}")
    return 0
