#!/usr/bin/env bash
# Compile every CUDA kernel source (kernels/*.cu) to a cubin for sm_80 (A100) and sm_90 (H100) with nvcc;
# any error or warning fails. Needs no GPU, only nvcc (on PATH or in $CUDA_HOME/bin, /usr/local/cuda/bin).
set -euo pipefail
cd "$(dirname "$0")/.."
NVCC="$(command -v nvcc || true)"
for dir in "${CUDA_HOME:-}" /usr/local/cuda; do
    if [ -z "$NVCC" ] && [ -n "$dir" ] && [ -x "$dir/bin/nvcc" ]; then NVCC="$dir/bin/nvcc"; fi
done
if [ -z "$NVCC" ]; then
    echo "kernels.sh: nvcc not found (PATH, \$CUDA_HOME/bin, /usr/local/cuda/bin): cannot check kernels/*.cu" >&2
    exit 1
fi
out="$(mktemp -d)"
trap 'rm -rf "$out"' EXIT
shopt -s nullglob
sources=(kernels/*.cu)
if [ ${#sources[@]} -eq 0 ]; then
    echo "kernels.sh: no kernels/*.cu found" >&2
    exit 1
fi
for src in "${sources[@]}"; do
    for arch in sm_80 sm_90; do
        "$NVCC" -cubin -arch="$arch" -std=c++14 -Werror all-warnings -o "$out/$(basename "$src" .cu).$arch.cubin" "$src"
        echo "kernels.sh: $src $arch ok"
    done
done
