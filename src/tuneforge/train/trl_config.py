"""The run's TrainingArguments carried over to a TRL config class (DPOConfig, RewardConfig, GRPOConfig…).

A stand-in: the preference recipes get one shared helper for this; the reward and GRPO recipes then
call that one.
"""

from __future__ import annotations


def carried_over(base, config_cls) -> dict:
    """The fields of ``base`` (TrainingArguments) that ``config_cls`` also has, TRL's own left out."""
    return {
        k: v
        for k, v in base.to_dict().items()
        if k in config_cls.__dataclass_fields__
        and not k.startswith("_")
        and k not in ("train_sampling_strategy", "logging_dir")
    }
