"""LoRA+, DoRA, rsLoRA, NEFTune and the optimizer choice each change training as they claim."""

from __future__ import annotations

import pytest
import torch
from transformers import TrainerCallback

from tests.support.clihelp import run_cli
from tests.support.trainhelp import run, tiny_spec
from tuneforge.errors import ConfigError
from tuneforge.spec import parse_spec


class Capture(TrainerCallback):
    """Keeps the model and optimizer, and the learning rate of every parameter after the first step."""

    def on_train_begin(self, args, state, control, model=None, optimizer=None, **kw):
        self.model, self.optimizer = model, optimizer

    def on_step_end(self, args, state, control, model=None, optimizer=None, **kw):
        if state.global_step == 1:
            names = {id(p): n for n, p in model.named_parameters()}
            self.lr = {names[id(p)]: g["lr"] for g in optimizer.param_groups for p in g["params"]}


def _short(tiny_llama, memo_data, **over):
    return tiny_spec(tiny_llama, memo_data, train__max_steps=2, **over)


@pytest.mark.parametrize("ratio", [None, 16.0])
def test_lora_plus_trains_b_at_ratio_times_the_a_learning_rate(tiny_llama, memo_data, tmp_path, ratio):
    cap = Capture()
    run(_short(tiny_llama, memo_data, lora__plus_ratio=ratio), tmp_path / "j", callbacks=[cap])
    a = {n: lr for n, lr in cap.lr.items() if "lora_A" in n}
    b = {n: lr for n, lr in cap.lr.items() if "lora_B" in n}
    assert len(a) == len(b) == 14  # 7 linear layers × 2 blocks, every one in the optimizer
    assert list(a.values()) == pytest.approx([1e-2] * 14)
    assert list(b.values()) == pytest.approx([1e-2 * (ratio or 1)] * 14)
    assert isinstance(getattr(cap.optimizer, "optimizer", cap.optimizer), torch.optim.AdamW)


@pytest.mark.parametrize(
    ("name", "cls"),
    [("adafactor", "Adafactor"), ("sgd", "SGD"), ("adamw_torch_fused", "AdamW")],
)
def test_optimizer_choice_is_the_one_that_steps(tiny_llama, memo_data, tmp_path, name, cls):
    cap = Capture()
    run(_short(tiny_llama, memo_data, train__optimizer=name), tmp_path / "j", callbacks=[cap])
    inner = getattr(cap.optimizer, "optimizer", cap.optimizer)
    assert type(inner).__name__ == cls
    if name == "adamw_torch_fused":
        assert inner.defaults["fused"] is True


@pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only refusal")
@pytest.mark.parametrize("name", ["adamw_8bit", "paged_adamw_8bit"])
def test_8bit_optimizers_are_refused_on_cpu_before_the_job_folder(tiny_llama, memo_data, tmp_path, name):
    with pytest.raises(ConfigError, match="needs a CUDA GPU.*adamw_torch"):
        run(_short(tiny_llama, memo_data, train__optimizer=name), tmp_path / "j")
    assert not (tmp_path / "j").exists()


def test_adapter_options_are_refused_for_full_finetuning_and_checked():
    base = {"model": "m", "data": {"train": "d.json"}, "finetuning": "full"}
    with pytest.raises(ConfigError, match="lora.plus_ratio needs a LoRA adapter"):
        parse_spec({**base, "lora": {"plus_ratio": 16}})
    with pytest.raises(ConfigError, match="lora.plus_ratio"):
        parse_spec({**base, "finetuning": "lora", "lora": {"plus_ratio": 0.5}})
    with pytest.raises(ConfigError, match="train.optimizer"):
        parse_spec({**base, "train": {"optimizer": "lion"}})


