"""Training throughput: tuneforge vs the plain transformers Trainer + peft (and LLaMA-Factory if it installs).

Same model (SmolLM2-135M-Instruct), same data, same hyperparameters, same seed, in one run. Prints
the machine (CPU model, threads) and each system's versions, then non-padding tokens/s for each, the
ratios, the peak resident memory of each training (every run in a fresh process), the eval loss each
reaches after the same epochs on the same held-out records, and MFU against a matmul peak measured in
this run. Medians over --runs.

    python bench/train_throughput.py [--data FILE] [--train 64] [--eval 32] [--runs 3] [--llamafactory]
                                     [--peers-bf16] [--tuneforge-fp32]

Each system trains in its own default precision (tuneforge: train.precision auto, which is bf16 mixed
precision on a CPU with AMX and fp32 elsewhere; the Trainer and LLaMA-Factory: fp32 unless told).
--peers-bf16 also runs the Trainer + peft and LLaMA-Factory with `bf16: true`, for a like-for-like
comparison, and --tuneforge-fp32 tuneforge with `train.precision: fp32` (the losses to compare against);
every system's line says the precision it ran.

--data: a JSON array or JSONL file of alpaca records (instruction/input/output); the first --train
records train and the next --eval are held out. Without it, Python docstrings (bench_data.py).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from dedup_check import cpu_model  # noqa: E402

os.environ.setdefault("TQDM_DISABLE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

MODEL = "smollm2-135m-instruct"
HP = {"lr": 2e-4, "batch": 4, "epochs": 1, "r": 8, "alpha": 16, "dropout": 0.0, "max_len": 512, "seed": 42}


def matmul_peak_gflops(n: int = 2048, reps: int = 5) -> float:
    import torch

    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / statistics.median(times) / 1e9


def peak_rss_mb() -> float:
    """This process's peak resident memory so far (read after training, before the eval loads more)."""
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def cpu_s() -> float:
    """CPU seconds this process has used so far (all its threads): read right after training, like
    LLaMA-Factory's whole process, so both count imports, loading, tokenizing and training."""
    import resource

    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine() -> str:
    import torch

    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"machine: {cpu_model()}; {os.cpu_count()} CPUs, "
        f"{allowed} allowed, torch threads {torch.get_num_threads()}; load average "
        f"{' '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )


def versions(lf_venv: Path | None) -> str:
    from importlib.metadata import version

    own = ", ".join(f"{p} {version(p)}" for p in ("tuneforge", "torch", "transformers", "peft"))
    line = f"versions: {own}; python {platform.python_version()}"
    python = lf_venv / "bin" / "python" if lf_venv else None
    if python and python.exists():
        code = "from importlib.metadata import version as v; print(', '.join(p + ' ' + v(p) for p in "
        code += "('llamafactory', 'torch', 'transformers', 'peft')))"
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True)
        line += f"; LLaMA-Factory venv: {out.stdout.strip() or 'unreadable'}"
    return line


def load_records(path: Path, n_train: int, n_eval: int) -> tuple[list[dict], list[dict]]:
    """(train, eval) alpaca records from a JSON array or JSONL file: the first n_train, then n_eval."""
    text = path.read_text()
    try:
        records = json.loads(text)
    except ValueError:
        records = [json.loads(line) for line in text.splitlines() if line.strip()]
    if not isinstance(records, list) or not all(isinstance(r, dict) and "output" in r for r in records):
        raise SystemExit(f"{path}: expected alpaca records (instruction/input/output), a JSON array or JSONL")
    if len(records) < n_train + n_eval:
        raise SystemExit(f"{path}: {len(records)} records; --train {n_train} + --eval {n_eval} need more")
    return records[:n_train], records[n_train : n_train + n_eval]


def tokenized(tokenizer, records):
    from tuneforge.data.formats import FORMATS, convert_rows
    from tuneforge.data.readers import RawRow
    from tuneforge.data.tokenize import tokenize_chat

    chats = convert_rows([RawRow(r, "b", i) for i, r in enumerate(records)], FORMATS["alpaca"], [])
    out = []
    for c in chats:
        t = tokenize_chat(tokenizer, tokenizer.chat_template, c["messages"], HP["max_len"])
        out.append({"input_ids": t.input_ids, "labels": t.labels})
    return out, [c["messages"] for c in chats]


