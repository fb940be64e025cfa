#!/usr/bin/env bash
# The main job: set up the venv, run every suite (against $OLLAMA_HOST / --ollama-host if an Ollama answers there,
# else on the embedded engine), then print the run's report. Extra arguments go to pytest, for example:
#   scripts/run-suites.sh --ollama-host localhost:11434 --harness-model qwen2.5:0.5b-instruct
# Exit status: the suites' (pytest's) status, or the report's when the suites passed (1 = regression).
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
source scripts/setup-venv.sh
set +e  # setup-venv.sh turns on errexit; from here on each status is collected, not fatal
pytest suites/ "$@"
suites_status=$?
if [ -e reports/latest ]; then
    harness report reports/latest
    report_status=$?
else
    report_status=0
fi
if [ "$suites_status" -ne 0 ]; then exit "$suites_status"; fi
exit "$report_status"
