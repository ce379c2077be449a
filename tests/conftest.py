"""Offline fixtures: a tiny byte-level BPE tokenizer and tiny random models of several architectures."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

# Before torch loads (its OpenMP reads this once): the suite runs two test files at once on two cores,
# each with its servers and torch workers, so OpenMP threads outnumber the cores, and threads that spin
# while their partner is descheduled waste most of the CPU. Measured on this 2-core machine at load ~20:
# a torch loop took 825 s (117 s CPU) spinning and 146 s (21 s CPU) with PASSIVE. Workers inherit it.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

CORPUS = [
    "Give three tips for staying healthy. Eat well, exercise, sleep.",
    "What is the capital of France? The capital of France is Paris.",
    "The quick brown fox jumps over the lazy dog. 0123456789",
    "把这句话翻译成英文。今天天气很好。中国的首都是北京。",
    "system user assistant instruction response input output",
]
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


@pytest.fixture(autouse=True)
def _offline_home(tmp_path, monkeypatch):
    """Every test gets its own TUNEFORGE_HOME and no network to model hubs."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("TUNEFORGE_HOME", str(tmp_path / "home"))
    from tuneforge.settings import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    from tuneforge.data.templates import CHAT_TEMPLATES

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=400, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(CORPUS * 4, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        bos_token="<|im_start|>",
        unk_token=None,
    )
    fast.chat_template = CHAT_TEMPLATES["chatml"]
    return fast


@pytest.fixture(scope="session")
def tiny_tokenizer():
    return build_tokenizer()


def _config(arch: str, vocab: int, tok, **overrides):
    import transformers as tf

    # A wide init: with the default 0.02 a frozen random output layer cannot produce peaked logits,
    # so LoRA alone could never memorise anything and "loss falls" would test nothing.
    common = dict(
        vocab_size=vocab,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        bos_token_id=tok.bos_token_id,
        initializer_range=0.2,
        init_std=0.2,
        **overrides,
    )
    # llama and qwen2 share a shape: grouped-query attention, gated MLP.
    decoder = dict(
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=512,
        **common,
    )
    if arch == "llama":
        return tf.LlamaForCausalLM, tf.LlamaConfig(**decoder)
    if arch == "qwen2":
        return tf.Qwen2ForCausalLM, tf.Qwen2Config(**decoder)
    if arch == "gpt2":
        return tf.GPT2LMHeadModel, tf.GPT2Config(n_embd=32, n_layer=2, n_head=4, n_positions=512, **common)
    if arch == "opt":
        return tf.OPTForCausalLM, tf.OPTConfig(
            hidden_size=32,
            ffn_dim=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            word_embed_proj_dim=32,
            max_position_embeddings=512,
            **common,
        )
    if arch == "bloom":
        return tf.BloomForCausalLM, tf.BloomConfig(hidden_size=32, n_layer=2, n_head=4, **common)
    raise ValueError(arch)


