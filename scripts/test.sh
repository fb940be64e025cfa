#!/usr/bin/env bash
# The test command: lint, format check, type check, then the harness's own tests.
# Extra arguments go to pytest (for example: scripts/test.sh -k gguf -x).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
source scripts/setup-venv.sh
echo "== ruff" && ruff check . && ruff format --check .
echo "== mypy" && mypy harness
echo "== pytest"
exec pytest tests "$@"
