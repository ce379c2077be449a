"""Resident memory of a serving worker's model with 0, 1 and 2 LoRA adapters on one base.

Each case runs in a fresh process: load the base (and adapters) as `tuneforge serve` does, build the
engine (which packs the weights), run one request to fill the KV cache's first rows, and report the
peak resident memory (VmHWM). The adapters are r=8 on every linear layer, random, so they are as
large as a real fine-tune's. The target: a second adapter adds under 20% to the worker's memory.

    python bench/serve_memory.py [--model smollm2-135m-instruct] [--rank 8]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

CASE = r"""
import asyncio, json, sys
from tuneforge.serve.engine.base import SamplingParams
from tuneforge.serve.worker import WorkerConfig, build_state

model, adapters = sys.argv[1], json.loads(sys.argv[2])
state = build_state(WorkerConfig(model, adapters, engine="transformers"))

async def one():
    state.engine.start()
    tok = state.served.variants[state.served.base_id].tokenizer
    ids = tok("Hello there")["input_ids"]
    s = state.engine.submit(state.served.base_id, ids, SamplingParams(max_tokens=8))
    return [d async for d in s]

asyncio.run(one())
state.engine.stop()
hwm = next(line for line in open("/proc/self/status") if line.startswith("VmHWM"))
print(json.dumps({"vmhwm_mb": int(hwm.split()[1]) / 1024}))
"""


def make_adapter(model: str, out: Path, rank: int, seed: int) -> None:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from tuneforge.models.store import resolve_model

    torch.manual_seed(seed)
    base = AutoModelForCausalLM.from_pretrained(str(resolve_model(model)))
    lora = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules="all-linear", init_lora_weights=False)
    get_peft_model(base, lora).save_pretrained(str(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--rank", type=int, default=8)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        paths = {f"a{i}": Path(tmp) / f"a{i}" for i in (1, 2)}
        for i, path in enumerate(paths.values()):
            make_adapter(args.model, path, args.rank, seed=i)
        results = []
        for n in (0, 1, 2):
            adapters = {k: str(v) for k, v in list(paths.items())[:n]}
            out = subprocess.run(
                [sys.executable, "-c", CASE, args.model, json.dumps(adapters)],
                capture_output=True,
                text=True,
                check=True,
            )
            mb = json.loads(out.stdout.strip().splitlines()[-1])["vmhwm_mb"]
            results.append(mb)
            print(f"serve_memory adapters={n} vmhwm_mb={mb:.0f}", flush=True)
    base, one, two = results
    print(
        f"serve_memory first_adapter_adds={100 * (one - base) / base:.1f}% "
        f"second_adapter_adds={100 * (two - one) / one:.1f}% (target < 20%)"
    )


if __name__ == "__main__":
    main()
