# Sourced by the bench/lora scripts: creates bench/work/venv (PyTorch + transformers from PyPI) when
# missing and installs peft, gguf and accelerate into it; sets VENV. Run from the repository root.
VENV=bench/work/venv
if [ ! -x "$VENV/bin/python" ]; then
  echo "== creating $VENV" >&2
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --upgrade pip
  "$VENV/bin/pip" install -q torch transformers
fi
if ! "$VENV/bin/python" -c "import peft, gguf, accelerate" 2>/dev/null; then
  echo "== installing peft, gguf, accelerate into $VENV" >&2
  "$VENV/bin/pip" install -q peft gguf accelerate
fi
