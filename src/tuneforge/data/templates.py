"""Named chat templates (Jinja, the format transformers' ``apply_chat_template`` renders).

Every template ends an assistant turn with a token the model can learn to stop on, because the
loss mask trains on the assistant text up to the end of its turn.
"""

from __future__ import annotations

import logging

from tuneforge.errors import ConfigError

log = logging.getLogger(__name__)

CHAT_TEMPLATES: dict[str, str] = {
    "chatml": (
        "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content']"
        " + '<|im_end|>' + '\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
    ),
    "llama3": (
        "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role']"
        " + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
    ),
    "alpaca": (
        "{% if messages[0]['role'] == 'system' %}{{ messages[0]['content'] + '\\n\\n' }}"
        "{% set loop_messages = messages[1:] %}{% else %}"
        "{{ 'Below is an instruction that describes a task. Write a response that appropriately"
        " completes the request.\\n\\n' }}{% set loop_messages = messages %}{% endif %}"
        "{% for message in loop_messages %}{% if message['role'] == 'user' %}"
        "{{ '### Instruction:\\n' + message['content'] + '\\n\\n' }}"
        "{% elif message['role'] == 'assistant' %}{{ '### Response:\\n' + message['content'] + eos_token"
        " + '\\n\\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '### Response:\\n' }}{% endif %}"
    ),
    # ChatGLM3's layout (without the space after the newline, so the prompt's last token never merges
    # with the answer's first); the assistant turn ends with eos so the model learns where to stop.
    "chatglm3": (
        "[gMASK]sop{% for message in messages %}{{ '<|' + message['role'] + '|>\\n' + message['content'] }}"
        "{% if message['role'] == 'assistant' %}{{ eos_token }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}"
    ),
    # For base models that ship none (gpt2, opt, bloom): plain role lines, newline-separated so
    # the prompt's last token never merges with the answer's first.
    "plain": (
        "{% for message in messages %}{% if message['role'] == 'system' %}{{ message['content'] + '\\n\\n' }}"
        "{% elif message['role'] == 'user' %}{{ 'User:\\n' + message['content'] + '\\n\\n' }}"
        "{% else %}{{ 'Assistant:\\n' + message['content'] + eos_token + '\\n\\n' }}{% endif %}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'Assistant:\\n' }}{% endif %}"
    ),
}
DEFAULT_TEMPLATE = "plain"

# Strings that end an assistant turn in the templates above and in models' own templates (with the
# tokenizer's eos_token): the loss mask stops after them and generation stops on them.
END_OF_TURN_MARKERS = (
    "<|im_end|>",
    "<|eot_id|>",
    "<|end|>",
    "<|user|>",
    "<|observation|>",
    "</s>",
    "<|endoftext|>",
)


def resolve_chat_template(tokenizer, choice: str | None, fallback: str | None = None) -> str:
    """The Jinja template to use: a named one, a custom Jinja string, the model's own, or 'plain'.

    ``choice`` None or "auto" means the model's own template when it has one, else ``fallback`` (when
    evaluating a base model that ships none: the template its fine-tuned model was trained with),
    else 'plain' with a warning. Training and evaluation both resolve templates here, so this is where
    transformers is made to render every template in tuneforge's bounded sandbox.
    """
    from . import template_sandbox

    template_sandbox.install()
    if choice and choice != "auto":
        if choice in CHAT_TEMPLATES:
            template_sandbox.label(CHAT_TEMPLATES[choice], f"chat template {choice!r}")
            return CHAT_TEMPLATES[choice]
        if "{{" in choice or "{%" in choice:
            template_sandbox.label(choice, "the chat template given (--template or the spec's chat_template)")
            return choice
        raise ConfigError(
            f"unknown chat template {choice!r}; use one of {', '.join(CHAT_TEMPLATES)}, "
            "'auto' (the model's own) or a Jinja string."
        )
    own = getattr(tokenizer, "chat_template", None)
    if isinstance(own, str) and own:
        return own
    if fallback:
        return fallback
    log.warning(
        "the model ships no chat template; using tuneforge's %r template (set chat_template in "
        "the spec to choose another)",
        DEFAULT_TEMPLATE,
    )
    return CHAT_TEMPLATES[DEFAULT_TEMPLATE]
