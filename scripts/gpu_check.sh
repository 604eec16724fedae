#!/usr/bin/env bash
# The project's GPU check, in one go (budget: GPU_CHECK_BUDGET seconds, default 480, on one H100/H200):
#   1. the `gpu`-marked tests (bf16/fp16 vs fp32, GradScaler, compile, channels_last,
#      the device loader on CUDA, CUDA RNG checkpoint/resume, deterministic equality);
#   2. experiment=cifar10_fast with no attention on the real CIFAR-10;
#   3. the benchmark's GPU suite in eager mode (ResNet-50, every block and peer, the data path,
#      the trainer vs a bare loop, with a torch.profiler op table of one epoch of each in profile/);
#   4. a 1-GPU DDP smoke run (torchrun, NCCL, SyncBatchNorm);
#   5. the benchmark's compiled models (ResNet-50: ours none and CBAM, torchvision's; timm's
#      peers are left out to fit three compiles);
#   6. CBAM's cost gate by gate and its two maxima (scripts/profile_cbam.py, ResNet-50, 224x224,
#      batch 256, bf16, channels_last), when 70 s are left;
#   7. the ImageNet data path (workers vs DALI when DALI is installed; DALI's `gpu` test runs
#      in stage 1), when 90 s are left;
#   8. experiment=cifar10_fast with CBAM, with the time that is left.
# Stages 1-5 come first because their figures are the issue's targets; the later ones take
# what the budget leaves, each with a timeout of the seconds left.
# The CIFAR-10 copy is built on the CPU while the tests run.
#
# Usage: scripts/gpu_check.sh [OUTPUT_DIR]      (default: $OUT, else ./gpu_check_out)
# Environment:
#   CIFAR10_ROOT     a folder holding cifar-10-batches-py/ (skips building it), or
#   GPU_CHECK_DATA   a folder holding cifar10-jpg.tar.gz and make_cifar10.py (a JPEG copy of
#                    CIFAR-10 and the script that writes the official Python layout from the
#                    archive beside it)
#   WHEELS           a folder of wheels (hydra-core, omegaconf, antlr4) to use when Hydra is
#                    not installed (default: .whl)
#   GPU_CHECK_BUDGET seconds for the whole check (default 480); the last stage gets what is left
# Outputs in OUTPUT_DIR: summary.txt, machine.txt, gpu_tests.txt, benchmarks_gpu.{md,json},
# benchmarks_gpu_compiled.{md,json}, cbam_cost_gpu.{md,json}, benchmarks_imagenet_data_gpu.{md,json} and logs.tar.gz (every log, the runs' results.json, configs
# and TensorBoard files; no checkpoints). Run folders (with checkpoints) are under OUTPUT_DIR/runs.
# Every stage writes its log; the script exits non-zero if any stage failed, after running all.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR="${1:-${OUT:-gpu_check_out}}"
mkdir -p "$OUT_DIR/logs" "$OUT_DIR/runs"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
LOGS="$OUT_DIR/logs"
WHEELS="${WHEELS:-.whl}"
BUDGET="${GPU_CHECK_BUDGET:-480}"
export PYTHONUNBUFFERED=1
failed=()
stamp() { date +%s; }
started=$(stamp)
elapsed() { echo $(( $(stamp) - started )); }
note() { echo "[$(elapsed) s] $*" | tee -a "$LOGS/stages.txt"; }

source scripts/gpu_env.sh
use_wheels "$WHEELS" "hydra, omegaconf" "$OUT_DIR/summary.txt"

{
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader
    python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__, 'cuda', torch.version.cuda, 'cudnn', torch.backends.cudnn.version())"
    python3 -c "import timm; print('timm', timm.__version__)" 2>/dev/null || echo "timm: not installed"
    python3 -c "import nvidia.dali as d; print('dali', d.__version__)" 2>/dev/null || echo "dali: not installed"
    echo "cpu cores: $(nproc)"
} > "$OUT_DIR/machine.txt" 2>&1
cat "$OUT_DIR/machine.txt"

