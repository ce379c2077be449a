"""Multi-GPU launch commands, the layering rule (no torch in the control plane), CUDA-only paths."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.conftest import write
from tests.support.trainhelp import run, tiny_spec
from tuneforge.errors import ConfigError
from tuneforge.spec import parse_spec
from tuneforge.train.launch import distributed_command


def _spec(**resources):
    return parse_spec({"model": "m", "data": {"train": "d.json"}, "resources": resources})


def test_single_process_runs_in_place():
    assert distributed_command(_spec(), ["s.yaml"], env={}) is None
    assert distributed_command(_spec(gpus=4), ["s.yaml"], env={"LOCAL_RANK": "0"}) is None


def test_multi_gpu_and_multi_node_commands():
    cmd = distributed_command(
        _spec(gpus=4, strategy="fsdp"), ["s.yaml", "--set", "x=1"], env={}, folder="/j", gpus_here=4
    )
    assert cmd[1:6] == ["-m", "tuneforge.jobs.ranks", "--workers=4", "--folder=/j", "--"]
    assert cmd[-6:] == ["-m", "tuneforge.cli.main", "train", "s.yaml", "--set", "x=1"]
    cmd = distributed_command(_spec(workers=3), ["s.yaml"], env={}, folder="/j", gpus_here=0)
    assert cmd[3:5] == ["--workers=3", "--folder=/j"]  # CPU processes (gloo)
    env = {"MASTER_ADDR": "10.0.0.1", "NODE_RANK": "1"}
    cmd = distributed_command(_spec(gpus=8, nodes=2, strategy="zero3"), ["s.yaml"], env=env, gpus_here=8)
    assert cmd[1:5] == ["-m", "torch.distributed.run", "--nproc_per_node=8", "--nnodes=2"]
    assert "--node_rank=1" in cmd and "--master_addr=10.0.0.1" in cmd
    with pytest.raises(ConfigError, match="MASTER_ADDR and NODE_RANK"):
        distributed_command(_spec(gpus=8, nodes=2), ["s.yaml"], env={}, gpus_here=8)


def test_more_gpus_than_the_machine_has_are_refused_before_anything_starts(tmp_path, tiny_models, memo_data):
    """Before, gpus=2 on a CPU machine relaunched under torchrun and died in its traceback."""
    with pytest.raises(ConfigError, match="asks 2 GPUs, this machine has 0"):
        distributed_command(_spec(gpus=2), ["s.yaml"], env={}, gpus_here=0)
    spec = write(tmp_path / "s.yaml", tiny_spec(tiny_models["llama"], memo_data, resources__gpus=2))
    out = subprocess.run(
        [sys.executable, "-m", "tuneforge.cli.main", "train", str(spec), "-o", str(tmp_path / "job")],
        capture_output=True,
        text=True,
        env={**os.environ, "TUNEFORGE_GPUS": "0"},
        timeout=120,
    )
    assert out.returncode == 2, out.stdout + out.stderr
    assert "asks 2 GPUs, this machine has 0" in out.stdout + out.stderr
    assert "launching" not in out.stdout + out.stderr and not (tmp_path / "job").exists()


def test_workers_with_gpus_is_one_process_per_gpu():
    for gpus in (1, 2):
        with pytest.raises(ConfigError, match="one process per GPU"):
            _spec(gpus=gpus, workers=3)
    assert _spec(gpus=2, workers=2).resources.processes == 2


def test_nodes_without_gpus_is_rejected():
    from tuneforge.errors import ConfigError as CE

    with pytest.raises(CE, match="nodes > 1 needs"):
        _spec(nodes=2)


def test_control_plane_modules_do_not_import_torch():
    code = (
        "import sys; import tuneforge.spec, tuneforge.data.load, tuneforge.data.store, "
        "tuneforge.data.validate, tuneforge.data.readers, tuneforge.data.parquet, "
        "tuneforge.models.store, tuneforge.models.info, tuneforge.settings, tuneforge.errors, "
        "tuneforge.convert.llamafactory; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_platform_and_jobs_do_not_import_torch_even_serving_requests(tmp_path):
    """The whole control plane (every platform/ and jobs/ module, the app serving requests) is torch-free."""
    code = f"""
import os, sys, pkgutil, importlib, json
os.environ["TUNEFORGE_HOME"] = {str(tmp_path)!r}
import tuneforge.platform, tuneforge.jobs
for pkg in (tuneforge.platform, tuneforge.jobs):
    for m in pkgutil.walk_packages(pkg.__path__, pkg.__name__ + "."):
        if ".migrations" not in m.name:
            importlib.import_module(m.name)
