"""GGUF export: the file loads back through transformers' GGUF reader (the path `models pull` uses) with
the merged model's logits, carries its tokenizer and chat template, imports and serves; the Modelfile
speaks Ollama's template language for ChatML models."""

from __future__ import annotations

import json
import os

import pytest
import torch

from tests.conftest import make_tiny_model
from tests.support.clihelp import run_cli
from tests.support.trainhelp import run, tiny_spec

# The LoRA fine-tune → merged GGUF → import → serve round trip trains and serves: on demand
# (TUNEFORGE_TEST_ECOSYSTEM=1), so `make test` fits CI's 20 minutes on a 2-core machine without AVX-512.
on_demand = pytest.mark.skipif(
    os.environ.get("TUNEFORGE_TEST_ECOSYSTEM") != "1",
    reason="trains and serves: set TUNEFORGE_TEST_ECOSYSTEM=1",
)

IDS = torch.tensor([[5, 40, 100, 7, 200, 33, 12, 90, 150, 3]])
# max |logit difference| allowed per quantization, against logits spanning about ±5 in the tiny models
TOLERANCE = {"f16": 0.02, "q8_0": 0.3}


def load_gguf(export: dict):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = export["output"], export["gguf"].rsplit("/", 1)[1]
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32).eval()
    return model, AutoTokenizer.from_pretrained(folder, gguf_file=name)


def export(capsys, model, out, *extra) -> dict:
    code, stdout, err = run_cli(
        capsys, "models", "export", model, "--format", "gguf", "-o", out, "--json", *extra
    )
    assert code == 0, err
    return json.loads(stdout)


@pytest.mark.parametrize("arch", ["llama", "qwen2"])
@pytest.mark.parametrize("quant", ["f16", "q8_0"])
def test_gguf_round_trips_through_transformers(capsys, monkeypatch, tiny_models, tmp_path, arch, quant):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    done = export(capsys, tiny_models[arch], tmp_path / "out", "--quant", quant)
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["Modelfile", f"out.{quant}.gguf"]
    want = AutoModelForCausalLM.from_pretrained(str(tiny_models[arch])).eval()
    got, tok = load_gguf(done)
    with torch.no_grad():
        diff = (got(IDS).logits - want(IDS).logits).abs().max().item()
    assert diff < TOLERANCE[quant], diff
    # the tokenizer, its special tokens and the chat template travel in the metadata
    original = AutoTokenizer.from_pretrained(str(tiny_models[arch]))
    text = "<|im_start|>user\nWhat is the capital of France? 今天天气很好<|im_end|>\n"
    assert tok(text).input_ids == original(text).input_ids
    assert tok.chat_template == original.chat_template and tok.eos_token == "<|im_end|>"
    if (arch, quant) == ("llama", "q8_0"):  # a quantized file imports as a stored model (`models import`)
        import gguf

        parses, maps = [], []
        real_reader, real_map = gguf.GGUFReader, gguf.get_tensor_name_map
        monkeypatch.setattr(gguf, "GGUFReader", lambda *a, **k: parses.append(a) or real_reader(*a, **k))
        monkeypatch.setattr(gguf, "get_tensor_name_map", lambda *a: maps.append(a) or real_map(*a))
        code, out, err = run_cli(capsys, "models", "import", done["gguf"], "--name", "from-gguf", "--json")
        assert code == 0, err
        # the check, the config, the tokenizer and the weights share one parse of the file and one
        # tensor-name table (models/gguf_reads.py: they were 5 parses and a table per module)
        assert len(parses) == 1 and len(maps) == 1, (len(parses), len(maps))
        info = json.loads(out)
        assert info["architecture"] == "LlamaForCausalLM" and info["source"].startswith("gguf:")
        assert info["parameters"] == want.num_parameters() and info["chat_template"] is True


def test_smollm2_shaped_llama_keeps_rope_base_and_tied_output(capsys, tiny_tokenizer, tmp_path):
    """SmolLM2 ties its output to the embedding and rotates with base 100000 (kept by transformers 5 in
    ``rope_parameters``): a GGUF that wrote the default 10000 answered wrongly beyond a few tokens."""
    from transformers import AutoModelForCausalLM

    folder = make_tiny_model(
        tmp_path / "m", "llama", tokenizer=tiny_tokenizer, rope_theta=100000.0, tie_word_embeddings=True
    )
    want = AutoModelForCausalLM.from_pretrained(str(folder)).eval()
    done = export(capsys, tmp_path / "m", tmp_path / "out", "--quant", "f16")
    got, _ = load_gguf(done)
    assert got.config.tie_word_embeddings and got.config.rope_parameters["rope_theta"] == 100000.0
    ids = torch.arange(3, 3 + 64).reshape(1, -1)  # long enough for the rotary base to matter
    with torch.no_grad():
        diff = (got(ids).logits - want(ids).logits).abs().max().item()
    assert diff < TOLERANCE["f16"], diff


