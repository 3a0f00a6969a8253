#!/usr/bin/env bash
# LLM inference benchmark: `trident bench llm` against llama.cpp's own tools, same GGUF, same
# threads, same CPU flags, in one run; prints and saves the ratios.
#
#   bench/llm/run.sh [MODEL...]        (default: qwen gemma; a name or a GGUF path)
#
# Environment: THREADS (default: all cores), ROUNDS (alternating rounds, default 2),
# BENCH_RUSTFLAGS (default: scripts/cpu-rustflags), TRIDENT_HOME (where `trident models fetch`
# put the models).
#
# Two peers, both built from the llama.cpp that the `llama-cpp-python` sdist on PyPI vendors
# (PEER_VERSION, default 0.3.36 — the peer of the issue's baseline), with the same -march and
# GGML_* options as our build:
# - llama.cpp's own C++ tools, the strict reference: `llama-bench` for prefill (pp512) / decode
#   (tg128) and for a cold 1,010-token prompt (time to first token without prefix reuse), and
#   `llama-batched-bench` for 8 concurrent sequences (it batches them as we do, and neither tool
#   samples or detokenizes: pure llama_decode);
# - the issue's named peer, llama.cpp's own server from PyPI (`llama-cpp-python[server]`,
#   bench/llm/server_peer.py), measured over HTTP; it serves one request at a time, which is what
#   the issue's 8-stream target (≥ 1.5×) is set against. SERVER_PEER=0 skips it.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
THREADS=${THREADS:-$(nproc)}
ROUNDS=${ROUNDS:-2}
FLAGS=${BENCH_RUSTFLAGS:-$(scripts/cpu-rustflags)}
WORK=$ROOT/bench/work/llm
mkdir -p "$WORK" bench/results
MODELS=("$@")
[ ${#MODELS[@]} -eq 0 ] && MODELS=(qwen gemma)

# 1. Trident, release build with the bench flags (its own target dir, so CI's stays untouched).
tag=$(echo "$FLAGS" | sha256sum | cut -c1-8)
export CARGO_TARGET_DIR=$ROOT/target/bench-$tag
echo "== building trident (release, RUSTFLAGS='$FLAGS') in $CARGO_TARGET_DIR" >&2
RUSTFLAGS="$FLAGS" cargo build --release -q -p trident-cli
TRIDENT=$CARGO_TARGET_DIR/release/trident

# 2. The peer: llama.cpp tools from the llama-cpp-python sdist, same -march and ISA options.
PEER_VERSION=${PEER_VERSION:-0.3.36}
sdist=$WORK/llama_cpp_python-$PEER_VERSION.tar.gz
if [ ! -f "$sdist" ]; then
  echo "== downloading llama-cpp-python $PEER_VERSION (sdist) from PyPI" >&2
  pip download "llama-cpp-python==$PEER_VERSION" --no-binary llama-cpp-python --no-deps -d "$WORK" -q
fi
src=$WORK/llama_cpp_python-$PEER_VERSION/vendor/llama.cpp
[ -d "$src" ] || tar xzf "$sdist" -C "$WORK"
march=$(echo "$FLAGS" | sed -n 's/.*target-cpu=\([^ ]*\).*/\1/p')
cm=(-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON)
[[ $FLAGS == *avx512vnni* ]] && cm+=(-DGGML_AVX512_VNNI=ON)
[[ $FLAGS == *avx512bf16* ]] && cm+=(-DGGML_AVX512_BF16=ON)
[[ $FLAGS == *avx512vbmi* ]] && cm+=(-DGGML_AVX512_VBMI=ON)
[[ $FLAGS == *avxvnni* ]] && cm+=(-DGGML_AVX_VNNI=ON)
[[ $march == x86-64-v4 ]] && cm+=(-DGGML_AVX512=ON)
PEER=$WORK/llama.cpp-$tag
if [ ! -x "$PEER/bin/llama-bench" ] || [ ! -x "$PEER/bin/llama-batched-bench" ]; then
  echo "== building llama.cpp tools from $src (-march=$march)" >&2
  cmake -S "$src" -B "$PEER" -DCMAKE_BUILD_TYPE=Release -DBUILD_SHARED_LIBS=OFF \
    -DCMAKE_C_FLAGS="-march=$march" -DCMAKE_CXX_FLAGS="-march=$march" "${cm[@]}" \
    -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
    -DLLAMA_BUILD_TOOLS=ON >"$WORK/cmake.log" 2>&1
  cmake --build "$PEER" -j "$(nproc)" --target llama-bench llama-batched-bench >>"$WORK/cmake.log" 2>&1
fi

# 3. The issue's named peer: llama.cpp's own server from PyPI (`llama-cpp-python[server]`), built
#    from the same sdist with the same options, in its own venv (SERVER_PEER=0 skips it).
SERVER_PEER=${SERVER_PEER:-1}
SVENV=$WORK/venv-server-$tag
if [ "$SERVER_PEER" = 1 ] && [ ! -x "$SVENV/bin/python" -o ! -f "$SVENV/.built" ]; then
  echo "== building llama-cpp-python[server] $PEER_VERSION from its sdist (-march=$march)" >&2
  python3 -m venv "$SVENV"
  CMAKE_ARGS="-DCMAKE_C_FLAGS=-march=$march -DCMAKE_CXX_FLAGS=-march=$march ${cm[*]} -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF" \
    CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$SVENV/bin/pip" install -q "llama-cpp-python[server] @ file://$sdist" >"$WORK/server-build.log" 2>&1
  touch "$SVENV/.built"
fi

resolve() { # a catalogue name or a path -> a GGUF path
  case "$1" in *.gguf) echo "$1" ;; *) "$TRIDENT" models list --json | python3 -c \
    'import json,sys; n=sys.argv[1]; print([m["path"] for m in json.load(sys.stdin) if m["name"]==n or m.get("short")==n][0])' "$1" ;; esac
}

