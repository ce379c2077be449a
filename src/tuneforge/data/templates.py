"""Named chat templates (Jinja, the format transformers' ``apply_chat_template`` renders).

Every template ends an assistant turn with a token the model can learn to stop on, because the
loss mask trains on the assistant text up to the end of its turn.
"""

from __future__ import annotations

import json
import logging
import re

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


def _llamafactory(
    user: str,
    assistant: str,
    system: str = "",
    default_system: str = "",
    prefix: str = "",
    system_in_first_user: str | None = None,
) -> str:
    """LLaMA-Factory's ``Template._encode`` as Jinja (``{content}`` marks the message in each slot).

    ``prefix``, then ``system`` holding the record's system message (or ``default_system`` when it has
    none or an empty one, as LLaMA-Factory's ``system or default_system``), then each turn. A template of
    its ``Llama2Template`` class puts ``system_in_first_user`` (the system text) at the start of the
    first user message instead. The user slot ends with the assistant's header, so the generation
    prompt adds nothing.
    """

    def jinja(slot: str) -> str:  # "<eos>" is the tokenizer's eos token, as LLaMA-Factory's {"eos_token"}
        names = {"{content}": "content", "<eos>": "eos_token"}
        pieces = [p for p in re.split(r"(\{content\}|<eos>)", slot) if p]
        return "{{ " + " ~ ".join(names.get(p) or json.dumps(p, ensure_ascii=False) for p in pieces) + " }}"

    out = prefix
    out += "{% set first = messages[0] if messages else {'role': '', 'content': ''} %}"
    out += "{% set system_message = (first['content'] if first['role'] == 'system' else '') or "
    out += json.dumps(default_system, ensure_ascii=False) + " %}"
    out += "{% set loop_messages = messages[1:] if first['role'] == 'system' else messages %}"
    if system_in_first_user is None:
        out += "{% if system_message %}{% set content = system_message %}" + jinja(system) + "{% endif %}"
    out += "{% for message in loop_messages %}{% set content = message['content'] %}"
    if system_in_first_user is not None:
        before, after = system_in_first_user.split("{content}")
        out += "{% if loop.first and system_message %}{% set content = "
        out += f"{json.dumps(before)} ~ system_message ~ {json.dumps(after)} ~ content %}}{{% endif %}}"
    out += "{% if message['role'] == 'user' %}" + jinja(user)
    out += "{% elif message['role'] == 'assistant' %}" + jinja(assistant) + "{% endif %}{% endfor %}"
    return out


_CHATML = {
    "user": "<|im_start|>user\n{content}<|im_end|>\n<|im_start|>assistant\n",
    "assistant": "{content}<|im_end|>\n",
    "system": "<|im_start|>system\n{content}<|im_end|>\n",
}
# LLaMA-Factory 0.9.5's templates (its data/template.py), reproduced exactly: the text each one renders
# equals LLaMA-Factory's own (tests/convert/test_convert_llamafactory.py holds its renderings). The
# converter of LLaMA-Factory configs names them; a spec chooses one as ``chat_template: llamafactory:NAME``.
LLAMAFACTORY_PREFIX = "llamafactory:"
LLAMAFACTORY_TEMPLATES: dict[str, str] = {
    "default": _llamafactory(
        user="Human: {content}<eos>\nAssistant:",
        assistant="{content}<eos>\n",
        system="System: {content}<eos>\n",
    ),
    "alpaca": _llamafactory(
        user="### Instruction:\n{content}\n\n### Response:\n",
        assistant="{content}<eos>\n\n",
        system="{content}",
        default_system="Below is an instruction that describes a task. Write a response that appropriately "
        "completes the request.\n\n",
    ),
    "vicuna": _llamafactory(
        user="USER: {content} ASSISTANT:",
        assistant="{content}<eos>",
        system="{content}",
        default_system="A chat between a curious user and an artificial intelligence assistant. The "
        "assistant gives helpful, detailed, and polite answers to the user's questions.",
    ),
    "chatml": _llamafactory(**_CHATML),
    "smollm": _llamafactory(**_CHATML),
    "yi": _llamafactory(**_CHATML),
    "qwen3_nothink": _llamafactory(**_CHATML),
    "qwen": _llamafactory(
        **_CHATML, default_system="You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
    ),
    "smollm2": _llamafactory(
        **_CHATML, default_system="You are a helpful AI assistant named SmolLM, trained by Hugging Face."
    ),
    "llama3": _llamafactory(
        prefix="{{ bos_token }}",
        user="<|start_header_id|>user<|end_header_id|>\n\n{content}<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n",
        assistant="{content}<|eot_id|>",
        system="<|start_header_id|>system<|end_header_id|>\n\n{content}<|eot_id|>",
    ),
    "mistral": _llamafactory(
        prefix="{{ bos_token }}",
        user="[INST] {content}[/INST]",
        assistant=" {content}<eos>",
        system_in_first_user="{content}\n\n",
    ),
    "empty": _llamafactory(user="{content}", assistant="{content}", system="{content}"),
}

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
        if (
            choice.startswith(LLAMAFACTORY_PREFIX)
            and choice[len(LLAMAFACTORY_PREFIX) :] in LLAMAFACTORY_TEMPLATES
        ):
            source = LLAMAFACTORY_TEMPLATES[choice[len(LLAMAFACTORY_PREFIX) :]]
            template_sandbox.label(source, f"chat template {choice!r}")
            return source
        if "{{" in choice or "{%" in choice:
            template_sandbox.label(choice, "the chat template given (--template or the spec's chat_template)")
            return choice
        raise ConfigError(
            f"unknown chat template {choice!r}; use one of {', '.join(CHAT_TEMPLATES)}, "
            f"{LLAMAFACTORY_PREFIX}NAME ({', '.join(LLAMAFACTORY_TEMPLATES)}: LLaMA-Factory's), "
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