def run_baseline(folder: Path, examples, eval_convs, workdir: Path, bf16: bool = False) -> dict:
    """The plain recipe: Trainer + peft LoRA, pad to the longest example of each batch. ``bf16``: the
    Trainer's `bf16=True` (autocast) on a bf16 base, as LLaMA-Factory's `bf16: true` loads it."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainingArguments,
        set_seed,
    )

    from tuneforge.evaluate.generate import LoadedModel
    from tuneforge.evaluate.run import eval_loss

    set_seed(HP["seed"])
    tok = AutoTokenizer.from_pretrained(str(folder))
    dtype = torch.bfloat16 if bf16 else torch.float32
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype)
    model = get_peft_model(
        model,
        LoraConfig(
            r=HP["r"],
            lora_alpha=HP["alpha"],
            lora_dropout=HP["dropout"],
            target_modules="all-linear",
            task_type="CAUSAL_LM",
        ),
    )
    args = TrainingArguments(
        output_dir=str(workdir),
        per_device_train_batch_size=HP["batch"],
        num_train_epochs=HP["epochs"],
        learning_rate=HP["lr"],
        lr_scheduler_type="cosine",
        warmup_steps=0.03,
        seed=HP["seed"],
        logging_steps=5,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        use_cpu=True,
        bf16=bf16,
        remove_unused_columns=False,
    )
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=examples,
        data_collator=DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100),
    )
    metrics = trainer.train().metrics
    peak, cpu = peak_rss_mb(), cpu_s()
    model.eval()
    model = model.float()  # scored in fp32 like the others
    return {
        "runtime": metrics["train_runtime"],
        "peak_mb": peak,
        "cpu_s": cpu,
        "eval_loss": eval_loss(LoadedModel(model, tok, [], "baseline"), eval_convs),
        "precision": "bf16 (autocast, bf16 base)" if bf16 else "fp32",
    }


def run_tuneforge(train_path: Path, eval_convs, workdir: Path, precision: str = "auto") -> dict:
    from tuneforge.evaluate.generate import load_for_inference
    from tuneforge.evaluate.run import eval_loss
    from tuneforge.spec import parse_spec
    from tuneforge.train.run import run_training

    spec = parse_spec(
        {
            "model": MODEL,
            "data": {"train": str(train_path), "max_len": HP["max_len"]},
            "lora": {"r": HP["r"], "alpha": HP["alpha"], "dropout": HP["dropout"]},
            "train": {
                "learning_rate": HP["lr"],
                "batch_size": HP["batch"],
                "epochs": HP["epochs"],
                "seed": HP["seed"],
                "save_steps": 100000,
                "logging_steps": 5,
                "precision": precision,
            },
        }
    )
    result = run_training(spec, workdir)
    peak, cpu = peak_rss_mb(), cpu_s()
    started = json.loads((result.folder / "events.jsonl").read_text().splitlines()[0])
    return {
        "runtime": result.metrics["train_runtime"],
        "peak_mb": peak,
        "cpu_s": cpu,
        "eval_loss": eval_loss(load_for_inference(result.folder / "final"), eval_convs),
        "precision": started.get("precision", started["dtype"]),
    }


# LLaMA-Factory 0.9.5 imports torchaudio and torchvision at start, so its venv needs a torch that their
# binaries were built against: with this machine's local torch 2.13.0+cpu (or torchaudio 2.11.1 on torch
# 2.11.0) they fail to load (`undefined symbol`, `operator torchvision::nms does not exist`). This set loads.
LF_PACKAGES = ("torch==2.11.0", "torchvision==0.26.0", "torchaudio==2.11.0", "llamafactory==0.9.5")


def run_llamafactory(
    folder: Path, train_path: Path, eval_convs, workdir: Path, venv: Path, bf16: bool = False
) -> dict | None:
    """LLaMA-Factory in its own virtualenv (created on first use); None when it does not install.
    ``bf16``: its `bf16: true` (a bf16 base, the LoRA weights upcast to fp32, the Trainer's autocast)."""
    cli = venv / "bin" / "llamafactory-cli"
    if not cli.exists():
        print(f"installing LLaMA-Factory into {venv} …", file=sys.stderr)
        ok = (
            subprocess.call([sys.executable, "-m", "venv", str(venv)]) == 0
            and subprocess.call([str(venv / "bin" / "pip"), "install", "-q", *LF_PACKAGES]) == 0
        )
        if not ok or not cli.exists():
            return None
    data_dir = workdir / "lf-data"
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / "bench.json").write_text(train_path.read_text())
    (data_dir / "dataset_info.json").write_text(json.dumps({"bench": {"file_name": "bench.json"}}))
    config = {
        "model_name_or_path": str(folder),
        "stage": "sft",
        "do_train": True,
        "finetuning_type": "lora",
        "lora_rank": HP["r"],
        "lora_alpha": HP["alpha"],
        "lora_dropout": HP["dropout"],
        "lora_target": "all",
        "dataset": "bench",
        "dataset_dir": str(data_dir),
        "template": "chatml",
        "cutoff_len": HP["max_len"],
        "output_dir": str(workdir / "lf-out"),
        "overwrite_output_dir": True,
        "per_device_train_batch_size": HP["batch"],
        "gradient_accumulation_steps": 1,
        "learning_rate": HP["lr"],
        "num_train_epochs": HP["epochs"],
        "lr_scheduler_type": "cosine",
        "warmup_ratio": 0.03,
        "seed": HP["seed"],
        "logging_steps": 5,
        "save_strategy": "no",
        "report_to": "none",
        "use_cpu": True,
        "disable_gradient_checkpointing": True,
        "preprocessing_num_workers": 1,
        "overwrite_cache": True,
        "bf16": bf16,
    }
    import yaml

    cfg_path = workdir / "lf.yaml"  # its JSON config reader is broken in 0.9.5; YAML works
    cfg_path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": "", "DISABLE_VERSION_CHECK": "1"}
    log_path = workdir / "lf.log"
    with open(log_path, "w") as log:
        proc = subprocess.Popen([str(cli), "train", str(cfg_path)], env=env, stdout=log, stderr=log)
        _, status, usage = os.wait4(proc.pid, 0)  # its peak, with the processes it waited for
    results = workdir / "lf-out" / "train_results.json"
    if status != 0 or not results.exists():
        print("LLaMA-Factory run failed:\n" + log_path.read_text()[-3000:], file=sys.stderr)
        return None
    from tuneforge.evaluate.generate import LoadedModel, load_for_inference
    from tuneforge.evaluate.run import eval_loss

    # Scored like the others: the same records under the base model's own chat template.
    lm = load_for_inference(MODEL, adapter=workdir / "lf-out")
    base_tok = load_for_inference(MODEL).tokenizer
    return {
        "runtime": json.loads(results.read_text())["train_runtime"],
        "peak_mb": usage.ru_maxrss / 1024,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "eval_loss": eval_loss(LoadedModel(lm.model, base_tok, [], "llamafactory"), eval_convs),
        "precision": "bf16 (its bf16: true)" if bf16 else "fp32 (its default)",
    }


