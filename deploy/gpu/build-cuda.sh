#!/usr/bin/env bash
# Build conftag-infer with CUDA on a machine without a GPU (or with one), from PyPI's CUDA 13.0
# wheels. See docs/gpu.md.
#
#   deploy/gpu/build-cuda.sh            # -> $CUDA_TARGET_DIR/release/conftag-infer (+ .xz)
#
# Env: CONFTAG_CACHE (default ~/.cache/conftag: venv with the toolchain), CUDA_TARGET_DIR
# (default $CONFTAG_CACHE/target-cuda), CUDA_COMPUTE_CAP (default 90 = H100/H200),
# CARGO_BUILD_JOBS, CONFTAG_EXTRA_FEATURES (default `profile`; `nccl` for --tensor-parallel-size,
# which also installs the NCCL wheel to link against). Pinned to 13.0: the device driver (580) is CUDA 13.0, and kernels built by a
# newer nvcc fail there with CUDA_ERROR_UNSUPPORTED_PTX_VERSION.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cache="${CONFTAG_CACHE:-$HOME/.cache/conftag}"
venv="$cache/cuda-venv"
if [ ! -x "$venv/bin/pip" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install -q "nvidia-cuda-nvcc==13.0.*" "nvidia-cuda-crt==13.0.*" "nvidia-nvvm==13.0.*" \
  "nvidia-cuda-runtime==13.0.*" "nvidia-cuda-cccl==13.0.*" "nvidia-cuda-nvrtc==13.0.*" \
  "nvidia-cublas==13.0.*" "nvidia-curand==10.*"
cu="$(echo "$venv"/lib/python3*/site-packages/nvidia/cu13)"
features="cuda ${CONFTAG_EXTRA_FEATURES:-profile}"
nccl_lib=""
if [[ " $features " == *" nccl "* ]]; then
  # libnccl.so.2 to link against; at run time the node's own NCCL (or PyTorch's wheel) is used.
  "$venv/bin/pip" install -q "nvidia-nccl-cu13"
  nccl_lib="$(echo "$venv"/lib/python3*/site-packages/nvidia/nccl/lib)"
  [ -e "$nccl_lib/libnccl.so" ] || ln -s libnccl.so.2 "$nccl_lib/libnccl.so"
fi

# Unversioned links, lib64, and a link-time libcuda stub (the wheels ship no driver).
(cd "$cu/lib"
 for so in libcudart.so.13 libcublas.so.13 libcublasLt.so.13 libcurand.so.10 libnvrtc.so.13; do
   [ -e "${so%%.so.*}.so" ] || ln -s "$so" "${so%%.so.*}.so"
 done)
[ -e "$cu/lib64" ] || ln -s lib "$cu/lib64"
mkdir -p "$cu/lib/stubs"
if [ ! -e "$cu/lib/stubs/libcuda.so" ]; then
  tmp="$(mktemp -d)"
  { gcc -E -P -I"$cu/include" "$cu/include/cuda.h"; cat "$cu/include/cuda.h"; } \
    | grep -oE '\bcu[A-Z][A-Za-z0-9_]*[[:space:]]*\(' | tr -d ' (' | sort -u \
    | awk '{ printf "void %s(void) {}\n", $1 }' >"$tmp/stub.c"
  gcc -shared -fPIC -o "$cu/lib/stubs/libcuda.so" -Wl,-soname,libcuda.so.1 "$tmp/stub.c"
  ln -sf libcuda.so "$cu/lib/stubs/libcuda.so.1"
  rm -rf "$tmp"
fi

export CUDA_HOME="$cu" CUDA_ROOT="$cu" CUDA_PATH="$cu"
export PATH="$cu/bin:$PATH"
export LIBRARY_PATH="$cu/lib:$cu/lib/stubs${nccl_lib:+:$nccl_lib}${LIBRARY_PATH:+:$LIBRARY_PATH}"
export CUDA_COMPUTE_CAP="${CUDA_COMPUTE_CAP:-90}"
export CARGO_TARGET_DIR="${CUDA_TARGET_DIR:-$cache/target-cuda}"
nvcc --version | tail -2
cd "$root"
engine-patches/apply.sh
cargo build --release -p worker-infer --features "$features"
bin="$CARGO_TARGET_DIR/release/conftag-infer"
strip "$bin" -o "$bin.stripped"
xz -T0 -6 -c "$bin.stripped" >"$bin.xz"
ls -la "$bin" "$bin.xz"
