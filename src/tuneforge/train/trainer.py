"""The pieces the SFT and pretraining recipes share: the loss, token accounting, trainer arguments."""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import Trainer, TrainingArguments

from tuneforge.data.templates import END_OF_TURN_MARKERS
from tuneforge.data.tokenize import IGNORE_INDEX
from tuneforge.spec import JobSpec

from .chunked_loss import head_skipped, linear_cross_entropy_sum, plain_output_head
from .model import Runtime
from .optim import trainer_arguments, use_lora_plus


class CausalLMTrainer(Trainer):
    """HF Trainer whose loss computes logits only where a label is trained, a chunk of rows at a time.

    On a 135M model the output layer is a fifth of the compute; prompt tokens never need their logits,
    and the full [tokens × vocab] logits of a step were the largest tensors of its peak memory (see
    chunked_loss). It also counts the tokens it trains on, for tokens/s.
    """

    loss_is_scaled_for_ga = True

    def __init__(self, *args, token_counter: dict, **kwargs):
        super().__init__(*args, **kwargs)
        self.tokens = token_counter
        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        self.keeps_logits = "logits_to_keep" in inspect.signature(base.forward).parameters
        # ZeRO-3 and FSDP hold the head's weight sharded outside its own forward: the full logits there.
        sharded = bool(self.args.deepspeed or self.args.fsdp)
        self.head = plain_output_head(base) if self.keeps_logits and not sharded else None
        self._eval_sums: torch.Tensor | None = None  # [token-loss sum, token count] while evaluating

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        labels = inputs.pop("labels")
        targets = labels[:, 1:]  # position p predicts token p+1
        keep = (targets != IGNORE_INDEX).any(0).nonzero().squeeze(-1)
        picked = targets[:, keep]
        loss_of = self._chunked_head_loss if self.head is not None else self._full_logits_loss
        loss, outputs = loss_of(model, inputs, keep, picked)
        n_trained = (picked != IGNORE_INDEX).sum()
        if model.training:
            mask = inputs.get("attention_mask")
            self.tokens["seen"] += int(mask.sum()) if mask is not None else inputs["input_ids"].numel()
            self.tokens["trained"] += int(n_trained)
        if self._eval_sums is not None and not model.training:
            self._eval_sums += torch.stack([loss.detach().double(), n_trained.double()]).cpu()
        if model.training:
            # Sum over this micro-batch / trained tokens of the whole accumulation window (every device):
            # the window's gradient is the per-token mean whatever the batch × accumulation split.
            loss = loss / num_items_in_batch
            if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
                loss = loss * self.accelerator.num_processes  # DDP averages gradients over processes
        else:
            loss = loss / n_trained.clamp(min=1)
        return (loss, outputs) if return_outputs else loss

    def _chunked_head_loss(self, model, inputs, keep, picked):
        with head_skipped(self.head):
            outputs = model(**inputs, logits_to_keep=keep)
        hidden = outputs.logits  # [batch, kept, dim]: the head was skipped
        trained = picked != IGNORE_INDEX
        loss = linear_cross_entropy_sum(hidden[trained], self.head.weight, self.head.bias, picked[trained])
        return loss, type(outputs)(**{k: v for k, v in outputs.items() if k != "logits"})

    def _full_logits_loss(self, model, inputs, keep, picked):
        """Models whose head this loss cannot apply itself (see chunked_loss.plain_output_head)."""
        if self.keeps_logits:
            outputs = model(**inputs, logits_to_keep=keep)
            logits = outputs.logits
        else:
            outputs = model(**inputs)
            logits = outputs.logits[:, :-1][:, keep]
        loss = F.cross_entropy(
            logits.float().reshape(-1, logits.size(-1)),
            picked.reshape(-1),
            ignore_index=IGNORE_INDEX,
            reduction="sum",
        )
        return loss, outputs

    def _get_num_items_in_batch(self, batch_samples: list, device) -> torch.Tensor | None:
        """Trained tokens in the accumulation window, for every model.

        The Trainer counts them only for models whose forward takes loss kwargs; this loss is computed
        here, so it needs the count always (gpt2/opt/bloom in transformers 4.x, remote-code models).
        Labels are shifted in compute_loss, so position 0 of each row is never a target.
        """
        if not batch_samples or "labels" not in batch_samples[0]:
            return None
        count = sum((b["labels"][:, 1:] != IGNORE_INDEX).sum() for b in batch_samples).to(device)
        if self.args.average_tokens_across_devices and self.args.world_size > 1:
            count = self.accelerator.gather(count).sum()
        return count.clamp(min=1)

    def evaluation_loop(self, *args, metric_key_prefix: str = "eval", **kwargs):
        """The eval loss as one per-token mean over the whole set.

        The Trainer averages per-batch means weighted by the configured batch size, so the figure would
        depend on the eval batch size and over-weight a short last batch; compute_loss sums instead.
        """
        self._eval_sums = torch.zeros(2, dtype=torch.float64)
        try:
            output = super().evaluation_loop(*args, metric_key_prefix=metric_key_prefix, **kwargs)
            sums = self._eval_sums.to(self.args.device)
            if self.accelerator.num_processes > 1:
                sums = self.accelerator.reduce(sums, reduction="sum")
            if sums[1] > 0:
                output.metrics[f"{metric_key_prefix}_loss"] = (sums[0] / sums[1]).item()
            return output
        finally:
            self._eval_sums = None


