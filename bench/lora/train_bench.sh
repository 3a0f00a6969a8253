#!/usr/bin/env bash
# LoRA training tokens/s and peak RSS, Trident vs PyTorch + PEFT, in one run (issue 4, item 6).
#
#   [THREADS=N] [STEPS=10] [WARMUP=2] [BATCH=4] [SEQ=256] [RANK=16] [CKPT=both|on|off] \
#   [BASE=GGUF] [TRIDENT=BIN] [DEVICE=cpu|cuda[:N]] [NOTE=text] bench/lora/train_bench.sh
#
# DEVICE=cuda runs both sides on the GPU (Trident built with `--features cuda`, PyTorch with its
# CUDA wheels); PEFT then also reports its peak GPU memory (torch.cuda.max_memory_allocated).
#
# Same base (the GGUF; PEFT gets it dequantized by transformers, Trident keeps it quantized and
# dequantizes per matmul), same threads, rank (alpha = 2 × rank, dropout 0), targets
# q,k,v,o,gate,up,down, batch × sequence length, AdamW lr 1e-4, no gradient checkpointing on the
# PEFT side. Four processes, one per measurement, so every peak RSS is that run's own: PEFT
# float32, PEFT bfloat16 (the whole model), Trident with and without --no-checkpointing (CKPT).
# Prints a markdown table with the ratios and writes bench/results/lora-train-<UTC stamp>.json.
# Details: bench/lora/peft_train_bench.py. Uses (or creates) the venv bench/work/venv like
# peft_check.sh. Not run in CI: PEFT at 4 × 256 peaks at 8–14 GiB of RAM and the full run takes
# tens of minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
THREADS=${THREADS:-$(nproc)}
STEPS=${STEPS:-10}
WARMUP=${WARMUP:-2}
BATCH=${BATCH:-4}
SEQ=${SEQ:-256}
RANK=${RANK:-16}
CKPT=${CKPT:-both}
BASE=${BASE:-/tmp/ci-cache/models/qwen2.5-coder-0.5b-instruct-q4_k_m.gguf}
TRIDENT=${TRIDENT:-target/bench-e62577ff/release/trident}
NOTE=${NOTE:-}
DEVICE=${DEVICE:-cpu}
[ -f "$BASE" ] || { echo "base model $BASE not found (set BASE=…)" >&2; exit 2; }
[ -x "$TRIDENT" ] || { echo "trident binary $TRIDENT not found (set TRIDENT=…, or cargo build --release -p trident-cli)" >&2; exit 2; }
case "$CKPT" in both|on|off) ;; *) echo "CKPT must be both, on or off" >&2; exit 2 ;; esac

. bench/lora/venv.sh
export TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
# PyTorch's thread pools follow torch.set_num_threads; these keep OpenMP/MKL from oversubscribing.
export OMP_NUM_THREADS=$THREADS MKL_NUM_THREADS=$THREADS

PY="$VENV/bin/python bench/lora/peft_train_bench.py"
WORK=$(mktemp -d -t trident-train-bench-XXXXXX)
trap 'rm -rf "$WORK"' EXIT
SHAPE=(--base "$BASE" --threads "$THREADS" --steps "$STEPS" --warmup "$WARMUP" --batch "$BATCH" --seq "$SEQ" --rank "$RANK" --device "$DEVICE")
LOAD_BEFORE=$(cut -d' ' -f1 /proc/loadavg)
echo "== $DEVICE, threads $THREADS, batch $BATCH × $SEQ, rank $RANK, $WARMUP warm-up + $STEPS timed steps; load average $LOAD_BEFORE" >&2

RESULTS=()
for dtype in fp32 bf16; do
  $PY peft "${SHAPE[@]}" --dtype "$dtype" --out "$WORK/peft-$dtype.json"
  RESULTS+=("$WORK/peft-$dtype.json")
done
$PY dataset "${SHAPE[@]}" --out "$WORK/data.jsonl"
if [ "$CKPT" != off ]; then
  $PY trident "${SHAPE[@]}" --trident "$TRIDENT" --data "$WORK/data.jsonl" --work "$WORK" --out "$WORK/trident-ckpt.json"
  RESULTS+=("$WORK/trident-ckpt.json")
fi
if [ "$CKPT" != on ]; then
  $PY trident "${SHAPE[@]}" --trident "$TRIDENT" --data "$WORK/data.jsonl" --work "$WORK" --no-ckpt --out "$WORK/trident-nockpt.json"
  RESULTS+=("$WORK/trident-nockpt.json")
fi
$PY report "${RESULTS[@]}" --base "$BASE" --load-before "$LOAD_BEFORE" --note "$NOTE"