def test_gguf_refuses_what_it_cannot_write(capsys, tiny_models, tmp_path):
    code, _, err = run_cli(
        capsys, "models", "export", tiny_models["gpt2"], "--format", "gguf", "-o", tmp_path / "a"
    )
    assert code != 0 and "llama and qwen2" in err and "'gpt2'" in err
    code, _, err = run_cli(
        capsys,
        "models",
        "export",
        tiny_models["llama"],
        "--format",
        "gguf",
        "--quant",
        "q4_k_m",
        "-o",
        tmp_path / "b",
    )
    assert code != 0 and "llama-quantize" in err and "q8_0" in err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "x").write_text("keep")
    code, _, err = run_cli(
        capsys, "models", "export", tiny_models["llama"], "--format", "gguf", "-o", tmp_path / "c"
    )
    assert code != 0 and "not empty" in err
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no half-written temp folder


@pytest.fixture
def fine_tune(tiny_llama, memo_data, tmp_path):
    """A LoRA adapter trained to memorise the memo set (so greedy answers are confident)."""
    return run(tiny_spec(tiny_llama, memo_data, train__max_steps=40), tmp_path / "job").folder / "final"


@on_demand
def test_lora_fine_tune_exports_merged_imports_and_serves(capsys, fine_tune, tmp_path):
    from openai import OpenAI

    from tests.support.servehelp import start_server
    from tuneforge.evaluate.generate import generate
    from tuneforge.models.inference import load_for_inference

    merged = load_for_inference(fine_tune)
    merged.model = merged.model.merge_and_unload()
    question = [[{"role": "user", "content": "What is the capital of France?"}]]
    (answer,) = generate(merged, question, max_new_tokens=6)
    assert answer.startswith("Paris")  # the fine-tune learned it, so the comparisons below mean something

    results = {}
    for quant in ("q8_0", "q4_0"):
        done = export(capsys, fine_tune, tmp_path / quant, "--quant", quant)
        got, _ = load_gguf(done)
        with torch.no_grad():
            results[quant] = (got(IDS).logits - merged.model(IDS).logits).abs().max().item()
    assert results["q8_0"] < TOLERANCE["q8_0"], results

    # q4_0: loose logits, but the greedy answer starts the same once imported as a model and served
    code, out, err = run_cli(
        capsys, "models", "import", tmp_path / "q4_0" / "q4_0.q4_0.gguf", "--name", "ft-q4", "--json"
    )
    assert code == 0, err
    info = json.loads(out)
    assert info["stop_tokens"] == ["<|im_end|>"] and info["chat_template"]
    from tuneforge.models.store import resolve_model

    with start_server({"base": resolve_model("ft-q4")}) as server:
        client = OpenAI(base_url=server.url + "/v1", api_key="test-key", max_retries=0)
        r = client.chat.completions.create(model="ft-q4", messages=question[0], max_tokens=6, temperature=0)
    assert r.choices[0].message.content.startswith("Paris"), r.choices[0].message.content

    modelfile = (tmp_path / "q4_0" / "Modelfile").read_text()
    assert modelfile.startswith('FROM ./q4_0.q4_0.gguf\nTEMPLATE """')
    assert 'PARAMETER stop "<|im_end|>"' in modelfile


# -- the Modelfile -------------------------------------------------------------------------------
SMOLLM2_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
    "<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def test_modelfile_translates_chatml_and_flags_other_templates(tiny_tokenizer):
    from transformers import GenerationConfig

    from tuneforge.data.templates import CHAT_TEMPLATES
    from tuneforge.models.ollama import CHATML_TEMPLATE, modelfile

    tok = tiny_tokenizer
    eos = tok.convert_tokens_to_ids("<|im_end|>")
    sampling = GenerationConfig(do_sample=True, temperature=0.6, top_p=0.9, top_k=40, repetition_penalty=1.1)
    saved = tok.chat_template
    try:
        tok.chat_template = SMOLLM2_TEMPLATE
        text, warnings = modelfile("./m.gguf", tok, [eos], sampling)
        assert warnings == []
        assert text == (
            f'FROM ./m.gguf\nTEMPLATE """{CHATML_TEMPLATE}"""\n'
            'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""\n'
            'PARAMETER stop "<|im_end|>"\nPARAMETER temperature 0.6\nPARAMETER top_p 0.9\n'
            "PARAMETER top_k 40\nPARAMETER repeat_penalty 1.1\n"
        )
        tok.chat_template = CHAT_TEMPLATES["llama3"]
        text, warnings = modelfile("./m.gguf", tok, [eos], None)
        assert 'TEMPLATE """' not in text and "not ChatML" in warnings[0]
        tok.chat_template = SMOLLM2_TEMPLATE.replace("Hugging Face", 'Hugging Face """')
        text, warnings = modelfile("./m.gguf", tok, [eos], None)
        assert "SYSTEM" not in text and "cannot quote" in warnings[0]
    finally:
        tok.chat_template = saved


