"""Packed rows never let attention cross examples: logits equal each example run alone."""

from __future__ import annotations

import pytest
import torch

from tuneforge.train import attention
from tuneforge.train.collate import PackedCollator


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gpt2", "opt"])
def test_packed_logits_equal_examples_alone(tiny_models, arch):
    from transformers import AutoModelForCausalLM

    folder = tiny_models[arch]
    alone = AutoModelForCausalLM.from_pretrained(str(folder), dtype=torch.float32).eval()
    packed = AutoModelForCausalLM.from_pretrained(
        str(folder), dtype=torch.float32, attn_implementation=attention.register()
    ).eval()
    examples = [[5, 9, 30, 41, 7], [12, 3, 8], [100, 101, 102, 103, 104, 105, 106]]
    batch = PackedCollator()([{"input_ids": e, "labels": e} for e in examples])
    batch.pop("labels")
    with torch.no_grad():
        out = packed(**batch).logits[0]
        start = 0
        for e in examples:
            ref = alone(input_ids=torch.tensor([e])).logits[0]
            torch.testing.assert_close(out[start : start + len(e)], ref, atol=1e-5, rtol=1e-4)
            start += len(e)
        # Control: without the boundaries the second example would see the first (the test can fail).
        plain = packed(input_ids=batch["input_ids"], position_ids=batch["position_ids"]).logits[0]
        assert not torch.allclose(
            plain[5:8], alone(input_ids=torch.tensor([examples[1]])).logits[0], atol=1e-4
        )


def test_collator_ignores_first_label_of_each_example():
    batch = PackedCollator()(
        [{"input_ids": [1, 2, 3], "labels": [1, 2, 3]}, {"input_ids": [4, 5], "labels": [-100, 5]}]
    )
    assert batch["labels"].tolist() == [[-100, 2, 3, -100, 5]]
    assert batch["position_ids"].tolist() == [[0, 1, 2, 0, 1]]
    assert batch["cu_seq_lens_q"].tolist() == [0, 3, 5]


def test_architectures_with_own_attention_code_are_not_packed(tiny_models):
    from transformers import AutoModelForCausalLM

    from tuneforge.train.model import use_varlen_attention

    assert use_varlen_attention(AutoModelForCausalLM.from_pretrained(str(tiny_models["llama"])))
    assert not use_varlen_attention(AutoModelForCausalLM.from_pretrained(str(tiny_models["bloom"])))
