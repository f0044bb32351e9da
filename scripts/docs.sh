#!/usr/bin/env bash
# Build the documentation site (mkdocs.yml) into site/ with warnings as errors, after setting up .venv (idempotent).
#   ./scripts/docs.sh                build, strict
#   ./scripts/docs.sh serve [ARGS]   serve at http://127.0.0.1:8000 with live reload (extra ARGS go to mkdocs serve)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
export NO_MKDOCS_2_WARNING=1  # Material for MkDocs' banner about MkDocs 2.0; not a build warning
if [ "${1:-}" = "serve" ]; then
  shift
  exec .venv/bin/python -m mkdocs serve "$@"
fi
exec .venv/bin/python -m mkdocs build --strict "$@"
