#!/usr/bin/env bash
# Build the CUDA pretext (binary, plugins, the op-suite test binary) on a machine with no GPU
# and no CUDA toolkit, and pack what a GPU machine needs to run tests/gpu/run-gpu.sh into
# target/gpu-bundle/ (copy that folder, keeping its absolute path, to the GPU machine).
#
# The toolkit comes from the CUDA 13.0 wheels of the Python package index (a newer nvcc
# writes PTX a 13.0 driver cannot load); libcuda has no wheel, so a stub that exports the
# driver API's names is linked and the real one is loaded on the GPU machine. dfdx's build
# script asks nvidia-smi for the compute capability, so a stand-in answers (default 9.0,
# H100/H200; set CUDA_COMPUTE_CAP to change it).
#
# dfdx bakes two folders into the binary for the kernels NVRTC compiles at run time:
# $CUDA_ROOT/include and its build OUT_DIR. CUDA_ROOT is /usr/local/cuda (a link to the
# toolkit built here, and the driver's toolkit on the GPU machine), and the OUT_DIR goes into
# the bundle at the same absolute path.
#
# Usage: tests/gpu/build-cuda.sh            (about 10 minutes on 2 cores, 1.5 GB download)
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$(pwd)
CAP=${CUDA_COMPUTE_CAP:-90}
WORK=${PRETEXT_CUDA_WORK:-$REPO/target/cuda-toolkit}
ROOT=$WORK/root
TARGET=$REPO/target/cuda
BUNDLE=$REPO/target/gpu-bundle

echo "== toolkit wheels (CUDA 13.0) into $WORK"
mkdir -p "$WORK/wheels" "$ROOT"
if [ ! -e "$ROOT/.complete" ]; then
    python3 -m pip download --no-deps --only-binary=:all: --dest "$WORK/wheels" \
        nvidia-cuda-nvcc==13.0.88 nvidia-cuda-crt==13.0.88 nvidia-nvvm==13.0.88 \
        nvidia-cuda-runtime==13.0.96 nvidia-cuda-nvrtc==13.0.88 nvidia-cublas==13.0.2.14 \
        nvidia-curand==10.4.0.35 nvidia-cuda-cccl==13.0.85
    rm -rf "$WORK/unpacked" && mkdir -p "$WORK/unpacked"
    for w in "$WORK"/wheels/*.whl; do
        python3 -m zipfile -e "$w" "$WORK/unpacked"
    done
    # Each wheel holds nvidia/cu13/{bin,include,lib,nvvm,...}: merge them into one root.
    cp -a "$WORK"/unpacked/nvidia/cu13/. "$ROOT"/
    chmod +x "$ROOT"/bin/* "$ROOT"/nvvm/bin/* 2>/dev/null || true
    # Linkers look for libX.so; the wheels ship libX.so.13 (or .so.10 for curand).
    for f in "$ROOT"/lib/lib*.so.*; do
        base=${f%%.so.*}.so
        [ -e "$base" ] || ln -s "$(basename "$f")" "$base"
    done
    touch "$ROOT/.complete"
fi

echo "== stub libcuda (the driver API's names; the GPU machine loads the real one)"
# Every function answers CUDA_ERROR_NO_DEVICE (100), so with the stub on LD_LIBRARY_PATH the
# binary also runs here: --device cpu works and --device cuda is a clean error.
mkdir -p "$WORK/stub"
# Every cu* name in the header: functions and the `_v2`... names its macros point at.
grep -oE '\bcu[A-Z][A-Za-z0-9_]*' "$ROOT/include/cuda.h" | sort -u |
    awk '{print "int " $1 "(void) { return 100; }"}' >"$WORK/stub/cuda_stub.c"
cc -shared -fPIC -Wl,-soname,libcuda.so.1 -o "$WORK/stub/libcuda.so" "$WORK/stub/cuda_stub.c"
ln -sf libcuda.so "$WORK/stub/libcuda.so.1"

echo "== nvidia-smi stand-in (dfdx's build script asks it for the compute capability)"
mkdir -p "$WORK/bin"
cat >"$WORK/bin/nvidia-smi" <<EOF
#!/bin/sh
echo compute_cap
echo $(echo "$CAP" | sed 's/\(.\)$/.\1/')
EOF
chmod +x "$WORK/bin/nvidia-smi"

echo "== /usr/local/cuda -> $ROOT"
if [ -e /usr/local/cuda ] && [ ! -L /usr/local/cuda ]; then
    echo "/usr/local/cuda exists and is not a link: refusing to replace a real toolkit" >&2
    exit 2
fi
ln -sfn "$ROOT" /usr/local/cuda

export CUDA_ROOT=/usr/local/cuda CUDA_PATH=/usr/local/cuda CUDA_COMPUTE_CAP=$CAP
export PATH="$WORK/bin:$ROOT/bin:$PATH"
export LIBRARY_PATH="$WORK/stub:$ROOT/lib${LIBRARY_PATH:+:$LIBRARY_PATH}"
export LD_LIBRARY_PATH="$WORK/stub:$ROOT/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"

echo "== cargo build --release (pretext with cuda, the plugins) and the engine's op suite"
cargo build --release --locked --workspace --features pretext/cuda --target-dir "$TARGET"
suite=$(cargo test --release --locked -p pretext-engine --features cuda --target-dir "$TARGET" \
    --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m.get("executable") and m["target"]["name"] == "pretext_engine":
        print(m["executable"])' | tail -1)

echo "== bundle into $BUNDLE"
rm -rf "$BUNDLE" && mkdir -p "$BUNDLE/bin"
cp "$TARGET/release/pretext" "$BUNDLE/bin/"
cp "$suite" "$BUNDLE/bin/op-suite"
# The built-in plugins are found next to the binary.
cp "$TARGET"/release/libpretext_*.so "$BUNDLE/bin/"
# dfdx's kernel headers, at the absolute path the binary has baked in.
out=$(ls -d "$TARGET"/release/build/dfdx-*/out | head -1)
mkdir -p "$BUNDLE/dfdx-out"
cp -a "$out"/. "$BUNDLE/dfdx-out/"
echo "$out" >"$BUNDLE/dfdx-out.path"
cp -a pipelines datasets "$BUNDLE/"
cp tests/reference/torch_bench.py tests/gpu/run-gpu.sh tests/gpu/table.py "$BUNDLE/"
du -sh "$BUNDLE"
echo "built: copy $BUNDLE to the GPU machine and run $BUNDLE/run-gpu.sh there"