# The CIFAR-10 copy, built on the CPU in the background while the GPU tests run.
root="${CIFAR10_ROOT:-}"
build_pid=""
if [ -z "$root" ] && [ -n "${GPU_CHECK_DATA:-}" ] && [ -f "$GPU_CHECK_DATA/cifar10-jpg.tar.gz" ]; then
    root=/tmp/attn_resnet_cifar10
    if [ ! -d "$root/cifar-10-batches-py" ]; then
        python3 "$GPU_CHECK_DATA/make_cifar10.py" "$root" --format python > "$LOGS/cifar10_build.txt" 2>&1 &
        build_pid=$!
    fi
fi

# 1. GPU tests
note "gpu tests"
timeout 120 python3 -m pytest -q -m gpu -p no:cacheprovider -o addopts="" -rfEs tests \
    > "$OUT_DIR/gpu_tests.txt" 2>&1 || failed+=("gpu tests")
tail -n 3 "$OUT_DIR/gpu_tests.txt"

# 2. cifar10_fast on the real CIFAR-10 (stage 8 runs it with CBAM)
if [ -n "$build_pid" ]; then wait "$build_pid" || failed+=("cifar10 build"); fi
have_cifar=""
if [ -n "$root" ] && [ -d "$root/cifar-10-batches-py" ]; then have_cifar=1; fi
cifar10_fast() {  # cifar10_fast ATT TIMEOUT [OVERRIDE...]
    local att="$1" limit="$2"
    shift 2
    note "cifar10_fast $att (timeout $limit s) $*"
    timeout "$limit" python3 train.py experiment=cifar10_fast model.att_type=$att data.root="$root" \
        trainer.progress=false hydra.run.dir="$OUT_DIR/runs/cifar10_fast_$att" "$@" \
        > "$LOGS/cifar10_fast_$att.txt" 2>&1 || failed+=("cifar10_fast $att")
    tail -n 2 "$LOGS/cifar10_fast_$att.txt"
}
if [ -n "$have_cifar" ]; then
    cifar10_fast none 150
else
    echo "cifar10_fast skipped: set CIFAR10_ROOT or GPU_CHECK_DATA" | tee "$LOGS/cifar10_fast_skipped.txt"
    failed+=("cifar10_fast (no data)")
fi

# 3. Benchmark, GPU suite, eager (every block and peer at ResNet-50, data path, trainer)
note "benchmark eager"
timeout 90 python3 scripts/benchmark.py --suite gpu --device cuda --depths 50 --repeats 5 --no-compile \
    --profile-trainer "$OUT_DIR/profile" --output-md "$OUT_DIR/benchmarks_gpu.md" --output-json "$OUT_DIR/benchmarks_gpu.json" \
    > "$LOGS/benchmark_eager.txt" 2>&1 || failed+=("benchmark eager")
tail -n 8 "$LOGS/benchmark_eager.txt"

# 4. DDP smoke on one GPU (torchrun, NCCL)
note "ddp smoke"
timeout 60 python3 -m torch.distributed.run --standalone --nproc_per_node=1 train.py data=synthetic \
    data.image_size=32 data.train_size=2048 data.val_size=500 data.batch_size=128 trainer.epochs=1 \
    trainer.sync_bn=true trainer.progress=false hydra.run.dir="$OUT_DIR/runs/ddp_smoke" \
    > "$LOGS/ddp_smoke.txt" 2>&1 || failed+=("ddp smoke")
python3 - "$OUT_DIR/runs/ddp_smoke/results.json" >> "$LOGS/ddp_smoke.txt" 2>&1 <<'EOF' || failed+=("ddp smoke results")
import json, sys
r = json.load(open(sys.argv[1]))
assert r["status"] == "completed" and r["world_size"] == 1 and r["history"][-1]["val_images"] == 500, r
print("ddp smoke: world_size", r["world_size"], "| val images", r["history"][-1]["val_images"], "| images/s",
      round(r["images_per_sec"]))
EOF
tail -n 1 "$LOGS/ddp_smoke.txt"
left() { echo $(( BUDGET - $(elapsed) )); }
time_for() {  # time_for NAME SECONDS LOG: true (and the stage noted) when SECONDS are left, else the skip is logged
    if [ "$(left)" -ge "$2" ]; then note "$1"; return 0; fi
    echo "$1 skipped: $(left) s left of ${BUDGET}" | tee "$3"
    return 1
}

