#!/usr/bin/env bash
# Create ./.venv and install the project with the tested versions. Idempotent: a second run only checks.
# torch is installed first, on its own, so that pip never resolves a multi-GB CUDA build on a CPU machine.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
VENV=${VENV:-.venv}
TORCH_VERSION=$(sed -n 's/^torch==\(.*\)$/\1/p' constraints.txt)

if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV with $($PYTHON --version)"
  "$PYTHON" -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
fi
PY="$VENV/bin/python"

have_torch=$("$PY" -c 'import torch; print(torch.__version__.split("+")[0])' 2>/dev/null || true)
if [ "$have_torch" != "$TORCH_VERSION" ]; then
  echo "[setup] installing torch==$TORCH_VERSION"
  "$PY" -m pip install -q "torch==$TORCH_VERSION"
fi

stamp="$VENV/.monai_ext_installed"
want=$(cat pyproject.toml constraints.txt | "$PY" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())')
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "[setup] installing monai_ext, its test and docs extras and their dependencies (constraints.txt)"
  "$PY" -m pip install -q -c constraints.txt -e ".[test,docs]"
  echo "$want" > "$stamp"
fi
echo "[setup] ready: $("$PY" -c 'import torch, monai, monai_ext; print(f"torch {torch.__version__}, monai {monai.__version__}, monai_ext {monai_ext.__version__}")')"
