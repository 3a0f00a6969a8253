#!/usr/bin/env bash
# PEFT cross-check of Trident's LoRA adapters (issue 4): see bench/lora/peft_check.py.
#
#   bench/lora/peft_check.sh [--base GGUF] [--trident BIN] [--threads N] [--work DIR]
#
# Uses (or creates) the venv bench/work/venv with torch, transformers, peft, gguf and
# accelerate. Without --trident it uses target/release/trident (else target/debug/trident),
# building the release binary when neither exists. Not run in CI: it loads the 0.5B base in
# float32 in PyTorch (about 3 GB of RAM) and takes a few minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../.."
. bench/lora/venv.sh
if [[ " $* " != *" --trident "* ]] && [ ! -x target/release/trident ] && [ ! -x target/debug/trident ]; then
  echo "== building trident (release)" >&2
  cargo build --release -q -p trident-cli
fi
export TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 HF_HUB_OFFLINE=1 TRANSFORMERS_VERBOSITY=error
exec "$VENV/bin/python" bench/lora/peft_check.py "$@"
