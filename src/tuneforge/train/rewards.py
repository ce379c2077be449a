"""GRPO's built-in rewards as the functions TRL's GRPOTrainer calls: each takes the batch's completions
(and the dataset's columns, e.g. ``answer``) and returns one float per completion. A reward model is
handed to TRL as a model: TRL scores prompt + completion with it.

A reward of the user's own runs in a command job (examples/grpo_own_reward.py): a spec reachable over
HTTP never names code to import.
"""

from __future__ import annotations

import re

from tuneforge.spec import RewardSpec

from .bounded_search import BoundedSearch

FORMAT_TIMEOUT_S = 0.5  # a completion's search; past it the completion scores 0 (bounded_search.py)

NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
FINAL_MARKERS = (
    re.compile(r"<answer>(.*?)</answer>", re.S),
    re.compile(r"\\boxed\{([^{}]*)\}"),
    re.compile(r"####\s*([^\n]*)"),
)


def completion_text(completion) -> str:
    """A completion as text: conversational prompts get [{"role": "assistant", "content": …}]."""
    if isinstance(completion, list):
        return "".join(m.get("content") or "" for m in completion if isinstance(m, dict))
    return str(completion)


def final_answer(text: str) -> str:
    """What a completion gives as its answer: the last <answer>…</answer>, \\boxed{…} or #### line, else
    the whole text."""
    for marker in FINAL_MARKERS:
        found = marker.findall(text)
        if found:
            return found[-1].strip()
    return text.strip()


def _plain(text: str) -> str:
    return " ".join(text.replace(",", "").strip().rstrip(".").lower().split())


def same_answer(completion: str, reference: str) -> bool:
    """A numeric reference is compared with the last number of the final answer (1,000 = 1000.0); any
    other reference with the final answer's text, case and surrounding spaces aside."""
    got, want = _plain(final_answer(completion)), _plain(reference)
    if NUMBER.fullmatch(want):
        numbers = NUMBER.findall(got)
        return bool(numbers) and float(numbers[-1]) == float(want)
    return got == want


def exact_match(completions, answer, **_) -> list[float]:
    return [float(same_answer(completion_text(c), a or "")) for c, a in zip(completions, answer, strict=True)]


def format_reward(regex: str):
    pattern = BoundedSearch(regex, FORMAT_TIMEOUT_S)

    def found(completions, **_) -> list[float]:
        return [float(pattern.search(completion_text(c))) for c in completions]

    return found


def length_reward(target: int):
    def length(completion_ids, **_) -> list[float]:
        return [-abs(len(ids) - target) / target for ids in completion_ids]

    return length


def reward_functions(rewards: list[RewardSpec], load_model) -> tuple[list, list, list[float]]:
    """(reward functions or models, their tokenizers (None for functions), weights) for GRPOTrainer.
    ``load_model(ref)`` → (model, tokenizer) of a reward model. Metric names are the reward types, with
    _2, _3 … when a type repeats."""
    funcs, processors, seen = [], [], {}
    for reward in rewards:
        if reward.type == "reward_model":
            func, tokenizer = load_model(reward.model)
        else:
            tokenizer = None
            func = {
                "exact_match": lambda r: exact_match,
                "format": lambda r: format_reward(r.regex),
                "length": lambda r: length_reward(r.target),
            }[reward.type](reward)
        seen[reward.type] = seen.get(reward.type, 0) + 1
        name = reward.type if seen[reward.type] == 1 else f"{reward.type}_{seen[reward.type]}"
        if tokenizer is None:
            func = _named(func, name)
        else:
            func.config._name_or_path = name  # TRL names a model's metrics after its config's id
        funcs.append(func)
        processors.append(tokenizer)
    return funcs, processors, [r.weight for r in rewards]


def _named(func, name: str):
    def reward(*args, **kwargs):
        return func(*args, **kwargs)

    reward.__name__ = name
    return reward
