"""Evaluation numbers: template-less base models evaluate, and eval loss is one per-token mean."""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from tests.conftest import write
from tests.support.clihelp import run_cli
from tests.support.trainhelp import run, tiny_spec

# Five examples of different lengths: batches of 2 or 4 leave a short last batch.
FIVE = (
    [
        {"role": "user", "content": "Say the code word."},
        {"role": "assistant", "content": "banana seven"},
    ],
    [
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "The capital of France is Paris, and the quick brown fox jumps."},
    ],
    [
        {"role": "user", "content": "Count to three."},
        {"role": "assistant", "content": "one"},
    ],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "今天天气很好"},
        {"role": "assistant", "content": "The weather is nice today."},
    ],
    [
        {"role": "user", "content": "Give three tips for staying healthy."},
        {"role": "assistant", "content": "Eat well, exercise, sleep."},
    ],
)


def strip_template(src, dst):
    """A copy of a model folder whose tokenizer ships no chat template (like gpt2, opt, bloom)."""
    folder = shutil.copytree(src, dst)
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    cfg = json.loads((folder / "tokenizer_config.json").read_text())
    cfg.pop("chat_template", None)
    (folder / "tokenizer_config.json").write_text(json.dumps(cfg))
    return folder


@pytest.fixture(scope="module")
def templateless(tiny_models, tmp_path_factory):
    root = tmp_path_factory.mktemp("templateless")
    return {arch: strip_template(tiny_models[arch], root / arch) for arch in ("gpt2", "opt", "bloom")}


def per_token_mean(model, tokenizer, template, conversations) -> float:
    """By hand: every example alone, every assistant token's loss summed, divided once by the count."""
    from tuneforge.data.tokenize import IGNORE_INDEX, tokenize_chat

    total, count = 0.0, 0
    for messages in conversations:
        tok = tokenize_chat(tokenizer, template, messages, None)
        with torch.no_grad():
            logits = model(input_ids=torch.tensor([tok.input_ids])).logits[0, :-1]
        for position, label in enumerate(tok.labels[1:]):
            if label != IGNORE_INDEX:
                total -= torch.log_softmax(logits[position].double(), -1)[label].item()
                count += 1
    return total / count


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_trainer_eval_loss_is_the_per_token_mean_at_any_batch_size(tiny_models, tmp_path, arch):
    from transformers import AutoModelForCausalLM, TrainingArguments

    from tuneforge.data.tokenize import tokenize_chat
    from tuneforge.models.load import load_tokenizer
    from tuneforge.train.collate import PaddedCollator
    from tuneforge.train.trainer import CausalLMTrainer

    tokenizer = load_tokenizer(tiny_models[arch])
    model = AutoModelForCausalLM.from_pretrained(str(tiny_models[arch])).eval()
    examples = [tokenize_chat(tokenizer, tokenizer.chat_template, m, None).__dict__ for m in FIVE]
    expected = per_token_mean(model, tokenizer, tokenizer.chat_template, FIVE)
    for batch in (2, 4):
        args = TrainingArguments(
            output_dir=str(tmp_path / f"b{batch}"),
            per_device_eval_batch_size=batch,
            report_to="none",
            use_cpu=True,
            prediction_loss_only=True,
            remove_unused_columns=False,
        )
        trainer = CausalLMTrainer(
            model=model,
            args=args,
            eval_dataset=[{"input_ids": e["input_ids"], "labels": e["labels"]} for e in examples],
            data_collator=PaddedCollator(tokenizer.pad_token_id),
            token_counter={"seen": 0, "trained": 0},
        )
        assert trainer.evaluate()["eval_loss"] == pytest.approx(expected, rel=1e-6), batch


def test_tuneforge_eval_loss_is_the_per_token_mean_at_any_batch_size(templateless, tmp_path):
    from transformers import AutoModelForCausalLM

    from tuneforge.data.templates import CHAT_TEMPLATES
    from tuneforge.evaluate.generate import load_for_inference
    from tuneforge.evaluate.run import eval_loss
    from tuneforge.models.load import load_tokenizer

    folder = templateless["gpt2"]
    model = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    # the model ships no template, so evaluation (like training) uses 'plain'
    expected = per_token_mean(model, load_tokenizer(folder), CHAT_TEMPLATES["plain"], FIVE)
    lm = load_for_inference(folder)
    for batch in (2, 4):
        assert eval_loss(lm, list(FIVE), batch_size=batch) == pytest.approx(expected, rel=1e-6), batch


