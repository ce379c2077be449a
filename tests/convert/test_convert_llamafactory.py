"""LLaMA-Factory configs (YAML and `llamafactory-cli train` lines) convert to the JobSpec they mean."""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import MEMO, write
from tests.support.clihelp import run_cli
from tests.support.paths import FIXTURES
from tuneforge.convert.lf_args import read_arguments
from tuneforge.convert.llamafactory import convert_llamafactory, load_llamafactory
from tuneforge.data.store import read_any_dataset
from tuneforge.errors import ConfigError
from tuneforge.spec import load_spec

DATASET_INFO = {
    "identity": {"file_name": "identity.json"},
    "alpaca_en_demo": {"file_name": "alpaca_en_demo.json"},
    "adgen": {"file_name": "adgen.json", "columns": {"prompt": "content", "response": "summary"}},
    "dpo_en_demo": {
        "file_name": "dpo_en_demo.json",
        "ranking": True,
        "formatting": "sharegpt",
        "columns": {"messages": "conversations", "chosen": "chosen", "rejected": "rejected"},
    },
    "c4_demo": {"file_name": "c4_demo.jsonl", "columns": {"prompt": "text"}},
    "chat_roles": {
        "file_name": "chat_roles.json",
        "formatting": "sharegpt",
        "columns": {"messages": "dialog", "system": "system_prompt"},
        "tags": {
            "role_tag": "role",
            "content_tag": "content",
            "user_tag": "user",
            "assistant_tag": "assistant",
        },
    },
    "hub_only": {"hf_hub_url": "org/data"},
}


@pytest.fixture
def lf_dir(tmp_path, monkeypatch):
    """A working directory laid out as LLaMA-Factory's: data/dataset_info.json and its files."""
    data = tmp_path / "data"
    write(data / "dataset_info.json", DATASET_INFO)
    write(data / "identity.json", MEMO)
    write(data / "alpaca_en_demo.json", MEMO)
    write(data / "adgen.json", [{"content": "类型#裤*颜色#黑色", "summary": "一条黑色的裤子。"}])
    write(
        data / "dpo_en_demo.json",
        [
            {
                "conversations": [{"from": "human", "value": "Name a fruit."}],
                "chosen": {"from": "gpt", "value": "An apple."},
                "rejected": {"from": "gpt", "value": "A chair."},
            }
        ],
    )
    write(data / "c4_demo.jsonl", json.dumps({"text": "The quick brown fox."}) + "\n")
    write(
        data / "chat_roles.json",
        [
            {
                "dialog": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}],
                "system_prompt": "Be brief.",
            }
        ],
    )
    monkeypatch.chdir(tmp_path)
    return tmp_path


def convert(yaml_text: str, strict: bool = False):
    args = read_arguments(yaml_text, "cfg.yaml", Path.cwd())
    conversion = convert_llamafactory(args, "cfg.yaml", strict=strict)
    return conversion, conversion.job_spec()


def records(ref):
    return read_any_dataset(ref.path, ref.format, ref.map)


SFT_LORA = """
### model
model_name_or_path: meta-llama/Meta-Llama-3-8B-Instruct
trust_remote_code: true
### method
stage: sft
do_train: true
finetuning_type: lora
lora_rank: 8
lora_target: all
### dataset
dataset: identity,alpaca_en_demo
template: llama3
cutoff_len: 2048
max_samples: 1000
overwrite_cache: true
preprocessing_num_workers: 16
dataloader_num_workers: 4
### output
output_dir: saves/llama3-8b/lora/sft
logging_steps: 10
save_steps: 500
plot_loss: true
overwrite_output_dir: true
save_only_model: false
report_to: none
### train
per_device_train_batch_size: 1
gradient_accumulation_steps: 8
learning_rate: 1.0e-4
num_train_epochs: 3.0
lr_scheduler_type: cosine
warmup_ratio: 0.1
bf16: true
ddp_timeout: 180000000
resume_from_checkpoint: null
"""