def training_arguments(
    spec: JobSpec, runtime: Runtime, output_dir: Path, has_eval: bool, packed: bool
) -> TrainingArguments:
    t = spec.train
    save = (
        {"save_strategy": "steps", "save_steps": t.save_steps} if t.save_steps else {"save_strategy": "epoch"}
    )
    if has_eval:
        evals = (
            {"eval_strategy": "steps", "eval_steps": t.eval_steps}
            if t.eval_steps
            else {"eval_strategy": "epoch"}
        )
    else:
        evals = {"eval_strategy": "no"}
    strategy = {}
    if runtime.device == "cpu" and spec.resources.processes > 1:
        strategy["ddp_backend"] = "gloo"  # CPU ranks (resources.workers); GPUs keep NCCL
    if spec.resources.strategy == "fsdp":
        strategy["fsdp"] = "full_shard auto_wrap"
    elif spec.resources.strategy in ("zero2", "zero3"):
        strategy["deepspeed"] = deepspeed_config(int(spec.resources.strategy[-1]))
    return TrainingArguments(
        output_dir=str(output_dir),
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps or -1,
        learning_rate=spec.learning_rate,
        lr_scheduler_type=t.scheduler,
        warmup_steps=t.warmup_steps if t.warmup_steps is not None else t.warmup_ratio,
        weight_decay=t.weight_decay,
        max_grad_norm=t.max_grad_norm,
        bf16=runtime.bf16,
        fp16=runtime.fp16,
        seed=t.seed,
        logging_steps=t.logging_steps,
        logging_first_step=True,
        save_total_limit=None,  # rotation happens on step-N folders (see reporting.Reporter.on_save)
        report_to="none",
        disable_tqdm=True,
        prediction_loss_only=True,
        remove_unused_columns=False,
        train_sampling_strategy="random" if packed else "group_by_length",
        use_cpu=runtime.device == "cpu",
        dataloader_num_workers=0,
        **save,
        **evals,
        **strategy,
        **trainer_arguments(spec),
    )


def deepspeed_config(stage: int) -> dict:
    return {
        "zero_optimization": {"stage": stage, "overlap_comm": True, "contiguous_gradients": True},
        "bf16": {"enabled": "auto"},
        "fp16": {"enabled": "auto"},
        "train_micro_batch_size_per_gpu": "auto",
        "gradient_accumulation_steps": "auto",
        "gradient_clipping": "auto",
        "train_batch_size": "auto",
    }


def stop_token_ids(tokenizer, template: str) -> list[int]:
    """EOS plus the end-of-turn tokens the chat template writes, when they are single tokens."""
    ids = [tokenizer.eos_token_id] if tokenizer.eos_token_id is not None else []
    for marker in END_OF_TURN_MARKERS:
        if marker in template or marker == tokenizer.eos_token:
            tid = tokenizer.convert_tokens_to_ids(marker)
            if isinstance(tid, int) and tid != tokenizer.unk_token_id and tid not in ids:
                ids.append(tid)
    return ids


def save_final(model, tokenizer, template: str, spec: JobSpec, out: Path) -> None:
    """final/: the adapter or full model, tokenizer with the chat template used, stop tokens."""
    from transformers import GenerationConfig

    from tuneforge.models.store import resolve_model

    from .launch import is_main_process

    if not is_main_process():  # the ranks hold the same weights; rank 0 writes them
        return
    base_folder = resolve_model(spec.model)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(out))
    tokenizer.chat_template = template
    tokenizer.save_pretrained(str(out))
    stops = stop_token_ids(tokenizer, template)
    try:
        gen = GenerationConfig.from_pretrained(str(base_folder))
    except OSError:
        gen = GenerationConfig()
    gen.eos_token_id = stops
    gen.pad_token_id = tokenizer.pad_token_id
    gen.save_pretrained(str(out))
    (out / "tuneforge.json").write_text(
        json.dumps(
            {
                "base_model": str(base_folder),
                "model": spec.model,
                "job": str(out.parent),
                "method": spec.method,
                "finetuning": spec.finetuning,
                "adapter": spec.finetuning in ("lora", "qlora"),
                "stop_token_ids": stops,
                "stop_tokens": tokenizer.convert_ids_to_tokens(stops),
            },
            indent=2,
        )
    )


def set_threads() -> None:
    """Never more threads than the CPUs this process may run on.

    Torch's default is the machine's physical cores; in a container pinned to fewer CPUs that
    oversubscribes them, and matmul threads waiting on each other are slower than fewer threads.
    """
    import os

    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    torch.set_num_threads(max(1, min(torch.get_num_threads(), allowed)))


def train_to_end(trainer, reporter, ctx) -> dict:
    """Train (from a checkpoint if given), then the final eval metrics unless the run was stopped."""
    from transformers import PrinterCallback

    trainer.remove_callback(PrinterCallback)  # the Reporter writes the log lines
    use_lora_plus(trainer, ctx.spec)
    try:
        resume = str(ctx.resume) if ctx.resume else None
        metrics = dict(trainer.train(resume_from_checkpoint=resume).metrics)
        if not ctx.stop.reason:
            metrics.update(final_eval(trainer, ctx.folder))
        return metrics
    finally:
        reporter.close()


def final_eval(trainer, folder) -> dict:
    """Eval metrics at the last step: reuse the ones just logged, evaluate only if there are none."""
    if trainer.eval_dataset is None:
        return {}
    last = [m for m in folder.read_metrics() if "eval_loss" in m]
    if last and last[-1]["step"] == trainer.state.global_step:
        return {k: v for k, v in last[-1].items() if k.startswith("eval_")}
    return trainer.evaluate()
