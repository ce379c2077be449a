"""The chunked output-layer loss equals cross-entropy over full logits, its gradients included."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tuneforge.data.tokenize import IGNORE_INDEX
from tuneforge.train import attention, chunked_loss
from tuneforge.train.collate import PackedCollator

# Trained tokens (labels other than -100): 3 in the first example, none in the second, 4 in the third.
EXAMPLES = [
    {"input_ids": [5, 9, 30, 41, 7, 8], "labels": [-100, -100, -100, 41, 7, 8]},
    {"input_ids": [12, 3, 8], "labels": [-100, -100, -100]},
    {"input_ids": [100, 101, 102, 103, 104, 105], "labels": [-100, -100, 102, 103, 104, 105]},
]


@pytest.fixture(scope="module")
def trainer(tiny_models, tmp_path_factory):
    from transformers import AutoModelForCausalLM, TrainingArguments

    from tuneforge.train.trainer import CausalLMTrainer

    # float64 and every weight trained (the output layer too): equality can be asked to 1e-6 and
    # the head's own gradient is checked as well as the hidden states'.
    model = AutoModelForCausalLM.from_pretrained(
        str(tiny_models["llama"]), dtype=torch.float64, attn_implementation=attention.register()
    )
    args = TrainingArguments(
        output_dir=str(tmp_path_factory.mktemp("chunked")), use_cpu=True, report_to="none"
    )
    return CausalLMTrainer(model=model, args=args, token_counter={"seen": 0, "trained": 0})


def _reference(model, batch) -> torch.Tensor:
    inputs = {k: v for k, v in batch.items() if k != "labels"}
    logits = model(**inputs).logits[0, :-1]
    return F.cross_entropy(logits, batch["labels"][0, 1:], ignore_index=IGNORE_INDEX, reduction="sum")


def _grads(model) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


def test_chunked_loss_and_gradients_equal_full_logits(trainer, monkeypatch):
    model = trainer.model.train()
    assert trainer.head is model.lm_head  # llama: the loss applies the head itself
    # 3 rows a chunk over 7 trained tokens: the second chunk starts inside the first example's answer
    # and ends inside the third's, across the example with none.
    monkeypatch.setattr(chunked_loss, "chunk_rows", lambda vocab: 3)
    batch = PackedCollator()(EXAMPLES)
    n = int((batch["labels"][0, 1:] != IGNORE_INDEX).sum())
    assert n == 7  # 3 + 0 + 4

    (_reference(model, batch) / n).backward()
    want = _grads(model)
    head_out = []
    hook = model.lm_head.register_forward_hook(lambda mod, args, out: head_out.append(out.shape[-1]))
    try:
        loss = trainer.compute_loss(model, dict(batch), num_items_in_batch=torch.tensor(n))
    finally:
        hook.remove()
    loss.backward()
    got = _grads(model)

    assert head_out == [model.config.hidden_size]  # the model made no [tokens × vocab] logits
    torch.testing.assert_close(loss, _reference(model, batch).detach() / n, atol=1e-6, rtol=0)
    assert got.keys() == want.keys() and "lm_head.weight" in got
    for name in want:
        torch.testing.assert_close(got[name], want[name], atol=1e-6, rtol=0, msg=name)
    assert want["lm_head.weight"].abs().sum() > 0  # the comparison is not between zeros


def test_eval_loss_and_a_batch_without_trained_tokens(trainer):
    model = trainer.model.eval()
    batch = PackedCollator()(EXAMPLES)
    with torch.no_grad():
        loss = trainer.compute_loss(model, dict(batch))
        torch.testing.assert_close(loss, _reference(model, batch) / 7, atol=1e-6, rtol=0)
    # Nothing trained: a zero loss whose backward leaves zero gradients, as with empty full logits.
    model.train()
    empty = PackedCollator()([EXAMPLES[1]])
    loss = trainer.compute_loss(model, dict(empty), num_items_in_batch=torch.tensor(1))
    loss.backward()
    assert loss.item() == 0
    assert all(p.grad is None or not p.grad.any() for p in model.parameters())
    model.zero_grad(set_to_none=True)
