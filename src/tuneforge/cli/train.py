"""`tuneforge train` and `tuneforge eval`."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from tuneforge.jobs import folder as fmt
from tuneforge.spec import annotated_defaults, load_spec

from .common import console, print_json, stage_progress


def train(
    spec_path: Path = typer.Argument(None, metavar="SPEC.yaml", help="The JobSpec to run."),
    from_llamafactory: str = typer.Option(
        None,
        "--from-llamafactory",
        metavar="FILE|-",
        help="Run a LLaMA-Factory training YAML or `llamafactory-cli train …` line (- reads stdin) instead.",
    ),
    strict: bool = typer.Option(False, "--strict", help="With --from-llamafactory: unknown keys are errors."),
    set_: list[str] = typer.Option(None, "--set", help="Override a key: --set train.learning_rate=1e-4."),
    output: Path = typer.Option(
        None, "--output", "-o", help="Job folder (default: output_dir or $TUNEFORGE_HOME/jobs/…)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue from the latest checkpoint."),
    print_defaults: bool = typer.Option(False, "--print-defaults", help="Print a complete annotated spec."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON."),
    resolved: bool = typer.Option(
        False,
        "--resolved",
        hidden=True,
        help="SPEC.yaml is the resolved spec the server wrote into a job folder: run it there, as it is.",
    ),
):
    """Run one training job in this process (no server needed)."""
    if print_defaults:
        sys.stdout.write(annotated_defaults())
        return
    if (spec_path is None) == (from_llamafactory is None):
        raise typer.BadParameter("give a SPEC.yaml (see --print-defaults) or --from-llamafactory FILE")
    overrides = list(set_ or [])
    if resume:
        overrides.append("resume_from=latest")
    if from_llamafactory:
        from tuneforge.convert.llamafactory import load_llamafactory

        from .spec import report_conversion

        conversion = load_llamafactory(from_llamafactory, strict=strict)
        report_conversion(conversion)
        spec = conversion.job_spec(overrides)
    else:
        spec = load_spec(spec_path, overrides, resolved=resolved)
    if resolved:
        _check_resolved(spec_path, spec.output_dir, output)
    from tuneforge.train.launch import distributed_command

    argv = sys.argv[sys.argv.index("train") + 1 :]
    folder = output or (Path(spec.output_dir) if spec.output_dir else None)
    if folder is None and spec.resources.processes > 1:  # every rank must write to the same folder
        from tuneforge.train.run import default_output_dir

        folder = default_output_dir(spec)
        argv += ["--output", str(folder)]
    if from_llamafactory == "-" and spec.resources.processes > 1:
        raise typer.BadParameter("several workers each read the config: give it as a file, not on stdin")
    command = distributed_command(spec, argv, folder=folder)
    if command and spec.resources.gpus == 0:
        os.environ["CUDA_VISIBLE_DEVICES"] = ""  # CPU workers (gloo): never N ranks on one GPU
    if command:
        console.print("launching: " + " ".join(command), highlight=False)
        os.execv(command[0], command)

    from tuneforge.train.run import run_training

    result = run_training(spec, output, show_bar=sys.stderr.isatty() and not json_out, spec_written=resolved)
    if json_out:
        print_json({"folder": str(result.folder), "metrics": result.metrics})
        return
    loss = result.metrics.get("train_loss")
    # soft_wrap: in a pipe or a job's worker.log the console is 80 columns; paths must stay whole there.
    console.print(
        f"[green]done[/]: {result.folder}"
        + (f"  train_loss={loss:.4f}" if loss else "")
        + (f"  eval_loss={result.metrics['eval_loss']:.4f}" if "eval_loss" in result.metrics else ""),
        soft_wrap=True,
    )
    console.print(
        f"adapter/model: {result.folder / fmt.FINAL_DIR}   metrics: {result.folder / fmt.METRICS_FILE}",
        soft_wrap=True,
    )


def _check_resolved(spec_path: Path | None, output_dir: str | None, output: Path | None) -> None:
    """A resolved spec is its job folder's spec.yaml: the run writes its report beside it."""
    from tuneforge.errors import ConfigError
    from tuneforge.jobs.folder import SPEC_FILE

    if spec_path is None or not output_dir or output is not None:
        raise ConfigError("--resolved runs a job folder's resolved SPEC.yaml there; give no --output.")
    if spec_path.resolve() != (Path(output_dir) / SPEC_FILE).resolve():
        raise ConfigError(
            f"--resolved: {spec_path} is not the {SPEC_FILE} of its output_dir {output_dir}; "
            "run it without --resolved."
        )