def test_llama_cpp_loads_the_export(capsys, tiny_models, tmp_path):
    llama_cpp = pytest.importorskip("llama_cpp")
    done = export(capsys, tiny_models["llama"], tmp_path / "out", "--quant", "q8_0")
    llm = llama_cpp.Llama(model_path=done["gguf"], n_ctx=64, logits_all=True, verbose=False)
    from transformers import AutoModelForCausalLM

    want = AutoModelForCausalLM.from_pretrained(str(tiny_models["llama"])).eval()
    tokens = IDS[0].tolist()
    llm.eval(tokens)
    with torch.no_grad():
        last = want(IDS).logits[0, -1]
    got = torch.tensor(llm.scores[len(tokens) - 1])
    assert (got - last).abs().max().item() < TOLERANCE["q8_0"]


def test_pre_tokenizer_names_llama_cpp_reads():
    from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

    from tuneforge.models.gguf_export import _pre_tokenizer_name

    byte_level = {"type": "ByteLevel", "use_regex": True}
    assert _pre_tokenizer_name(byte_level) == "gpt-2"
    digits = {"type": "Digits", "individual_digits": True}
    assert _pre_tokenizer_name({"type": "Sequence", "pretokenizers": [digits, byte_level]}) == "smollm"
    split = {"type": "Split", "pattern": {"Regex": PRETOKENIZE_REGEX}, "behavior": "Isolated"}
    qwen2 = [split, {"type": "ByteLevel", "use_regex": False}]
    assert _pre_tokenizer_name({"type": "Sequence", "pretokenizers": qwen2}) == "qwen2"
    assert _pre_tokenizer_name({"type": "Whitespace"}) is None  # written as 'default', with a warning


# Renders a template with Go's text/template, the engine Ollama runs TEMPLATE with, for each conversation
# given on stdin ({"template", "conversations": [[{role, content}]]}); prints the renderings as JSON.
GO_RENDER = """package main

import (
	"bytes"
	"encoding/json"
	"os"
	"text/template"
)

type Message struct {
	Role    string `json:"role"`
	Content string `json:"content"`
}

func main() {
	var in struct {
		Template      string      `json:"template"`
		Conversations [][]Message `json:"conversations"`
	}
	if err := json.NewDecoder(os.Stdin).Decode(&in); err != nil {
		panic(err)
	}
	t := template.Must(template.New("modelfile").Parse(in.Template))
	out := []string{}
	for _, messages := range in.Conversations {
		var b bytes.Buffer
		if err := t.Execute(&b, map[string]any{"Messages": messages}); err != nil {
			panic(err)
		}
		out = append(out, b.String())
	}
	json.NewEncoder(os.Stdout).Encode(out)
}
"""


def test_the_modelfile_template_renders_in_go_as_the_models_chat_template(tiny_tokenizer, tmp_path):
    """The TEMPLATE is Go text/template source that Ollama executes; Ollama cannot run here, Go can. For
    varied conversations (with and without a system prompt, multi-turn, multi-line, ending on an
    assistant turn), Go's rendering equals the model's own Jinja chat template with the generation
    prompt, given the SYSTEM default where the conversation has no system message (as Ollama does)."""
    import shutil
    import subprocess

    go = shutil.which("go")
    if go is None:
        pytest.skip("Go is not installed (apt-get install golang-go)")
    from tuneforge.models.ollama import CHATML_TEMPLATE

    default = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    conversations = [
        [{"role": "user", "content": "Hi there"}],
        [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is 2+2?"},
         {"role": "assistant", "content": "4"}, {"role": "user", "content": "And 3+3?"}],
        [{"role": "user", "content": "Two lines:\nfirst\n  second {{ not a template }}"},
         {"role": "assistant", "content": "Seen."}, {"role": "user", "content": "<b>tags</b> & \"quotes\""}],
        [{"role": "user", "content": "Say yes."}, {"role": "assistant", "content": "yes"}],
    ]  # fmt: skip
    (tmp_path / "main.go").write_text(GO_RENDER)
    env = {"HOME": str(tmp_path), "GOCACHE": str(tmp_path / "cache"), "GOPATH": str(tmp_path / "gopath"),
           "PATH": "/usr/bin:/bin", "GOFLAGS": "-mod=mod", "GO111MODULE": "off"}  # fmt: skip
    # Ollama makes SYSTEM the first message of a conversation that has none: Go gets that conversation.
    ollama_sees = [
        c if c[0]["role"] == "system" else [{"role": "system", "content": default}, *c] for c in conversations
    ]
    request = json.dumps({"template": CHATML_TEMPLATE, "conversations": ollama_sees})
    out = subprocess.run([go, "run", str(tmp_path / "main.go")], input=request, capture_output=True,
                         text=True, env=env, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    rendered = json.loads(out.stdout)
    saved = tiny_tokenizer.chat_template
    try:
        tiny_tokenizer.chat_template = SMOLLM2_TEMPLATE
        for messages, got in zip(conversations, rendered, strict=True):  # the template adds its own default
            last_user = messages[-1]["role"] == "user"
            want = tiny_tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=last_user
            )
            assert got == want, (messages, got, want)
    finally:
        tiny_tokenizer.chat_template = saved
