"""Helpers to run tiny training jobs in tests."""

from __future__ import annotations

from pathlib import Path

from tuneforge.spec import parse_spec


def tiny_spec(model: Path, data: Path, **over) -> dict:
    spec = {
        "method": "sft",
        "finetuning": "lora",
        "model": str(model),
        "data": {"train": [{"path": str(data)}], "max_len": 64},
        "lora": {"r": 8, "alpha": 16, "dropout": 0.0},
        "train": {
            "learning_rate": 1e-2,
            "max_steps": 30,
            "batch_size": 4,
            "logging_steps": 1,
            "warmup_ratio": 0.0,
            "scheduler": "constant",
            "save_steps": 1000,
            # fp32 on every machine: the tests compare losses and weights exactly, and `auto` is bf16 on
            # a CPU with AMX (tests/train/test_precision.py trains that way on purpose).
            "precision": "fp32",
        },
    }
    for key, value in over.items():
        node = spec
        parts = key.split("__")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return spec


def losses(folder: Path) -> list[float]:
    import json

    return [
        m["loss"] for m in map(json.loads, (folder / "metrics.jsonl").read_text().splitlines()) if "loss" in m
    ]


def run(spec: dict, out: Path, callbacks=()):
    from tuneforge.train.run import run_training

    return run_training(parse_spec(spec), out, callbacks=callbacks)
