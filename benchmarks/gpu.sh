#!/usr/bin/env bash
# The GPU rows of the benchmark, for a machine with an NVIDIA GPU (not run on the 2-core CPU box).
#
# Needs onnxruntime-gpu instead of onnxruntime (`pip install 'ticor[gpu,bench]'`) and the bundles
# in $TICOR_CACHE/bundles: multilingual-fp16 and multilingual-int8 (built on the CPU machine and
# copied, or made here from multilingual-fp32 with the build side installed).
#
# Settings (environment): PY (the Python that has ticor; default .venv/bin/python), TICOR_CACHE,
# EVAL (a labelled pair file, e.g. the dataset's pairs/test.jsonl with its images beside it:
# quality and decisions are then measured on the GPU too; without it the bench times built-in
# inputs), RUNS (repetitions per timing, default 60), OUT (default CACHE/bench/gpu-DATE).
#
# Writes into OUT: environment.txt (GPU, driver, onnxruntime, whether TensorRT comes up),
# results.json, report.md and plots (`ticor bench`), and with EVAL per-pair scores
# scores-fp16-cuda.jsonl and scores-int8-cuda.jsonl (`ticor score`), to compare with the CPU's.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
CACHE=${TICOR_CACHE:-$HOME/.cache/ticor}
OUT=${OUT:-$CACHE/bench/gpu-$(date +%Y%m%d-%H%M%S)}
RUNS=${RUNS:-60}
fp32="$CACHE/bundles/multilingual-fp32"
fp16="$CACHE/bundles/multilingual-fp16"
int8="$CACHE/bundles/multilingual-int8"
ticor() { "$PY" -m ticor "$@"; }
mkdir -p "$OUT"

test -d "$fp16" || ticor quantize "$fp32" --precision fp16
{
  ticor --version
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader || echo "nvidia-smi: not here"
  "$PY" -c "import onnxruntime as o; print('onnxruntime', o.__version__, o.get_device(), o.get_available_providers())"
} 2>&1 | tee "$OUT/environment.txt"

# GPU rows only: this machine's CPU is not the edge CPU the int8 bundle is measured on (the CPU
# machine's own `ticor bench` has those rows), and its fp16 rows on the CPU took minutes.
# TensorRT needs its own libraries (libnvinfer): try it on the head graph, use it only if it comes up,
# and say so either way (the bench refuses a provider that falls back).
providers=cuda
if "$PY" - "$fp16/head.onnx" 2>&1 <<'EOF' | tee -a "$OUT/environment.txt"; then providers=cuda,tensorrt; fi
import sys
import onnxruntime as o
try:
    s = o.InferenceSession(sys.argv[1], providers=["TensorrtExecutionProvider", "CPUExecutionProvider"])
except Exception as exc:  # noqa: BLE001
    print("tensorrt: not usable here:", str(exc).strip()[:400])
    sys.exit(1)
got = s.get_providers()[0]
print("tensorrt:", "usable" if got == "TensorrtExecutionProvider" else f"not usable here (the session came up on {got})")
sys.exit(0 if got == "TensorrtExecutionProvider" else 1)
EOF
echo "providers benchmarked: $providers" | tee -a "$OUT/environment.txt"

inputs=()
if test -n "${EVAL:-}"; then  # every pair's score on the GPU, to compare decisions with the CPU's
  inputs=(--eval "$EVAL")
  for b in fp16 int8; do
    t0=$(date +%s.%N)
    ticor score "$EVAL" --bundle "$CACHE/bundles/multilingual-$b" --provider cuda --no-cache --batch-size 256 \
      -o "$OUT/scores-$b-cuda.jsonl"
    echo "ticor score, $b on cuda: $(wc -l <"$OUT/scores-$b-cuda.jsonl") rows in $("$PY" -c "import time; print(round(time.time() - $t0, 1))") s" \
      | tee -a "$OUT/environment.txt"
  done
fi
bundles=(--bundle "$fp16" --bundle "$int8")
if test -d "$fp32"; then bundles+=(--bundle "$fp32"); fi
ticor bench "${bundles[@]}" --providers "$providers" --batch-sizes 1,8,64,256 --threads 2 --runs "$RUNS" \
  "${inputs[@]}" --out "$OUT"

echo "written: $OUT"
