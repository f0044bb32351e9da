#!/usr/bin/env bash
# Set everything up (idempotent) and run the whole test suite, slow bundle runs included.
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
exec .venv/bin/python -m pytest -q "$@"
