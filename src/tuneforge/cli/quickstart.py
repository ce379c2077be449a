"""`tuneforge quickstart`: the main path end to end on the embedded default."""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

import typer

from tuneforge.settings import get_settings

from .common import console, stage_progress

QUESTIONS = [
    [{"role": "user", "content": "Give three tips for staying healthy."}],
    [{"role": "user", "content": "类型#上衣*颜色#白色*风格#简约"}],
]


def _ask(lm, title: str) -> list[str]:
    from tuneforge.evaluate.generate import generate

    answers = generate(lm, QUESTIONS, max_new_tokens=48)
    console.rule(title)
    for q, a in zip(QUESTIONS, answers, strict=True):
        console.print(f"[bold]user:[/] {q[0]['content']}\n[bold]assistant:[/] {a}\n", highlight=False)
    return answers


def quickstart(
    skip_train: bool = typer.Option(False, "--skip-train", help="Only pull and validate."),
    steps: int = typer.Option(30, help="LoRA steps to train on the sample data."),
):
    """Pull the default model, validate the sample dataset, fine-tune it with LoRA, compare answers."""
    from tuneforge.data.load import load_records
    from tuneforge.data.validate import build_report
    from tuneforge.models.pull import pull_model

    settings = get_settings()
    console.rule("1. base model")
    with stage_progress() as progress:
        info, new = pull_model(settings.default_model, progress)
    console.print(
        f"{'pulled' if new else 'already pulled'} {info['name']}: {info['architecture']}, "
        f"{info['parameters'] / 1e6:.1f}M parameters, context {info['context_length']}"
    )

    console.rule("2. sample dataset")
    samples = resources.files("tuneforge") / "samples"
    data = Path(str(samples / "alpaca_sample.json"))
    from tuneforge.models.load import load_tokenizer

    tokenizer = load_tokenizer(info["name"])
    report = build_report(load_records(data), tokenizer, tokenizer.chat_template, 512, preview=0)
    d = report.to_dict()
    console.print(
        f"{data.name}: {d['format']}, {d['records']} records, valid={d['valid']}, "
        f"median {d['stats']['sequence']['median']} tokens, {d['stats']['trained_tokens']} trained"
    )
    if skip_train:
        console.print("next: tuneforge train " + str(samples / "sample_spec.yaml"))
        return

    from tuneforge.models.inference import load_for_inference
    from tuneforge.spec import load_spec
    from tuneforge.train.run import run_training

    before = _ask(load_for_inference(info["name"]), "3. base model answers")
    console.rule(f"4. LoRA fine-tune ({steps} steps)")
    spec = load_spec(Path(str(samples / "sample_spec.yaml")), [f"train.max_steps={steps}"])
    job = settings.jobs_dir / "quickstart"
    shutil.rmtree(job, ignore_errors=True)  # quickstart starts over each time
    result = run_training(spec, job, show_bar=True)
    console.print(
        f"job folder: {result.folder}  train_loss={result.metrics.get('train_loss', 0):.4f}  "
        f"eval_loss={result.metrics.get('eval_loss', float('nan')):.4f}"
    )
    after = _ask(load_for_inference(result.folder / "final"), "5. fine-tuned answers")
    console.rule("next")
    console.print(
        f"tuneforge eval {result.folder / 'final'} --data {data} --compare-base --max-samples 8\n"
        f"tuneforge models export {result.folder / 'final'} -o merged-model"
    )
    return before, after