def test_sft_lora_example(lf_dir):
    conv, spec = convert(SFT_LORA)
    assert (spec.method, spec.finetuning, spec.model) == (
        "sft",
        "lora",
        "meta-llama/Meta-Llama-3-8B-Instruct",
    )
    assert spec.trust_remote_code is True
    assert [r.path for r in spec.data.train] == [
        str(lf_dir / "data" / "identity.json"),
        str(lf_dir / "data" / "alpaca_en_demo.json"),
    ]
    assert {(r.format, r.max_samples, tuple(r.map)) for r in spec.data.train} == {("alpaca", 1000, ())}
    assert (spec.data.chat_template, spec.data.max_len, spec.data.mask) == (
        "llamafactory:llama3",
        2048,
        "assistant",
    )
    assert spec.data.truncation == "keep_answers"
    assert (spec.lora.r, spec.lora.alpha, spec.lora.target_modules) == (8, 16, "all-linear")
    t = spec.train
    assert (t.batch_size, t.grad_accum, t.learning_rate, t.epochs) == (1, 8, 1e-4, 3.0)
    assert (t.scheduler, t.warmup_ratio, t.precision, t.logging_steps, t.save_steps) == (
        "cosine",
        0.1,
        "bf16",
        10,
        500,
    )
    assert spec.output_dir == "saves/llama3-8b/lora/sft"
    noted = {n.split(":")[0] for n in conv.notes}
    assert {"do_train", "overwrite_cache", "preprocessing_num_workers", "ddp_timeout"} <= noted
    assert t.report_to == ["tensorboard"]  # report_to: none — the job folder's TensorBoard files stay
    assert conv.warnings == []


def test_qlora_example(lf_dir):
    text = SFT_LORA + "quantization_bit: 4\nquantization_method: bitsandbytes\ndouble_quantization: true\n"
    _, spec = convert(text)
    assert spec.finetuning == "qlora" and spec.lora.r == 8


def test_dpo_example_reads_sharegpt_preference_pairs(lf_dir):
    _, spec = convert(
        """
model_name_or_path: m
stage: dpo
finetuning_type: lora
lora_target: q_proj,v_proj
pref_beta: 0.2
pref_loss: sigmoid
dataset: dpo_en_demo
template: qwen
cutoff_len: 512
learning_rate: 5.0e-6
"""
    )
    assert (spec.method, spec.train.dpo_beta, spec.learning_rate) == ("dpo", 0.2, 5e-6)
    assert spec.lora.target_modules == ["q_proj", "v_proj"] and spec.data.chat_template == "llamafactory:qwen"
    ref = spec.data.train[0]
    assert (ref.format, ref.map) == ("preference", {"prompt": "conversations"})
    recs, kind, _ = records(ref)
    assert kind == "preference"
    assert recs == [
        {
            "prompt": [{"role": "user", "content": "Name a fruit."}],
            "chosen": [{"role": "assistant", "content": "An apple."}],
            "rejected": [{"role": "assistant", "content": "A chair."}],
        }
    ]


def test_pretraining_example(lf_dir):
    conv, spec = convert(
        "model_name_or_path: m\nstage: pt\ndataset: [c4_demo]\ncutoff_len: 1024\npacking: true\n"
        "finetuning_type: full\nlearning_rate: 1.0e-5\n"
    )
    assert (spec.method, spec.finetuning, spec.data.mask, spec.data.packing) == (
        "pretrain",
        "full",
        "all",
        True,
    )
    ref = spec.data.train[0]
    assert ref.format == "text" and records(ref)[0] == [{"text": "The quick brown fox."}]
    # what the config leaves out trains as under LLaMA-Factory, and says so
    t = spec.train
    assert (t.scheduler, t.warmup_ratio, t.batch_size, t.precision) == ("linear", 0.0, 8, "fp32")
    assert (spec.data.max_len, spec.lora.dropout, t.learning_rate) == (1024, 0.0, 1e-5)
    assert any(
        n.startswith("LLaMA-Factory defaults for keys the config leaves out: lr_scheduler")
        for n in conv.notes
    )


