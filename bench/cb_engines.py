"""In-process continuous batching, no HTTP: transformers' own ``generate_batch`` (paged attention,
ContinuousBatchingManager) against tuneforge's engine (slot KV cache + scheduler), same prompts,
same greedy 64 new tokens, alternating runs in one process. Prints tokens/s and the ratio.

    .venv/bin/python bench/cb_engines.py [--requests 16] [--max-tokens 64] [--repeats 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time

import torch
from serve_throughput import PROMPTS


def tuneforge_run(served, prompts, max_tokens) -> float:
    from tuneforge.serve.engine.base import SamplingParams
    from tuneforge.serve.engine.transformers_engine import EngineConfig, TransformersEngine

    engine = TransformersEngine(served, EngineConfig(max_batch_size=32))

    async def main():
        engine.start()
        params = SamplingParams(max_tokens=max_tokens, temperature=0, ignore_eos=True)
        streams = [engine.submit(served.base_id, p, params) for p in prompts]

        async def drain(s):
            return sum([len(d.token_ids) async for d in s])

        start = time.perf_counter()
        tokens = sum(await asyncio.gather(*(drain(s) for s in streams)))
        return tokens / (time.perf_counter() - start)

    try:
        return asyncio.run(main())
    finally:
        engine.stop()


def transformers_run(model, prompts, max_tokens, threads) -> float:
    from transformers import GenerationConfig
    from transformers.generation.configuration_utils import ContinuousBatchingConfig

    torch.set_num_threads(threads)
    gen = GenerationConfig(max_new_tokens=max_tokens, do_sample=False, eos_token_id=-1, pad_token_id=0)
    cb = ContinuousBatchingConfig(num_blocks=256, page_size=32)
    start = time.perf_counter()
    out = model.generate_batch(prompts, generation_config=gen, continuous_batching_config=cb, warmup=False)
    tokens = sum(len(o.generated_tokens) for o in out.values())
    return tokens / (time.perf_counter() - start)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--requests", type=int, default=16)
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument(
        "--threads",
        type=int,
        default=0,
        help="torch threads for generate_batch (default: torch's); ours tunes its own",
    )
    ap.add_argument(
        "--pack-both",
        action="store_true",
        help="give transformers' copy of the model the same oneDNN-packed linear layers as tuneforge's "
        "engine, so the two schedulers are compared on equal matmuls",
    )
    args = ap.parse_args()
    from transformers import AutoModelForCausalLM

    from tuneforge.models.inference import load_for_serving

    served = load_for_serving(args.model)
    tok = served.variants[served.base_id].tokenizer
    prompts = []
    for i in range(args.requests):
        text = tok.apply_chat_template(
            [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
            add_generation_prompt=True,
            tokenize=False,
        )
        prompts.append(tok(text, add_special_tokens=False)["input_ids"])
    # transformers' manager swaps the attention implementation: give it its own copy of the model
    hf_model = AutoModelForCausalLM.from_pretrained(str(served.base_folder), dtype=torch.float32).eval()
    if args.pack_both:
        from tuneforge.serve.engine.packed_linear import pack_linears

        pack_linears(hf_model)
    threads = args.threads or torch.get_num_threads()
    ours, theirs = [], []
    for _ in range(args.repeats):
        theirs.append(transformers_run(hf_model, prompts, args.max_tokens, threads))
        ours.append(tuneforge_run(served, prompts, args.max_tokens))
        print(
            f"transformers generate_batch {theirs[-1]:.1f} tok/s   tuneforge engine {ours[-1]:.1f} tok/s",
            flush=True,
        )
    a, b = statistics.median(ours), statistics.median(theirs)
    print(
        f"cb_tok_s requests={args.requests} tuneforge={a:.1f} "
        f"transformers_generate_batch={b:.1f} ratio={a / b:.2f}"
    )


if __name__ == "__main__":
    main()
