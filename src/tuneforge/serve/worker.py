"""The serving worker: load a model and its adapters, start an engine, serve the HTTP app.

A supervisor starts it as a process (``tuneforge serve MODEL --port P``, the key in
``TUNEFORGE_SERVE_API_KEY``) and waits for ``GET /v2/health/ready`` to answer 200.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from .engine import check_quantize, pick_engine
from .metrics import ServeMetrics
from .state import ServingState

log = logging.getLogger(__name__)


@dataclass
class WorkerConfig:
    model: str
    adapters: dict[str, str] = field(default_factory=dict)
    name: str | None = None
    engine: str = "auto"
    max_batch_size: int = 32
    max_model_len: int = 2048
    max_queue: int = 256
    max_prefill_tokens: int = 128  # engine/transformers_engine.py EngineConfig
    prefix_cache_tokens: int = 1024  # engine/prefix_cache.py (0: off)
    default_max_tokens: int = 512
    threads: int | None = None
    dtype: str = "auto"  # models/precision.py
    device: str = "auto"  # auto (a GPU when torch sees one) | cpu | cuda | cuda:N
    quantize: str = "none"  # none | int8 (engine/int8_linear.py; transformers engine on CPU)


def build_state(config: WorkerConfig, progress=None) -> ServingState:
    """Load the model and adapters and create (not start) the engine."""
    from tuneforge.models.inference import load_for_serving

    step = progress or (lambda *a: None)
    kind = pick_engine(config.engine)
    check_quantize(config.quantize, kind, config.dtype)
    metrics = ServeMetrics()
    step("load", None, None)
    if kind == "vllm":
        from tuneforge.errors import ConfigError
        from tuneforge.models.precision import CHOICES

        from .engine.vllm_engine import VLLMEngine

        if config.dtype not in CHOICES:
            raise ConfigError(f"dtype {config.dtype!r}: choose one of {', '.join(CHOICES)}.")
        served = load_for_serving(config.model, config.adapters, config.name, load_weights=False)
        engine = VLLMEngine(served, config)
    else:
        from .engine.transformers_engine import EngineConfig, TransformersEngine

        # int8 layers run on the CPU: there ``auto`` means the CPU even where a GPU is seen
        device = None if config.quantize == "int8" and config.device == "auto" else _device(config.device)
        served = load_for_serving(
            config.model, config.adapters, config.name, device=device, dtype=config.dtype
        )
        engine = TransformersEngine(
            served,
            EngineConfig(
                max_batch_size=config.max_batch_size,
                max_model_len=config.max_model_len,
                max_queue=config.max_queue,
                max_prefill_tokens=config.max_prefill_tokens,
                prefix_cache_tokens=config.prefix_cache_tokens,
                threads=config.threads,
                quantize=config.quantize,
            ),
            metrics,
        )
    return ServingState(served, engine, metrics, default_max_tokens=config.default_max_tokens)


def _device(requested: str = "auto") -> str | None:
    """The device to load on (None: the CPU). ``auto``: the GPU this worker was given (the supervisor
    sets CUDA_VISIBLE_DEVICES to its lease) when torch can see one, else the CPU."""
    import torch

    from tuneforge.errors import ConfigError

    if requested == "cpu":
        return None
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else None
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"--device {requested}: torch sees no CUDA GPU here; use cpu or auto.")
        return requested
    raise ConfigError(f"--device {requested!r}: use auto, cpu, cuda or cuda:N.")


def run(state: ServingState, host: str, port: int, api_key: str | None, on_ready=None) -> None:
    """Serve until SIGINT/SIGTERM; ``on_ready(url)`` once the port accepts requests."""
    import uvicorn

    from .app import create_app

    app = create_app(state, api_key)

    class Server(uvicorn.Server):
        async def startup(self, sockets=None):
            await super().startup(sockets)
            if self.started and on_ready:
                on_ready(f"http://{host}:{port}")

    state.engine.start()
    try:
        Server(uvicorn.Config(app, host=host, port=port, log_level="warning", access_log=False)).run()
    finally:
        state.engine.stop()