def test_sharegpt_and_alpaca_column_maps_read_the_renamed_columns(lf_dir):
    _, spec = convert(
        "model_name_or_path: m\ndataset: chat_roles\neval_dataset: adgen\nval_size: 0.1\ntemplate: mistral\n"
    )
    chat = spec.data.train[0]
    assert (chat.format, chat.map) == ("openai", {"messages": "dialog", "system": "system_prompt"})
    assert records(chat)[0] == [
        {
            "messages": [
                {"role": "system", "content": "Be brief."},
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello!"},
            ]
        }
    ]
    adgen = spec.data.validation
    assert (adgen.format, adgen.map) == ("alpaca", {"instruction": "content", "output": "summary"})
    assert records(adgen)[0][0]["messages"][1] == {"role": "assistant", "content": "一条黑色的裤子。"}
    assert spec.data.val_fraction == 0.1 and spec.data.chat_template == "llamafactory:mistral"


def test_unknown_keys_warn_and_strict_refuses(lf_dir):
    conv, _ = convert(SFT_LORA + "my_custom_knob: 3\n")
    assert conv.warnings == ["my_custom_knob: not a LLaMA-Factory key tuneforge knows; ignored"]
    with pytest.raises(ConfigError, match=r"my_custom_knob.*--strict"):
        convert(SFT_LORA + "my_custom_knob: 3\n", strict=True)


def test_what_tuneforge_cannot_run_is_refused_all_at_once(lf_dir):
    text = SFT_LORA.replace("finetuning_type: lora", "finetuning_type: freeze").replace(
        "stage: sft", "stage: ppo"
    )
    text = text.replace("identity,alpaca_en_demo", "identity,hub_only,missing") + "optim: lion_8bit\n"
    with pytest.raises(ConfigError) as err:
        convert(text)
    message = str(err.value)
    for expected in ("stage 'ppo'", "freeze", "optim 'lion_8bit'", "hub_only", "'missing' is not in"):
        assert expected in message
    with pytest.raises(ConfigError, match="quantization_bit 8"):
        convert(SFT_LORA + "quantization_bit: 8\n")
    with pytest.raises(ConfigError, match="val_size 100: a count"):
        convert(SFT_LORA + "val_size: 100\n")


SEED = r"""cd /code/LLaMA-Factory
export USE_MODELSCOPE_HUB=1 && llamafactory-cli train \
    --stage sft \
    --do_train True \
    --model_name_or_path MODEL \
    --preprocessing_num_workers 16 \
    --finetuning_type lora \
    --quantization_method bitsandbytes \
    --template llama3 \
    --flash_attn auto \
    --dataset_dir data \
    --dataset train \
    --cutoff_len 1024 \
    --learning_rate 5e-05 \
    --num_train_epochs 3.0 \
    --max_samples 100000 \
    --per_device_train_batch_size 2 \
    --gradient_accumulation_steps 8 \
    --lr_scheduler_type cosine \
    --max_grad_norm 1.0 \
    --logging_steps 5 \
    --save_steps 100 \
    --warmup_steps 0 \
    --optim adamw_torch \
    --packing False \
    --report_to none \
    --output_dir saves/output/train2 \
    --bf16 True \
    --plot_loss True \
    --ddp_timeout 180000000 \
    --include_num_input_tokens_seen True \
    --lora_rank 8 \
    --lora_alpha 16 \
    --lora_dropout 0 \
    --lora_target all \
    --loraplus_lr_ratio 16
"""