@pytest.mark.parametrize("arch", ["gpt2", "opt", "bloom"])
@pytest.mark.parametrize("compare", [False, True])
def test_eval_on_a_model_without_chat_template(capsys, templateless, memo_data, tmp_path, arch, compare):
    args = ["eval", templateless[arch], "--data", memo_data, "--max-new-tokens", "4", "--max-samples", "3"]
    code, out, err = run_cli(capsys, *args, *(["--compare-base"] if compare else []), "--json")
    assert code == 0, err
    models = json.loads(out)["models"]
    assert len(models) == (2 if compare else 1)
    for metrics in models.values():
        assert math.isfinite(metrics["eval_loss"]) and metrics["eval_loss"] > 0 and metrics["samples"] == 3
    if compare:  # the same model twice: the same figures
        assert len({m["eval_loss"] for m in models.values()}) == 1


def test_base_without_template_is_evaluated_with_the_fine_tuned_template(
    capsys, templateless, memo_data, tmp_path
):
    """A gpt2 trained with the alpaca template: its base is asked in alpaca's layout too."""
    from transformers import AutoModelForCausalLM

    from tuneforge.data.store import read_any_dataset
    from tuneforge.data.templates import CHAT_TEMPLATES
    from tuneforge.models.load import load_tokenizer

    base = templateless["gpt2"]
    spec = tiny_spec(base, memo_data, train__max_steps=2, data__chat_template="alpaca", data__max_len=256)
    final = run(spec, tmp_path / "job").folder / "final"
    code, out, err = run_cli(
        capsys, "eval", final, "--data", memo_data, "--compare-base", "--max-new-tokens", "2", "--json"
    )
    assert code == 0, err
    models = json.loads(out)["models"]
    ((_, base_metrics),) = [(k, v) for k, v in models.items() if "(base)" in k]
    records, _, _ = read_any_dataset(str(memo_data))
    conversations = [r["messages"] for r in records]
    model = AutoModelForCausalLM.from_pretrained(str(base)).eval()
    expected = per_token_mean(model, load_tokenizer(base), CHAT_TEMPLATES["alpaca"], conversations)
    assert base_metrics["eval_loss"] == pytest.approx(expected, abs=2e-6)


def test_unexpected_failure_is_one_line_without_traceback(capsys, tiny_llama, tmp_path):
    bad = write(
        tmp_path / "bad.json",
        [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}],
    )
    # a model folder whose weights are not a model: transformers raises its own error
    broken = shutil.copytree(tiny_llama, tmp_path / "broken")
    (broken / "model.safetensors").write_bytes(b"not a safetensors file")
    code, out, err = run_cli(capsys, "eval", broken, "--data", bad, "--max-new-tokens", "2")
    assert code == 1
    assert "Traceback" not in err and "error:" in err and "--debug" in err


def test_demo_answers_use_saved_settings_and_a_repetition_penalty(tiny_llama, tmp_path):
    """quickstart's answers: the model's generation_config.json applies, and the penalty changes loops."""
    from tuneforge.evaluate.generate import chat_prompts, generate, load_for_inference

    question = [[{"role": "user", "content": "Give three tips for staying healthy."}]]
    lm = load_for_inference(tiny_llama)

    def first_token(model) -> int:  # of the greedy answer, as an id (the decoded answer is stripped)
        enc = model.tokenizer(chat_prompts(model, question), return_tensors="pt", add_special_tokens=False)
        return int(model.model.generate(**enc, max_new_tokens=1, do_sample=False)[0, -1])

    greedy = generate(lm, question, 16)[0]
    assert generate(lm, question, 16, repetition_penalty=1.0)[0] == greedy
    assert generate(lm, question, 16, repetition_penalty=1.3)[0] != greedy
    # a saved setting (here: never emit the greedy answer's first token) is honoured by the demo path
    folder = shutil.copytree(tiny_llama, tmp_path / "m")
    cfg = json.loads((folder / "generation_config.json").read_text())
    (folder / "generation_config.json").write_text(json.dumps({**cfg, "suppress_tokens": [first_token(lm)]}))
    suppressed = load_for_inference(folder)
    demo = generate(suppressed, question, 16, repetition_penalty=1.0)[0]
    assert demo != greedy  # with penalty 1.0 only the saved setting can make it differ (see above)