# 5. Benchmark, compiled models (the report is rewritten after each mode)
budget=$(left); [ "$budget" -gt 240 ] && budget=240
if [ "$budget" -ge 60 ]; then
    note "benchmark compiled (timeout ${budget} s)"
    timeout "$budget" python3 scripts/benchmark.py --suite gpu --device cuda --depths 50 --att-types none,CBAM \
        --repeats 5 --sections models --no-timm \
        --output-md "$OUT_DIR/benchmarks_gpu_compiled.md" --output-json "$OUT_DIR/benchmarks_gpu_compiled.json" \
        > "$LOGS/benchmark_compiled.txt" 2>&1 || failed+=("benchmark compiled (stopped after ${budget} s)")
    tail -n 6 "$LOGS/benchmark_compiled.txt"
else
    echo "benchmark compiled skipped: ${budget} s left of ${BUDGET}" | tee "$LOGS/benchmark_compiled.txt"
fi

# 6. Where CBAM's GPU overhead goes: each gate alone, and the two maxima with and without the index
if time_for "cbam cost" 70 "$LOGS/cbam_cost.txt"; then
    timeout 60 python3 scripts/profile_cbam.py --device cuda --image-size 224 --batch-size 256 --precision bf16 \
        --channels-last --repeats 5 --output-md "$OUT_DIR/cbam_cost_gpu.md" --output-json "$OUT_DIR/cbam_cost_gpu.json" \
        > "$LOGS/cbam_cost.txt" 2>&1 || failed+=("cbam cost")
    tail -n 5 "$LOGS/cbam_cost.txt"
fi

# 7. The ImageNet data path (DALI when installed)
if time_for "imagenet data path" 90 "$LOGS/imagenet_data.txt"; then
    timeout 90 python3 scripts/benchmark_imagenet_data.py --device cuda --images 512 --batch-size 64 \
        --output-md "$OUT_DIR/benchmarks_imagenet_data_gpu.md" \
        --output-json "$OUT_DIR/benchmarks_imagenet_data_gpu.json" \
        > "$LOGS/imagenet_data.txt" 2>&1 || failed+=("imagenet data path")
    tail -n 6 "$LOGS/imagenet_data.txt"
fi

# 8. cifar10_fast with CBAM, with the time left; it validates every 5 epochs (the recipe: only after
#    the last) so that a stop by the timeout still logs a test accuracy
if [ -n "$have_cifar" ] && [ "$(left)" -ge 60 ]; then
    cifar10_fast CBAM "$(left)" trainer.val_every_epochs=5
elif [ -n "$have_cifar" ]; then
    echo "cifar10_fast CBAM skipped: $(left) s left of ${BUDGET}" | tee "$LOGS/cifar10_fast_CBAM.txt"
fi

{
    cat "$OUT_DIR/machine.txt"
    echo "seconds: $(elapsed)"
    cat "$LOGS/stages.txt"
    grep -E "passed|failed|error" "$OUT_DIR/gpu_tests.txt" | tail -n 5
    for att in none CBAM; do
        f="$OUT_DIR/runs/cifar10_fast_$att/results.json"
        [ -f "$f" ] && python3 - "$f" "$att" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
final = r.get("final", {})
print(sys.argv[2], "test top-1", final.get("acc1"), "| epochs", r.get("epochs_completed", r.get("epochs")),
      "| wall", round(r.get("wall_seconds", 0), 1), "s | train images/s", round(r.get("images_per_sec", 0)),
      "| compile", r.get("compile_seconds"), "s")
EOF
    done
    echo "failed stages: ${failed[*]:-none}"
} > "$OUT_DIR/summary.txt" 2>&1
cp "$OUT_DIR/summary.txt" "$OUT_DIR/machine.txt" "$OUT_DIR/gpu_tests.txt" "$LOGS/" 2>/dev/null
(cd "$OUT_DIR" && tar czf logs.tar.gz --exclude=checkpoints --exclude='*.pt' --exclude='*.tmp' logs runs profile 2>/dev/null)
cat "$OUT_DIR/summary.txt"
[ ${#failed[@]} -eq 0 ]
