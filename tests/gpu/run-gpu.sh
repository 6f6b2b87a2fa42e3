#!/usr/bin/env bash
# On a GPU machine (NVIDIA driver, python3 with torch; no Rust needed): run the engine's op
# suite on CUDA, the quickstart with --device cuda, and `pretext bench` beside
# torch_bench.py --device cuda (eager and --compile), then print one table. Everything runs
# from the bundle tests/gpu/build-cuda.sh made; about 5 minutes on an H100/H200.
#
# Usage: run-gpu.sh [OUT]   (OUT: where logs and JSON go; default ./gpu-results)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=${1:-$(pwd)/gpu-results}
mkdir -p "$OUT"
export LD_LIBRARY_PATH=/usr/local/cuda-13.0/targets/x86_64-linux/lib:/usr/local/cuda/lib64${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
# dfdx compiles kernels at run time and includes its headers from the build folder it was
# built in: put them back at that absolute path.
baked=$(cat "$HERE/dfdx-out.path")
mkdir -p "$baked" && cp -a "$HERE/dfdx-out/." "$baked/"
PRETEXT="$HERE/bin/pretext"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"

status=0
echo "== op suite on every device that opens (CPU fast, CPU generic, CUDA)"
"$HERE/bin/op-suite" --test-threads 1 2>&1 | tee "$OUT/op-suite.log" | tail -5 || status=1
grep -q "test result: ok" "$OUT/op-suite.log" || status=1

echo "== quickstart on cuda"
work=$(mktemp -d)
cp -a "$HERE/pipelines" "$HERE/datasets" "$work/"
( cd "$work" && /usr/bin/time -v "$PRETEXT" run pipelines/quickstart.toml --device cuda ) \
    >"$OUT/quickstart.log" 2>&1 || status=1
grep -E "linear|Elapsed|Maximum resident" "$OUT/quickstart.log" | tail -6

echo "== bench: pretext vs PyTorch eager and torch.compile, same shapes"
( cd "$work" && "$PRETEXT" bench pipelines/bench.toml --device cuda --steps 20 --warmup 5 \
    --json "$OUT/pretext.json" ) >"$OUT/bench.log" 2>&1 || status=1
python3 "$HERE/torch_bench.py" --device cuda --steps 20 --warmup 5 --json "$OUT/torch-eager.json" \
    >"$OUT/torch-eager.log" 2>&1 || status=1
python3 "$HERE/torch_bench.py" --device cuda --compile --steps 20 --warmup 5 \
    --json "$OUT/torch-compile.json" >"$OUT/torch-compile.log" 2>&1 || status=1
python3 "$HERE/table.py" "$OUT/pretext.json" "$OUT/torch-eager.json" "$OUT/torch-compile.json" \
    | tee "$OUT/table.md"
exit $status
