"""The optimizer a spec asks for: one of HF Trainer's named optimizers, with LoRA+ groups from peft.

The Trainer builds the optimizer itself (so resuming restores its state, and distributed wrappers see
it); this module only tells it which one: ``trainer_arguments`` for ``TrainingArguments`` and
``use_lora_plus`` for the LoRA+ learning-rate groups.
"""

from __future__ import annotations

import logging

from tuneforge.errors import ConfigError, require
from tuneforge.spec import JobSpec

log = logging.getLogger(__name__)

EIGHT_BIT = ("adamw_8bit", "paged_adamw_8bit")


def check_optimizer(spec: JobSpec, device: str, dtype_name: str) -> None:
    """Refuse an optimizer this machine cannot run, before any model loads."""
    name = spec.train.optimizer
    if name in EIGHT_BIT:
        if device != "cuda":
            raise ConfigError(
                f"train.optimizer {name} is bitsandbytes' 8-bit AdamW, which needs a CUDA GPU; this "
                "machine has none. Use adamw_torch (or adafactor for less optimizer memory) on CPU."
            )
        require("bitsandbytes", "qlora", f"optimizer {name}")
    if name == "adamw_torch_fused" and not _fused_adamw_runs(device, dtype_name):
        raise ConfigError(
            f"train.optimizer adamw_torch_fused: this torch build has no fused AdamW for {device} "
            f"{dtype_name}. Use adamw_torch."
        )


def _fused_adamw_runs(device: str, dtype_name: str) -> bool:
    import torch

    param = torch.zeros(2, device=device, dtype=getattr(torch, dtype_name), requires_grad=True)
    param.grad = torch.ones_like(param)
    try:
        torch.optim.AdamW([param], lr=1e-3, fused=True).step()
    except (RuntimeError, ValueError):
        return False
    return True


def trainer_arguments(spec: JobSpec) -> dict:
    """The optimizer and NEFTune fields of ``TrainingArguments`` (names are the Trainer's own)."""
    return {"optim": spec.train.optimizer, "neftune_noise_alpha": spec.train.neftune_alpha}


class _LoraPlusFactory:
    """A Trainer optimizer factory: ``Trainer.create_optimizer`` calls ``_LoraPlusFactory()(model, **kw)``."""

    def __call__(self, model, *, optimizer_cls, lr: float, ratio: float, **kwargs):
        from peft.optimizers import create_loraplus_optimizer

        return create_loraplus_optimizer(model, optimizer_cls, lr=lr, loraplus_lr_ratio=ratio, **kwargs)


def use_lora_plus(trainer, spec: JobSpec) -> None:
    """With ``lora.plus_ratio``, have the trainer build peft's LoRA+ optimizer.

    LoRA+ puts the B matrices (and 1-d adapter parameters such as DoRA's magnitudes) in groups at
    ratio × the learning rate, the A matrices at the learning rate; the scheduler scales every group
    alike, so the ratio holds through warmup and decay.
    """
    ratio = spec.lora.plus_ratio
    if not ratio or spec.finetuning == "full":
        return
    optimizer_cls, kwargs = trainer.get_optimizer_cls_and_kwargs(trainer.args, trainer.model)
    kwargs = {k: v for k, v in kwargs.items() if k != "lr"}
    kwargs["loraplus_weight_decay"] = trainer.args.weight_decay
    trainer.optimizer_cls_and_kwargs = (
        _LoraPlusFactory,
        {"optimizer_cls": optimizer_cls, "lr": trainer.args.learning_rate, "ratio": ratio, **kwargs},
    )
    log.info("LoRA+: B matrices at %g × the learning rate (%s)", ratio, optimizer_cls.__name__)
