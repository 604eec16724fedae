#!/usr/bin/env bash
# The GPU campaign, stage by stage: each stage buys numbers the project does not have yet and
# fits one device call (at most ~9 minutes on one H100/H200, Hydra and the data included).
#
# Usage: scripts/gpu_campaign.sh STAGE [STAGE...]
# Stages:
#   recipe   cifar10_fast variants side by side on the one GPU (Hydra's joblib launcher, one
#            process per run): a seed x cutout grid with a weight average kept, plus a longer
#            pair; afterwards every run's last.pt is evaluated with the trained and the averaged
#            weights, each without TTA, with flip and with flip+translate (scripts/evaluate_runs.py),
#            so one training run answers six questions. GPU use is sampled while they run.
#   attention  the converged attention table: experiment=cifar10_fast (as it stands: 50 epochs, cutout 12,
#            EMA, flip+translate TTA) for none, SE, CBAM, BAM and ECA, topping the ledger
#            (docs/results/runs/<card>/, or LEDGER) up to ATTENTION_SEEDS seeds (default 3): seeds a
#            block already has there are skipped, and at most ATTENTION_JOBS runs (default 8) start,
#            side by side, in block order.
#   dry      the recipe stage's commands on the CPU with a tiny budget (synthetic data, 1 epoch, 2 jobs);
#   dry-attention  the attention stage's, likewise (LEDGER must name a ledger folder, which may be empty):
#            checks that the stages' commands compose and run, with no GPU.
# Environment:
#   CIFAR10_ROOT       a folder holding cifar-10-batches-py/, or
#   GPU_CHECK_DATA     a folder holding cifar10-jpg.tar.gz and make_cifar10.py (built on the fly)
#   WHEELS             wheels for what the machine lacks (Hydra, its joblib launcher; default .whl)
#   CAMPAIGN_BUDGET    seconds the stage may take (default 480)
#   OUT                where the outputs go (default ./campaign_out): summary.txt, machine.txt,
#                      runs.tar.gz (every run's results.json, train.log and the evaluations; no
#                      checkpoints), gpu_usage.csv
set -uo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 1 ] || { sed -n '/^set -uo/q;2,$p' "$0"; exit 2; }
OUT_DIR="${OUT:-campaign_out}"
mkdir -p "$OUT_DIR"
OUT_DIR="$(cd "$OUT_DIR" && pwd)"
WHEELS="${WHEELS:-.whl}"
BUDGET="${CAMPAIGN_BUDGET:-480}"
export PYTHONUNBUFFERED=1
started=$(date +%s)
left() { echo $(( BUDGET - ($(date +%s) - started) )); }
note() { echo "[$(( $(date +%s) - started )) s] $*" | tee -a "$OUT_DIR/summary.txt"; }
failed=()

source scripts/gpu_env.sh
use_wheels "$WHEELS" "hydra, omegaconf, hydra_plugins.hydra_joblib_launcher" "$OUT_DIR/summary.txt"
{
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null || echo "no GPU"
    python3 -c "import torch, torchvision; print('torch', torch.__version__, 'torchvision', torchvision.__version__)"
    echo "cpu cores: $(nproc)"; echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
} > "$OUT_DIR/machine.txt" 2>&1
cat "$OUT_DIR/machine.txt"

cifar_root() {  # prints a folder holding cifar-10-batches-py/, building it when needed
    if [ -n "${CIFAR10_ROOT:-}" ]; then echo "$CIFAR10_ROOT"; return; fi
    local root=/tmp/attn_resnet_cifar10
    if [ ! -d "$root/cifar-10-batches-py" ]; then
        python3 "$GPU_CHECK_DATA/make_cifar10.py" "$root" --format python > "$OUT_DIR/cifar10_build.txt" 2>&1 || return 1
    fi
    echo "$root"
}

sample_gpu() {  # sample_gpu FILE: GPU utilisation and memory every 5 s until killed
    command -v nvidia-smi >/dev/null || return 0
    echo "time,utilization_gpu_pct,memory_used_mib" > "$1"
    while true; do
        echo "$(date +%s),$(nvidia-smi --query-gpu=utilization.gpu,memory.used --format=csv,noheader,nounits | head -1)" >> "$1"
        sleep 5
    done
}

