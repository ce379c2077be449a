"""The ``vllm`` engine (CUDA; ``pip install 'tuneforge[vllm]'``): the same handlers over vLLM's
async engine, with its own continuous batching, paged KV cache and multi-LoRA batches.

Not exercised on the CPU machines tuneforge is developed on; its test is marked ``gpu``.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

from tuneforge.errors import require
from tuneforge.models.inference import ServedModel

from .base import BadRequest, Delta, EngineStats, QueueFull, RequestStream, SamplingParams

log = logging.getLogger(__name__)


class VLLMEngine:
    name = "vllm"

    def __init__(self, served: ServedModel, config):
        self.vllm = require("vllm", "vllm", "The vllm serving engine")
        self.served = served
        self.config = config
        self.max_model_len = config.max_model_len
        self._engine = None
        self._tasks: dict[int, asyncio.Task] = {}
        self._lora: dict[str, object] = {}
        self._ids = itertools.count(1)

    @property
    def ready(self) -> bool:
        # vLLM's engine reports a dead background loop as ``errored``: not ready, so it is replaced.
        return self._engine is not None and not getattr(self._engine, "errored", False)

    def start(self) -> None:
        from vllm import AsyncEngineArgs, AsyncLLMEngine
        from vllm.lora.request import LoRARequest

        adapters = [v for v in self.served.variants.values() if v.adapter]
        args = AsyncEngineArgs(
            model=str(self.served.base_folder),
            max_model_len=self.config.max_model_len,
            max_num_seqs=self.config.max_batch_size,
            enable_lora=bool(adapters),
            max_loras=max(1, len(adapters)),
            max_lora_rank=64,
            dtype=getattr(self.config, "dtype", "auto"),  # the same names: auto, float32, bfloat16, float16
        )
        self._engine = AsyncLLMEngine.from_engine_args(args)
        for i, v in enumerate(adapters, start=1):
            self._lora[v.id] = LoRARequest(v.id, i, v.path)

    def stop(self) -> None:
        for task in self._tasks.values():
            task.cancel()
        if self._engine is not None and hasattr(self._engine, "shutdown"):
            self._engine.shutdown()

    def stats(self) -> EngineStats:
        n = len(self._tasks)
        running = min(n, self.config.max_batch_size)
        return EngineStats(running=running, waiting=n - running, kv_capacity_tokens=1)

    def submit(self, variant: str, prompt_ids: list[int], params: SamplingParams) -> RequestStream:
        v = self.served.variants[variant]
        if len(prompt_ids) + params.max_tokens > self.max_model_len:
            raise BadRequest(
                f"this model's maximum context length is {self.max_model_len} tokens; the prompt has "
                f"{len(prompt_ids)} and max_tokens asks for {params.max_tokens} more.",
                "max_tokens",
            )
        if len(self._tasks) >= self.config.max_batch_size + self.config.max_queue:
            raise QueueFull(f"the server is at capacity ({len(self._tasks)} requests); retry shortly.")
        stream = RequestStream(asyncio.get_running_loop())
        sp = self.vllm.SamplingParams(
            n=1,
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=params.top_k if params.top_k > 0 else -1,
            seed=params.seed,
            stop=params.stop or None,
            stop_token_ids=sorted(set(v.stop_ids) | set(params.stop_token_ids)) or None,
            ignore_eos=params.ignore_eos,
            frequency_penalty=params.frequency_penalty,
            presence_penalty=params.presence_penalty,
            repetition_penalty=params.repetition_penalty,
            logprobs=params.logprobs,
        )
        rid = f"tf-{next(self._ids)}"
        task = asyncio.ensure_future(self._pump(stream, rid, prompt_ids, sp, self._lora.get(v.id)))
        self._tasks[stream.id] = task
        task.add_done_callback(lambda _: self._tasks.pop(stream.id, None))
        return stream

    async def _pump(self, stream: RequestStream, rid: str, prompt_ids, sp, lora) -> None:
        sent_text, sent_tokens = 0, 0
        try:
            async for out in self._engine.generate(
                {"prompt_token_ids": prompt_ids}, sp, rid, lora_request=lora
            ):
                o = out.outputs[0]
                new_ids = list(o.token_ids[sent_tokens:])
                delta = Delta(text=o.text[sent_text:], token_ids=new_ids)
                if o.logprobs:
                    for tid, entry in zip(new_ids, o.logprobs[sent_tokens:], strict=False):
                        chosen = entry.get(tid)
                        delta.logprobs.append(
                            {
                                "token_id": tid,
                                "token": chosen.decoded_token if chosen else str(tid),
                                "logprob": chosen.logprob if chosen else 0.0,
                                "top": [(i, lp.logprob) for i, lp in entry.items() if i != tid],
                            }
                        )
                sent_text, sent_tokens = len(o.text), len(o.token_ids)
                if o.finish_reason is not None:
                    delta.finish_reason = "length" if o.finish_reason == "length" else "stop"
                    delta.prompt_tokens, delta.completion_tokens = len(prompt_ids), len(o.token_ids)
                stream.push(delta)
                if o.finish_reason is not None:
                    return
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # surface engine failures to the client, keep serving others
            log.exception("vllm request %s failed", rid)
            stream.push(Delta(finish_reason="abort", error=f"engine error: {exc}"))

    def cancel(self, stream: RequestStream) -> None:
        task = self._tasks.get(stream.id)
        if task is not None and not task.done():
            task.cancel()  # closing vLLM's generator aborts the request
