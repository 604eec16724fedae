#!/usr/bin/env bash
# The project's GPU check, in one go (budget: about 8 minutes on one H100):
#   1. the `gpu`-marked tests (bf16/fp16 vs fp32, GradScaler, compile, channels_last,
#      the device loader on CUDA, CUDA RNG checkpoint/resume, deterministic equality);
#   2. the benchmark's GPU suite (docs/benchmarks.md format, into the output folder);
#   3. experiment=cifar10_fast for none and CBAM on the real CIFAR-10.
#
# Usage: scripts/gpu_check.sh [OUTPUT_DIR]      (default: $OUT, else ./gpu_check_out)
# Environment:
#   CIFAR10_ROOT   a folder holding cifar-10-batches-py/ (skips building it), or
#   GPU_CHECK_DATA a folder holding cifar10-jpg.tar.gz and make_cifar10.py (a JPEG copy of
#                  CIFAR-10 and the script that writes the official Python layout from the
#                  archive beside it)
# Keep the output folder out of the way of small result transfers: run folders hold
# checkpoints. summary.txt, machine.txt, gpu_tests.txt and benchmarks_gpu.{md,json} are the
# files to keep.
#   WHEELS         a folder of wheels (hydra-core, omegaconf, antlr4) to use when Hydra is
#                  not installed (default: .whl)
# Every stage writes its log into the output folder; the script exits non-zero if any
# stage failed, after running all of them.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-gpu_check_out}}"
mkdir -p "$OUT_DIR"
WHEELS="${WHEELS:-.whl}"
failed=()
stamp() { date +%s; }
started=$(stamp)

if ! python3 -c "import hydra, omegaconf" 2>/dev/null; then
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        python3 -m pip install -q --no-index --no-deps --target /tmp/attn_resnet_site "$WHEELS"/*.whl
        export PYTHONPATH="/tmp/attn_resnet_site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "Hydra is not installed and no wheels were found in $WHEELS" | tee "$OUT_DIR/summary.txt"
        exit 2
    fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
    python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda)"
    python3 -c "import timm; print('timm', timm.__version__)" 2>/dev/null || echo "timm: not installed"
} > "$OUT_DIR/machine.txt" 2>&1

# 1. GPU tests
timeout 180 python3 -m pytest -q -m gpu -p no:cacheprovider -o addopts="" tests \
    > "$OUT_DIR/gpu_tests.txt" 2>&1 || failed+=("gpu tests")

# 2. Benchmark, GPU suite
# ResNet-50 only (compiling every depth would not fit the budget): run the other depths with
# --depths 18,34,101 when time allows.
timeout 180 python3 scripts/benchmark.py --suite gpu --device cuda --depths 50 --repeats 5 \
    --output-md "$OUT_DIR/benchmarks_gpu.md" --output-json "$OUT_DIR/benchmarks_gpu.json" \
    > "$OUT_DIR/benchmark_log.txt" 2>&1 || failed+=("benchmark")

# 3. cifar10_fast on the real CIFAR-10, none and CBAM
root="${CIFAR10_ROOT:-}"
if [ -z "$root" ] && [ -n "${GPU_CHECK_DATA:-}" ] && [ -f "$GPU_CHECK_DATA/cifar10-jpg.tar.gz" ]; then
    root=/tmp/attn_resnet_cifar10
    if [ ! -d "$root/cifar-10-batches-py" ]; then
        python3 "$GPU_CHECK_DATA/make_cifar10.py" "$root" --format python \
            > "$OUT_DIR/cifar10_build.txt" 2>&1 || failed+=("cifar10 build")
    fi
fi
if [ -n "$root" ] && [ -d "$root/cifar-10-batches-py" ]; then
    for att in none CBAM; do
        timeout 100 python3 train.py experiment=cifar10_fast model.att_type=$att data.root="$root" \
            trainer.progress=false hydra.run.dir="$OUT_DIR/cifar10_fast_$att" \
            > "$OUT_DIR/cifar10_fast_${att}_log.txt" 2>&1 || failed+=("cifar10_fast $att")
    done
else
    echo "cifar10_fast skipped: set CIFAR10_ROOT or GPU_CHECK_DATA" > "$OUT_DIR/cifar10_fast_skipped.txt"
    failed+=("cifar10_fast (no data)")
fi

{
    cat "$OUT_DIR/machine.txt"
    echo "seconds: $(( $(stamp) - started ))"
    tail -n 3 "$OUT_DIR/gpu_tests.txt"
    for att in none CBAM; do
        f="$OUT_DIR/cifar10_fast_$att/results.json"
        [ -f "$f" ] && python3 -c "import json,sys; r=json.load(open(sys.argv[1])); print(sys.argv[2], 'top-1', r.get('final',{}).get('acc1'), 'wall', round(r.get('wall_seconds',0),1), 's', 'img/s', round(r.get('images_per_sec',0)), 'compile', r.get('compile_seconds'))" "$f" "$att"
    done
    echo "failed stages: ${failed[*]:-none}"
} > "$OUT_DIR/summary.txt" 2>&1
cat "$OUT_DIR/summary.txt"
[ ${#failed[@]} -eq 0 ]