def make_tiny_model(folder: Path, arch: str = "llama", seed: int = 0, tokenizer=None, **config) -> Path:
    """A tiny random model of ``arch`` saved with the test tokenizer; ``config`` overrides its settings."""
    import torch

    tok = tokenizer or build_tokenizer()
    cls, config = _config(arch, len(tok), tok, **config)
    torch.manual_seed(seed)
    model = cls(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    return folder


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """{arch: folder} of tiny random causal LMs sharing the test tokenizer, built once per session."""
    root = tmp_path_factory.mktemp("tiny-models")
    tok = build_tokenizer()
    return {
        arch: make_tiny_model(root / arch, arch, tokenizer=tok)
        for arch in ("llama", "qwen2", "gpt2", "opt", "bloom")
    }


@pytest.fixture
def tiny_llama(tiny_models):
    return tiny_models["llama"]


def write(path: Path, content) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_text(json.dumps(content, ensure_ascii=False), encoding="utf-8")
    return path


MEMO = [
    {"instruction": "Say the code word.", "input": "", "output": "banana seven"},
    {"instruction": "What is the capital of France?", "input": "", "output": "Paris"},
    {"instruction": "Translate", "input": "今天天气很好", "output": "The weather is nice today."},
    {"instruction": "Count to three.", "input": "", "output": "one two three"},
]


@pytest.fixture
def memo_data(tmp_path) -> Path:
    """A tiny memorisable alpaca set."""
    return write(tmp_path / "memo.json", MEMO * 2)


# The longest files first: `make test` hands whole files to two workers in this order (with xdist's
# own reordering, by number of tests, turned off in the Makefile: it put these nine-test files last), so
# the long ones run side by side instead of one of them alone at the end. Order inside a file is kept.
# Paths from tests/ (tests/test_layout.py checks each one exists).
LONGEST_FILES = [  # seconds in the 1,586 s CI run (its 30 slowest tests; the rest from an older full run)
    "web/test_console.py",  # 465 (514 before the stop/start/delete test joined the deploy test)
    "platform/test_deployments.py",  # 425
    # (platform/test_ray_executor.py, 505 s, mostly Ray's waits: `make test` runs it beside the two workers)
    "platform/test_platform_jobs.py",  # 214
    "test_integration_default_model.py",  # 162
    "train/test_workers.py",  # 155
    "data/test_data_hostile.py",  # 146
    "cli/test_cli_train.py",  # 141
    "platform/test_promote.py",  # 126
    "platform/test_platform_server.py",  # 110
    "serve/test_serve.py",  # 95
    "platform/test_exports.py",  # 91
    "train/test_tracking.py",  # 91
    "platform/test_method_jobs.py",  # 83
    "platform/test_platform_api.py",  # 78
    "train/test_train.py",  # 46
    "jobs/test_command_jobs.py",  # 43
    "train/test_train_correctness.py",  # 33
    "data/test_data_fuzz.py",  # 30
    "platform/test_platform_openapi.py",  # 27
    "models/test_gguf_export.py",
    "platform/test_platform_fuzz.py",
]


def _from_tests(path: Path) -> str:
    """``path`` as LONGEST_FILES spells it (relpath: a file outside tests/ just ranks last)."""
    return os.path.relpath(path, Path(__file__).parent).replace(os.sep, "/")


def pytest_collection_modifyitems(config, items):
    import torch

    rank = {name: i for i, name in enumerate(LONGEST_FILES)}
    # sort is stable: the order inside a file is kept
    items.sort(key=lambda item: rank.get(_from_tests(item.path), len(LONGEST_FILES)))

    if not torch.cuda.is_available():
        skip = pytest.mark.skip(reason="needs CUDA")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def cli_server():
    """A fork server running the real `tuneforge` entry point per request (see tests/support/cliserver.py)."""
    from tests.support.fuzzhelp import CliServer

    server = CliServer()
    yield server
    server.close()


# -- the control plane: databases ------------------------------------------------------------------------


def _postgres_admin_url() -> str | None:
    """TUNEFORGE_TEST_POSTGRES_URL (a role that may create databases); under CI it must work."""
    url = os.environ.get("TUNEFORGE_TEST_POSTGRES_URL")
    in_ci = os.environ.get("CI", "").lower() == "true"
    if not url:
        if in_ci:
            pytest.fail("CI=true but TUNEFORGE_TEST_POSTGRES_URL is not set (.ci/run sets it)")
        pytest.skip("PostgreSQL tests need TUNEFORGE_TEST_POSTGRES_URL")
    return url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, monkeypatch):
    """The store's URL for one test: SQLite in TUNEFORGE_HOME, or a throwaway PostgreSQL database."""
    if request.param == "sqlite":
        monkeypatch.delenv("TUNEFORGE_DATABASE_URL", raising=False)
        yield None
        return
    import secrets

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    admin_url = _postgres_admin_url()
    name = f"tf_test_{secrets.token_hex(4)}"
    try:
        engine = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with engine.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    except Exception as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL at TUNEFORGE_TEST_POSTGRES_URL is unreachable: {exc}")
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    monkeypatch.setenv("TUNEFORGE_DATABASE_URL", url)
    yield url
    with engine.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    engine.dispose()


# -- serving: a tiny base with room for long answers, and LoRA adapters that change its answers ----
def make_serving_model(folder: Path, seed: int = 0) -> Path:
    """A tiny llama like ``make_tiny_model`` but with a 2048-position context (the seed bodies ask
    for 1024 new tokens) and the stop tokens saved as training saves them."""
    import torch

    tok = build_tokenizer()
    cls, config = _config("llama", len(tok), tok)
    config.max_position_embeddings = 2048
    torch.manual_seed(seed)
    model = cls(config)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    tok.save_pretrained(str(folder))
    write(
        folder / "generation_config.json",
        {"eos_token_id": [tok.eos_token_id], "pad_token_id": tok.pad_token_id},
    )
    return folder


def make_lora_adapter(base: Path, out: Path, seed: int, dora: bool = False) -> Path:
    """A LoRA adapter with random (non-zero) B matrices, so its answers differ from the base's."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(str(base))
    lora = LoraConfig(
        r=4,
        lora_alpha=16,
        target_modules=["q_proj", "v_proj", "down_proj"],
        init_lora_weights=False,
        use_dora=dora,
    )
    peft_model = get_peft_model(model, lora)
    peft_model.save_pretrained(str(out))
    return out


@pytest.fixture(scope="session")
def serving_models(tmp_path_factory):
    """{"base": folder, "alpha": adapter, "beta": adapter} for the serving tests."""
    root = tmp_path_factory.mktemp("serving")
    base = make_serving_model(root / "tiny-chat")
    return {
        "base": base,
        "alpha": make_lora_adapter(base, root / "alpha", 1),
        "beta": make_lora_adapter(base, root / "beta", 2),
    }
