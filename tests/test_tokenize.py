"""Loss masks select exactly the assistant tokens, for each named chat template."""

from __future__ import annotations

import pytest

from tuneforge.data.templates import CHAT_TEMPLATES, resolve_chat_template
from tuneforge.data.tokenize import IGNORE_INDEX, tokenize_chat, tokenize_pretrain
from tuneforge.errors import ConfigError

CONV = [
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "今天天气很好"},
    {"role": "assistant", "content": "The weather is nice today."},
]


def trained_text(tok, result) -> str:
    return tok.decode(
        [t for t, lab in zip(result.input_ids, result.labels, strict=True) if lab != IGNORE_INDEX]
    )


END = {
    "chatml": "<|im_end|>\n",
    "llama3": "<|eot_id|>",
    "alpaca": "<|im_end|>\n\n",
    "chatglm3": "<|im_end|>",
    "plain": "<|im_end|>\n\n",
}


@pytest.mark.parametrize("name", list(CHAT_TEMPLATES))
def test_mask_is_exactly_the_assistant_turns(tiny_tokenizer, name):
    template = CHAT_TEMPLATES[name]
    result = tokenize_chat(tiny_tokenizer, template, CONV, max_len=None)
    # Everything trained decodes to the two answers, each with its end-of-turn marker, nothing else.
    expected = f"Paris.{END[name]}The weather is nice today.{END[name]}"
    assert trained_text(tiny_tokenizer, result) == expected
    # And the untrained tokens hold the whole prompt side.
    untrained = tiny_tokenizer.decode(
        [t for t, lab in zip(result.input_ids, result.labels, strict=True) if lab == IGNORE_INDEX]
    )
    assert "What is the capital of France?" in untrained and "Paris" not in untrained


def test_last_turn_and_all_modes(tiny_tokenizer):
    template = CHAT_TEMPLATES["chatml"]
    last = tokenize_chat(tiny_tokenizer, template, CONV, None, mode="last")
    assert trained_text(tiny_tokenizer, last) == "The weather is nice today.<|im_end|>\n"
    everything = tokenize_chat(tiny_tokenizer, template, CONV, None, mode="all")
    assert everything.labels == everything.input_ids


def test_truncation_is_counted(tiny_tokenizer):
    result = tokenize_chat(tiny_tokenizer, CHAT_TEMPLATES["chatml"], CONV, max_len=10)
    assert result.truncated and len(result.input_ids) == 10


def test_pretrain_trains_every_token_and_ends_with_eos(tiny_tokenizer):
    result = tokenize_pretrain(tiny_tokenizer, "The quick brown fox", None)
    assert result.labels == result.input_ids and result.input_ids[-1] == tiny_tokenizer.eos_token_id


def test_template_resolution(tiny_tokenizer):
    assert resolve_chat_template(tiny_tokenizer, "llama3") == CHAT_TEMPLATES["llama3"]
    assert resolve_chat_template(tiny_tokenizer, "auto") == tiny_tokenizer.chat_template
    assert resolve_chat_template(tiny_tokenizer, "{{ messages }}") == "{{ messages }}"
    with pytest.raises(ConfigError, match="unknown chat template"):
        resolve_chat_template(tiny_tokenizer, "vicuna-9")


def test_model_without_template_gets_plain_with_warning(tiny_tokenizer, caplog):
    import copy

    tok = copy.deepcopy(tiny_tokenizer)
    tok.chat_template = None
    assert resolve_chat_template(tok, None) == CHAT_TEMPLATES["plain"]
    assert "no chat template" in caplog.text