def test_rslora_dora_and_modules_to_save_change_the_adapter(tiny_llama):
    from transformers import AutoModelForCausalLM

    from tuneforge.train.model import add_lora

    def spec_with(**lora):
        return parse_spec(
            {"model": str(tiny_llama), "data": {"train": "d"}, "lora": {"r": 4, "alpha": 8, **lora}}
        )

    def scales(**lora):
        model = add_lora(AutoModelForCausalLM.from_pretrained(str(tiny_llama)), spec_with(**lora))
        q = model.base_model.model.model.layers[0].self_attn.q_proj
        return q.scaling["default"], [n for n, _ in model.named_parameters() if "magnitude" in n]

    assert scales() == (2.0, [])
    assert scales(use_rslora=True) == (4.0, [])  # 8 / sqrt(4)
    scale, magnitudes = scales(use_dora=True)
    assert scale == 2.0 and len(magnitudes) == 14
    model = add_lora(
        AutoModelForCausalLM.from_pretrained(str(tiny_llama)), spec_with(modules_to_save=["lm_head"])
    )
    trained = [n for n, p in model.named_parameters() if p.requires_grad and "lora_" not in n]
    assert trained == ["base_model.model.lm_head.modules_to_save.default.weight"]
    with pytest.raises(ConfigError, match=r"modules_to_save \['nope'\].*embed_tokens"):
        add_lora(AutoModelForCausalLM.from_pretrained(str(tiny_llama)), spec_with(modules_to_save=["nope"]))


def test_dora_trains_magnitudes_and_export_merges_to_the_same_model(capsys, tiny_llama, memo_data, tmp_path):
    from peft import PeftModel
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    result = run(tiny_spec(tiny_llama, memo_data, train__max_steps=4, lora__use_dora=True), tmp_path / "j")
    final = result.folder / "final"
    saved = load_file(str(final / "adapter_model.safetensors"))
    magnitudes = {k: v for k, v in saved.items() if "lora_magnitude_vector" in k}
    assert len(magnitudes) == 14
    base = AutoModelForCausalLM.from_pretrained(str(tiny_llama))
    weight = base.model.layers[0].self_attn.q_proj.weight
    initial = weight.norm(dim=1)  # DoRA starts each magnitude at the base row norm
    trained = next(v for k, v in magnitudes.items() if "layers.0.self_attn.q_proj" in k)
    assert not torch.allclose(trained, initial, atol=1e-4)

    code, _, err = run_cli(capsys, "models", "export", final, "-o", tmp_path / "merged")
    assert code == 0, err
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "merged")).eval()
    adapted = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(str(tiny_llama)), str(final)
    ).eval()
    ids = torch.tensor([[5, 17, 33, 80, 120, 7, 9]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, adapted(ids).logits, atol=1e-4, rtol=1e-4)
        assert not torch.allclose(merged(ids).logits, base(ids).logits, atol=1e-3)
    # the merged weight is the base plus a delta, with no adapter left in the folder
    assert not (tmp_path / "merged" / "adapter_config.json").exists()
    assert not torch.allclose(merged.model.layers[0].self_attn.q_proj.weight, weight)


class NoiseProbe(TrainerCallback):
    """At the start of training, the same batch through the model in train and in eval mode, twice each."""

    def on_train_begin(self, args, state, control, model=None, **kw):
        ids = torch.tensor([[5, 17, 33, 80, 120, 7, 9]])
        was_training = model.training
        with torch.no_grad():
            model.train()
            self.train = [model(input_ids=ids).logits for _ in range(2)]
            model.eval()
            self.eval = [model(input_ids=ids).logits for _ in range(2)]
            embeds = model.get_input_embeddings().weight[ids]  # the embeddings without any hook
            self.clean_eval = model(inputs_embeds=embeds).logits
        model.train(was_training)


@pytest.mark.parametrize("alpha", [None, 5.0])
def test_neftune_noises_training_logits_but_not_evaluation(tiny_llama, memo_data, tmp_path, alpha):
    probe = NoiseProbe()
    run(_short(tiny_llama, memo_data, train__neftune_alpha=alpha), tmp_path / "j", callbacks=[probe])
    torch.testing.assert_close(probe.eval[0], probe.eval[1])
    torch.testing.assert_close(probe.eval[0], probe.clean_eval)
    if alpha is None:
        torch.testing.assert_close(probe.train[0], probe.train[1])  # dropout 0: training is deterministic
    else:
        assert not torch.allclose(probe.train[0], probe.train[1], atol=1e-4)
        assert not torch.allclose(probe.train[0], probe.clean_eval, atol=1e-4)
