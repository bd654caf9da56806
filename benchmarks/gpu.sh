#!/usr/bin/env bash
# The GPU benchmark run (one H100 / H200): train step in bfloat16 on both sides (JAX compute dtype
# bfloat16, torch autocast bf16), JAX vs the PyTorch reference, with model FLOPs utilisation from
# XLA's counted FLOPs of the compiled train step over the device peak (--peak-tflops, default
# 989 TFLOP/s: H100 SXM / H200 dense bf16), with both kernel settings (model.kernels=xla, the
# plain XLA ops a GPU runs by default, and =cpu, the XLA:CPU routes, for comparison; torch is timed
# once), then the 30-view evaluation throughput.
#
#   benchmarks/gpu.sh             # on the GPU machine; budget: < 5 minutes, so it fits twice in 10
#   benchmarks/gpu.sh --dry-run   # anywhere: CPU, tiny sizes, 1 step; checks the whole path
#
# Environment: PYTHON (default .venv/bin/python if present, else python), OUT (default
# ${OUT:-/tmp/egoexo_gpu_bench}: logs and the JSON lines), MODELS (default all three),
# PEAK_TFLOPS (default 989), STEPS (default 10).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python )}
OUT=${OUT:-/tmp/egoexo_gpu_bench}
MODELS=${MODELS:-slowfast_r50,slow_r50,mvit_v2_s}
PEAK=${PEAK_TFLOPS:-989}
STEPS=${STEPS:-10}
mkdir -p "$OUT"

if [ "${1:-}" = "--dry-run" ]; then
  DEVICE=cpu; TRAIN_EXTRA=(--dry-run --steps 1); EVAL_EXTRA=(--dry-run --videos 1)
else
  DEVICE=gpu; TRAIN_EXTRA=(--sizes full --steps "$STEPS"); EVAL_EXTRA=(--size full --videos 16 --views-per-batch 120)
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt" || true
  # JAX and torch share the GPU in one process: no JAX preallocation of 75% of the memory.
  export XLA_PYTHON_CLIENT_PREALLOCATE=false
fi
export TF_CPP_MIN_LOG_LEVEL=3

start=$(date +%s)
"$PY" benchmarks/train_step.py --device "$DEVICE" --dtype bfloat16 --models "$MODELS" --heads on \
  --kernels xla,cpu --peak-tflops "$PEAK" "${TRAIN_EXTRA[@]}" 2>&1 | tee "$OUT/train_step.log"
"$PY" benchmarks/evaluate.py --device "$DEVICE" --dtype bfloat16 --model slowfast_r50 \
  "${EVAL_EXTRA[@]}" 2>&1 | tee "$OUT/evaluate.log"
tail -n 1 "$OUT/train_step.log" > "$OUT/train_step.json"
tail -n 1 "$OUT/evaluate.log" > "$OUT/evaluate.json"
"$PY" - "$OUT" "$start" <<'PY'
import json, sys, time
out, start = sys.argv[1], int(sys.argv[2])
t = json.load(open(f"{out}/train_step.json"))
e = json.load(open(f"{out}/evaluate.json"))
summary = {"benchmark": "gpu", "device": t["device"], "dtype": t["dtype"], "peak_tflops": t["peak_tflops"],
           "wall_s": round(time.time() - start, 1), "evaluate_videos_per_s": e["videos_per_s"]}
for r in t["runs"]:
    k = f"{r['model']}_{r['size']}_{r['kernels']}"
    summary[f"{k}_jax_clips_per_s"] = r["jax"]["clips_per_s"]
    summary[f"{k}_jax_mfu"] = r["jax"].get("mfu")
    summary[f"{k}_compile_s"] = r["jax"]["compile_s"]
    summary[f"{k}_jax_device_peak_mb"] = r["jax"].get("device_peak_mb")
    if "torch" in r:
        summary[f"{k}_torch_clips_per_s"] = r["torch"]["clips_per_s"]
        summary[f"{k}_torch_mfu"] = r["torch"].get("mfu")
        summary[f"{k}_torch_device_peak_mb"] = r["torch"].get("device_peak_mb")
    summary[f"{k}_speedup"] = r["speedup"]
print(json.dumps(summary))
PY
