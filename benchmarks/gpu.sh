#!/usr/bin/env bash
# The GPU rows of the benchmark, for a machine with an NVIDIA GPU (not run on the 2-core CPU box).
# Needs the build side already run on this machine or its bundles copied into $TICOR_CACHE, and
# onnxruntime-gpu instead of onnxruntime (`pip install 'ticor[gpu,build,bench]'`).
# Writes CACHE/bench/gpu-DATE/ (results.json, report.md, plots); paste its headline into the README.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-.venv/bin}
CACHE=${TICOR_CACHE:-$HOME/.cache/ticor}
fp32="$CACHE/bundles/multilingual-fp32"
fp16="$CACHE/bundles/multilingual-fp16"
int8="$CACHE/bundles/multilingual-int8"
"$BIN/ticor" --version
python3 -c "import onnxruntime as o; print(o.get_available_providers())"
test -d "$fp16" || "$BIN/ticor" quantize "$fp32" --precision fp16
"$BIN/ticor" bench --bundle "$fp16" --bundle "$fp32" --bundle "$int8" --providers cpu,cuda,tensorrt \
  --batch-sizes 1,8,64,256 --threads 2 --runs 60 --out "$CACHE/bench/gpu-$(date +%Y%m%d-%H%M%S)"
