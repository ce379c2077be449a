"""What each LLaMA-Factory training key becomes in a tuneforge JobSpec, as tables: the keys that carry
over (``KEYS``), those that change nothing here (``NOT_APPLICABLE``), the stages, optimizers,
schedulers and templates tuneforge runs, and LLaMA-Factory's defaults where they differ from
tuneforge's. llamafactory.py applies them (and the special cases that are code).
"""

from __future__ import annotations

from typing import Any

# LLaMA-Factory key → JobSpec field, for keys whose value carries over as it is.
KEYS: dict[str, str] = {
    "model_name_or_path": "model",
    "trust_remote_code": "trust_remote_code",
    "run_name": "name",
    "output_dir": "output_dir",
    "cutoff_len": "data.max_len",
    "val_size": "data.val_fraction",
    "learning_rate": "train.learning_rate",
    "num_train_epochs": "train.epochs",
    "per_device_train_batch_size": "train.batch_size",
    "gradient_accumulation_steps": "train.grad_accum",
    "lr_scheduler_type": "train.scheduler",
    "warmup_ratio": "train.warmup_ratio",
    "warmup_steps": "train.warmup_steps",
    "weight_decay": "train.weight_decay",
    "max_grad_norm": "train.max_grad_norm",
    "seed": "train.seed",
    "logging_steps": "train.logging_steps",
    "save_steps": "train.save_steps",
    "save_total_limit": "train.save_total_limit",
    "report_to": "train.report_to",  # the spec reads LLaMA-Factory's spellings ("none", "wandb,mlflow")
    "eval_steps": "train.eval_steps",
    "gradient_checkpointing": "train.gradient_checkpointing",
    "neftune_noise_alpha": "train.neftune_alpha",
    "pref_beta": "train.dpo_beta",
    "simpo_gamma": "train.simpo_gamma",
    "kto_chosen_weight": "train.kto_desirable_weight",
    "kto_rejected_weight": "train.kto_undesirable_weight",
    "lora_rank": "lora.r",
    "lora_alpha": "lora.alpha",
    "lora_dropout": "lora.dropout",
    "loraplus_lr_ratio": "lora.plus_ratio",
    "use_dora": "lora.use_dora",
    "use_rslora": "lora.use_rslora",
}

# Keys that change nothing tuneforge does (or that it always does its own way): one note each.
NOT_APPLICABLE: dict[str, str] = {
    "do_train": "tuneforge train always trains",
    "do_eval": "evaluation runs when there is validation data (val_size or eval_dataset)",
    "ddp_timeout": "process-group timeout; tuneforge's launcher keeps torch's default",
    "preprocessing_num_workers": "tokenization runs in the training process",
    "preprocessing_batch_size": "tokenization runs in the training process",
    "dataloader_num_workers": "batches are built in the training process",
    "plot_loss": "the job folder always gets loss.svg",
    "include_num_input_tokens_seen": "tokens seen and trained are always logged",
    "include_effective_tokens_per_second": "tokens/s is always logged",
    "flash_attn": "attention backend is chosen per device (flash-attention varlen on CUDA when packed)",
    "overwrite_cache": "tokenized data is not cached between runs",
    "overwrite_output_dir": "a finished job folder is never overwritten; choose another output_dir",
    "logging_dir": "TensorBoard files go to the job folder",
    "per_device_eval_batch_size": "evaluation uses train.batch_size",
    "eval_strategy": "evaluation runs each epoch, or every train.eval_steps",
    "evaluation_strategy": "evaluation runs each epoch, or every train.eval_steps",
    "save_strategy": "checkpoints each epoch, or every train.save_steps",
    "save_only_model": "checkpoints keep optimizer state so runs resume exactly",
    "ddp_find_unused_parameters": "set by the launcher",
    "upcast_layernorm": "layer norms stay in the training precision",
    "use_fast_tokenizer": "the model's fast tokenizer is used",
    "low_cpu_mem_usage": "models load with transformers' defaults",
    "print_param_status": "trainable parameter counts are logged",
    "quantization_type": "QLoRA quantizes to NF4",
    "double_quantization": "QLoRA uses double quantization",
    "quantization_method": "matters with quantization_bit only; QLoRA uses bitsandbytes",
    "enable_liger_kernel": "not used",
    "use_unsloth": "not used",
    "logging_first_step": "the first step is always logged",
    "disable_tqdm": "the CLI draws its own progress bar",
}

# LLaMA-Factory templates tuneforge reproduces (data/templates.py): the converted spec names them as
# llamafactory:NAME and trains on the text LLaMA-Factory would. Other names are refused, never swapped.
LAYOUT_AFTER_STOP = {
    "default": "\n",
    "alpaca": "\n\n",
    **dict.fromkeys(("chatml", "qwen", "qwen3_nothink", "smollm", "smollm2", "yi"), "\n"),
}
REFUSED_TEMPLATES = {
    "chatglm3": "tuneforge's chatglm3 is the nearest, and differs: LLaMA-Factory's writes "
    "'<|user|>\\n…<|assistant|>' and an answer '\\n…' with one eos at the end of the conversation "
    "(efficient_eos), tuneforge's writes '<|assistant|>\\n' in the prompt and eos after every answer",
    "qwen3": "llamafactory:qwen3_nothink is the nearest, and differs: LLaMA-Factory's qwen3 (a reasoning "
    "template) writes '<think>\\n\\n</think>\\n\\n' before every answer that has no thought and trains "
    "it; qwen3_nothink writes the answers as they are",
    "qwen2": "LLaMA-Factory has no template qwen2 (it stops with 'Template qwen2 does not exist.'); "
    "Qwen2 and Qwen2.5 models take template qwen",
    "qwen2_5": "LLaMA-Factory has no template qwen2_5 (it stops with 'Template qwen2_5 does not "
    "exist.'); Qwen2 and Qwen2.5 models take template qwen",
}
STAGES = {"sft": "sft", "dpo": "dpo", "kto": "kto", "pt": "pretrain", "rm": "rm"}  # rm: on ranking pairs
# stage: dpo with pref_loss NAME trains this method (LLaMA-Factory's preference losses tuneforge runs)
PREF_LOSSES = {"sigmoid": "dpo", "orpo": "orpo", "simpo": "simpo"}
OPTIMIZERS = {
    "adamw_torch": "adamw_torch",
    "adamw_torch_fused": "adamw_torch_fused",
    "adafactor": "adafactor",
    "sgd": "sgd",
    "adamw_8bit": "adamw_8bit",
    "adamw_bnb_8bit": "adamw_8bit",
    "paged_adamw_8bit": "paged_adamw_8bit",
}
SCHEDULERS = ("linear", "cosine", "constant", "constant_with_warmup")
# LLaMA-Factory's own defaults (and HF TrainingArguments') where they differ from tuneforge's and change
# the trained weights: a config that leaves them out trains as it would under LLaMA-Factory.
LF_DEFAULTS: dict[str, Any] = {
    "learning_rate": 5e-5,
    "lr_scheduler_type": "linear",
    "warmup_ratio": 0.0,
    "per_device_train_batch_size": 8,
    "cutoff_len": 2048,
    "lora_dropout": 0.0,
    "bf16": False,  # neither bf16 nor fp16: LLaMA-Factory computes in fp32
}