def test_seed_command_converts_from_stdin_to_a_spec_file(capsys, lf_dir, monkeypatch):
    write(lf_dir / "data" / "dataset_info.json", {"train": {"file_name": "train.json"}})
    write(lf_dir / "data" / "train.json", MEMO)
    monkeypatch.setattr(sys, "stdin", io.StringIO(SEED))
    code, out, err = run_cli(capsys, "spec", "convert", "--from-llamafactory", "-", "-o", "spec.yaml")
    assert code == 0, err
    assert "note: ddp_timeout" in err and "warning" not in err
    spec = load_spec(lf_dir / "spec.yaml")
    assert (spec.method, spec.finetuning, spec.model, spec.output_dir) == (
        "sft",
        "lora",
        "MODEL",
        "saves/output/train2",
    )
    assert spec.data.train[0].path == str(lf_dir / "data" / "train.json")
    assert (spec.data.train[0].max_samples, spec.data.max_len, spec.data.packing) == (100000, 1024, False)
    assert (spec.lora.r, spec.lora.alpha, spec.lora.dropout, spec.lora.plus_ratio) == (8, 16, 0.0, 16.0)
    t = spec.train
    assert (t.learning_rate, t.epochs, t.batch_size, t.grad_accum, t.scheduler) == (5e-5, 3.0, 2, 8, "cosine")
    assert (t.max_grad_norm, t.logging_steps, t.save_steps, t.warmup_steps) == (1.0, 5, 100, 0)
    assert (t.optimizer, t.precision) == ("adamw_torch", "bf16")
    header = (lf_dir / "spec.yaml").read_text().splitlines()[0]
    assert header.startswith("# tuneforge JobSpec converted from the LLaMA-Factory config <stdin>")


def test_command_lines_in_every_shape():
    args = read_arguments(
        "CUDA_VISIBLE_DEVICES=0 llamafactory-cli train --stage=dpo --do_train --learning_rate 1e-4 "
        "--max_steps -1 # a comment\nllamafactory-cli export --stage sft",
        "cmd",
        Path.cwd(),
    )
    assert args == {"stage": "dpo", "do_train": True, "learning_rate": 1e-4, "max_steps": -1}
    with pytest.raises(ConfigError, match="no `llamafactory-cli train`"):
        read_arguments("python train.py --x 1", "cmd", Path.cwd())
    with pytest.raises(ConfigError, match="flat key: value"):
        read_arguments("model: {a: 1}", "cfg", Path.cwd())


def test_train_from_llamafactory_runs_the_converted_spec(capsys, lf_dir, tiny_llama):
    seed = SEED.replace("MODEL", str(tiny_llama)).replace("--bf16 True", "--bf16 False")
    seed = seed.replace("--gradient_accumulation_steps 8", "--gradient_accumulation_steps 1")
    write(lf_dir / "data" / "dataset_info.json", {"train": {"file_name": "train.json"}})
    write(lf_dir / "data" / "train.json", MEMO)
    write(lf_dir / "seed_command.txt", seed)
    code, out, err = run_cli(
        capsys, "train", "--from-llamafactory", "seed_command.txt", "--set", "train.max_steps=2", "--json"
    )
    assert code == 0, err
    folder = lf_dir / "saves" / "output" / "train2"
    assert Path(json.loads(out)["folder"]).resolve() == folder.resolve()
    written = yaml.safe_load((folder / "spec.yaml").read_text())
    assert written["lora"]["plus_ratio"] == 16.0 and written["train"]["max_steps"] == 2
    assert (folder / "final" / "adapter_model.safetensors").exists()


def test_missing_file_and_garbage_are_clear_errors(capsys, tmp_path):
    code, _, err = run_cli(capsys, "spec", "convert", "--from-llamafactory", tmp_path / "nope.yaml")
    assert code == 2 and "no such file" in err
    write(tmp_path / "bin.yaml", b"\xff\xfe\x00garbage")
    code, _, err = run_cli(capsys, "spec", "convert", "--from-llamafactory", tmp_path / "bin.yaml")
    assert code == 2 and "not a text file" in err
    write(tmp_path / "big.yaml", "x" * (2 << 20))
    with pytest.raises(ConfigError, match="too long"):
        load_llamafactory(tmp_path / "big.yaml")