# One multirun: multirun NAME JOBS TIMEOUT OVERRIDE... (a Hydra sweep of the overrides' values)
multirun() {
    local name="$1" jobs="$2" limit="$3"
    shift 3
    note "multirun $name: $jobs jobs side by side (timeout $limit s): $*"
    # Run in the background by the stage: a failure is left as a file for the summary to find.
    timeout "$limit" python3 train.py --multirun hydra/launcher=joblib hydra.launcher.n_jobs="$jobs" \
        trainer.progress=false hydra.sweep.dir="$OUT_DIR/sweeps/$name" "$@" \
        > "$OUT_DIR/sweeps/$name.log" 2>&1 || echo "multirun $name (exit $?)" >> "$OUT_DIR/failed_stages.txt"
}

evaluate_sweep() {  # evaluate_sweep NAME [evaluate_runs.py options]: every run of a sweep, six settings
    local name="$1"
    shift
    note "evaluate $name"
    python3 scripts/evaluate_runs.py "$OUT_DIR/sweeps/$name"/*/ --weights model,ema --tta none,flip,flip_translate \
        --output "$OUT_DIR/sweeps/$name.evaluations.json" "$@" > "$OUT_DIR/sweeps/$name.evaluations.md" 2>&1 \
        || failed+=("evaluate $name")
    tee -a "$OUT_DIR/summary.txt" < "$OUT_DIR/sweeps/$name.evaluations.md"
}

stage_recipe() {  # stage_recipe EPOCHS LONG_EPOCHS OVERRIDE... (data.root among them)
    local epochs="$1" long_epochs="$2"
    shift 2
    local common=(experiment=cifar10_fast trainer.ema_decay=0.998 trainer.ema_warmup=true
                  trainer.val_every_epochs=10 "$@")
    mkdir -p "$OUT_DIR/sweeps"
    # The grid (6 runs) and the longer pair (2 runs) run at the same time: 8 processes on one GPU.
    multirun grid "$GRID_JOBS" "$(( $(left) - 60 ))" "${common[@]}" trainer.epochs="$epochs" seed=0,1,2 aug.cutout=0,12 &
    local grid=$!
    multirun long "$LONG_JOBS" "$(( $(left) - 60 ))" "${common[@]}" trainer.epochs="$long_epochs" seed=0,1 aug.cutout=12 &
    local long=$!
    wait "$grid"
    evaluate_sweep grid "${EVAL_OPTIONS[@]}"
    wait "$long"
    evaluate_sweep long "${EVAL_OPTIONS[@]}"
}

stage_recipe50() {  # 50 epochs: cutout 12 vs 16 (3 seeds each) and batch 256 at lr 0.2 (2 seeds); 8 processes
    local common=(experiment=cifar10_fast trainer.ema_decay=0.998 trainer.ema_warmup=true
                  trainer.val_every_epochs=10 trainer.epochs="$1")
    shift
    common+=("$@")
    mkdir -p "$OUT_DIR/sweeps"
    multirun e50_cutout12 3 "$(( $(left) - 45 ))" "${common[@]}" seed=0,1,2 aug.cutout=12 &
    local a=$!
    multirun e50_cutout16 3 "$(( $(left) - 45 ))" "${common[@]}" seed=0,1,2 aug.cutout=16 &
    local b=$!
    multirun e50_batch256 2 "$(( $(left) - 45 ))" "${common[@]}" seed=0,1 aug.cutout=12 data.batch_size=256 \
        optim.lr=0.2 &
    local c=$!
    wait "$a" "$b" "$c"
    for name in e50_cutout12 e50_cutout16 e50_batch256; do evaluate_sweep "$name" "${EVAL_OPTIONS[@]}"; done
}

card_name() {  # "NVIDIA H200" -> nvidia-h200: the ledger's folder for this machine's GPU
    nvidia-smi --query-gpu=name --format=csv,noheader | head -1 | tr '[:upper:] ' '[:lower:]-'
}

stage_attention() {  # stage_attention SEEDS MAX_JOBS OVERRIDE...: per block, the ledger's missing seeds
    local seeds="$1" budget="$2"
    shift 2
    local ledger="${LEDGER:-docs/results/runs/$(card_name)}"
    # The recipe's values that tell its runs apart in the ledger (earlier variants had others).
    local where=(experiment=cifar10_fast trainer.epochs=50 aug.cutout=12 trainer.tta=flip_translate)
    local pids=() att missing take
    mkdir -p "$OUT_DIR/sweeps"
    for att in none SE CBAM BAM ECA; do
        [ "$budget" -gt 0 ] || break
        missing=$(python3 scripts/paper_table.py --count-seeds "$ledger" --missing-seeds "$seeds" \
            --where "${where[@]}" model.att_type="$att" 2>>"$OUT_DIR/summary.txt") || { failed+=("seeds of $att"); continue; }
        if [ -z "$missing" ]; then note "attention $att: $seeds seeds in $ledger already"; continue; fi
        IFS=, read -ra take <<< "$missing"
        take=("${take[@]:0:$budget}")
        budget=$(( budget - ${#take[@]} ))
        multirun "attention_$att" "${#take[@]}" "$(( $(left) - 30 ))" experiment=cifar10_fast \
            trainer.val_every_epochs=10 "$@" model.att_type="$att" seed="$(IFS=,; echo "${take[*]}")" &
        pids+=($!)
    done
    [ ${#pids[@]} -eq 0 ] || wait "${pids[@]}"
}

summarize() {
    python3 - "$OUT_DIR/sweeps" >> "$OUT_DIR/summary.txt" 2>&1 <<'EOF'
import json, sys
from pathlib import Path
rows = []
for path in sorted(Path(sys.argv[1]).glob("*/*/results.json")):
    r = json.loads(path.read_text())
    c = r.get("config", {})
    rows.append((path.parent.parent.name + "/" + path.parent.name, c.get("seed"), c.get("aug", {}).get("cutout"),
                 c.get("trainer", {}).get("epochs"), c.get("data", {}).get("batch_size"), r.get("status"), (r.get("final") or {}).get("acc1"),
                 r.get("images_per_sec"), r.get("train_seconds"), r.get("compile_seconds")))
print("| run | seed | cutout | epochs | batch | status | final top-1 (EMA, no TTA) | train img/s | train s | compile s |")
print("|---|---|---|---|---|---|---|---|---|---|")
for row in rows:
    print("| " + " | ".join("" if v is None else (f"{v:.2f}" if isinstance(v, float) else str(v)) for v in row) + " |")
rates = [row[7] for row in rows if row[7]]
print(f"sum of the runs' train images/s (side by side): {sum(rates):.0f} over {len(rates)} runs")
EOF
}

