"""A GRPO spec's ``reward_model`` rewards, resolved on the server: a registered model's name becomes its
folder (the worker reads files, not the database), and anything but a reward model is a problem."""

from __future__ import annotations

from tuneforge.errors import NotFoundError
from tuneforge.models.reward import is_reward_model
from tuneforge.spec import JobSpec

from . import registry
from .context import Platform


def resolve_reward_models(ctx: Platform, spec: JobSpec) -> list[dict]:
    """Problems (``{"loc", "msg"}``) of the spec's reward models; each found one is set to its folder."""
    problems = []
    for i, reward in enumerate(spec.grpo.rewards):
        if reward.type != "reward_model":
            continue
        loc = ["spec", "grpo", "rewards", i, "model"]
        try:
            row = registry.resolve(ctx, reward.model)
        except NotFoundError:
            problems.append(
                {"loc": loc, "msg": f"no registered model {reward.model!r}: register a job of method rm"}
            )
            continue
        if not is_reward_model(row.path):
            problems.append(
                {"loc": loc, "msg": f"{row.name}@{row.version} is not a reward model (method rm)"}
            )
            continue
        reward.model = row.path  # by folder: a later version of the name does not change this job
    return problems