# LLaMA-Factory 0.9.5's own renderings (encode_multiturn, the default model's tokenizer) of two
# conversations under nine of its templates, as the prompt part (masked) and answer part (trained) of each
# turn.
# LLaMA-Factory 0.9.5's own renderings (its encode_multiturn, the default model's tokenizer)
LF_FIXTURE = FIXTURES / "llamafactory_templates.json"
FIXTURE_CONVERSATIONS = {
    "no_system": [
        {"from": "human", "value": "Give three tips for staying healthy."},
        {"from": "gpt", "value": "Eat well, move daily, sleep enough."},
        {"from": "human", "value": "And one more?"},
        {"from": "gpt", "value": "Drink water."},
    ],
    "with_system": [
        {"from": "system", "value": "You answer briefly."},
        {"from": "human", "value": "What is 2+2?"},
        {"from": "gpt", "value": "4"},
    ],
}
# Names LLaMA-Factory defines with exactly chatml's slots (its data/template.py): the chatml rendering.
SAME_AS_CHATML = ("smollm", "yi", "qwen3_nothink")
# What these templates write after an answer's stop token: LLaMA-Factory trains it, a converted spec
# does not (the loss ends at the stop token, where generation stops).
LAYOUT_AFTER_STOP = {
    "default": "\n",
    "alpaca": "\n\n",
    **dict.fromkeys(("chatml", "qwen", "smollm2", *SAME_AS_CHATML), "\n"),
}


def lf_renderings() -> dict:
    return json.loads(LF_FIXTURE.read_text())["templates"]


def trained_runs(tokenizer, ids, labels) -> list[tuple[str, str]]:
    """The example as alternating ("prompt", text) and ("answer", text) runs of untrained/trained tokens."""
    from tuneforge.data.tokenize import IGNORE_INDEX

    runs: list[tuple[str, list[int]]] = []
    for tok, lab in zip(ids, labels, strict=True):
        kind = "prompt" if lab == IGNORE_INDEX else "answer"
        if runs and runs[-1][0] == kind:
            runs[-1][1].append(tok)
        else:
            runs.append((kind, [tok]))
    return [(k, tokenizer.decode(t, clean_up_tokenization_spaces=False)) for k, t in runs]


CONVERTED_TEMPLATES = [
    "default",
    "alpaca",
    "vicuna",
    "chatml",
    "qwen",
    "smollm2",
    "llama3",
    "mistral",
    "empty",
]


@pytest.mark.parametrize("name", [*CONVERTED_TEMPLATES, *SAME_AS_CHATML])
def test_converted_templates_train_on_llamafactory_text(capsys, lf_dir, tiny_tokenizer, name):
    """`spec convert --from-llamafactory`, then the training data path (records, template, masks): the
    prompt and answer parts equal LLaMA-Factory's, with one stated difference — the layout a template
    writes after an answer's stop token (chatml's "\\n" after <|im_end|>, alpaca's "\\n\\n") is not trained
    here but sits, untrained, before the next prompt (LLaMA-Factory trains it). The same check runs with
    the default model's own tokenizer (the fixture's) in tests/test_integration_default_model.py."""
    check_converted_template(capsys, lf_dir, tiny_tokenizer, name)


def check_converted_template(capsys, lf_dir, tokenizer, name):
    from tuneforge.data.templates import resolve_chat_template
    from tuneforge.train.data import load_spec_records, tokenize_records

    renderings = lf_renderings()["chatml" if name in SAME_AS_CHATML else name]
    write(
        lf_dir / "data" / "dataset_info.json",
        {"fixture": {"file_name": "fixture.json", "formatting": "sharegpt"}},
    )
    write(lf_dir / "data" / "fixture.json", [{"conversations": c} for c in FIXTURE_CONVERSATIONS.values()])
    write(
        lf_dir / "cfg.yaml", f"model_name_or_path: m\ndataset: fixture\ntemplate: {name}\ncutoff_len: 4096\n"
    )
    code, _, err = run_cli(capsys, "spec", "convert", "--from-llamafactory", "cfg.yaml", "-o", "spec.yaml")
    assert code == 0, err
    spec = load_spec(lf_dir / "spec.yaml")
    template = resolve_chat_template(tokenizer, spec.data.chat_template)
    train, _ = load_spec_records(spec)
    examples = tokenize_records(train, tokenizer, template, spec).examples
    layout = LAYOUT_AFTER_STOP.get(name, "")
    for example, key in zip(examples, FIXTURE_CONVERSATIONS, strict=True):
        expected, carried = [], ""
        for turn in renderings[key]:
            assert turn["answer"].endswith(layout)
            expected += [
                ("prompt", carried + turn["prompt"]),
                ("answer", turn["answer"][: len(turn["answer"]) - len(layout)]),
            ]
            carried = layout
        expected += [("prompt", carried)] if carried else []
        assert trained_runs(tokenizer, example["input_ids"], example["labels"]) == expected
    assert spec.data.chat_template == f"llamafactory:{name}"
    said = f"the {layout!r} it writes after each answer's stop token is not trained here"
    assert (said in err) == bool(layout)  # the difference is said in the conversion's notes