stamp=$(date -u +%Y-%m-%dT%H%MZ)
out=bench/results/llm-$stamp.json
echo "[" >"$out"
first=1
for m in "${MODELS[@]}"; do
  gguf=$(resolve "$m")
  for r in $(seq 1 "$ROUNDS"); do
    echo "== $m round $r: llama.cpp" >&2
    pd=$("$PEER/bin/llama-bench" -m "$gguf" -t "$THREADS" -p 512 -n 128 -r 3 -o json 2>/dev/null)
    cold=$("$PEER/bin/llama-bench" -m "$gguf" -t "$THREADS" -p 1010 -n 0 -r 3 -o json 2>/dev/null)
    agg=$("$PEER/bin/llama-batched-bench" -m "$gguf" -t "$THREADS" -tb "$THREADS" -c $((8 * 200)) -b 512 -ub 512 \
      -npp 64 -ntg 128 -npl 8 --output-format jsonl 2>/dev/null | grep '^{' | tail -1)
    server='{}'
    if [ "$SERVER_PEER" = 1 ]; then
      echo "== $m round $r: llama-cpp-python server" >&2
      server=$("$SVENV/bin/python" bench/llm/server_peer.py --gguf "$gguf" --threads "$THREADS")
    fi
    echo "== $m round $r: trident" >&2
    ours=$("$TRIDENT" bench llm --json --model "$gguf" --threads "$THREADS" --runs 3)
    [ $first = 1 ] || echo "," >>"$out"
    first=0
    python3 - "$m" "$r" "$pd" "$cold" "$agg" "$ours" "$server" >>"$out" <<'EOF'