def run_one(name: str, work: Path, lf_venv: Path) -> dict | None:
    """One system's run in this (fresh) process, so its peak memory is its own."""
    from transformers import AutoTokenizer

    from tuneforge.models.store import resolve_model
    from tuneforge.train.trainer import set_threads

    set_threads()
    folder = resolve_model(MODEL)
    tok = AutoTokenizer.from_pretrained(str(folder))
    train_path = work.parent / "train.json"
    _, eval_convs = tokenized(tok, json.loads((work.parent / "eval.json").read_text()))
    bf16 = name.endswith("-bf16")
    if name.startswith("baseline"):
        examples, _ = tokenized(tok, json.loads(train_path.read_text()))
        return run_baseline(folder, examples, eval_convs, work, bf16)
    if name.startswith("tuneforge"):
        return run_tuneforge(train_path, eval_convs, work, "fp32" if name.endswith("-fp32") else "auto")
    return run_llamafactory(folder, train_path, eval_convs, work, lf_venv, bf16)


def in_child(name: str, work: Path, lf_venv: Path) -> dict | None:
    cmd = [sys.executable, __file__, "--one", name, str(work), "--lf-venv", str(lf_venv)]
    out = subprocess.run(cmd, stdout=subprocess.PIPE, text=True)
    last = (out.stdout.strip().splitlines() or ["null"])[-1]
    if out.returncode != 0:
        print(f"{name} run failed (exit {out.returncode})", file=sys.stderr)
        return None
    return json.loads(last)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, default=None, help="alpaca records, JSON array or JSONL")
    ap.add_argument("--train", type=int, default=64, help="training records per run")
    ap.add_argument("--eval", type=int, default=32, help="held-out records for eval loss")
    ap.add_argument("--runs", type=int, default=3, help="runs per system (median reported)")
    ap.add_argument("--llamafactory", action="store_true", help="also run LLaMA-Factory (own virtualenv)")
    ap.add_argument(
        "--peers-bf16", action="store_true", help="also run the Trainer (and LLaMA-Factory) with bf16: true"
    )
    ap.add_argument(
        "--tuneforge-fp32", action="store_true", help="also run tuneforge with train.precision fp32"
    )
    ap.add_argument("--lf-venv", type=Path, default=Path(tempfile.gettempdir()) / "tuneforge-bench-lf")
    ap.add_argument("--one", nargs=2, metavar=("SYSTEM", "WORKDIR"), help=argparse.SUPPRESS)
    opts = ap.parse_args()
    if opts.one:
        print(json.dumps(run_one(opts.one[0], Path(opts.one[1]), opts.lf_venv)))
        return

    from bench_data import bench_records
    from transformers import AutoTokenizer

    from tuneforge.models.pull import pull_model
    from tuneforge.models.store import resolve_model
    from tuneforge.train.trainer import set_threads

    set_threads()
    info, _ = pull_model(MODEL)
    folder = resolve_model(MODEL)
    tok = AutoTokenizer.from_pretrained(str(folder))
    if opts.data:
        train_recs, eval_recs = load_records(opts.data, opts.train, opts.eval)
    else:
        train_recs, eval_recs = bench_records(tok, opts.train, opts.eval)
    examples, _ = tokenized(tok, train_recs)
    _, eval_convs = tokenized(tok, eval_recs)
    tokens = sum(len(e["input_ids"]) for e in examples) * HP["epochs"]
    lens = sorted(len(e["input_ids"]) for e in examples)
    print(machine())
    print(versions(opts.lf_venv if opts.llamafactory else None))
    print(
        f"data: {opts.data or 'python docstrings'}: {len(examples)} train records, {tokens} tokens, "
        f"lengths {lens[0]}–{lens[-1]} (median {lens[len(lens) // 2]}); {len(eval_convs)} eval records",
        flush=True,
    )

    work = Path(tempfile.mkdtemp(prefix="tuneforge-bench-"))
    (work / "train.json").write_text(json.dumps(train_recs))
    (work / "eval.json").write_text(json.dumps(eval_recs))
    peak = matmul_peak_gflops()
    peers = ["baseline"] + (["llamafactory"] if opts.llamafactory else [])
    peers += [f"{p}-bf16" for p in peers] if opts.peers_bf16 else []
    peers += ["tuneforge-fp32"] if opts.tuneforge_fp32 else []
    results: dict[str, list[dict]] = {name: [] for name in ["tuneforge", *peers]}
    for i in range(opts.runs):
        # Alternate the order so drift in machine speed hits all alike.
        order = ["tuneforge", *peers] if i % 2 else [*peers, "tuneforge"]
        for name in order:
            r = in_child(name, work / f"{name}-{i}", opts.lf_venv)
            if r is None:
                continue
            results[name].append(r)
            print(
                f"run {i + 1} {name}: {tokens / r['runtime']:.1f} tokens/s, peak {r['peak_mb']:.0f} MB, "
                f"eval_loss {r['eval_loss']:.4f}, precision {r['precision']}, "
                f"{1000 * r['cpu_s'] / tokens:.1f} CPU ms a token (process start to trained; load "
                f"{os.getloadavg()[0]:.1f})",
                flush=True,
            )

    peak_after = matmul_peak_gflops()
    n_params = info["parameters"]
    flops_per_token = 4 * n_params  # LoRA: forward 2N + backward through activations 2N (frozen weights)

    def tps(name):
        return statistics.median(tokens / r["runtime"] for r in results[name])

    def mem(name):
        return statistics.median(r["peak_mb"] for r in results[name])

    def loss(name):
        return statistics.median(r["eval_loss"] for r in results[name])

    tf, base = tps("tuneforge"), tps("baseline")
    mfu = lambda t: 100 * t * flops_per_token / (peak * 1e9)  # noqa: E731
    print(f"\nmatmul peak fp32: {peak:.1f} GFLOP/s (after: {peak_after:.1f}); {machine()}")
    print(f"train_tokens_per_s tuneforge={tf:.1f} baseline={base:.1f} ratio={tf / base:.2f}")
    print(
        f"peak_rss_mb tuneforge={mem('tuneforge'):.0f} baseline={mem('baseline'):.0f} ratio="
        f"{mem('tuneforge') / mem('baseline'):.2f}"
    )
    print(f"eval_loss tuneforge={loss('tuneforge'):.4f} baseline={loss('baseline'):.4f}")
    print(
        f"mfu tuneforge={mfu(tf):.1f}% baseline={mfu(base):.1f}% "
        f"(4·N FLOPs per token, N={n_params / 1e6:.1f}M; against the fp32 peak, whatever precision ran)"
    )

    def cpu(name):
        return statistics.median(1000 * r["cpu_s"] / tokens for r in results[name])

    ran = [n for n in results if results[n]]
    each = " ".join(f"{n}={cpu(n):.1f} ({cpu(n) / cpu('tuneforge'):.2f}x tuneforge's)" for n in ran)
    print(f"cpu_ms_per_token (process start to trained) {each}")
    for name in peers[1:]:
        if not results[name]:
            continue
        other, other_mem = tps(name), mem(name)
        print(
            f"train_tokens_per_s {name}={other:.1f} ratio={tf / other:.2f}; peak_rss_mb {name}="
            f"{other_mem:.0f} ratio={mem('tuneforge') / other_mem:.2f} (eval_loss {loss(name):.4f}, "
            f"precision {results[name][0]['precision']})"
        )
    print(f"precision tuneforge: {results['tuneforge'][0]['precision'] if results['tuneforge'] else '-'}")
    if opts.llamafactory and not results["llamafactory"]:
        print("llamafactory: not available (did not install or run here)")


if __name__ == "__main__":
    main()