@pytest.mark.parametrize(
    "name, said",
    [
        ("chatglm3", "tuneforge's chatglm3 is the nearest, and differs"),
        ("qwen3", "'<think>\\n\\n</think>\\n\\n' before every answer"),
        ("qwen2_5", "Qwen2 and Qwen2.5 models take template qwen"),
        ("gemma", "the nearest is the model's own chat template (auto)"),
    ],
)
def test_templates_not_reproduced_are_refused_with_the_difference(lf_dir, name, said):
    with pytest.raises(ConfigError) as err:
        convert(SFT_LORA.replace("template: llama3", f"template: {name}"))
    assert f"template {name}: " in str(err.value) and said in str(err.value)
    assert "--set data.chat_template=NAME" in str(err.value)


def test_a_converted_bf16_command_says_it_trains_in_bf16(lf_dir, tiny_llama, caplog, monkeypatch):
    """`--bf16 True` on a CPU trains in bfloat16, as asked; the message says so (not "auto picks fp32")
    on a CPU without AMX (with AMX bf16 is what auto picks too: tests/train/test_precision.py)."""
    import torch

    from tuneforge.train import model
    from tuneforge.train.model import preflight

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(model, "cpu_has_bf16_matmul", lambda: False)
    write(lf_dir / "data" / "dataset_info.json", {"train": {"file_name": "train.json"}})
    write(lf_dir / "data" / "train.json", MEMO)
    args = read_arguments(SEED.replace("MODEL", str(tiny_llama)), "seed", lf_dir)
    spec = convert_llamafactory(args, "seed").job_spec()
    assert spec.train.precision == "bf16"
    runtime = preflight(spec)
    assert runtime.dtype_name == "bfloat16"
    assert "training in bfloat16 on this CPU, as asked" in caplog.text and "picks fp32" not in caplog.text


def test_rm_stage_converts_and_trains_a_reward_model(capsys, lf_dir, tiny_llama):
    write(
        lf_dir / "rm.yaml",
        f"""
model_name_or_path: {tiny_llama}
stage: rm
do_train: true
finetuning_type: lora
lora_target: all
dataset: dpo_en_demo
template: qwen
cutoff_len: 256
per_device_train_batch_size: 1
learning_rate: 1.0e-4
output_dir: saves/rm
""",
    )
    conv, spec = convert((lf_dir / "rm.yaml").read_text())
    assert (spec.method, spec.finetuning, spec.data.train[0].format) == ("rm", "lora", "preference")
    code, out, err = run_cli(
        capsys, "train", "--from-llamafactory", "rm.yaml", "--set", "train.max_steps=2", "--json"
    )
    assert code == 0, err
    final = lf_dir / "saves" / "rm" / "final"
    assert json.loads((final / "tuneforge.json").read_text())["method"] == "rm"
    assert json.loads((final / "adapter_config.json").read_text())["task_type"] == "SEQ_CLS"
    steps = [json.loads(x) for x in (final.parent / "metrics.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps if "loss" in s] == [1, 2] and "accuracy" in steps[0]