import json, sys
name, rnd, pd, cold, agg, ours, server = sys.argv[1:]
pd, cold, agg, ours, server = json.loads(pd), json.loads(cold), json.loads(agg), json.loads(ours), json.loads(server)
pp = next(x for x in pd if x["n_prompt"] == 512)["avg_ts"]
tg = next(x for x in pd if x["n_gen"] == 128)["avg_ts"]
cold_ms = 1000.0 * 1010 / cold[0]["avg_ts"]
peer_agg = agg["pl"] * agg["tg"] / agg["t"]
m = ours["median"]
print(json.dumps({
  "model": name, "round": int(rnd), "threads": ours["threads"],
  "peer": {"prefill_tok_s": pp, "decode_tok_s": tg, "ttft_cold_1000_ms": cold_ms, "aggregate8_tok_s": peer_agg},
  "trident": m, "trident_peak_rss_mib": ours["peak_rss_mib"],
  "ratios": {
    "prefill": m["prefill_tok_s"] / pp,
    "decode": m["decode_tok_s"] / tg,
    "ttft_cached_vs_peer_cold": m["ttft_cached_prefix_ms"] / cold_ms,
    "aggregate8": m["aggregate_tok_s"] / peer_agg,
  },
  "server": server,
  "ratios_vs_server": server and {
    "prefill": m["prefill_tok_s"] / server["prefill"]["tok_s"],
    "decode": m["decode_tok_s"] / server["decode_tok_s"],
    "ttft_cached_vs_peer_cold": m["ttft_cached_prefix_ms"] / server["ttft_cold"]["ms"],
    "aggregate8": m["aggregate_tok_s"] / server["aggregate_tok_s"],
  },
}))
EOF
  done
done
echo "]" >>"$out"
python3 - "$out" <<'EOF'
import json, statistics, sys
rows = json.load(open(sys.argv[1]))
# (ratio key, trident key, format, unit): the four measurements, in table order.
COLS = [("prefill", "prefill_tok_s", "{:.1f}", ""), ("decode", "decode_tok_s", "{:.2f}", ""),
        ("ttft_cached_vs_peer_cold", "ttft_cached_prefix_ms", "{:.0f}", " ms"), ("aggregate8", "aggregate_tok_s", "{:.1f}", "")]

def table(header, peer_figures, ratios_key, rss):
    """One row per model: trident / peer (ratio) per column, medians over the rounds;
    peer_figures(row) gives the peer's four figures in COLS order."""
    print(header)
    print("|---" * (len(COLS) + 1 + rss) + "|")
    for name in dict.fromkeys(r["model"] for r in rows):
        rs = [r for r in rows if r["model"] == name]
        med = lambda f: statistics.median(f(r) for r in rs)
        cells = [name]
        for i, (ratio, ours, fmt, unit) in enumerate(COLS):
            cells.append(f"{fmt.format(med(lambda r: r['trident'][ours]))}{unit} / {fmt.format(med(lambda r: peer_figures(r)[i]))}{unit} "
                         f"(**{med(lambda r: r[ratios_key][ratio]):.2f}×**)")
        if rss:
            cells.append(f"{med(lambda r: r['trident_peak_rss_mib']):.0f} MiB")
        print("| " + " | ".join(cells) + " |")

table("| model | prefill tok/s trident / llama.cpp (ratio) | decode tok/s (ratio) | TTFT cached 1k prefix vs llama.cpp cold (ratio) | 8-stream tok/s (ratio) | trident peak RSS |",
      lambda r: [r["peer"][k] for k in ("prefill_tok_s", "decode_tok_s", "ttft_cold_1000_ms", "aggregate8_tok_s")], "ratios", True)
if all(r.get("server") for r in rows):
    print("\nAgainst llama.cpp's own server from PyPI (llama-cpp-python[server], over HTTP; it serves one request at a time):\n")
    table("| model | prefill tok/s trident / server (ratio) | decode tok/s (ratio) | TTFT cached 1k prefix vs server cold (ratio) | 8-stream tok/s (ratio) |",
          lambda r: [r["server"]["prefill"]["tok_s"], r["server"]["decode_tok_s"], r["server"]["ttft_cold"]["ms"], r["server"]["aggregate_tok_s"]],
          "ratios_vs_server", False)
print(f"\n(medians over {len(rows)//max(1,len(set(r['model'] for r in rows)))} alternating rounds; raw: {sys.argv[1]})")
EOF