import tuneforge.cli.jobs, tuneforge.cli.tokens, tuneforge.cli.server, tuneforge.cli.client
import tuneforge.cli.deployments
from fastapi.testclient import TestClient
from tuneforge.platform.app import create_app
app = create_app(supervise=False)
token = open(os.path.join({str(tmp_path)!r}, "admin.token")).read().strip()
with TestClient(app, headers={{"Authorization": "Bearer " + token}}) as c:
    r = c.post("/api/v1/datasets", json={{"records": [{{"instruction": "a", "output": "b"}}]}})
    assert r.status_code == 201, r.text
    for path in ("/api/v1/datasets", "/api/v1/templates", "/api/v1/models", "/api/v1/jobs", "/openapi.json",
                 "/api/v1/deployments", "/v1/models"):
        assert c.get(path).status_code == 200, path
    r = c.post("/api/v1/jobs", json={{"kind": "command", "name": "x", "command": ["true"]}})
    assert r.status_code == 201, r.text
    # Checking train.report_to's packages finds them without importing them.
    body = {{"template": "sft-lora", "model": "m", "datasets": ["d"]}}
    body["overrides"] = {{"train.report_to": ["mlflow", "wandb", "swanlab"]}}
    r = c.post("/api/v1/jobs", json=body)
    assert r.status_code == 422, r.text
# A command job's TensorBoard files are read in the control plane: with the tensorboard package alone.
from tensorboard.compat.proto import event_pb2, summary_pb2
from tensorboard.summary.writer.event_file_writer import EventFileWriter
from tuneforge.jobs.tbmetrics import TensorBoardTail
value = summary_pb2.Summary.Value(tag="train/loss", simple_value=2.0)
w = EventFileWriter(os.path.join({str(tmp_path)!r}, "tbjob", "runs"))
w.add_event(event_pb2.Event(step=1, wall_time=1.0, summary=summary_pb2.Summary(value=[value])))
w.close()
assert TensorBoardTail(os.path.join({str(tmp_path)!r}, "tbjob")).poll() == 1
heavy = ("torch", "transformers", "mlflow", "wandb", "swanlab")  # trackers: only the worker reports
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in heavy)))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_serving_protocol_handlers_import_neither_fastapi_nor_torch():
    """Routes → handlers → engine: the handlers are plain code (the gateway can reuse them)."""
    code = (
        "import sys; import tuneforge.serve.openai, tuneforge.serve.kserve, tuneforge.serve.triton_generate, "
        "tuneforge.serve.params, tuneforge.serve.engine.base, tuneforge.serve.chat; "
        "print('torch' in sys.modules, 'fastapi' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False False"


@pytest.mark.gpu
def test_qlora_trains_on_cuda(tiny_llama, memo_data, tmp_path):
    from tests.support.trainhelp import losses

    result = run(tiny_spec(tiny_llama, memo_data, finetuning="qlora"), tmp_path / "j")
    curve = losses(result.folder)
    assert curve[-1] < curve[0]


@pytest.mark.gpu
def test_auto_precision_is_bf16_on_cuda_and_packing_matches(tiny_llama, memo_data, tmp_path):
    import json

    import torch

    from tuneforge.train import attention
    from tuneforge.train.collate import PackedCollator

    result = run(tiny_spec(tiny_llama, memo_data, train__max_steps=3), tmp_path / "j")
    started = json.loads((result.folder / "events.jsonl").read_text().splitlines()[0])
    assert started["device"] == "cuda"
    assert started["dtype"] == ("bfloat16" if torch.cuda.is_bf16_supported() else "float32")
    from transformers import AutoModelForCausalLM

    alone = AutoModelForCausalLM.from_pretrained(str(tiny_llama)).cuda().eval()
    packed = AutoModelForCausalLM.from_pretrained(str(tiny_llama), attn_implementation=attention.register())
    packed = packed.cuda().eval()
    batch = PackedCollator()(
        [{"input_ids": [5, 9, 30], "labels": [5, 9, 30]}, {"input_ids": [7, 8], "labels": [7, 8]}]
    )
    batch.pop("labels")
    batch = {k: v.cuda() if hasattr(v, "cuda") else v for k, v in batch.items()}
    with torch.no_grad():
        out = packed(**batch).logits[0, 3:]
        ref = alone(input_ids=torch.tensor([[7, 8]], device="cuda")).logits[0]
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-3)