for stage in "$@"; do
    case "$stage" in
        recipe)
            root=$(cifar_root) || { failed+=("cifar10 build"); continue; }
            sample_gpu "$OUT_DIR/gpu_usage.csv" & sampler=$!
            EVAL_OPTIONS=() GRID_JOBS=6 LONG_JOBS=2
            stage_recipe 30 40 data.root="$root"
            kill "$sampler" 2>/dev/null
            ;;
        recipe50)
            root=$(cifar_root) || { failed+=("cifar10 build"); continue; }
            sample_gpu "$OUT_DIR/gpu_usage.csv" & sampler=$!
            EVAL_OPTIONS=()
            stage_recipe50 50 data.root="$root"
            kill "$sampler" 2>/dev/null
            ;;
        attention)
            root=$(cifar_root) || { failed+=("cifar10 build"); continue; }
            sample_gpu "$OUT_DIR/gpu_usage.csv" & sampler=$!
            stage_attention "${ATTENTION_SEEDS:-3}" "${ATTENTION_JOBS:-8}" data.root="$root"
            kill "$sampler" 2>/dev/null
            ;;
        dry-attention)
            BUDGET=600
            stage_attention "${ATTENTION_SEEDS:-2}" "${ATTENTION_JOBS:-2}" data=synthetic data.train_size=128 \
                data.val_size=64 trainer.device=cpu trainer.precision=32 trainer.compile=false \
                trainer.channels_last=false data.batch_size=32 data.val_batch_size=64 trainer.epochs=1
            ;;
        dry)
            EVAL_OPTIONS=(--device cpu) GRID_JOBS=2 LONG_JOBS=1
            BUDGET=600
            stage_recipe 1 1 data=synthetic data.train_size=128 data.val_size=64 trainer.device=cpu \
                trainer.precision=32 trainer.compile=false trainer.channels_last=false data.batch_size=32 \
                data.val_batch_size=64
            ;;
        *) echo "unknown stage $stage (recipe, recipe50, attention, dry, dry-attention)"; exit 2 ;;
    esac
done
summarize
if [ -f "$OUT_DIR/failed_stages.txt" ]; then mapfile -t -O "${#failed[@]}" failed < "$OUT_DIR/failed_stages.txt"; fi
echo "failed: ${failed[*]:-none}" | tee -a "$OUT_DIR/summary.txt"
(cd "$OUT_DIR" && tar czf runs.tar.gz --exclude=checkpoints --exclude='*.pt' --exclude='*.tmp' sweeps 2>/dev/null)
[ ${#failed[@]} -eq 0 ]
