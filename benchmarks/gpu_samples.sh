#!/usr/bin/env bash
# Samples of the dev suites on a GPU, in one run of a few minutes (issue 16): acasxu_2023,
# mnist_fc, oval21 and cifar10_resnet through the benchmark runner with --device cuda (float32
# bounds with their rounding accounted for), four instances at a time on the one GPU.
#
#   OUT=gpu-results bash benchmarks/gpu_samples.sh [BENCHMARKS_DIR]
#
# Needs the package installed with a CUDA build of torch (README, "Which torch").
# Writes OUT/device.txt (torch, CUDA, the GPU) and OUT/<suite>/{results.csv,summary.md}.
# DEVICE=cpu runs the same samples on the CPU (the figures to set beside the GPU's);
# DRY=1 prints the commands only.  The sample sizes and caps keep the worst case near 4 minutes
# with 4 jobs; compare with docs/STATUS.md's CPU figures for the same --every and caps.
set -u
S=${1:-../shared/benchmarks}
OUT=${OUT:-gpu-results}
PY=${PYTHON:-python}
DEVICE=${DEVICE:-cuda}
JOBS=${JOBS:-4}
mkdir -p "$OUT"
"$PY" -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available());
print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU")' > "$OUT/device.txt" 2>&1
cat "$OUT/device.txt"
extra=()
[ "${DRY:-0}" = 1 ] && extra=(--dry-run)
while read -r suite every cap; do
  "$PY" -m verifier bench "$S/$suite" --every "$every" --timeout-cap "$cap" --jobs "$JOBS" \
    --out "$OUT/$suite" --no-progress --verifier-args="--device $DEVICE" "${extra[@]}"
done <<'LIST'
acasxu_2023 12 30
mnist_fc 12 30
oval21 10 60
cifar10_resnet 12 30
LIST
