#!/usr/bin/env bash
# Creates or updates the project's virtual environment (.venv) on a fresh Debian/Python 3.10+ machine.
# Sourced by scripts/test.sh and scripts/run-suites.sh; prints nothing when the venv is already current.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="${HARNESS_VENV:-$root/.venv}"
python="${PYTHON:-python3}"

if [ ! -x "$venv/bin/python" ]; then
    if ! "$python" -m venv "$venv" 2>/dev/null; then
        # Debian ships venv/ensurepip separately.
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
            echo "setup: installing python3-venv" >&2
            apt-get update -qq >/dev/null && apt-get install -y -qq python3-venv >/dev/null
            rm -rf "$venv"
            "$python" -m venv "$venv"
        else
            echo "setup: '$python -m venv' failed; install your distribution's python3-venv package" >&2
            exit 2
        fi
    fi
fi
# Re-install only when pyproject.toml or the lock file changed since the last install. The dependencies come
# from the lock file (the versions tested; regenerate it with the command in its header after changing
# pyproject.toml), then the project itself, editable, without resolving again.
stamp="$venv/.harness-installed"
lock="$root/requirements-dev.lock"
if [ ! -f "$stamp" ] || [ "$root/pyproject.toml" -nt "$stamp" ] || [ "$lock" -nt "$stamp" ]; then
    echo "setup: installing ollama-test-harness and its locked dependencies into $venv" >&2
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
    # The project's former distribution name, in venvs made before the rename (its entry points would linger).
    "$venv/bin/python" -m pip uninstall -q -y ollama-harness >/dev/null 2>&1 || true
    "$venv/bin/python" -m pip install -q --disable-pip-version-check -r "$lock"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e "$root"
    touch "$stamp"
fi
export PATH="$venv/bin:$PATH"
