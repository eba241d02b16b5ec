#!/usr/bin/env bash
# VNN-COMP: install the verifier.  Usage: install_tool.sh v1
# Installs into the current Python environment, as .ci/run does (without running the tests).
# `pip install torch==2.13.0` takes the build PyPI serves for this platform (with CUDA on Linux x86-64)
# or a wheel from pip's configured find-links (the CPU build, on the project's own machines).
set -euo pipefail
if [[ "${1:-}" != "v1" ]]; then
    echo "usage: $0 v1" >&2
    exit 1
fi
cd "$(dirname "${BASH_SOURCE[0]}")"
PY="$(command -v python || command -v python3)"
"$PY" -m pip install torch==2.13.0
"$PY" -m pip install -e .
"$PY" -m verifier --version