def evaluate(
    model: str = typer.Argument(
        None, help="Base model name/folder, or a job's final/ folder (not with --predictions)."
    ),
    data: str = typer.Option(
        None, "--data", help="Evaluation dataset (chat format): a path or a stored dataset."
    ),
    predictions: Path = typer.Option(
        None,
        "--predictions",
        help="Score this predictions file instead of generating: LLaMA-Factory's generated_predictions.jsonl "
        "(predict, label) or tuneforge's predictions.jsonl (prediction, reference). No model is loaded.",
    ),
    metrics: str = typer.Option(
        None,
        "--metrics",
        help="ROUGE/BLEU definitions: tuneforge (default; word BLEU-4) or llamafactory (LLaMA-Factory's "
        "character BLEU-4 and rouge-chinese ROUGE). Default for a job's final/: its spec's eval.metrics.",
    ),
    adapter: Path = typer.Option(None, "--adapter", help="A LoRA adapter to put on the model."),
    compare_base: bool = typer.Option(
        False, "--compare-base", help="Also evaluate the base model (always on with --adapter)."
    ),
    max_new_tokens: int = typer.Option(128, "--max-new-tokens"),
    max_samples: int = typer.Option(None, "--max-samples"),
    batch_size: int = typer.Option(8, "--batch-size"),
    output: Path = typer.Option(
        None, "--output", "-o", help="Folder for predictions.jsonl and metrics.json."
    ),
    format: str = typer.Option(None, "--format"),
    map: str = typer.Option(None, "--map"),
    json_out: bool = typer.Option(False, "--json"),
):
    """Eval loss, perplexity, ROUGE-1/2/L and BLEU-4 of a model on a dataset, or score a predictions file."""
    from rich.table import Table

    from tuneforge.errors import ConfigError

    text_keys = ("rouge-1", "rouge-2", "rouge-l", "bleu-4")
    if predictions is not None:
        if model or data or adapter:
            raise ConfigError("--predictions scores an existing file: give no MODEL, --data or --adapter.")
        from tuneforge.evaluate.predictions import score_predictions

        results = score_predictions(predictions, metrics or "tuneforge")
        if json_out:
            print_json(results)
            return
        table = Table("predictions", "samples", *text_keys, title=f"{results['metrics']} definitions")
        for name, m in results["models"].items():
            table.add_row(name, str(m["samples"]), *(f"{m[k]:.4f}" for k in text_keys))
        console.print(table)
        return
    if not model or not data:
        raise ConfigError(
            "give a MODEL and --data DATASET to evaluate, or --predictions FILE.jsonl to score."
        )
    from tuneforge.evaluate.run import evaluate_model

    with stage_progress(not json_out) as progress:
        results = evaluate_model(
            model,
            data,
            adapter=adapter,
            compare_base=compare_base or adapter is not None,
            max_new_tokens=max_new_tokens,
            max_samples=max_samples,
            batch_size=batch_size,
            output=output,
            fmt=format,
            mapping=map,
            progress=progress,
            metrics=metrics,
        )
    if json_out:
        print_json(results)
        return
    if results["metrics"] == "pairwise":  # a reward model
        text_keys = ("pairwise_accuracy", "mean_margin")
        table = Table("model", *text_keys, "samples", title="reward model on preference pairs")
        for name, m in results["models"].items():
            table.add_row(name, *(f"{m[k]:.4f}" for k in text_keys), str(m["samples"]))
        console.print(table)
        console.print(f"metrics in {results['output']}")
        return
    table = Table("model", "eval_loss", "perplexity", *text_keys, title=f"{results['metrics']} definitions")
    for name, m in results["models"].items():
        table.add_row(name, *(f"{m[k]:.4f}" for k in ("eval_loss", "perplexity", *text_keys)))
    console.print(table)
    console.print(f"predictions and metrics in {results['output']}")
