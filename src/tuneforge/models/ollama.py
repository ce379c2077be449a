"""An Ollama ``Modelfile`` for an exported GGUF: the chat template in Ollama's Go-template language,
the stop tokens and the model's saved generation settings.

Ollama does not run Jinja, so the template is translated, not copied. tuneforge translates the
ChatML family (``<|im_start|>role\\n…<|im_end|>``, SmolLM2's and Qwen2's), proving the match by
rendering probe conversations with the model's own Jinja template; any other template is flagged.
"""

from __future__ import annotations

# Ollama's own ChatML template (as its qwen2 and smollm2 library models use): the system prompt, when
# given, becomes the first message, so SYSTEM below supplies a template's built-in default.
CHATML_TEMPLATE = """{{- range $i, $_ := .Messages }}
{{- $last := eq (len (slice $.Messages $i)) 1 -}}
<|im_start|>{{ .Role }}
{{ .Content }}<|im_end|>
{{ if and $last (ne .Role "assistant") }}<|im_start|>assistant
{{ end }}
{{- end }}"""

_PROBES = [
    [{"role": "user", "content": "Hi there"}],
    [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is 2+2?"},
        {"role": "assistant", "content": "4"},
        {"role": "user", "content": "And 3+3?"},
    ],
]


def _chatml(messages: list[dict]) -> str:
    """What CHATML_TEMPLATE renders for ``messages`` ending in a user turn."""
    body = "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages)
    return body + "<|im_start|>assistant\n"


def chatml_default_system(tokenizer) -> tuple[bool, str | None]:
    """(whether the model's template is ChatML, the system prompt it adds when none is given)."""
    try:
        rendered = [
            tokenizer.apply_chat_template(p, tokenize=False, add_generation_prompt=True) for p in _PROBES
        ]
    except Exception:  # a template that raises on these plain conversations is not ChatML either
        return False, None
    if rendered[1] != _chatml(_PROBES[1]):
        return False, None
    plain = _chatml(_PROBES[0])
    if rendered[0] == plain:
        return True, None
    head = "<|im_start|>system\n"
    if rendered[0].startswith(head) and rendered[0].endswith("<|im_end|>\n" + plain):
        default = rendered[0][len(head) : -len("<|im_end|>\n" + plain)]
        if "<|im_" not in default:
            return True, default
    return False, None


def _quote(text: str) -> str:
    return f'"""{text}"""'


def _parameters(generation) -> list[tuple[str, object]]:
    """The saved GenerationConfig as Ollama PARAMETERs (greedy becomes temperature 0)."""
    if generation is None:
        return []
    params: list[tuple[str, object]] = []
    if not getattr(generation, "do_sample", False):
        params.append(("temperature", 0))
    else:
        for ours, theirs in (("temperature", "temperature"), ("top_p", "top_p"), ("top_k", "top_k")):
            value = getattr(generation, ours, None)
            if value is not None:
                params.append((theirs, value))
    penalty = getattr(generation, "repetition_penalty", None)
    if penalty not in (None, 1.0):
        params.append(("repeat_penalty", penalty))
    return params


def modelfile(from_path: str, tokenizer, stop_ids: list[int], generation) -> tuple[str, list[str]]:
    """(the Modelfile's text, warnings). ``stop_ids`` as the loader found them (generation config)."""
    warnings: list[str] = []
    lines = [f"FROM {from_path}"]
    is_chatml, system = chatml_default_system(tokenizer)
    if is_chatml:
        lines.append(f"TEMPLATE {_quote(CHATML_TEMPLATE)}")
        if system and '"""' in system:
            warnings.append(
                "the template's default system prompt holds '\"\"\"', which a Modelfile cannot quote; "
                "SYSTEM is left out."
            )
        elif system:
            lines.append(f"SYSTEM {_quote(system)}")
    else:
        warnings.append(
            "the chat template is not ChatML, which is the one tuneforge translates into Ollama's template "
            "language; the Modelfile has no TEMPLATE, so Ollama falls back on its guess from the GGUF's "
            "tokenizer.chat_template. Check its answers, or write TEMPLATE yourself."
        )
        lines.append(
            "# TEMPLATE: not written (the model's chat template is not ChatML); see tuneforge's warning."
        )
    stops = [tokenizer.convert_ids_to_tokens(i) for i in stop_ids] or [tokenizer.eos_token]
    for stop in dict.fromkeys(s for s in stops if s):
        if '"' in stop or "\n" in stop:  # Ollama's parser has no escapes inside a quoted PARAMETER value
            warnings.append(f"stop token {stop!r} cannot be quoted in a Modelfile; add it by hand.")
            continue
        lines.append(f'PARAMETER stop "{stop}"')
    for key, value in _parameters(generation):
        lines.append(f"PARAMETER {key} {value}")
    return "\n".join(lines) + "\n", warnings
