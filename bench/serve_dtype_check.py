"""Greedy answers of `--dtype bfloat16` (or `--quantize int8`) against float32's (issue 20): a fixed
prompt set through tuneforge's engine in one process, each prompt decoded alone (batch 1) and all of them
together, in each setting. Prints how many answers equal float32's alone. No speed figures: a CPU without
AVX512-BF16 or AMX emulates bf16, and this check is about answers.

With ``--quantize int8`` it also measures quality where answers may rightly differ: the perplexity of
held-out text (the responses of ``--ppl-records`` alpaca records from bench_data.py, Python docstrings,
given their instructions) under float32 and int8 weights, and prints PASS when int8's is within
``--tolerance`` (default +3%) of float32's.

    .venv/bin/python bench/serve_dtype_check.py [--prompts 16] [--max-tokens 32]
    .venv/bin/python bench/serve_dtype_check.py --quantize int8 [--ppl-records 200]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import time

from bench_data import bench_records
from dedup_check import cpu_model
from serve_throughput import level_prompts


def answers(served, prompts: list[list[int]], max_tokens: int, together: bool, quantize: str = "none"):
    from tuneforge.serve.engine.base import SamplingParams
    from tuneforge.serve.engine.transformers_engine import EngineConfig, TransformersEngine

    config = EngineConfig(max_batch_size=max(1, len(prompts)), quantize=quantize)
    engine = TransformersEngine(served, config)
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


def response_nll(model, tok, records: list[dict]) -> tuple[float, int]:
    """Summed negative log-likelihood of each record's response (``output``) given its instruction, and
    how many response tokens it covers."""
    import torch

    total, count = 0.0, 0
    with torch.inference_mode():
        for r in records:
            user = [{"role": "user", "content": r["instruction"]}]
            prompt = tok.apply_chat_template(user, add_generation_prompt=True, tokenize=False)
            full = tok.apply_chat_template(
                [*user, {"role": "assistant", "content": r["output"]}], tokenize=False
            )
            ids = tok(full, add_special_tokens=False, return_tensors="pt")["input_ids"]
            start = len(tok(prompt, add_special_tokens=False)["input_ids"])
            logits = model(input_ids=ids).logits[0, start - 1 : -1].float()
            target = ids[0, start:]
            total += torch.nn.functional.cross_entropy(logits, target, reduction="sum").item()
            count += target.numel()
    return total, count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--quantize", choices=("none", "int8"), default="none", help="int8: check it, not bf16.")
    ap.add_argument("--ppl-records", type=int, default=200, help="Held-out records for the perplexity.")
    ap.add_argument("--tolerance", type=float, default=0.03, help="int8 perplexity / fp32's - 1, at most.")
    args = ap.parse_args()
    from tuneforge.models.inference import load_for_serving
    from tuneforge.serve.engine.int8_linear import quantize_linears

    print(
        f"CPU: {cpu_model()}; load average {os.getloadavg()[0]:.2f}; {args.prompts} prompts, "
        f"{args.max_tokens} greedy tokens",
        flush=True,
    )
    settings = [("float32", "none"), ("float32", "int8") if args.quantize == "int8" else ("bfloat16", "none")]
    results, ppl, held_out = {}, {}, None
    for dtype, quantize in settings:
        label = "int8" if quantize == "int8" else dtype
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
            results[label, together] = answers(served, prompts, args.max_tokens, together, quantize)
            print(f"{label} {'together' if together else 'alone'}: done", flush=True)
        if args.quantize == "int8":
            # a fresh copy: the engine's has slot attention installed, which wants the engine's cache
            model = load_for_serving(args.model, dtype=dtype).model
            if quantize == "int8":
                quantize_linears(model, model.device)
            held_out = held_out or bench_records(tok, 0, args.ppl_records)[1]
            started = time.perf_counter()
            nll, n = response_nll(model, tok, held_out)
            ppl[label] = math.exp(nll / n)
            print(f"{label} perplexity {ppl[label]:.4f} over {n} response tokens of {len(held_out)} records "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)  # fmt: skip
    reference = results["float32", False]
    for (label, together), got in results.items():
        same = sum(a == b for a, b in zip(got, reference, strict=True))
        # together against the same setting alone: does an answer depend on its batch-mates?
        own = sum(a == b for a, b in zip(got, results[label, False], strict=True))
        print(
            f"dtype_check {label} {'together' if together else 'alone':8} "
            f"equal_to_float32_alone={same}/{len(reference)} equal_to_{label}_alone={own}/{len(reference)}"
        )
    if ppl:
        ratio = ppl["int8"] / ppl["float32"] - 1
        verdict = "PASS" if ratio <= args.tolerance else "FAIL"
        print(
            f"perplexity float32={ppl['float32']:.4f} int8={ppl['int8']:.4f} change={ratio:+.2%} "
            f"tolerance=+{args.tolerance:.0%} {verdict}"
        )


if __name__ == "__main__":
    main()
