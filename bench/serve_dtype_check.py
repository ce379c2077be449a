"""Greedy answers of `--dtype bfloat16` against float32's (issue 20): a fixed prompt set through
tuneforge's engine in one process, each prompt decoded alone (batch 1) and all of them together, in each
dtype. Prints how many answers equal float32's alone. No speed figures: a CPU without AVX512-BF16 or AMX
emulates bf16, and this check is about answers.

    .venv/bin/python bench/serve_dtype_check.py [--prompts 16] [--max-tokens 32]
"""

from __future__ import annotations

import argparse
import asyncio

from dedup_check import cpu_model
from serve_throughput import level_prompts


def answers(served, prompts: list[list[int]], max_tokens: int, together: bool) -> list[list[int]]:
    from tuneforge.serve.engine.base import SamplingParams
    from tuneforge.serve.engine.transformers_engine import EngineConfig, TransformersEngine

    engine = TransformersEngine(served, EngineConfig(max_batch_size=max(1, len(prompts))))
    params = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)

    async def drain(prompt):
        return [t async for d in engine.submit(served.base_id, prompt, params) for t in d.token_ids]

    async def run():
        if together:
            return list(await asyncio.gather(*(drain(p) for p in prompts)))
        return [await drain(p) for p in prompts]

    engine.start()
    try:
        return asyncio.run(run())
    finally:
        engine.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=32)
    args = ap.parse_args()
    from tuneforge.models.inference import load_for_serving

    print(f"CPU: {cpu_model()}; {args.prompts} prompts, {args.max_tokens} greedy tokens", flush=True)
    results = {}
    for dtype in ("float32", "bfloat16"):
        served = load_for_serving(args.model, dtype=dtype)
        tok = served.variants[served.base_id].tokenizer
        prompts = [
            tok(
                tok.apply_chat_template(
                    [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False
                ),
                add_special_tokens=False,
            )["input_ids"]
            for p in level_prompts(args.prompts)
        ]
        for together in (False, True):
            results[dtype, together] = answers(served, prompts, args.max_tokens, together)
            print(f"{dtype} {'together' if together else 'alone'}: done", flush=True)
    reference = results["float32", False]
    for (dtype, together), got in results.items():
        same = sum(a == b for a, b in zip(got, reference, strict=True))
        print(
            f"dtype_check {dtype} {'together' if together else 'alone':8} "
            f"equal_to_float32_alone={same}/{len(reference)}"
        )


if __name__ == "__main__":
    main()
