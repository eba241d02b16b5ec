#!/usr/bin/env bash
# VNN-COMP: run one instance.
#   run_instance.sh v1 CATEGORY MODEL.onnx PROPERTY.vnnlib RESULT_FILE TIMEOUT_SECONDS
# MODEL.onnx may instead list a VNN-LIB 2.0 query's networks: "f=a.onnx;g=b.onnx" or "(f a.onnx) (g b.onnx)".
# Leaves RESULT_FILE holding sat (then the counterexample ((X_0 v) ... (Y_0 v) ...), or with several
# networks the VNN-LIB 2.0 assignment: each variable's header line and its values), unsat, timeout,
# unknown or error.  The file is pre-seeded with `timeout`; the verifier replaces it atomically when it
# answers.  The verifier keeps its own deadline of TIMEOUT seconds; as a backstop it is sent SIGTERM at
# TIMEOUT + 5 s and SIGKILL 5 s after that, and a run ended that way reads `timeout`.
set -uo pipefail
if [[ $# -ne 6 || "$1" != "v1" ]]; then
    echo "usage: $0 v1 CATEGORY MODEL.onnx PROPERTY.vnnlib RESULT_FILE TIMEOUT_SECONDS" >&2
    exit 1
fi
vnnlib="$(realpath -- "$4")"; result="$(realpath -- "$5")"; limit="$6"
# MODEL: one ONNX file, or a VNN-LIB 2.0 query's networks as name=path (or "(name path)") pairs,
# whose relative paths are read from the harness's folder (--base)
if [[ -e "$3" ]]; then models=("$(realpath -- "$3")"); else models=(--base "$PWD" "$3"); fi
if ! [[ "$limit" =~ ^[0-9]+([.][0-9]*)?$ ]]; then
    echo "run_instance.sh: TIMEOUT_SECONDS must be a number, got '$limit'" >&2
    echo error > "$result"
    exit 1
fi
echo timeout > "$result"
# whole seconds for timeout(1): ceil(limit) + 5
hard=$(( $(awk -v t="$limit" 'BEGIN { c = int(t); if (c < t) c++; print c }') + 5 ))

# cd to the repository: `python -m verifier` then imports this checkout, installed or not
cd "$(dirname "$(realpath -- "${BASH_SOURCE[0]}")")"
PY="$(command -v python || command -v python3)"
state="${TMPDIR:-/tmp}/verifier-vnncomp-$(id -u)"
mkdir -p "$state"

# timeout(1) makes itself a process-group leader: its pid is the group prepare_instance.sh ends
timeout --kill-after=5 "$hard" "$PY" -m verifier vnncomp "${models[@]}" "$vnnlib" "$result" "$limit" &
pid=$!
echo "$pid" > "$state/$pid.pid"
# if the harness stops this script, the verifier's process group goes with it
trap 'kill -TERM -- "-$pid" 2>/dev/null; sleep 1; kill -KILL -- "-$pid" 2>/dev/null; rm -f "$state/$pid.pid"; exit 143' TERM INT HUP
wait "$pid"
rc=$?
rm -f "$state/$pid.pid"

case "$rc" in
    0) ;;
    124|137) echo timeout > "$result" ;;                     # killed by the backstop
    *) if [[ "$(head -n 1 "$result" 2>/dev/null)" == timeout ]]; then
           echo error > "$result"                            # crashed before answering
       fi ;;
esac
echo "run_instance.sh: $(head -n 1 "$result") (exit $rc)" >&2
exit 0
